//! Stage 1b end to end with the `tiny` preset: stage 1a, then NAOSD on degraded inputs. The
//! UNet's latent loss decreases, the decoder stays frozen, validation reports SR and bicubic PSNR, and the
//! output loads and upscales.

use std::path::Path;

use crate::serial;
use integration_tests::{run_log, scratch_dir, synthetic_image};
use model::{NaosdOptions, load_weights};
use trainer_native::{
    degrade::DegradationConfig,
    loss::discriminator::DiscriminatorConfig,
    stages::{
        autoencoder::{self, AutoencoderConfig, AutoencoderLoss},
        naosd::{self, NaosdConfig, NaosdLoss},
    },
    train::{RunLimits, TrainOptions},
};

type Cpu = burn::backend::Flex;

fn options(steps: usize, lr: f64) -> TrainOptions {
    TrainOptions {
        steps,
        batch: 4,
        accumulate: 1,
        lr,
        warmup_steps: 2,
        weight_decay: 0.01,
        grad_clip: 1.0,
        ema_decay: 0.9,
        seed: 3,
        checkpoint_every: 10,
        validate_every: steps,
        keep_checkpoints: 1,
        prefetch: 2,
        threads: 1,
    }
}

/// Six generated images of different sizes under `root/data`.
fn data_dir(root: &Path) -> std::path::PathBuf {
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..6u32 {
        synthetic_image(48 + 4 * i, 40 + 4 * i)
            .save(data.join(format!("img{i}.png")))
            .unwrap();
    }
    data
}

#[test]
fn naosd_stage_trains_from_the_autoencoder() {
    let _serial = serial();
    let root = scratch_dir("naosd");
    let data = data_dir(&root);
    let device = Default::default();
    let ae_config = AutoencoderConfig {
        preset: "tiny".into(),
        data: data.clone(),
        validation: None,
        crop: 32,
        train: options(40, 3e-3),
        loss: AutoencoderLoss::default(),
    };
    let ae_weights = autoencoder::run::<Cpu>(
        ae_config,
        &root.join("ae"),
        RunLimits::default(),
        std::slice::from_ref(&device),
    )
    .unwrap();

    let config = NaosdConfig {
        init: ae_weights.clone(),
        data: data.clone(),
        validation: Some(data.clone()),
        crop: 32,
        train_encoder: true,
        // Both LR kinds in one run.
        bicubic_fraction: 0.5,
        validation_bicubic: false,
        validation_side: 256,
        t_add: 250,
        t_diff: 100,
        train: options(60, 4e-3),
        loss: NaosdLoss::default(),
        degradation: DegradationConfig::default(),
        discriminator: DiscriminatorConfig {
            channels: vec![8, 16, 16],
        },
    };
    let run_dir = root.join("naosd");
    let out = naosd::run::<Cpu>(
        config,
        &run_dir,
        RunLimits::default(),
        std::slice::from_ref(&device),
    )
    .unwrap();

    let entries = run_log(&run_dir);
    // The UNet's objective: z0 against the clean latent of the frozen stage-1a encoder. (The SR
    // pixel loss of this tiny, briefly trained autoencoder sits at its reconstruction floor, so
    // it cannot show learning here.) Measured: 0.41 -> 0.17 over these 60 steps.
    let latent: Vec<f64> = entries
        .iter()
        .filter_map(|v| v.get("latent_mse").and_then(|x| x.as_f64()))
        .collect();
    assert_eq!(latent.len(), 60);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&latent[..10]), mean(&latent[50..]));
    assert!(
        last < 0.7 * first,
        "latent MSE did not decrease: {first:.4} -> {last:.4}"
    );
    let validation = entries
        .iter()
        .find(|v| v.get("validation").is_some())
        .expect("a validation entry");
    for key in ["val_psnr_y", "val_ssim_y", "val_psnr_y_bicubic"] {
        assert!(validation[key].as_f64().unwrap().is_finite(), "{key}");
    }
    assert!(run_dir.join("discriminator.bin").exists());

    // The decoder is frozen: identical to stage 1a's.
    let before = load_weights::<Cpu>(&std::fs::read(&ae_weights).unwrap(), &device).unwrap();
    let after = load_weights::<Cpu>(&std::fs::read(&out).unwrap(), &device).unwrap();
    let w = |m: &model::Naosd<Cpu>| m.autoencoder.decoder.conv_out.weight.val();
    let diff: f32 = (w(&before) - w(&after)).abs().max().into_scalar();
    assert_eq!(diff, 0.0, "decoder changed during NAOSD training");
    let enc = |m: &model::Naosd<Cpu>| m.autoencoder.encoder.conv_in.weight.val();
    let moved: f32 = (enc(&before) - enc(&after)).abs().max().into_scalar();
    assert!(moved > 0.0, "the encoder must keep training");

    let lr = trainer_native::image_io::rgb_to_tensor::<Cpu>(&synthetic_image(9, 7), &device);
    let sr = after.upscale(lr, &NaosdOptions::default()).unwrap();
    assert_eq!(sr.dims(), [1, 3, 28, 36]);
}

