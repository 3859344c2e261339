//! The portable weight file: the one contract between the trainer and the browser.
//!
//! A safetensors file whose metadata key `gdpo_sr` holds a JSON header with
//! - `format` = `gdpo-sr-weights` and `format_version` = [`FORMAT_VERSION`],
//! - `config` = the [`ModelConfig`] (the loader rebuilds this architecture),
//! - `content_hash` = `sha256:<hex>` over the config and every tensor (name, dtype, shape,
//!   bytes, in name order), so a flipped bit anywhere is caught before the weights are used,
//!
//! and one tensor per parameter, named by its module path (`unet.conv_in.weight`), stored as
//! f16 (the web download) or f32 (exact round trips). Loading works from bytes alone (the
//! browser has no filesystem) and every defect is a typed [`ModelError`], never a panic.

use std::collections::{BTreeMap, HashMap};

use burn::{
    module::{Module, ModuleMapper, ModuleVisitor, Param},
    tensor::{Tensor, TensorData, backend::Backend},
};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use sha2::{Digest, Sha256};

use crate::{
    error::{ModelError, Result},
    pipeline::Naosd,
    preset::ModelConfig,
};

/// Value of the `format` metadata key.
pub const FORMAT_NAME: &str = "gdpo-sr-weights";
/// Version of the layout described above; bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

/// Storage precision of the tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredPrecision {
    /// Half the download; weights round to f16 (relative error <= 2^-11).
    F16,
    /// Bit-exact round trip.
    F32,
}

/// What a weight file declares, read without building the model.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightInfo {
    pub config: ModelConfig,
    pub content_hash: String,
    pub tensors: usize,
    pub parameters: usize,
    /// The module path the file is limited to ([`save_trained_part`]), if any.
    pub trained_part: Option<String>,
}

/// The file's metadata, stored as one JSON value under [`HEADER_KEY`] so that the file bytes
/// are deterministic (safetensors writes its metadata map in hash order).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Header {
    format: String,
    format_version: u32,
    config: ModelConfig,
    content_hash: String,
    /// Set when the file holds only the parameters under this module path (`unet`): what the
    /// project trains on top of a pretrained autoencoder that it may not redistribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trained_part: Option<String>,
}

/// The metadata key holding the [`Header`].
const HEADER_KEY: &str = "gdpo_sr";

struct Collect {
    path: Vec<String>,
    tensors: BTreeMap<String, TensorData>,
}

impl<B: Backend> ModuleVisitor<B> for Collect {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.tensors
            .insert(self.path.join("."), param.val().into_data());
    }
}

/// Every float parameter of a module by its dotted module path (`unet.conv_in.weight`), read
/// back from the device.
pub fn named_parameters<B: Backend, M: Module<B>>(module: &M) -> BTreeMap<String, TensorData> {
    let mut collect = Collect {
        path: Vec::new(),
        tensors: BTreeMap::new(),
    };
    module.visit(&mut collect);
    collect.tensors
}

fn dtype_name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F16 => "F16",
        Dtype::F32 => "F32",
        _ => "other",
    }
}

