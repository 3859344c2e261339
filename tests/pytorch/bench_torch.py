"""Speed of the PyTorch reference (f32; CPU, or CUDA with --device cuda) on the same work as the burn benchmarks:
one-step inference of a preset at given LR sizes (x4, untiled, colour fix none), one NAOSD
(stage-1b) training step and one GDPO step at a given batch and crop, a per-part breakdown
(parts timed separately, torch.profiler's op table), torch's own FLOP count of the forward
(torch.utils.flop_counter), and optionally the parity of burn's parity cases.

    .venv-bench/bin/python tests/pytorch/bench_torch.py --json target/bench/torch.json \
        [--case DIR ...] [--inputs 128x128,256x256,512x512] [--batch 2 --crop 256] ...

Timings: `--warmup` untimed runs, then the median of `--repeats` timed runs (wall clock; on
CUDA the device is synchronised before each clock read). The JSON schema is in
tests/pytorch/README.md.
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gdpo_sr_torch as ref  # noqa: E402


def synchronise():
    """Waits for queued device work: CUDA kernels run asynchronously, so a clock read without
    it would time the launches, not the work."""
    if torch.get_default_device().type == "cuda":
        torch.cuda.synchronize()


def median_time(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    synchronise()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronise()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def parse_inputs(text):
    return [tuple(int(v) for v in item.split("x")) for item in text.split(",") if item]


def build_model(preset, weights, seed):
    if weights:
        return ref.load_weights(weights)
    torch.manual_seed(seed)
    return ref.randomise_all(ref.Naosd(ref.PRESETS[preset]))


def profile_ops(fn, top):
    """torch.profiler's op table for one run of `fn`: the `top` ops by self CPU time."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1.0
    return [{"op": e.key, "calls": e.count, "self_seconds": e.self_cpu_time_total / 1e6,
             "share": e.self_cpu_time_total / total} for e in rows[:top]]


# ---------------------------------------------------------------- inference

def bench_inference(model, inputs, scale, warmup, repeats):
    out = []
    for h, w in inputs:
        lr = torch.rand(1, 3, h, w) * 2.0 - 1.0
        with torch.inference_mode():
            seconds = median_time(lambda: model.upscale(lr, scale=scale), warmup, repeats)
        out_mp = h * scale * w * scale / 1e6
        print(f"inference {model.config['name']} {h}x{w} -> {out_mp:.2f} MP: {seconds:.3f} s",
              flush=True)
        out.append({"preset": model.config["name"], "input": [h, w], "out_mp": out_mp,
                    "seconds": seconds, "tiled": False,
                    "backend": torch.get_default_device().type})
    return out


def inference_parts(model, size, scale, warmup, repeats):
    """Each part of `upscale` timed on its own: bicubic, encoder, noise, UNet, decoder."""
    h, w = size
    lr = torch.rand(1, 3, h, w) * 2.0 - 1.0
    with torch.inference_mode():
        lr_up = ref.bicubic_upsample(lr, scale)
        z = model.encode(lr_up)
        parts = {
            "bicubic": lambda: ref.bicubic_upsample(lr, scale),
            "encoder": lambda: model.encode(lr_up),
            "noise": lambda: ref.noise_tensor(0, 0, tuple(z.shape)),
            # The eps prediction conditioned on z (eps_lr + UNet([z, z], t)), as `bench steps`.
            "unet": lambda: ref.conditioned_eps(model.unet, z, z, ref.T_DIFF),
            "decoder": lambda: model.decode(z),
        }
        return {k: median_time(fn, warmup, repeats) for k, fn in parts.items()}


