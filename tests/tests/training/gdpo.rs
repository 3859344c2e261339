//! Stage 2 (GDPO) with the `tiny` preset on generated images: policy == reference at step 0
//! (loss log 2); on a fixed batch the gradient lowers the denoising error of positive-advantage
//! samples relative to the reference and raises it for negative ones; only the adapters train, the merged output equals the unmerged policy's within 1e-4, `merge` on
//! the run's checkpoint writes the same file, and an interrupted run resumes bit-exactly.

use std::path::PathBuf;

use crate::serial;
use burn::{
    module::Module,
    record::{BinFileRecorder, FullPrecisionSettings},
};
use burn::{
    optim::{AdamWConfig, GradientsParams, Optimizer},
    tensor::{Tensor, TensorData},
};
use integration_tests::{run_log, scratch_dir, synthetic_image, trainer_binary};
use model::{ModelConfig, NaosdOptions, StoredPrecision, load_weights, save_weights};
use trainer_native::{
    data::ImageFolder,
    degrade::DegradationConfig,
    loss::discriminator::DiscriminatorConfig,
    loss::gdpo::gdpo_loss,
    planar::Planar,
    reward::{DetailTerms, NssModel},
    stages::gdpo::{
        self, GdpoConfig, GdpoPolicy, GdpoStage, LoraOptions, PreferenceLoss, RewardConfig,
        RewardModeName, unmerged_policy,
    },
    train::{RunLimits, Stage, TrainOptions, latest_ema},
};

type Cpu = burn::backend::Flex;
type Ad = burn::backend::Autodiff<Cpu>;

struct Fixture {
    root: PathBuf,
    data: PathBuf,
    reference: PathBuf,
    discriminator: PathBuf,
    nss: PathBuf,
}

/// Generated data, a random-but-fixed tiny reference, a random discriminator and an NSS
/// model fitted on the data: the math of the stage does not need a good reference.
fn fixture(name: &str) -> Fixture {
    let root = scratch_dir(name);
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut planars = Vec::new();
    for i in 0..6u32 {
        let img = synthetic_image(48 + 4 * i, 40 + 4 * i);
        img.save(data.join(format!("img{i}.png"))).unwrap();
        planars.push(Planar::from_rgb8(&img));
    }
    let device = Default::default();
    let reference = root.join("reference.safetensors");
    let model = trainer_native::train::seeded::<Cpu, _>(&device, 11, || {
        ModelConfig::tiny().init::<Cpu>(&device).unwrap()
    });
    std::fs::write(
        &reference,
        save_weights(&model, StoredPrecision::F32).unwrap(),
    )
    .unwrap();
    let discriminator = root.join("discriminator.bin");
    DiscriminatorConfig {
        channels: vec![8, 16],
    }
    .init::<Cpu>(&device)
    .save_file(
        root.join("discriminator"),
        &BinFileRecorder::<FullPrecisionSettings>::new(),
    )
    .unwrap();
    let nss = root.join("nss.json");
    std::fs::write(&nss, NssModel::fit(&planars, 16).unwrap().to_json()).unwrap();
    Fixture {
        root,
        data,
        reference,
        discriminator,
        nss,
    }
}

fn config(f: &Fixture, steps: usize, lr: f64) -> GdpoConfig {
    GdpoConfig {
        reference: f.reference.clone(),
        policy_init: None,
        data: f.data.clone(),
        validation: Some(f.data.clone()),
        crop: 32,
        group: 3,
        omega: 5000.0,
        loss: PreferenceLoss::Gdpo,
        grpo_clip: 0.2,
        t_add: 250,
        t_diff: 100,
        colour_fix: model::ColourFix::None,
        validation_seeds: 2,
        shared_group_noise: false,
        lora: LoraOptions::default(),
        reward: RewardConfig {
            mode: RewardModeName::Full,
            fixed_rho: 0.5,
            round_ratios: false,
            border: 4,
            detail: DetailTerms {
                discriminator: Some(f.discriminator.clone()),
                discriminator_channels: vec![8, 16],
                nss: Some(f.nss.clone()),
                ..DetailTerms::default()
            },
        },
        train: TrainOptions {
            steps,
            batch: 2,
            accumulate: 1,
            lr,
            warmup_steps: 0,
            weight_decay: 0.0,
            grad_clip: 1.0,
            ema_decay: 0.0,
            seed: 5,
            checkpoint_every: 2,
            validate_every: steps,
            keep_checkpoints: 1,
            prefetch: 2,
            threads: 1,
        },
        degradation: DegradationConfig::default(),
    }
}