fn content_hash<'a>(
    config_json: &str,
    tensors: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
) -> String {
    let mut h = Sha256::new();
    h.update(FORMAT_NAME.as_bytes());
    h.update(config_json.as_bytes());
    for (name, dtype, shape, data) in tensors {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(dtype_name(dtype).as_bytes());
        h.update((shape.len() as u64).to_le_bytes());
        for &d in shape {
            h.update((d as u64).to_le_bytes());
        }
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Serialises a model (its parameters and config) to weight-file bytes.
///
/// Reads every parameter back from the device, so it is meant for native use (export).
///
/// # Errors
/// [`ModelError::InvalidInput`] when the model still carries LoRA adapters (merge them first:
/// the file holds plain weights) or a parameter is not finite.
pub fn save_weights<B: Backend>(model: &Naosd<B>, precision: StoredPrecision) -> Result<Vec<u8>> {
    save(model, precision, None)
}

/// As [`save_weights`], but only the parameters under the module path `part` (`unet`): the
/// trained part of a model whose autoencoder is pretrained third-party data. Such a file is
/// read back with [`load_trained_part`] over a model that has the rest.
///
/// # Errors
/// As [`save_weights`]; [`ModelError::InvalidInput`] when no parameter is under `part`.
pub fn save_trained_part<B: Backend>(
    model: &Naosd<B>,
    precision: StoredPrecision,
    part: &str,
) -> Result<Vec<u8>> {
    save(model, precision, Some(part))
}

fn under(name: &str, part: &str) -> bool {
    name.strip_prefix(part)
        .is_some_and(|rest| rest.starts_with('.'))
}

fn save<B: Backend>(
    model: &Naosd<B>,
    precision: StoredPrecision,
    part: Option<&str>,
) -> Result<Vec<u8>> {
    let mut tensors = named_parameters(model);
    if let Some(part) = part {
        tensors.retain(|name, _| under(name, part));
        if tensors.is_empty() {
            return Err(ModelError::InvalidInput(format!(
                "the model has no parameters under `{part}`"
            )));
        }
    }
    if let Some(name) = tensors.keys().find(|n| n.contains(".lora.")) {
        return Err(ModelError::InvalidInput(format!(
            "merge LoRA adapters before saving (found `{name}`)"
        )));
    }
    let mut encoded: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (name, data) in tensors {
        let shape = data.shape.to_vec();
        let values: Vec<f32> = data
            .convert::<f32>()
            .to_vec()
            .map_err(|e| ModelError::InvalidInput(format!("tensor `{name}`: {e:?}")))?;
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            return Err(ModelError::InvalidInput(format!(
                "tensor `{name}` holds a non-finite value ({v})"
            )));
        }
        let (dtype, bytes) = match precision {
            StoredPrecision::F16 => (
                Dtype::F16,
                values
                    .iter()
                    .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                    .collect(),
            ),
            StoredPrecision::F32 => (
                Dtype::F32,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
        };
        encoded.insert(name, (dtype, shape, bytes));
    }
    let config_json = serde_json::to_string(model.config()).expect("config serialises");
    let hash = content_hash(
        &config_json,
        encoded
            .iter()
            .map(|(n, (d, s, b))| (n.as_str(), *d, s.as_slice(), b.as_slice())),
    );
    let header = Header {
        format: FORMAT_NAME.to_string(),
        format_version: FORMAT_VERSION,
        config: model.config().clone(),
        content_hash: hash,
        trained_part: part.map(str::to_string),
    };
    let metadata = HashMap::from([(
        HEADER_KEY.to_string(),
        serde_json::to_string(&header).expect("header serialises"),
    )]);
    let views: Vec<(String, TensorView<'_>)> = encoded
        .iter()
        .map(|(n, (d, s, b))| {
            (
                n.clone(),
                TensorView::new(*d, s.clone(), b).expect("consistent view"),
            )
        })
        .collect();
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| ModelError::WeightFormat(e.to_string()))
}

/// Parses and verifies the file: format, version, config and content hash.
fn open(bytes: &[u8]) -> Result<Opened<'_>> {
    let format_err = |m: String| ModelError::WeightFormat(m);
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| format_err(e.to_string()))?;
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| format_err(e.to_string()))?;
    let header_json = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(HEADER_KEY))
        .ok_or_else(|| format_err(format!("metadata lacks `{HEADER_KEY}`")))?;
    // Format and version first, loosely: a newer version may have another header layout.
    let loose: serde_json::Value =
        serde_json::from_str(header_json).map_err(|e| format_err(format!("header: {e}")))?;
    let format = loose
        .get("format")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    if format != FORMAT_NAME {
        return Err(format_err(format!(
            "format is `{format}`, not `{FORMAT_NAME}`"
        )));
    }
    let version = loose.get("format_version").cloned().unwrap_or_default();
    if version.as_u64() != Some(u64::from(FORMAT_VERSION)) {
        return Err(ModelError::UnsupportedVersion {
            found: version.to_string(),
            supported: FORMAT_VERSION,
        });
    }
    let header: Header =
        serde_json::from_value(loose).map_err(|e| format_err(format!("header: {e}")))?;
    header.config.validate()?;
    let config_json = serde_json::to_string(&header.config).expect("config serialises");
    let mut names: Vec<String> = tensors.names().into_iter().map(str::to_string).collect();
    names.sort();
    let mut views = Vec::with_capacity(names.len());
    for name in &names {
        let view = tensors
            .tensor(name)
            .map_err(|e| format_err(e.to_string()))?;
        if !matches!(view.dtype(), Dtype::F16 | Dtype::F32) {
            return Err(format_err(format!(
                "tensor `{name}` has dtype {:?} (F16 or F32 expected)",
                view.dtype()
            )));
        }
        views.push((name.as_str(), view));
    }
    let found = content_hash(
        &config_json,
        views
            .iter()
            .map(|(n, v)| (*n, v.dtype(), v.shape(), v.data())),
    );
    if found != header.content_hash {
        return Err(ModelError::HashMismatch {
            expected: header.content_hash,
            found,
        });
    }
    Ok(Opened {
        tensors,
        config: header.config,
        content_hash: found,
        trained_part: header.trained_part,
    })
}

