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
//!
//! Version 2 adds an optional **detail range** (`detail` = `{part, default}` in the header):
//! the parameters under `part` are stored twice, at the fidelity end (their own names) and at
//! the detail end (`detail.` + name), and the model is used at any point between them
//! ([`DetailRange`]; `default` unless the caller picks one). Two fine-tunings of one start,
//! a fidelity and a perceptual one, so become one model with a detail knob (network
//! interpolation, ESRGAN: Wang et al. 2018). Files without a range are written as version 1,
//! byte for byte as before.

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
/// Newest version of the layout described above (bumped on any incompatible change); every
/// version from 1 up to it is read.
pub const FORMAT_VERSION: u32 = 2;
/// The version of files without a detail range (nothing of version 2 in them).
const PLAIN_VERSION: u32 = 1;
/// Name prefix of the detail end's tensors; no module path starts with it.
const DETAIL_PREFIX: &str = "detail.";

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
    /// The recommended point of the file's detail range ([`DetailRange`]), if it has one.
    pub detail_default: Option<f32>,
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
    /// Version 2: the file holds a detail range ([`DetailRange`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<DetailHeader>,
}

/// The header's description of a detail range.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct DetailHeader {
    /// The module path whose parameters differ between the two ends (`unet`).
    part: String,
    /// The recommended point, 0 (fidelity end) ..= 1 (detail end).
    default: f32,
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

/// The model's parameters, or those under `part`, refusing unmerged LoRA adapters.
fn part_tensors<B: Backend>(
    model: &Naosd<B>,
    part: Option<&str>,
) -> Result<BTreeMap<String, TensorData>> {
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
    Ok(tensors)
}

fn save<B: Backend>(
    model: &Naosd<B>,
    precision: StoredPrecision,
    part: Option<&str>,
) -> Result<Vec<u8>> {
    let tensors = part_tensors(model, part)?;
    serialize(model.config(), tensors, precision, part, None)
}

/// Writes a file with a detail range: `low` (the fidelity end) as the model, and the
/// parameters of `high` (the detail end) under `detail_part` beside it, to be used at
/// `default` unless the reader picks another point ([`DetailRange`]). With `trained_part`,
/// only that part is stored (as [`save_trained_part`]); it must contain `detail_part`.
///
/// # Errors
/// [`ModelError::InvalidInput`] for two different architectures, a `default` outside
/// 0..=1, ends that differ outside `detail_part`, and as [`save_weights`].
pub fn save_detail_range<B: Backend>(
    low: &Naosd<B>,
    high: &Naosd<B>,
    default: f32,
    detail_part: &str,
    trained_part: Option<&str>,
    precision: StoredPrecision,
) -> Result<Vec<u8>> {
    check_detail(default)?;
    if low.config() != high.config() {
        return Err(ModelError::InvalidInput(format!(
            "the two ends of a detail range must be one architecture (`{}` vs `{}` differ)",
            low.config().name,
            high.config().name
        )));
    }
    if let Some(t) = trained_part
        && t != detail_part
        && !under(detail_part, t)
    {
        return Err(ModelError::InvalidInput(format!(
            "the detail part `{detail_part}` is not inside the stored part `{t}`"
        )));
    }
    let mut tensors = part_tensors(low, trained_part)?;
    let high = part_tensors(high, trained_part)?;
    let mut detail = 0;
    for (name, data) in high {
        if under(&name, detail_part) {
            tensors.insert(format!("{DETAIL_PREFIX}{name}"), data);
            detail += 1;
        } else if !tensors
            .get(&name)
            .is_some_and(|low| same_values(low, &data))
        {
            return Err(ModelError::InvalidInput(format!(
                "the two ends differ at `{name}`, outside the detail part `{detail_part}`"
            )));
        }
    }
    if detail == 0 {
        return Err(ModelError::InvalidInput(format!(
            "the model has no parameters under `{detail_part}`"
        )));
    }
    let header = DetailHeader {
        part: detail_part.to_string(),
        default,
    };
    serialize(low.config(), tensors, precision, trained_part, Some(header))
}