def flops_per_output_mp(preset, side=512, scale=4):
    """torch's FlopCounterMode on the forward at a `side x side` output, per output MP and
    per part (it counts convolutions and matrix products, 2 FLOPs per multiply-add)."""
    model = ref.Naosd(ref.PRESETS[preset])
    lr = torch.rand(1, 3, side // scale, side // scale) * 2.0 - 1.0
    mp = side * side / 1e6
    with torch.inference_mode():
        lr_up = ref.bicubic_upsample(lr, scale)
        z = model.encode(lr_up)
        parts = {"encoder": lambda: model.encode(lr_up),
                 "unet": lambda: ref.conditioned_eps(model.unet, z, z, ref.T_DIFF),
                 "decoder": lambda: model.decode(z)}
        counted = {}
        for name, fn in parts.items():
            counter = FlopCounterMode(display=False)
            with counter:
                fn()
            counted[name] = counter.get_total_flops() / 1e9 / mp
    return {"gflops": sum(counted.values()), "gflops_by_part": counted,
            "output": [side, side]}


# ---------------------------------------------------------------- training steps

# What `trainer-native bench steps` runs as its NAOSD step (trainer-native/src/bench/steps.rs),
# for every preset taef2 included: the generator's decoder and the target encoder are frozen
# (`no_grad`), the generator's encoder is NOT (steps.rs does not freeze it; its
# `train_encoder: true` is the config default, which only `naosd::run` reads), so encoder and
# UNet train; the loss weights are `NaosdLoss::default()` (L1 1, MS-SSIM 0.2, Sobel 0.5,
# latent MSE 0.5, adversarial 0.02 from step 0), so every term is computed: the target
# encoder's pass on HR and the discriminator's three passes included. This is not the shipped
# configs/naosd-taef2.toml (frozen encoder, latent = adversarial = 0, whose terms are then
# skipped); change both sides together to time that instead.
NAOSD_BENCH = {"train_encoder": True, "loss": ref.NAOSD_LOSS}


class NaosdStep:
    """One optimizer step of stage 1b, as `fit` runs it: losses, backward, global-norm clip
    (generator and discriminator separately), AdamW. `train_encoder` and `loss`: NAOSD_BENCH."""

    def __init__(self, preset, batch, crop, scale, disc_channels, seed,
                 train_encoder=NAOSD_BENCH["train_encoder"], loss=NAOSD_BENCH["loss"]):
        torch.manual_seed(seed)
        self.generator = ref.randomise_all(ref.Naosd(ref.PRESETS[preset]))
        self.target_encoder = ref.Encoder(ref.PRESETS[preset])
        self.target_encoder.load_state_dict(self.generator.autoencoder.encoder.state_dict())
        frozen = list(self.target_encoder.parameters()) + list(
            self.generator.autoencoder.decoder.parameters())
        if not train_encoder:
            frozen += list(self.generator.autoencoder.encoder.parameters())
        for p in frozen:
            p.requires_grad_(False)
        self.loss = loss
        self.discriminator = ref.Discriminator(disc_channels)
        self.gen_params = [p for p in self.generator.parameters() if p.requires_grad]
        self.disc_params = list(self.discriminator.parameters())
        self.optimizer = torch.optim.AdamW(self.gen_params + self.disc_params, lr=5e-5,
                                           weight_decay=0.01, eps=1e-8)
        self.hr = torch.rand(batch, 3, crop, crop) * 2.0 - 1.0
        self.lr = torch.rand(batch, 3, crop // scale, crop // scale) * 2.0 - 1.0
        self.scale, self.step_index = scale, 0

    def forward(self):
        self.step_index += 1
        return ref.naosd_losses(self.generator, self.discriminator, self.target_encoder,
                                self.lr, self.hr, noise_seed=0x6E616F736400,
                                first_stream=self.step_index * self.lr.shape[0],
                                scale=self.scale, weights=self.loss)

    def optimise(self):
        ref.clip_global_norm(self.gen_params, 1.0)
        ref.clip_global_norm(self.disc_params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def __call__(self):
        self.forward().backward()
        self.optimise()


class GdpoStep:
    """One optimizer step of GDPO with the fidelity-only reward: `GdpoStage::step_losses`,
    backward, global-norm clip of the adapters, AdamW on the adapters only."""

    def __init__(self, preset, batch, crop, scale, group, seed):
        torch.manual_seed(seed)
        self.reference = ref.randomise_all(ref.Naosd(ref.PRESETS[preset]))
        for p in self.reference.parameters():
            p.requires_grad_(False)
        self.policy = ref.gdpo_policy(self.reference)
        self.params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-4, weight_decay=0.01, eps=1e-8)
        self.hr = torch.rand(batch, 3, crop, crop) * 2.0 - 1.0
        self.lr = torch.rand(batch, 3, crop // scale, crop // scale) * 2.0 - 1.0
        self.scale, self.group, self.step_index = scale, group, 0

    def forward(self):
        self.step_index += 1
        return ref.gdpo_losses(self.reference, self.policy, self.lr, self.hr, self.group,
                               seed=0, step=self.step_index, scale=self.scale)

    def optimise(self):
        ref.clip_global_norm(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def __call__(self):
        self.forward().backward()
        self.optimise()


def step_parts(step, warmup, repeats):
    """forward (the losses), backward, optimizer (clip + AdamW), each timed separately."""
    times = {"forward": [], "backward": [], "optimizer": []}
    for i in range(warmup + repeats):
        synchronise()
        t0 = time.perf_counter()
        loss = step.forward()
        synchronise()
        t1 = time.perf_counter()
        loss.backward()
        synchronise()
        t2 = time.perf_counter()
        step.optimise()
        synchronise()
        t3 = time.perf_counter()
        if i >= warmup:
            times["forward"].append(t1 - t0)
            times["backward"].append(t2 - t1)
            times["optimizer"].append(t3 - t2)
    return {k: statistics.median(v) for k, v in times.items()}


def gdpo_forward_parts(step, warmup, repeats):
    """The GDPO forward's pieces on their own: group sampling by the reference, reward,
    re-encoding with the shared noise, both denoising errors (policy with autograd)."""
    reference, policy, group = step.reference, step.policy, step.group
    with torch.no_grad():
        lr_up = ref.bicubic_upsample(step.lr, step.scale)
        z_lr = reference.encode(lr_up).repeat_interleave(group, dim=0)
        eps = ref.noise_tensor(1, 0, tuple(z_lr.shape))
        samples = reference.decode(reference.one_step(z_lr, eps))
        x0 = reference.encode(samples)
        xi = ref.noise_tensor(2, 0, tuple(x0.shape))
        x_t = ref.add_noise(x0, xi, ref.T_ADD)
    host_hr = np.repeat((step.hr.cpu().numpy().astype(np.float64) + 1.0) * 0.5, group, axis=0)

    def sample():
        with torch.no_grad():
            z = reference.encode(ref.bicubic_upsample(step.lr, step.scale))
            z = z.repeat_interleave(group, dim=0)
            e = ref.noise_tensor(1, 0, tuple(z.shape))
            return reference.decode(reference.one_step(z, e))

    def reward():
        host = ((samples.cpu().numpy().astype(np.float64) + 1.0) * 0.5).clip(0.0, 1.0)
        fid = ref.psnr_y(host, host_hr).reshape(-1, group)
        return [ref.group_advantages(ref.normalise_group(f)) for f in fid]

    def reencode():
        with torch.no_grad():
            x = reference.encode(samples)
            return ref.add_noise(x, ref.noise_tensor(2, 0, tuple(x.shape)), ref.T_ADD)

    def errors():
        with torch.no_grad():
            e_ref = ref.denoising_errors(reference.unet, x_t, z_lr, xi)
        e_theta = ref.denoising_errors(policy, x_t, z_lr, xi)
        return e_ref, e_theta

    parts = {"sample": sample, "reward": reward, "reencode": reencode, "errors": errors}
    return {k: median_time(fn, warmup, repeats) for k, fn in parts.items()}


# ---------------------------------------------------------------- op micro-benchmarks

def op_benchmarks(warmup, repeats):
    """Single ops at fixed shapes (batch 1), forward and forward+backward: the same list and
    shapes as `trainer-native bench steps` measures on burn."""
    torch.manual_seed(0)
    out = {}

    def conv_case(name, c, side, k=3):
        x = torch.randn(1, c, side, side)
        w = torch.randn(c, c, k, k) / math.sqrt(c * k * k)
        b = torch.zeros(c)
        with torch.inference_mode():
            out[name] = median_time(lambda: torch.nn.functional.conv2d(x, w, b, 1, k // 2),
                                    warmup, repeats)
        # Backward with the gradient of the input only, of the weight only, and of both.
        for suffix, input_grad, weight_grad in (("_fwd_bwd_input", True, False),
                                                ("_fwd_bwd_weight", False, True),
                                                ("_fwd_bwd", True, True)):
            xg = x.clone().requires_grad_(input_grad)
            wg = w.clone().requires_grad_(weight_grad)

            def fwd_bwd():
                torch.nn.functional.conv2d(xg, wg, b, 1, k // 2).sum().backward()
                xg.grad, wg.grad = None, None

            out[name + suffix] = median_time(fwd_bwd, warmup, repeats)

    conv_case("conv3x3_c128_128x128", 128, 128)
    conv_case("conv3x3_c64_256x256", 64, 256)
    conv_case("conv3x3_c256_32x32", 256, 32)
    x = torch.randn(1, 128, 128, 128)
    gamma, beta = torch.ones(128), torch.zeros(128)
    with torch.inference_mode():
        out["group_norm_silu_c128_128x128"] = median_time(
            lambda: torch.nn.functional.silu(
                torch.nn.functional.group_norm(x, 16, gamma, beta, 1e-5)), warmup, repeats)
        q, k, v = (torch.randn(1, 4, 1024, 64) for _ in range(3))
        out["attention_4x1024x64"] = median_time(
            lambda: torch.softmax((q @ k.transpose(2, 3)) * 0.125, dim=3) @ v, warmup, repeats)
    return out


# ---------------------------------------------------------------- main

def versions():
    import safetensors
    out = {"torch": torch.__version__, "numpy": np.__version__,
           "safetensors": safetensors.__version__, "python": platform.python_version(),
           "mkldnn": torch.backends.mkldnn.is_available(),
           "parallel": torch.__config__.parallel_info().splitlines()[0:4]}
    if torch.get_default_device().type == "cuda":
        out.update({"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                    "gpu": torch.cuda.get_device_name(),
                    "tf32_conv": torch.backends.cudnn.allow_tf32,
                    "tf32_matmul": torch.backends.cuda.matmul.allow_tf32})
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", required=True, help="output file")
    p.add_argument("--case", action="append", default=[], help="parity case folder(s)")
    p.add_argument("--preset", default="taef2", choices=sorted(ref.PRESETS))
    p.add_argument("--weights", help="weight file (default: random weights of --preset)")
    p.add_argument("--inputs", default="128x128,256x256,512x512",
                   help="LR sizes HxW for inference (x4: 0.26, 1.05, 4.19 output MP)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=2, help="NAOSD step: HR crops per step")
    p.add_argument("--crop", type=int, default=256, help="NAOSD step: HR crop side")
    p.add_argument("--gdpo-batch", type=int, default=1, help="GDPO step: LR images per step")
    p.add_argument("--gdpo-crop", type=int, default=128, help="GDPO step: HR crop side")
    p.add_argument("--group", type=int, default=6, help="GDPO group size G")
    p.add_argument("--disc-channels", default="64,128,256",
                   help="NAOSD discriminator widths (bench steps' default)")
    p.add_argument("--breakdown-input", default="256x256", help="LR size of the part timings")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--skip", default="", help="comma list of: inference,steps,breakdown,flops,ops")
    p.add_argument("--top-ops", type=int, default=15)
    p.add_argument("--device", default="cpu", help="cpu or cuda (inference, steps, ops; the "
                   "breakdown and flops parts profile the CPU and are skipped on cuda)")
    p.add_argument("--tf32", choices=["off", "default"], default="off",
                   help="cuda: `off` keeps convolutions and matrix products in strict f32 "
                   "(like for like with burn's f32); `default` leaves torch's own setting "
                   "(cuDNN convolutions in TF32)")
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if args.device != "cpu":
        if not torch.cuda.is_available():
            sys.exit(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
        torch.set_default_device(args.device)
        if args.tf32 == "off":
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        skip |= {"breakdown", "flops"}
        if args.case:
            sys.exit("--case: parity runs on the CPU (run it without --device)")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float32)

    result = {"versions": versions(), "device": args.device, "threads": torch.get_num_threads(),
              "cpu_count": os.cpu_count(), "parity": [], "inference": [], "steps": [],
              "flops_per_output_mp": {}, "breakdown": {}}
    print(f"torch {torch.__version__}, {result['threads']} threads", flush=True)

    if args.case:
        import parity
        for case in args.case:
            r = parity.check_case(case)
            print(f"parity {r['preset']}: max abs diff {r['max_abs_diff']:.3e}", flush=True)
            result["parity"].append({"preset": r["preset"], "max_abs_diff": r["max_abs_diff"],
                                     "stages": r["stages"]})

    model = build_model(args.preset, args.weights, seed=0)
    model.eval()
    if "inference" not in skip:
        result["inference"] = bench_inference(model, parse_inputs(args.inputs), args.scale,
                                              args.warmup, args.repeats)
    if "flops" not in skip:
        for preset in ref.PRESETS:
            result["flops_per_output_mp"][preset] = flops_per_output_mp(preset)
            print(f"flops {preset}: {result['flops_per_output_mp'][preset]['gflops']:.1f} "
                  "GFLOPs per output MP", flush=True)

    bd = result["breakdown"]
    if "breakdown" not in skip:
        size = parse_inputs(args.breakdown_input)[0]
        bd["inference_parts"] = {"preset": args.preset, "input": list(size),
                                 "seconds": inference_parts(model, size, args.scale,
                                                            args.warmup, args.repeats)}
        lr = torch.rand(1, 3, *size) * 2.0 - 1.0
        with torch.inference_mode():
            bd["inference_ops"] = profile_ops(lambda: model.upscale(lr, scale=args.scale),
                                              args.top_ops)
        print("inference parts", bd["inference_parts"]["seconds"], flush=True)

    disc = tuple(int(c) for c in args.disc_channels.split(","))
    if "steps" not in skip:
        naosd = NaosdStep(args.preset, args.batch, args.crop, args.scale, disc, seed=1)
        seconds = median_time(naosd, args.warmup, args.repeats)
        print(f"naosd step b{args.batch} c{args.crop}: {seconds:.3f} s", flush=True)
        result["steps"].append({"kind": "naosd", "preset": args.preset, "batch": args.batch,
                                "crop": args.crop, "seconds": seconds,
                                "backend": args.device})
        gdpo = GdpoStep(args.preset, args.gdpo_batch, args.gdpo_crop, args.scale, args.group,
                        seed=2)
        seconds = median_time(gdpo, args.warmup, args.repeats)
        print(f"gdpo step b{args.gdpo_batch} G{args.group} c{args.gdpo_crop}: {seconds:.3f} s",
              flush=True)
        result["steps"].append({"kind": "gdpo", "preset": args.preset, "batch": args.gdpo_batch,
                                "group": args.group, "crop": args.gdpo_crop,
                                "seconds": seconds, "reward": "psnr_y only",
                                "backend": args.device})
        if "breakdown" not in skip:
            bd["naosd_step_parts"] = step_parts(naosd, args.warmup, args.repeats)
            bd["naosd_step_ops"] = profile_ops(naosd, args.top_ops)
            bd["gdpo_step_parts"] = step_parts(gdpo, args.warmup, args.repeats)
            bd["gdpo_forward_parts"] = gdpo_forward_parts(gdpo, args.warmup, args.repeats)
            bd["gdpo_step_ops"] = profile_ops(gdpo, args.top_ops)
            for k in ("naosd_step_parts", "gdpo_step_parts", "gdpo_forward_parts"):
                print(k, bd[k], flush=True)
    if "ops" not in skip:
        bd["ops"] = op_benchmarks(args.warmup, max(args.repeats, 5))
        print("ops", bd["ops"], flush=True)

    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