#[test]
fn gdpo_learns_the_group_preference_and_merges() {
    let _serial = serial();
    let f = fixture("gdpo");
    let steps = 12;
    let cfg = config(&f, steps, 2e-3);
    let run_dir = f.root.join("run");
    let device = Default::default();
    let out = gdpo::run::<Cpu>(
        cfg.clone(),
        &run_dir,
        RunLimits::default(),
        std::slice::from_ref(&device),
    )
    .unwrap();

    let entries = run_log(&run_dir);
    let steps_logged: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|v| v.get("validation").is_none())
        .collect();
    assert_eq!(steps_logged.len(), steps);
    for key in [
        "loss",
        "reward_mean",
        "reward_std",
        "advantage_spread",
        "accuracy",
        "e_gap",
        "psnr_y",
        "detail_realism",
        "detail_nss",
    ] {
        assert!(
            steps_logged
                .iter()
                .all(|v| v[key].as_f64().is_some_and(f64::is_finite)),
            "{key} missing or not finite"
        );
    }
    // Step 1: policy == reference, so the loss is exactly log 2 and no group is won yet.
    let first = steps_logged[0];
    assert!(
        (first["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-6,
        "{first}"
    );
    assert_eq!(first["e_gap"].as_f64().unwrap(), 0.0);
    assert_eq!(first["accuracy"].as_f64().unwrap(), 0.0);
    assert!(
        first["advantage_spread"].as_f64().unwrap() > 0.0,
        "groups must differ"
    );
    let validation = entries
        .iter()
        .find(|v| v.get("validation").is_some())
        .unwrap();
    for key in [
        "val_reward_ref",
        "val_reward_policy",
        "val_psnr_y_ref",
        "val_psnr_y_policy",
        "val_realism_ref",
        "val_nss_policy",
    ] {
        assert!(
            validation[key].as_f64().is_some_and(f64::is_finite),
            "{key}"
        );
    }

    // Only the adapters trained: the policy's base weights are the reference's.
    let reference = load_weights::<Cpu>(&std::fs::read(&f.reference).unwrap(), &device).unwrap();
    let template = GdpoPolicy::new(&reference, &model::LoraConfig::new(), &device);
    let (policy, step) = latest_ema(&run_dir.join("checkpoints"), template, &device)
        .unwrap()
        .unwrap();
    assert_eq!(step, steps);
    let base = |u: &model::unet::UNet<Cpu>| u.conv_in.weight.val();
    let moved: f32 = (base(&policy.unet) - base(&reference.unet))
        .abs()
        .max()
        .into_scalar();
    assert_eq!(moved, 0.0, "a frozen base weight changed");
    let up = policy.unet.conv_in.lora.as_ref().unwrap().lora_up.val();
    assert!(up.abs().max().into_scalar() > 0.0, "adapters did not train");

    // The merged file equals the unmerged policy within 1e-4, and differs from the reference.
    let merged = load_weights::<Cpu>(&std::fs::read(&out).unwrap(), &device).unwrap();
    let lr = trainer_native::image_io::rgb_to_tensor::<Cpu>(&synthetic_image(24, 16), &device);
    let options = NaosdOptions {
        seed: 3,
        ..NaosdOptions::default()
    };
    let unmerged = unmerged_policy(&reference, &policy)
        .upscale(lr.clone(), &options)
        .unwrap();
    let m = merged.upscale(lr.clone(), &options).unwrap();
    let diff: f32 = (m.clone() - unmerged).abs().max().into_scalar();
    assert!(diff < 1e-4, "merged vs unmerged: {diff}");
    let r = reference.upscale(lr, &options).unwrap();
    let changed: f32 = (m - r).abs().max().into_scalar();
    assert!(
        changed > 1e-4,
        "the policy did not move away from the reference ({changed})"
    );

    // `merge` on the run's newest checkpoint writes the same weights.
    let config_path = f.root.join("gdpo.toml");
    std::fs::write(&config_path, toml::to_string(&cfg).unwrap()).unwrap();
    let merged_cli = f.root.join("merged.safetensors");
    let status = std::process::Command::new(trainer_binary())
        .args(["merge", "--config"])
        .arg(&config_path)
        .arg("--run-dir")
        .arg(&run_dir)
        .arg("--out")
        .arg(&merged_cli)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        std::fs::read(&merged_cli).unwrap() == std::fs::read(&out).unwrap(),
        "merge CLI output differs from the run output"
    );
}