/// A parsed and verified weight file.
struct Opened<'a> {
    tensors: SafeTensors<'a>,
    config: ModelConfig,
    content_hash: String,
    trained_part: Option<String>,
}

/// Reads and verifies the header of a weight file without building the model.
///
/// # Errors
/// As [`load_weights`], except for architecture mismatches.
pub fn read_weight_info(bytes: &[u8]) -> Result<WeightInfo> {
    let Opened {
        tensors,
        config,
        content_hash,
        trained_part,
    } = open(bytes)?;
    let parameters = tensors
        .tensors()
        .iter()
        .map(|(_, v)| v.shape().iter().product::<usize>())
        .sum();
    Ok(WeightInfo {
        config,
        content_hash,
        tensors: tensors.len(),
        parameters,
        trained_part,
    })
}

struct Fill<'a> {
    path: Vec<String>,
    tensors: &'a SafeTensors<'a>,
    /// Only parameters under this module path are read; the others keep their values.
    part: Option<&'a str>,
    used: usize,
    error: Option<ModelError>,
}

impl Fill<'_> {
    fn values(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let view = self
            .tensors
            .tensor(name)
            .map_err(|_| ModelError::MissingTensor(name.to_string()))?;
        if view.shape() != expected {
            return Err(ModelError::ShapeMismatch {
                name: name.into(),
                expected: expected.to_vec(),
                found: view.shape().to_vec(),
            });
        }
        let data = view.data();
        Ok(match view.dtype() {
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            _ => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        })
    }
}

impl<B: Backend> ModuleMapper<B> for Fill<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        if self.error.is_some() {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let name = self.path.join(".");
        if self.part.is_some_and(|part| !under(&name, part)) {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let shape = tensor.dims();
        match self.values(&name, &shape) {
            Ok(values) => {
                self.used += 1;
                let loaded = Tensor::from_data(TensorData::new(values, shape), &tensor.device());
                // A parameter's trainability is carried by its tensor: keep it, or weights
                // loaded on an autodiff backend would silently stop training.
                let loaded = if tensor.is_require_grad() {
                    loaded.require_grad()
                } else {
                    loaded
                };
                Param::from_mapped_value(id, loaded, mapper)
            }
            Err(e) => {
                self.error = Some(e);
                Param::from_mapped_value(id, tensor, mapper)
            }
        }
    }
}

/// Builds the model a weight file describes and fills it with the file's tensors.
///
/// # Errors
/// [`ModelError::WeightFormat`] (truncated, not safetensors, missing metadata, bad config),
/// [`ModelError::UnsupportedVersion`], [`ModelError::HashMismatch`] (corruption),
/// [`ModelError::MissingTensor`] / [`ModelError::UnexpectedTensor`] /
/// [`ModelError::ShapeMismatch`] (another architecture), [`ModelError::InvalidConfig`].
pub fn load_weights<B: Backend>(bytes: &[u8], device: &B::Device) -> Result<Naosd<B>> {
    let opened = open(bytes)?;
    if let Some(part) = &opened.trained_part {
        return Err(ModelError::WeightFormat(format!(
            "the file holds only the trained `{part}`; compose it with the pretrained \
             autoencoder first (trainer-native compose)"
        )));
    }
    let model = opened.config.init::<B>(device)?;
    fill(model, &opened.tensors, None)
}