fn same_values(a: &TensorData, b: &TensorData) -> bool {
    a.shape == b.shape && matches!((a.to_vec::<f32>(), b.to_vec::<f32>()), (Ok(a), Ok(b)) if a == b)
}

fn check_detail(detail: f32) -> Result<()> {
    if (0.0..=1.0).contains(&detail) {
        Ok(())
    } else {
        Err(ModelError::InvalidInput(format!(
            "detail must be within 0..=1 (0 = the fidelity end, 1 = the detail end), got {detail}"
        )))
    }
}

fn serialize(
    config: &ModelConfig,
    tensors: BTreeMap<String, TensorData>,
    precision: StoredPrecision,
    trained_part: Option<&str>,
    detail: Option<DetailHeader>,
) -> Result<Vec<u8>> {
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
    let config_json = serde_json::to_string(config).expect("config serialises");
    let hash = content_hash(
        &config_json,
        encoded
            .iter()
            .map(|(n, (d, s, b))| (n.as_str(), *d, s.as_slice(), b.as_slice())),
    );
    let header = Header {
        format: FORMAT_NAME.to_string(),
        format_version: if detail.is_some() {
            FORMAT_VERSION
        } else {
            PLAIN_VERSION
        },
        config: config.clone(),
        content_hash: hash,
        trained_part: trained_part.map(str::to_string),
        detail,
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
    if !version
        .as_u64()
        .is_some_and(|v| (1..=u64::from(FORMAT_VERSION)).contains(&v))
    {
        return Err(ModelError::UnsupportedVersion {
            found: version.to_string(),
            supported: FORMAT_VERSION,
        });
    }
    let header: Header =
        serde_json::from_value(loose).map_err(|e| format_err(format!("header: {e}")))?;
    header.config.validate()?;
    if let Some(detail) = &header.detail {
        check_detail(detail.default).map_err(|e| format_err(format!("header: {e}")))?;
    }
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
        detail: header.detail,
    })
}

/// A parsed and verified weight file.
struct Opened<'a> {
    tensors: SafeTensors<'a>,
    config: ModelConfig,
    content_hash: String,
    trained_part: Option<String>,
    detail: Option<DetailHeader>,
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
        detail,
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
        detail_default: detail.map(|d| d.default),
    })
}

/// A float tensor of the file as f32 values, checked against the shape the model needs.
fn stored_values(tensors: &SafeTensors<'_>, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
    let view = tensors
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

/// The mapper behind [`replace_parameters`]: tracks each parameter's dotted path.
struct ByPath<F, E> {
    path: Vec<String>,
    values: F,
    replaced: usize,
    error: Option<E>,
}

impl<B, F, E> ModuleMapper<B> for ByPath<F, E>
where
    B: Backend,
    F: FnMut(&str, &[usize]) -> std::result::Result<Option<TensorData>, E>,
{
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
        match (self.values)(&self.path.join("."), &tensor.dims()) {
            Ok(Some(data)) => {
                self.replaced += 1;
                let loaded = Tensor::from_data(data, &tensor.device());
                // A parameter's trainability is carried by its tensor: keep it, or weights
                // loaded on an autodiff backend would silently stop training.
                let loaded = if tensor.is_require_grad() {
                    loaded.require_grad()
                } else {
                    loaded
                };
                Param::from_mapped_value(id, loaded, mapper)
            }
            Ok(None) => Param::from_mapped_value(id, tensor, mapper),
            Err(e) => {
                self.error = Some(e);
                Param::from_mapped_value(id, tensor, mapper)
            }
        }
    }
}