#[test]
fn interrupted_gdpo_resumes_bit_exactly_and_variants_run() {
    let _serial = serial();
    let f = fixture("gdpo-resume");
    let device = Default::default();
    let whole = gdpo::run::<Cpu>(
        config(&f, 4, 1e-3),
        &f.root.join("whole"),
        RunLimits::default(),
        std::slice::from_ref(&device),
    )
    .unwrap();
    let parts = f.root.join("parts");
    let stopped = RunLimits {
        stop_after: Some(2),
        ..RunLimits::default()
    };
    gdpo::run::<Cpu>(
        config(&f, 4, 1e-3),
        &parts,
        stopped,
        std::slice::from_ref(&device),
    )
    .unwrap();
    let resumed = RunLimits {
        resume: true,
        ..RunLimits::default()
    };
    let parts_out = gdpo::run::<Cpu>(
        config(&f, 4, 1e-3),
        &parts,
        resumed,
        std::slice::from_ref(&device),
    )
    .unwrap();
    assert!(
        std::fs::read(whole).unwrap() == std::fs::read(parts_out).unwrap(),
        "resumed run differs from the uninterrupted one"
    );

    // The comparison variants: G = 2 (Diffusion-DPO), the GRPO-style loss, the ablation modes.
    let mut dpo = config(&f, 2, 1e-3);
    dpo.group = 2;
    let mut grpo = config(&f, 2, 1e-3);
    grpo.loss = PreferenceLoss::Grpo;
    let mut fixed = config(&f, 2, 1e-3);
    fixed.reward.mode = RewardModeName::FixedRho;
    let mut fidelity = config(&f, 2, 1e-3);
    fidelity.reward.mode = RewardModeName::FidelityOnly;
    fidelity.reward.detail = DetailTerms::default();
    let mut detail = config(&f, 2, 1e-3);
    detail.reward.mode = RewardModeName::DetailOnly;
    for (name, cfg) in [
        ("dpo", dpo),
        ("grpo", grpo),
        ("fixed", fixed),
        ("fidelity", fidelity),
        ("detail", detail),
    ] {
        let dir = f.root.join(name);
        gdpo::run::<Cpu>(
            cfg,
            &dir,
            RunLimits::default(),
            std::slice::from_ref(&device),
        )
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let first = &run_log(&dir)[0];
        assert!(
            first["loss"].as_f64().is_some_and(f64::is_finite),
            "{name}: {first}"
        );
    }
    // A detail-only reward without detail terms is refused with a clear message.
    let mut bad = config(&f, 2, 1e-3);
    bad.reward.mode = RewardModeName::DetailOnly;
    bad.reward.detail = DetailTerms::default();
    let err = gdpo::run::<Cpu>(
        bad,
        &f.root.join("bad"),
        RunLimits::default(),
        std::slice::from_ref(&device),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("needs a detail term"),
        "{err:#}"
    );
}