/// Reads a file written by [`save_trained_part`] into `model`, which supplies everything
/// else (the pretrained autoencoder). The file's config must be the model's.
///
/// # Errors
/// As [`load_weights`]; [`ModelError::WeightFormat`] for a whole-model file or another config.
pub fn load_trained_part<B: Backend>(bytes: &[u8], model: Naosd<B>) -> Result<Naosd<B>> {
    let opened = open(bytes)?;
    let Some(part) = &opened.trained_part else {
        return Err(ModelError::WeightFormat(
            "the file holds a whole model, not a trained part".into(),
        ));
    };
    if &opened.config != model.config() {
        return Err(ModelError::WeightFormat(format!(
            "the trained part was written for the model `{}` with another config than `{}`",
            opened.config.name,
            model.config().name
        )));
    }
    fill(model, &opened.tensors, Some(part))
}

fn fill<B: Backend>(
    model: Naosd<B>,
    tensors: &SafeTensors<'_>,
    part: Option<&str>,
) -> Result<Naosd<B>> {
    let mut fill = Fill {
        path: Vec::new(),
        tensors,
        part,
        used: 0,
        error: None,
    };
    let model = model.map(&mut fill);
    if let Some(e) = fill.error {
        return Err(e);
    }
    if fill.used != tensors.len() {
        let known = param_paths(&model);
        let extra = tensors
            .names()
            .into_iter()
            .find(|n| !known.iter().any(|k| k == n))
            .map(str::to_string)
            .unwrap_or_default();
        return Err(ModelError::UnexpectedTensor(extra));
    }
    Ok(model)
}

struct PathsOnly<'a>(&'a mut Vec<String>, &'a mut Vec<String>);

impl<B: Backend> ModuleVisitor<B> for PathsOnly<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.0.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.0.pop();
    }
    fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<B, D>>) {
        self.1.push(self.0.join("."));
    }
}