/// Replaces float parameters of `module` by their dotted path (`unet.conv_in.weight`):
/// `values(path, shape)` gives the new values (of that shape), or `None` to keep the
/// parameter. Trainability is kept. Returns the module and how many parameters were
/// replaced; the first error stops the replacing and is returned.
///
/// # Errors
/// The first error `values` returns.
pub fn replace_parameters<B, M, E>(
    module: M,
    values: impl FnMut(&str, &[usize]) -> std::result::Result<Option<TensorData>, E>,
) -> std::result::Result<(M, usize), E>
where
    B: Backend,
    M: Module<B>,
{
    let mut by_path = ByPath {
        path: Vec::new(),
        values,
        replaced: 0,
        error: None,
    };
    let module = module.map(&mut by_path);
    match by_path.error {
        Some(e) => Err(e),
        None => Ok((module, by_path.replaced)),
    }
}

/// A file's detail range: the parameters under one module path at the fidelity end (0) and
/// at the detail end (1), and the point the file recommends. [`Self::apply`] puts a model at
/// any point between them; [`load_weights`] and [`load_trained_part`] load at the default.
#[derive(Debug, Clone)]
pub struct DetailRange {
    part: String,
    default: f32,
    /// Path -> (fidelity end, detail end), f32 values of the parameter's shape.
    ends: BTreeMap<String, (TensorData, TensorData)>,
}

impl DetailRange {
    fn read(tensors: &SafeTensors<'_>, header: &DetailHeader) -> Result<Self> {
        let mut ends = BTreeMap::new();
        for name in tensors.names() {
            let Some(target) = name.strip_prefix(DETAIL_PREFIX) else {
                continue;
            };
            if !under(target, &header.part) {
                return Err(ModelError::UnexpectedTensor(name.to_string()));
            }
            let low = tensors
                .tensor(target)
                .map_err(|_| ModelError::MissingTensor(target.to_string()))?;
            let shape = low.shape().to_vec();
            let low = stored_values(tensors, target, &shape)?;
            let high = stored_values(tensors, name, &shape)?;
            ends.insert(
                target.to_string(),
                (
                    TensorData::new(low, shape.clone()),
                    TensorData::new(high, shape),
                ),
            );
        }
        if let Some(missing) = tensors
            .names()
            .into_iter()
            .find(|n| under(n, &header.part) && !ends.contains_key(*n))
        {
            return Err(ModelError::MissingTensor(format!(
                "{DETAIL_PREFIX}{missing}"
            )));
        }
        Ok(Self {
            part: header.part.clone(),
            default: header.default,
            ends,
        })
    }

    /// The point the file recommends (0 = fidelity end, 1 = detail end).
    pub fn default_detail(&self) -> f32 {
        self.default
    }

    /// The module path whose parameters the range moves (`unet`).
    pub fn part(&self) -> &str {
        &self.part
    }

    /// `model` with every parameter of the range at `detail` of the way from the fidelity end
    /// to the detail end (`low + detail (high - low)`; the ends themselves exactly).
    ///
    /// # Errors
    /// [`ModelError::InvalidInput`] for `detail` outside 0..=1 (NaN included);
    /// [`ModelError::MissingTensor`] / [`ModelError::ShapeMismatch`] for a model of another
    /// architecture.
    pub fn apply<B: Backend>(&self, model: Naosd<B>, detail: f32) -> Result<Naosd<B>> {
        check_detail(detail)?;
        let (model, replaced) = replace_parameters(model, |path, shape| {
            if !under(path, &self.part) {
                return Ok(None);
            }
            let (low, high) = self
                .ends
                .get(path)
                .ok_or_else(|| ModelError::MissingTensor(format!("{DETAIL_PREFIX}{path}")))?;
            if low.shape.as_slice() != shape {
                return Err(ModelError::ShapeMismatch {
                    name: path.into(),
                    expected: shape.to_vec(),
                    found: low.shape.to_vec(),
                });
            }
            if detail == 0.0 {
                return Ok(Some(low.clone()));
            }
            if detail == 1.0 {
                return Ok(Some(high.clone()));
            }
            let (low, high) = (low.as_slice::<f32>(), high.as_slice::<f32>());
            let (low, high) = low
                .and_then(|l| high.map(|h| (l, h)))
                .map_err(|e| ModelError::InvalidInput(format!("tensor `{path}`: {e:?}")))?;
            let mixed = low
                .iter()
                .zip(high)
                .map(|(l, h)| l + detail * (h - l))
                .collect();
            Ok(Some(TensorData::new::<f32, _>(mixed, shape.to_vec())))
        })?;
        if replaced != self.ends.len() {
            return Err(ModelError::UnexpectedTensor(format!(
                "{DETAIL_PREFIX}{}: {} of the range's {} tensors fit the model",
                self.part,
                replaced,
                self.ends.len()
            )));
        }
        Ok(model)
    }
}