#[test]
fn on_a_fixed_batch_the_policy_learns_the_group_preference() {
    let _serial = serial();
    let f = fixture("gdpo-fixed");
    let cfg = config(&f, 10, 1e-3);
    let device = Default::default();
    let reference = load_weights::<Ad>(&std::fs::read(&f.reference).unwrap(), &device).unwrap();
    let mut policy = GdpoPolicy::new(&reference, &model::LoraConfig::new(), &device);
    let reward = cfg.reward.build::<Cpu>(&device).unwrap();
    let dataset = ImageFolder::load(&f.data, cfg.crop).unwrap();
    let stage = GdpoStage::new(cfg.clone(), reference, reward, dataset).unwrap();
    let batch = Stage::<Ad>::batch_maker(&stage)(0).unwrap();

    // Step 0: policy == reference, loss exactly log 2.
    let (losses, stats) = stage.step_losses(&policy, &batch, &device);
    let loss0: f32 = losses.total.clone().into_scalar();
    assert!(
        (f64::from(loss0) - std::f64::consts::LN_2).abs() < 1e-6,
        "{loss0}"
    );
    assert_eq!(stats.e_theta, stats.e_ref);

    // dL/de_theta by central finite differences at the tiny preset's errors: positive for
    // positive advantages (descent lowers e_theta), negative for negative ones.
    let loss_at = |e: &[Vec<f64>]| {
        let t = |v: &[Vec<f64>]| {
            let flat: Vec<f32> = v.iter().flatten().map(|&x| x as f32).collect();
            Tensor::<Cpu, 2>::from_data(TensorData::new(flat, [v.len(), v[0].len()]), &device)
        };
        let l: f32 =
            gdpo_loss(t(e), t(&stats.e_ref), t(&stats.advantages), cfg.omega).into_scalar();
        f64::from(l)
    };
    // (f32 tensors: a step well above the errors' ulp, small enough to stay linear.)
    let h = 1e-5;
    for b in 0..stats.e_theta.len() {
        for g in 0..cfg.group {
            let (mut up, mut down) = (stats.e_theta.clone(), stats.e_theta.clone());
            up[b][g] += h;
            down[b][g] -= h;
            let grad = (loss_at(&up) - loss_at(&down)) / (2.0 * h);
            let a = stats.advantages[b][g];
            // Analytic at step 0: (omega / 2) * sigmoid(0) * A / B.
            let expected = cfg.omega / 4.0 * a / stats.e_theta.len() as f64;
            assert!(
                (grad - expected).abs() < 0.02 * expected.abs().max(1.0),
                "({b}, {g}): {grad} vs {expected}"
            );
        }
    }

    // Training the adapters on this batch: every group's margin turns in the policy's favour
    // (positive-advantage samples' errors fall relative to the reference's, negative ones'
    // rise) and the loss drops below log 2.
    let mut optimizer = AdamWConfig::new().init::<Ad, GdpoPolicy<Ad>>();
    for _ in 0..8 {
        let (losses, _) = stage.step_losses(&policy, &batch, &device);
        let grads = GradientsParams::from_grads(losses.total.backward(), &policy);
        policy = optimizer.step(1e-3, policy, grads);
    }
    let (losses, stats) = stage.step_losses(&policy, &batch, &device);
    let loss: f32 = losses.total.into_scalar();
    assert!(
        f64::from(loss) < 0.5 * std::f64::consts::LN_2,
        "loss {loss}"
    );
    for b in 0..stats.e_theta.len() {
        let margin: f64 = (0..cfg.group)
            .map(|g| stats.advantages[b][g] * (stats.e_theta[b][g] - stats.e_ref[b][g]))
            .sum();
        assert!(margin < 0.0, "group {b} not won: {margin}");
        let mean_gap = |positive: bool| {
            let gaps: Vec<f64> = (0..cfg.group)
                .filter(|&g| (stats.advantages[b][g] > 0.0) == positive)
                .map(|g| stats.e_theta[b][g] - stats.e_ref[b][g])
                .collect();
            gaps.iter().sum::<f64>() / gaps.len() as f64
        };
        assert!(mean_gap(true) < mean_gap(false), "group {b}");
    }
}

#[test]
fn shared_group_noise_leaves_only_the_samples_differences_in_the_group_contrast() {
    let _serial = serial();
    let f = fixture("gdpo-shared-noise");
    let device = Default::default();
    let errors = |shared: bool| {
        let mut cfg = config(&f, 1, 1e-3);
        cfg.shared_group_noise = shared;
        let reference = load_weights::<Ad>(&std::fs::read(&f.reference).unwrap(), &device).unwrap();
        let policy = GdpoPolicy::new(&reference, &model::LoraConfig::new(), &device);
        let reward = cfg.reward.build::<Cpu>(&device).unwrap();
        let dataset = ImageFolder::load(&f.data, cfg.crop).unwrap();
        let stage = GdpoStage::new(cfg, reference, reward, dataset).unwrap();
        let batch = Stage::<Ad>::batch_maker(&stage)(0).unwrap();
        let (losses, stats) = stage.step_losses(&policy, &batch, &device);
        let loss: f32 = losses.total.into_scalar();
        assert!((f64::from(loss) - std::f64::consts::LN_2).abs() < 1e-6);
        stats.e_ref
    };
    // The spread of the reference's errors within each group: with one noise draw per group
    // only the samples' own differences remain, a fraction of what independent draws give.
    let spread = |e: &[Vec<f64>]| -> f64 {
        e.iter()
            .map(|g| {
                let mean = g.iter().sum::<f64>() / g.len() as f64;
                g.iter().map(|x| (x - mean).powi(2)).sum::<f64>()
            })
            .sum()
    };
    let (independent, shared) = (errors(false), errors(true));
    assert!(spread(&independent) > 0.0);
    assert!(
        spread(&shared) < 0.25 * spread(&independent),
        "shared {} vs independent {}",
        spread(&shared),
        spread(&independent)
    );
}