#[test]
fn shipped_configs_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let ae: AutoencoderConfig =
        trainer_native::read_toml(&root.join("autoencoder-tiny.toml")).unwrap();
    assert_eq!(ae.preset, "tiny");
    for preset in ["taef2", "tiny"] {
        let naosd: NaosdConfig =
            trainer_native::read_toml(&root.join(format!("naosd-{preset}.toml"))).unwrap();
        assert_eq!((naosd.t_add, naosd.t_diff), (250, 100));
        naosd.degradation.validate().unwrap();
    }
    let taef2: NaosdConfig = trainer_native::read_toml(&root.join("naosd-taef2.toml")).unwrap();
    assert!(!taef2.train_encoder, "the pretrained encoder stays frozen");
    let gdpo: trainer_native::stages::gdpo::GdpoConfig =
        trainer_native::read_toml(&root.join("gdpo-tiny.toml")).unwrap();
    assert_eq!((gdpo.group, gdpo.omega, gdpo.lora.rank), (6, 5000.0, 4));
    assert!(gdpo.reward.detail.discriminator.is_some() && gdpo.reward.detail.nss.is_some());
    // The real model's GDPO rewards detail by the standard IQA pair, BRISQUE first.
    let gdpo: trainer_native::stages::gdpo::GdpoConfig =
        trainer_native::read_toml(&root.join("gdpo-taef2.toml")).unwrap();
    assert_eq!((gdpo.group, gdpo.t_add, gdpo.t_diff), (6, 250, 100));
    let names: Vec<String> = gdpo
        .reward
        .detail
        .iqa
        .terms
        .iter()
        .map(|t| format!("{t:?}").to_lowercase())
        .collect();
    assert_eq!(names, ["brisque", "niqe"]);
    assert!(gdpo.reward.detail.discriminator.is_none() && gdpo.reward.detail.nss.is_none());
    // A typo is an error, not a silently ignored key.
    let dir = integration_tests::scratch_dir("config-typo");
    std::fs::write(
        dir.join("bad.toml"),
        std::fs::read_to_string(root.join("naosd-taef2.toml"))
            .unwrap()
            .replace("t_add", "t_ad"),
    )
    .unwrap();
    assert!(trainer_native::read_toml::<NaosdConfig>(&dir.join("bad.toml")).is_err());
}

/// The diversity-sensitive term: a micro-batch's crops come in pairs (same HR and LR, different
/// noise), the term measures each pair's output difference (capped) and is logged; an odd batch
/// is refused, naming the reason.
#[test]
fn the_diversity_term_pairs_crops_and_measures_their_outputs_difference() {
    let _serial = serial();
    let root = scratch_dir("naosd-diversity");
    let data = data_dir(&root);
    let device = Default::default();
    let init = root.join("init.safetensors");
    let model = trainer_native::train::seeded::<Cpu, _>(&device, 7, || {
        model::ModelConfig::tiny().init::<Cpu>(&device).unwrap()
    });
    std::fs::write(
        &init,
        model::save_weights(&model, model::StoredPrecision::F32).unwrap(),
    )
    .unwrap();
    let cap = 0.5;
    let config = NaosdConfig {
        init,
        data: data.clone(),
        validation: None,
        crop: 32,
        train_encoder: false,
        bicubic_fraction: 0.5,
        validation_bicubic: false,
        validation_side: 256,
        t_add: 250,
        t_diff: 100,
        train: options(3, 1e-3),
        loss: NaosdLoss {
            latent: 0.0,
            adversarial: 0.0,
            diversity: 1.0,
            diversity_cap: cap,
            ..NaosdLoss::default()
        },
        degradation: DegradationConfig::default(),
        discriminator: DiscriminatorConfig::default(),
    };

    // Items 2j and 2j + 1 are one crop; different pairs are different crops.
    let dataset = trainer_native::data::ImageFolder::load(&data, 32).unwrap();
    let stage =
        naosd::NaosdStage::new(config.clone(), &model::ModelConfig::tiny(), dataset).unwrap();
    type Ad = burn::backend::Autodiff<Cpu>;
    let batch = trainer_native::train::Stage::<Ad>::batch_maker(&stage)(0).unwrap();
    let item = |b: &trainer_native::data::HostBatch, i: usize| {
        let n = b.data.len() / b.count;
        b.data[i * n..(i + 1) * n].to_vec()
    };
    assert_eq!(batch.lr.count, 4);
    assert_eq!(item(&batch.hr, 0), item(&batch.hr, 1));
    assert_eq!(item(&batch.lr, 2), item(&batch.lr, 3));
    assert_ne!(item(&batch.hr, 1), item(&batch.hr, 2));

    // The term is logged every step: positive (the noise reaches the output), within the cap.
    let run_dir = root.join("run");
    naosd::run::<Cpu>(
        config.clone(),
        &run_dir,
        RunLimits::default(),
        std::slice::from_ref(&device),
    )
    .unwrap();
    let diversity: Vec<f64> = run_log(&run_dir)
        .iter()
        .filter_map(|v| v.get("diversity").and_then(|x| x.as_f64()))
        .collect();
    assert_eq!(diversity.len(), 3);
    assert!(
        diversity.iter().all(|&d| d > 0.0 && d <= cap),
        "{diversity:?}"
    );

    // Weighted up, the term makes the model use its noise: the pairs' difference grows.
    let mut strong = config.clone();
    strong.train = options(24, 3e-3);
    strong.loss.diversity = 10.0;
    let run_dir = root.join("strong");
    naosd::run::<Cpu>(
        strong,
        &run_dir,
        RunLimits::default(),
        std::slice::from_ref(&device),
    )
    .unwrap();
    let diversity: Vec<f64> = run_log(&run_dir)
        .iter()
        .filter_map(|v| v.get("diversity").and_then(|x| x.as_f64()))
        .collect();
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&diversity[..6]), mean(&diversity[18..]));
    assert!(
        last > 1.5 * first,
        "the pairs' difference did not grow: {first:.4} -> {last:.4}"
    );

    let mut odd = config;
    odd.train.batch = 3;
    let dataset = trainer_native::data::ImageFolder::load(&data, 32).unwrap();
    let err = naosd::NaosdStage::new(odd, &model::ModelConfig::tiny(), dataset)
        .err()
        .expect("an odd batch is refused");
    assert!(format!("{err:#}").contains("must be even"), "{err:#}");
}