/// The detail range of a weight file, if it has one (verifying the file first).
///
/// # Errors
/// As [`read_weight_info`]; a range whose two ends do not match tensor for tensor.
pub fn read_detail_range(bytes: &[u8]) -> Result<Option<DetailRange>> {
    let opened = open(bytes)?;
    opened
        .detail
        .as_ref()
        .map(|header| DetailRange::read(&opened.tensors, header))
        .transpose()
}

/// Builds the model a weight file describes and fills it with the file's tensors.
///
/// # Errors
/// [`ModelError::WeightFormat`] (truncated, not safetensors, missing metadata, bad config),
/// [`ModelError::UnsupportedVersion`], [`ModelError::HashMismatch`] (corruption),
/// [`ModelError::MissingTensor`] / [`ModelError::UnexpectedTensor`] /
/// [`ModelError::ShapeMismatch`] (another architecture), [`ModelError::InvalidConfig`].
pub fn load_weights<B: Backend>(bytes: &[u8], device: &B::Device) -> Result<Naosd<B>> {
    Ok(load_weights_with_range(bytes, device)?.0)
}

/// As [`load_weights`], and the file's detail range, read once with the model (for a caller
/// that moves the model along it).
///
/// # Errors
/// As [`load_weights`].
pub fn load_weights_with_range<B: Backend>(
    bytes: &[u8],
    device: &B::Device,
) -> Result<(Naosd<B>, Option<DetailRange>)> {
    let opened = open(bytes)?;
    if let Some(part) = &opened.trained_part {
        return Err(ModelError::WeightFormat(format!(
            "the file holds only the trained `{part}`; compose it with the pretrained \
             autoencoder first (trainer-native compose)"
        )));
    }
    let model = opened.config.init::<B>(device)?;
    fill(model, &opened, None)
}

/// Reads a file written by [`save_trained_part`] into `model`, which supplies everything
/// else (the pretrained autoencoder). The file's config must be the model's.
///
/// # Errors
/// As [`load_weights`]; [`ModelError::WeightFormat`] for a whole-model file or another config.
pub fn load_trained_part<B: Backend>(bytes: &[u8], model: Naosd<B>) -> Result<Naosd<B>> {
    Ok(load_trained_part_with_range(bytes, model)?.0)
}

/// As [`load_trained_part`], and the file's detail range, read once with the model.
///
/// # Errors
/// As [`load_trained_part`].
pub fn load_trained_part_with_range<B: Backend>(
    bytes: &[u8],
    model: Naosd<B>,
) -> Result<(Naosd<B>, Option<DetailRange>)> {
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
    fill(model, &opened, Some(part))
}