#[test]
fn the_probe_measures_the_reward_spread_of_the_references_groups() {
    let _serial = serial();
    let f = fixture("gdpo-probe");
    let cfg = config(&f, 1, 1e-3);
    let device = Default::default();
    let report = gdpo::probe::probe::<Cpu>(&cfg, 2, 4, &device).unwrap();
    // 2 batches of 2 crops, a group of 3 samples each.
    assert_eq!((report.groups, report.group_size), (4, 3));
    let names: Vec<&str> = report.terms.iter().map(|t| t.name.as_str()).collect();
    let mut expected = vec!["psnr_y".to_string()];
    expected.extend(cfg.reward.build::<Cpu>(&device).unwrap().detail_names());
    expected.push("reward".into());
    assert_eq!(names, expected);
    assert_eq!(names.len(), 4, "fidelity, realism, nss, reward: {names:?}");
    // The random reference's noise makes its samples differ: every term varies in a group.
    assert!(report.pixel_std_8bit > 0.01, "{report:?}");
    for t in &report.terms {
        assert!(t.within_group_std > 0.0, "{t:?}");
        assert!((0.0..=1.0).contains(&t.pair_agreement), "{t:?}");
    }
    // Two identical views rank every pair alike.
    let same = gdpo::probe::probe::<Cpu>(&cfg, 1, 0, &device).unwrap();
    assert!(
        same.terms.iter().all(|t| t.pair_agreement == 1.0),
        "{same:?}"
    );
    // Too large a shift is refused, naming it.
    let err = gdpo::probe::probe::<Cpu>(&cfg, 1, 20, &device).unwrap_err();
    assert!(format!("{err:#}").contains("shift 20"), "{err:#}");
    assert!(report.to_markdown().contains("| reward |"));
}

/// A run continued on a new machine from a small file: `policy_init` = the first piece's
/// merged output starts the policy there (fresh adapters on top, so the second piece's step-0
/// model is exactly the first piece's result), while the reference stays the original; a file
/// of another model is refused.
#[test]
fn a_second_piece_starts_from_the_first_pieces_merged_output() {
    let _serial = serial();
    let f = fixture("gdpo-pieces");
    let device: burn::backend::flex::FlexDevice = Default::default();
    let first = gdpo::run::<Cpu>(
        config(&f, 3, 2e-3),
        &f.root.join("piece1"),
        RunLimits::default(),
        std::slice::from_ref(&device),
    )
    .unwrap();
    let unet = |path: &std::path::Path| {
        let model = load_weights::<Cpu>(&std::fs::read(path).unwrap(), &device).unwrap();
        model::named_parameters(&model)
            .into_iter()
            .filter(|(name, _)| name.starts_with("unet."))
            .map(|(name, data)| (name, data.to_vec::<f32>().unwrap()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (reference, trained) = (unet(&f.reference), unet(&first));
    assert_ne!(
        reference, trained,
        "the first piece did not move the policy"
    );

    let mut second = config(&f, 3, 2e-3);
    second.policy_init = Some(first.clone());
    second.train.seed += 1;
    let start = gdpo::run::<Cpu>(
        second.clone(),
        &f.root.join("piece2"),
        RunLimits {
            stop_after: Some(0),
            ..RunLimits::default()
        },
        std::slice::from_ref(&device),
    )
    .unwrap();
    assert_eq!(unet(&start), trained);

    let other = f.root.join("other.safetensors");
    let mut config_b = ModelConfig::tiny();
    config_b.unet.channels[0] *= 2;
    let model = config_b.init::<Cpu>(&device).unwrap();
    std::fs::write(&other, save_weights(&model, StoredPrecision::F32).unwrap()).unwrap();
    second.policy_init = Some(other);
    let err = gdpo::run::<Cpu>(
        second,
        &f.root.join("piece3"),
        RunLimits::default(),
        std::slice::from_ref(&device),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("is another model than the reference"), "{err}");
}