/// Dotted paths of every float parameter of a module, in visiting order.
pub fn param_paths<B: Backend, M: Module<B>>(module: &M) -> Vec<String> {
    let (mut path, mut out) = (Vec::new(), Vec::new());
    module.visit(&mut PathsOnly(&mut path, &mut out));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        NaosdOptions,
        test_backend::{TestBackend, device, max_abs_diff, randomise},
    };

    fn model() -> Naosd<TestBackend> {
        randomise(
            ModelConfig::tiny().init::<TestBackend>(&device()).unwrap(),
            |_| true,
            0.1,
        )
    }

    fn upscale(m: &Naosd<TestBackend>) -> Tensor<TestBackend, 4> {
        let lr: Vec<f32> = (0..48).map(|i| (i * 7 % 13) as f32 / 6.0 - 1.0).collect();
        let lr = Tensor::from_data(TensorData::new(lr, [1, 3, 4, 4]), &device());
        m.upscale(lr, &NaosdOptions::default()).unwrap()
    }

    #[test]
    fn f32_round_trip_is_exact() {
        let m = model();
        let bytes = save_weights(&m, StoredPrecision::F32).unwrap();
        let loaded = load_weights::<TestBackend>(&bytes, &device()).unwrap();
        assert_eq!(loaded.config(), m.config());
        assert_eq!(max_abs_diff(upscale(&loaded), upscale(&m)), 0.0);
        assert!(
            save_weights(&loaded, StoredPrecision::F32).unwrap() == bytes,
            "re-saved file differs"
        );
    }

    #[test]
    fn f16_round_trip_is_close_and_stable() {
        let m = model();
        let bytes = save_weights(&m, StoredPrecision::F16).unwrap();
        let f32_bytes = save_weights(&m, StoredPrecision::F32).unwrap();
        assert!(
            bytes.len() < f32_bytes.len() * 6 / 10,
            "f16 file should be about half the size"
        );
        let loaded = load_weights::<TestBackend>(&bytes, &device()).unwrap();
        assert!(max_abs_diff(upscale(&loaded), upscale(&m)) < 2e-2);
        // Loading and saving again reproduces the file byte for byte.
        assert!(
            save_weights(&loaded, StoredPrecision::F16).unwrap() == bytes,
            "re-saved file differs"
        );
        let info = read_weight_info(&bytes).unwrap();
        assert_eq!(info.parameters, m.num_params());
        assert_eq!(info.config, ModelConfig::tiny());
    }

    #[test]
    fn every_truncation_is_a_typed_error() {
        let bytes = save_weights(&model(), StoredPrecision::F16).unwrap();
        for len in [0, 1, 7, 8, 9, 100, bytes.len() / 2, bytes.len() - 1] {
            let err = load_weights::<TestBackend>(&bytes[..len], &device()).unwrap_err();
            assert!(
                matches!(err, ModelError::WeightFormat(_)),
                "len {len}: {err:?}"
            );
        }
        assert!(
            load_weights::<TestBackend>(b"\x89PNG\r\n\x1a\nnot weights at all", &device()).is_err()
        );
    }

    #[test]
    fn a_flipped_bit_in_any_tensor_is_caught_by_the_hash() {
        let bytes = save_weights(&model(), StoredPrecision::F16).unwrap();
        for pos in [bytes.len() - 1, bytes.len() - 1000, bytes.len() / 2 + 3] {
            let mut corrupted = bytes.clone();
            corrupted[pos] ^= 0x10;
            let err = load_weights::<TestBackend>(&corrupted, &device()).unwrap_err();
            assert!(
                matches!(
                    err,
                    ModelError::HashMismatch { .. } | ModelError::WeightFormat(_)
                ),
                "{err:?}"
            );
        }
    }

    /// Rewrites the header of a valid file (and re-hashes when asked) to forge defects.
    fn forge(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value), rehash: bool) -> Vec<u8> {
        let (_, meta) = SafeTensors::read_metadata(bytes).unwrap();
        let st = SafeTensors::deserialize(bytes).unwrap();
        let mut header: serde_json::Value =
            serde_json::from_str(&meta.metadata().as_ref().unwrap()[HEADER_KEY]).unwrap();
        edit(&mut header);
        let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        names.sort();
        let views: Vec<_> = names
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        if rehash {
            let config: ModelConfig = serde_json::from_value(header["config"].clone()).unwrap();
            let config_json = serde_json::to_string(&config).unwrap();
            let hash = content_hash(
                &config_json,
                views
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())),
            );
            header["content_hash"] = hash.into();
        }
        let meta = HashMap::from([(HEADER_KEY.to_string(), header.to_string())]);
        safetensors::serialize(views, Some(meta)).unwrap()
    }

    fn set_config(header: &mut serde_json::Value, edit: impl FnOnce(&mut ModelConfig)) {
        let mut config: ModelConfig = serde_json::from_value(header["config"].clone()).unwrap();
        edit(&mut config);
        header["config"] = serde_json::to_value(config).unwrap();
    }

    fn load(bytes: &[u8]) -> Result<Naosd<TestBackend>> {
        load_weights::<TestBackend>(bytes, &device())
    }

    #[test]
    fn wrong_version_and_wrong_format_are_reported() {
        let bytes = save_weights(&model(), StoredPrecision::F16).unwrap();
        let v2 = forge(&bytes, |h| h["format_version"] = 2.into(), false);
        assert!(matches!(
            load(&v2),
            Err(ModelError::UnsupportedVersion { .. })
        ));
        let other = forge(&bytes, |h| h["format"] = "something-else".into(), false);
        assert!(matches!(load(&other), Err(ModelError::WeightFormat(_))));
        let unhashed = forge(
            &bytes,
            |h| {
                h.as_object_mut().unwrap().remove("content_hash");
            },
            false,
        );
        assert!(matches!(load(&unhashed), Err(ModelError::WeightFormat(_))));
        // A config edited without re-hashing: the hash covers the config too.
        let edited = forge(&bytes, |h| set_config(h, |c| c.latent_scale = 0.5), false);
        assert!(matches!(
            load(&edited),
            Err(ModelError::HashMismatch { .. })
        ));
    }

    #[test]
    fn another_architecture_is_reported() {
        let bytes = save_weights(&model(), StoredPrecision::F16).unwrap();
        // Same tensors, config claiming wider UNet channels: a shape mismatch.
        let wider = forge(
            &bytes,
            |h| set_config(h, |c| c.unet.channels = vec![16, 48]),
            true,
        );
        assert!(matches!(
            load(&wider),
            Err(ModelError::ShapeMismatch { .. })
        ));
        // A config with more blocks: tensors are missing.
        let deeper = forge(
            &bytes,
            |h| set_config(h, |c| c.unet.blocks_per_level = 2),
            true,
        );
        assert!(matches!(load(&deeper), Err(ModelError::MissingTensor(_))));
        // A file with a tensor the model lacks (correctly hashed).
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut header: serde_json::Value =
            serde_json::from_str(&meta.metadata().as_ref().unwrap()[HEADER_KEY]).unwrap();
        let extra = [0u8; 4];
        let mut views: Vec<(String, TensorView<'_>)> = st
            .names()
            .into_iter()
            .map(|n| (n.to_string(), st.tensor(n).unwrap()))
            .collect();
        views.push((
            "unet.extra.weight".into(),
            TensorView::new(Dtype::F32, vec![1], &extra).unwrap(),
        ));
        views.sort_by(|a, b| a.0.cmp(&b.0));
        let config_json = serde_json::to_string(&ModelConfig::tiny()).unwrap();
        header["content_hash"] = content_hash(
            &config_json,
            views
                .iter()
                .map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())),
        )
        .into();
        let meta = HashMap::from([(HEADER_KEY.to_string(), header.to_string())]);
        let with_extra = safetensors::serialize(views, Some(meta)).unwrap();
        assert!(matches!(
            load(&with_extra),
            Err(ModelError::UnexpectedTensor(name)) if name == "unet.extra.weight"
        ));
    }

    #[test]
    fn trained_part_round_trips_over_a_model_with_the_rest() {
        let m = model();
        let bytes = save_trained_part(&m, StoredPrecision::F32, "unet").unwrap();
        let info = read_weight_info(&bytes).unwrap();
        assert_eq!(info.tensors, param_paths(&m.unet).len());
        assert!(matches!(
            load_weights::<TestBackend>(&bytes, &device()),
            Err(ModelError::WeightFormat(m)) if m.contains("compose")
        ));
        let mut rest = ModelConfig::tiny().init::<TestBackend>(&device()).unwrap();
        rest.autoencoder = m.autoencoder.clone();
        let loaded = load_trained_part(&bytes, rest).unwrap();
        assert_eq!(max_abs_diff(upscale(&loaded), upscale(&m)), 0.0);
        let whole = save_weights(&m, StoredPrecision::F32).unwrap();
        assert!(load_trained_part(&whole, model()).is_err());
        let mut other = ModelConfig::tiny();
        other.unet.blocks_per_level = 2;
        let other = other.init::<TestBackend>(&device()).unwrap();
        assert!(load_trained_part(&bytes, other).is_err());
        assert!(save_trained_part(&m, StoredPrecision::F16, "nothing").is_err());
    }

    #[test]
    fn loaded_weights_stay_trainable_on_autodiff_backends() {
        type Ad = burn::backend::Autodiff<TestBackend>;
        let bytes = save_weights(&model(), StoredPrecision::F32).unwrap();
        let loaded = load_weights::<Ad>(&bytes, &device()).unwrap();
        assert!(loaded.unet.conv_in.weight.val().is_require_grad());
        assert!(
            loaded
                .autoencoder
                .encoder
                .conv_in
                .weight
                .val()
                .is_require_grad()
        );
    }

    #[test]
    fn unmerged_lora_and_non_finite_weights_are_refused() {
        let m = model().attach_unet_lora(&crate::LoraConfig::new(), &device());
        assert!(matches!(
            save_weights(&m, StoredPrecision::F16),
            Err(ModelError::InvalidInput(_))
        ));
        let nan = randomise(model(), |p| p == "unet.conv_out.bias", 0.1);
        struct Poison;
        impl ModuleMapper<TestBackend> for Poison {
            fn map_float<const D: usize>(
                &mut self,
                p: Param<Tensor<TestBackend, D>>,
            ) -> Param<Tensor<TestBackend, D>> {
                let (id, t, mapper) = p.consume();
                Param::from_mapped_value(id, t.div_scalar(0.0), mapper)
            }
        }
        let nan = nan.map(&mut Poison);
        assert!(matches!(
            save_weights(&nan, StoredPrecision::F16),
            Err(ModelError::InvalidInput(_))
        ));
    }
}