/// Fills the model's parameters (those under `part`) from the file and, when the file has a
/// detail range, puts the model at the range's default; returns the range beside it.
fn fill<B: Backend>(
    model: Naosd<B>,
    opened: &Opened<'_>,
    part: Option<&str>,
) -> Result<(Naosd<B>, Option<DetailRange>)> {
    let tensors = &opened.tensors;
    let (model, used) = replace_parameters(model, |name, shape| {
        if part.is_some_and(|part| !under(name, part)) {
            return Ok(None);
        }
        let values = stored_values(tensors, name, shape)?;
        Ok(Some(TensorData::new(values, shape.to_vec())))
    })?;
    let range = opened
        .detail
        .as_ref()
        .map(|header| DetailRange::read(tensors, header))
        .transpose()?;
    let in_range = range.as_ref().map_or(0, |r| r.ends.len());
    if used + in_range != tensors.len() {
        let known = param_paths(&model);
        let extra = tensors
            .names()
            .into_iter()
            .find(|n| !known.iter().any(|k| k == n) && !n.starts_with(DETAIL_PREFIX))
            .or_else(|| {
                // Detail tensors without a range header.
                tensors
                    .names()
                    .into_iter()
                    .find(|n| n.starts_with(DETAIL_PREFIX))
            })
            .map(str::to_string)
            .unwrap_or_default();
        return Err(ModelError::UnexpectedTensor(extra));
    }
    let model = match &range {
        Some(range) => range.apply(model, range.default)?,
        None => model,
    };
    Ok((model, range))
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
        let newer = forge(
            &bytes,
            |h| h["format_version"] = (FORMAT_VERSION + 1).into(),
            false,
        );
        assert!(matches!(
            load(&newer),
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

    /// A fidelity end and a detail end that differ in the UNet only.
    fn two_ends() -> (Naosd<TestBackend>, Naosd<TestBackend>) {
        let low = model();
        let high = randomise(low.clone(), |p| under(p, "unet"), 0.1);
        (low, high)
    }

    #[test]
    fn a_detail_range_puts_the_model_anywhere_between_its_ends() {
        let (low, high) = two_ends();
        let bytes =
            save_detail_range(&low, &high, 0.25, "unet", None, StoredPrecision::F32).unwrap();
        let info = read_weight_info(&bytes).unwrap();
        assert_eq!(info.detail_default, Some(0.25));
        assert_eq!(
            info.tensors,
            param_paths(&low).len() + param_paths(&low.unet).len()
        );
        let range = read_detail_range(&bytes).unwrap().expect("a range");
        assert_eq!((range.default_detail(), range.part()), (0.25, "unet"));
        // The ends are the two models, exactly.
        let loaded = load_weights::<TestBackend>(&bytes, &device()).unwrap();
        let at = |d: f32| range.apply(loaded.clone(), d).unwrap();
        assert_eq!(max_abs_diff(upscale(&at(0.0)), upscale(&low)), 0.0);
        assert_eq!(max_abs_diff(upscale(&at(1.0)), upscale(&high)), 0.0);
        // Loading gives the default point; every parameter is `low + d (high - low)`.
        let (l, h, m) = (
            named_parameters(&low),
            named_parameters(&high),
            named_parameters(&loaded),
        );
        for (name, mid) in &m {
            let (l, h) = (
                l[name].to_vec::<f32>().unwrap(),
                h[name].to_vec::<f32>().unwrap(),
            );
            for ((mid, l), h) in mid.to_vec::<f32>().unwrap().iter().zip(&l).zip(&h) {
                assert!((mid - (l + 0.25 * (h - l))).abs() <= 1e-6, "{name}");
            }
        }
        assert!(max_abs_diff(upscale(&loaded), upscale(&low)) > 1e-3);
        assert!(max_abs_diff(upscale(&at(0.5)), upscale(&loaded)) > 1e-4);
        // Moving on from any point is the same as from the file's.
        assert_eq!(
            max_abs_diff(
                upscale(&range.apply(at(0.9), 0.5).unwrap()),
                upscale(&at(0.5))
            ),
            0.0
        );
        for bad in [-0.1, 1.5, f32::NAN] {
            assert!(matches!(
                range.apply(loaded.clone(), bad),
                Err(ModelError::InvalidInput(m)) if m.contains("0..=1")
            ));
        }
        // Files without a range are still version 1, byte for byte, and have no range.
        let plain = save_weights(&low, StoredPrecision::F32).unwrap();
        assert!(read_detail_range(&plain).unwrap().is_none());
        assert_eq!(read_weight_info(&plain).unwrap().detail_default, None);
        let (_, meta) = SafeTensors::read_metadata(&plain).unwrap();
        let header: serde_json::Value =
            serde_json::from_str(&meta.metadata().as_ref().unwrap()[HEADER_KEY]).unwrap();
        assert_eq!(header["format_version"], 1);
        assert!(header.get("detail").is_none());
    }

    #[test]
    fn a_trained_part_with_a_detail_range_composes_at_its_default() {
        let (low, high) = two_ends();
        let bytes = save_detail_range(&low, &high, 0.6, "unet", Some("unet"), StoredPrecision::F16)
            .unwrap();
        assert_eq!(
            read_weight_info(&bytes).unwrap().tensors,
            2 * param_paths(&low.unet).len()
        );
        let whole =
            save_detail_range(&low, &high, 0.6, "unet", None, StoredPrecision::F16).unwrap();
        let direct = load_weights::<TestBackend>(&whole, &device()).unwrap();
        let mut rest = ModelConfig::tiny().init::<TestBackend>(&device()).unwrap();
        rest.autoencoder = direct.autoencoder.clone();
        let composed = load_trained_part(&bytes, rest).unwrap();
        assert_eq!(max_abs_diff(upscale(&composed), upscale(&direct)), 0.0);
    }

    #[test]
    fn bad_detail_ranges_are_refused() {
        let (low, high) = two_ends();
        let save = |low: &Naosd<TestBackend>, high: &Naosd<TestBackend>, d: f32, part: &str| {
            save_detail_range(low, high, d, part, None, StoredPrecision::F32)
        };
        assert!(matches!(
            save(&low, &high, 1.2, "unet"),
            Err(ModelError::InvalidInput(_))
        ));
        // Ends that differ outside the range would be silently merged: refused.
        let wider = randomise(
            high.clone(),
            |p| p == "autoencoder.encoder.conv_in.bias",
            0.1,
        );
        assert!(matches!(
            save(&low, &wider, 0.5, "unet"),
            Err(ModelError::InvalidInput(m)) if m.contains("outside")
        ));
        assert!(save(&low, &high, 0.5, "nothing").is_err());
        let mut other = ModelConfig::tiny();
        other.unet.blocks_per_level = 2;
        let other = other.init::<TestBackend>(&device()).unwrap();
        assert!(save(&low, &other, 0.5, "unet").is_err());
        assert!(
            save_detail_range(
                &low,
                &high,
                0.5,
                "unet",
                Some("autoencoder"),
                StoredPrecision::F32
            )
            .is_err()
        );
        let bytes = save(&low, &high, 0.5, "unet").unwrap();
        // A default outside 0..=1, re-hashed or not: a format error.
        let forged = forge(&bytes, |h| h["detail"]["default"] = 3.0.into(), true);
        assert!(matches!(load(&forged), Err(ModelError::WeightFormat(m)) if m.contains("0..=1")));
        // A range header over the wrong part: its tensors are unexpected.
        let wrong = forge(&bytes, |h| h["detail"]["part"] = "autoencoder".into(), true);
        assert!(load(&wrong).is_err());
        // Detail tensors without the header (a v1 reader's view): unexpected tensors.
        let headless = forge(
            &bytes,
            |h| {
                h.as_object_mut().unwrap().remove("detail");
            },
            true,
        );
        assert!(matches!(
            load(&headless),
            Err(ModelError::UnexpectedTensor(n)) if n.starts_with("detail.")
        ));
        // A newer version than this reader knows.
        let v3 = forge(&bytes, |h| h["format_version"] = 3.into(), false);
        assert!(matches!(
            load(&v3),
            Err(ModelError::UnsupportedVersion { .. })
        ));
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
