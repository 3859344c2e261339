"""The GDPO-SR network and its training losses in PyTorch: an independent reference of
model/src (and of the loss terms of trainer-native) for the parity check and the speed
comparison of the benchmarks (docs/benchmarks.md).

It reads the project's weight files (safetensors, metadata key `gdpo_sr` with the config JSON,
tensors named by module path, f16 or f32). The UNet's parameter names and shapes are the
file's: linear weights stay `[in, out]` as burn stores them (`y = x W + b`), convolutions
`[out, in, kh, kw]`, group norms `gamma`/`beta`, LoRA pairs `lora.lora_down`/`lora.lora_up`.
The autoencoder is the TAESD-family network of taef2_ref.py (the parity test's own PyTorch
TAEF2, `nn.Sequential` indices); `Naosd.project_parameters` gives its parameters the file's
names.

The injected noise is the project's counter-based field; its hashing comes from the
independent pure-Python reference model/tests/reference/noise_golden.py, applied here to numpy
uint64 arrays (the same wrapping integer arithmetic, vectorised).
"""

import copy
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "model", "tests", "reference"))
sys.path.insert(0, HERE)
import noise_golden  # noqa: E402
import taef2_ref  # noqa: E402

# model/src/preset.rs, as data (the weight file's own config is used when there is one).
PRESETS = {
    "tiny": {
        "name": "tiny", "image_channels": 3, "latent_channels": 4, "latent_scale": 1.0,
        "autoencoder": {"channels": 8, "global_groups": 4},
        "unet": {"channels": [16, 32], "blocks_per_level": 1, "attention_heads": 2,
                 "norm_groups": 4},
    },
    # The shipped model: TAEF2's sizes (fixed by the pretrained file) and a three-level UNet.
    "taef2": {
        "name": "taef2", "image_channels": 3, "latent_channels": 32, "latent_scale": 1.19,
        "autoencoder": {"channels": 64, "global_groups": 4},
        "unet": {"channels": [64, 128, 128], "blocks_per_level": 1, "attention_heads": 4,
                 "norm_groups": 16},
    },
}

T_ADD, T_DIFF = 250, 100
# Every TAESD-family autoencoder downsamples by 8 (three stride-2 stages).
DOWNSAMPLE = 8


def size_multiple(config):
    return DOWNSAMPLE << (len(config["unet"]["channels"]) - 1)


# ---------------------------------------------------------------- schedule (schedule.rs)

def alphas_cumprod():
    start, end = math.sqrt(0.00085), math.sqrt(0.012)
    prod, out = 1.0, []
    for t in range(1000):
        beta = (start + (end - start) * t / 999.0) ** 2
        prod *= 1.0 - beta
        out.append(prod)
    return out


ALPHAS_CUMPROD = alphas_cumprod()


def coefficients(t):
    abar = ALPHAS_CUMPROD[t]
    return math.sqrt(abar), math.sqrt(1.0 - abar)


def add_noise(z, eps, t):
    signal, noise = coefficients(t)
    return z * signal + eps * noise


def x0_from_eps(z_t, eps_hat, t):
    signal, noise = coefficients(t)
    return (z_t - eps_hat * noise) / signal


def conditioned_eps(unet, z_noisy, z_lr, t):
    """pipeline.rs `conditioned_eps`: `eps_lr + UNet([z_noisy, z_lr], t)`, where eps_lr is the
    eps for which the x0 formula returns z_lr exactly (a zero correction gives D(E(LRup)))."""
    signal, noise = coefficients(t)
    eps_lr = (z_noisy - z_lr * signal) / noise
    return eps_lr + unet(torch.cat([z_noisy, z_lr], dim=1), t)


# ---------------------------------------------------------------- noise (noise.rs)

def noise_window(seed, stream, channels, height, width, origin=(0, 0)):
    """`NoiseField::new(seed).window(...)` as a `[channels, height, width]` f32 array."""
    mix64, M = noise_golden.mix64, noise_golden.M
    c = np.arange(channels, dtype=np.uint64)[:, None, None]
    y = np.arange(origin[0], origin[0] + height, dtype=np.uint64)[None, :, None]
    x = np.arange(origin[1], origin[1] + width, dtype=np.uint64)[None, None, :]
    # Python ints for the scalar parts, numpy uint64 (wrapping) for the per-element parts,
    # exactly the expression of noise_golden.sample.
    scalar = mix64(seed ^ 0x9E3779B97F4A7C15) ^ mix64((stream + 0x632BE59BD9B4E019) & M)
    with np.errstate(over="ignore"):
        per_element = (mix64((c << np.uint64(1)) | np.uint64(1)) * np.uint64(3)
                       + mix64((y << np.uint64(32)) | x))
        key = np.uint64(scalar) ^ per_element
        a = mix64(key)
        b = mix64(a ^ np.uint64(0xD1B54A32D192ED03))
    radius = np.sqrt(-2.0 * np.log(noise_golden.unit_open(a)))
    return (radius * np.cos(2.0 * math.pi * noise_golden.unit_open(b))).astype(np.float32)


def noise_tensor(seed, first_stream, dims):
    """`NoiseSource { seed, first_stream }.tensor(dims)`."""
    n, c, h, w = dims
    # Drawn on the host (the generator is burn's, in numpy), then moved to the default device
    # (`torch.set_default_device`, set by bench_torch.py --device).
    return torch.from_numpy(np.stack(
        [noise_window(seed, first_stream + b, c, h, w) for b in range(n)])).to(
            torch.get_default_device())


# ---------------------------------------------------------------- layers (lora.rs, blocks.rs)

class Conv(nn.Module):
    """`LoraConv2d`: k x k, padding k / 2, optional LoRA pair."""

    def __init__(self, cin, cout, k, stride=1):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, k, k))
        self.bias = nn.Parameter(torch.empty(cout))
        bound = 1.0 / math.sqrt(cin * k * k)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)
        self.stride, self.padding = stride, k // 2
        self.lora = None

    def attach_lora(self, rank=4, alpha=4.0):
        cout, cin, kh, kw = self.weight.shape
        self.lora = nn.Module()
        bound = 1.0 / math.sqrt(cin * kh * kw)
        self.lora.lora_down = nn.Parameter(torch.empty(rank, cin, kh, kw).uniform_(-bound, bound))
        self.lora.lora_up = nn.Parameter(torch.zeros(cout, rank, 1, 1))
        self.lora_scale = alpha / rank

    def forward(self, x):
        base = F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        if self.lora is None:
            return base
        low = F.conv2d(x, self.lora.lora_down, None, self.stride, self.padding)
        return base + F.conv2d(low, self.lora.lora_up) * self.lora_scale


class Linear(nn.Module):
    """`LoraLinear`: weight `[in, out]`."""

    def __init__(self, din, dout):
        super().__init__()
        bound = 1.0 / math.sqrt(din)
        self.weight = nn.Parameter(torch.empty(din, dout).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(dout).uniform_(-bound, bound))
        self.lora = None

    def attach_lora(self, rank=4, alpha=4.0):
        din, dout = self.weight.shape
        bound = 1.0 / math.sqrt(din)
        self.lora = nn.Module()
        self.lora.lora_down = nn.Parameter(torch.empty(din, rank).uniform_(-bound, bound))
        self.lora.lora_up = nn.Parameter(torch.zeros(rank, dout))
        self.lora_scale = alpha / rank

    def forward(self, x):
        base = x @ self.weight + self.bias
        if self.lora is None:
            return base
        return base + (x @ self.lora.lora_down) @ self.lora.lora_up * self.lora_scale


class GroupNorm(nn.Module):
    def __init__(self, groups, channels):
        super().__init__()
        self.groups = groups
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return F.group_norm(x, self.groups, self.gamma, self.beta, eps=1e-5)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, time_dim, groups):
        super().__init__()
        self.norm1 = GroupNorm(groups, cin)
        self.conv1 = Conv(cin, cout, 3)
        self.time_emb_proj = Linear(time_dim, cout) if time_dim else None
        self.norm2 = GroupNorm(groups, cout)
        self.conv2 = Conv(cout, cout, 3)
        self.conv_shortcut = Conv(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb=None):
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        skip = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        return skip + h


class SpatialAttention(nn.Module):
    def __init__(self, channels, heads, groups):
        super().__init__()
        self.group_norm = GroupNorm(groups, channels)
        self.to_q, self.to_k = Linear(channels, channels), Linear(channels, channels)
        self.to_v, self.to_out = Linear(channels, channels), Linear(channels, channels)
        self.heads = heads

    def forward(self, x):
        n, c, h, w = x.shape
        tokens, hd = h * w, c // self.heads
        seq = self.group_norm(x).reshape(n, c, tokens).transpose(1, 2)

        def split(t):
            return t.reshape(n, tokens, self.heads, hd).transpose(1, 2)

        q, k, v = split(self.to_q(seq)), split(self.to_k(seq)), split(self.to_v(seq))
        scores = (q @ k.transpose(2, 3)) * (1.0 / math.sqrt(hd))
        attended = torch.softmax(scores, dim=3) @ v
        merged = attended.transpose(1, 2).reshape(n, tokens, c)
        return x + self.to_out(merged).transpose(1, 2).reshape(n, c, h, w)


def timestep_embedding(timesteps, dim):
    half = dim // 2
    freqs = torch.tensor([math.exp(-math.log(10000.0) * i / half) for i in range(half)],
                         dtype=torch.float32)
    args = timesteps[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


# ---------------------------------------------------------------- autoencoder/mod.rs

# The project's module path of each entry of taef2_ref's Sequentials (None: no parameters),
# in the order of autoencoder/mod.rs: the encoder's conv, block, three [stride-2 conv, three
# blocks] (the last three are the midblocks), conv; the decoder's clamp, conv, ReLU, three
# midblocks, three [upsample, conv, blocks (3, 3, 1)], conv.
ENCODER_PATHS = ["conv_in", "block_in"] + [
    p for s in range(3)
    for p in [f"stages.{s}.downsample"] + [f"stages.{s}.blocks.{b}" for b in range(3)]
] + ["conv_out"]
DECODER_PATHS = [None, "conv_in", None] + [f"mid_blocks.{b}" for b in range(3)] + [
    p for s, blocks in enumerate((3, 3, 1))
    for p in [None, f"stages.{s}.conv"] + [f"stages.{s}.blocks.{b}" for b in range(blocks)]
] + ["conv_out"]
# Inside a taef2_ref.Block: the three convolutions and the midblocks' global branch.
BLOCK_NAMES = {"conv.0": "conv_1", "conv.2": "conv_2", "conv.4": "conv_3",
               "pool.0": "global.expand", "pool.3": "global.project"}
NORM_NAMES = {"pool.1.weight": "global.norm.gamma", "pool.1.bias": "global.norm.beta"}


def project_names(sequential, paths):
    """`{project name: parameter}` of a taef2_ref Sequential (`3.conv.0.weight` ->
    `stages.0.blocks.0.conv_1.weight`, `11.pool.1.weight` -> `...global.norm.gamma`)."""
    assert len(paths) == len(sequential), "taef2_ref's layout is autoencoder/mod.rs's"
    out = {}
    for index, (module, path) in enumerate(zip(sequential, paths)):
        for name, param in module.named_parameters():
            head, _, leaf = name.rpartition(".")
            if name in NORM_NAMES:
                inner = NORM_NAMES[name]
            elif head in BLOCK_NAMES:
                inner = f"{BLOCK_NAMES[head]}.{leaf}"
            else:
                inner = name  # a plain convolution's `weight` / `bias`
            assert path is not None, f"parameters in layer {index} of a parameter-free entry"
            out[f"{path}.{inner}"] = param
    return out


class Encoder(nn.Module):
    """E: image in [-1, 1] (the project's convention) -> unscaled latent at 1/8; TAESD works in
    [0, 1], so the mapping is here, as in autoencoder/mod.rs."""

    def __init__(self, config):
        super().__init__()
        ae = config["autoencoder"]
        self.net = taef2_ref.encoder(ae["channels"], config["latent_channels"],
                                     ae["global_groups"])

    def forward(self, image):
        return self.net((image + 1.0) * 0.5)

    def project_parameters(self):
        return project_names(self.net, ENCODER_PATHS)


class Decoder(nn.Module):
    """D: unscaled latent -> image in about [-1, 1], not clamped (soft tanh clamp of the latent
    first: taef2_ref's `Clamp`)."""

    def __init__(self, config):
        super().__init__()
        ae = config["autoencoder"]
        self.net = taef2_ref.decoder(ae["channels"], config["latent_channels"],
                                     ae["global_groups"])

    def forward(self, latent):
        return self.net(latent) * 2.0 - 1.0

    def project_parameters(self):
        return project_names(self.net, DECODER_PATHS)


class Autoencoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)


# ---------------------------------------------------------------- unet/mod.rs

class Level(nn.Module):
    def __init__(self, resnets, resample, name):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        setattr(self, name, resample)
        self.resample_name = name

    @property
    def resample(self):
        return getattr(self, self.resample_name)


class UNet(nn.Module):
    def __init__(self, config):
        super().__init__()
        u = config["unet"]
        ch, g, blocks = u["channels"], u["norm_groups"], u["blocks_per_level"]
        time_dim = 4 * ch[0]
        self.time_embedding = nn.Module()
        self.time_embedding.linear_1 = Linear(ch[0], time_dim)
        self.time_embedding.linear_2 = Linear(time_dim, time_dim)
        self.sinusoid_dim = ch[0]
        # The input is [z_noisy, z_lr] concatenated on channels (conditioned_eps).
        self.conv_in = Conv(2 * config["latent_channels"], ch[0], 3)
        current, skips, downs = ch[0], [ch[0]], []
        for level, c in enumerate(ch):
            resnets = []
            for _ in range(blocks):
                resnets.append(ResBlock(current, c, time_dim, g))
                current = c
                skips.append(c)
            down = None
            if level + 1 < len(ch):
                skips.append(c)
                down = Conv(c, c, 3, stride=2)
            downs.append(Level(resnets, down, "downsample"))
        self.down_blocks = nn.ModuleList(downs)
        self.mid_block = nn.Module()
        self.mid_block.resnet_1 = ResBlock(current, current, time_dim, g)
        self.mid_block.attention = SpatialAttention(current, u["attention_heads"], g)
        self.mid_block.resnet_2 = ResBlock(current, current, time_dim, g)
        ups = []
        for level in reversed(range(len(ch))):
            c = ch[level]
            resnets = []
            for _ in range(blocks + 1):
                resnets.append(ResBlock(current + skips.pop(), c, time_dim, g))
                current = c
            ups.append(Level(resnets, Conv(c, c, 3) if level > 0 else None, "upsample"))
        self.up_blocks = nn.ModuleList(ups)
        self.conv_norm_out = GroupNorm(g, ch[0])
        self.conv_out = Conv(ch[0], config["latent_channels"], 3)

    def forward(self, z, t):
        """`[n, 2C, h, w] -> [n, C, h, w]`: the correction to eps_lr (`conditioned_eps`)."""
        n = z.shape[0]
        temb = timestep_embedding(torch.full((n,), float(t)), self.sinusoid_dim)
        mlp = self.time_embedding
        temb = mlp.linear_2(F.silu(mlp.linear_1(temb)))
        h = self.conv_in(z)
        skips = [h]
        for level in self.down_blocks:
            for block in level.resnets:
                h = block(h, temb)
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)
                skips.append(h)
        mid = self.mid_block
        h = mid.resnet_2(mid.attention(mid.resnet_1(h, temb)), temb)
        for level in self.up_blocks:
            for block in level.resnets:
                h = block(torch.cat([h, skips.pop()], dim=1), temb)
            if level.resample is not None:
                # Nearest 2x, as the broadcast in unet/mod.rs.
                h = level.resample(h.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
        return self.conv_out(F.silu(self.conv_norm_out(h)))

    def attach_lora(self, rank=4, alpha=4.0):
        """`UNet::attach_lora`: every conv and linear layer (norms excluded)."""
        for module in self.modules():
            if isinstance(module, (Conv, Linear)):
                module.attach_lora(rank, alpha)
        return self


# ---------------------------------------------------------------- resample.rs

def cubic_weight(distance):
    a, x = -0.5, abs(distance)
    if x <= 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return 0.0


def phase_taps(scale):
    taps = []
    for phase in range(scale):
        d = (phase + 0.5) / scale - 0.5
        taps.append([cubic_weight(k - 2.0 - d) for k in range(5)])
    return torch.tensor(taps, dtype=torch.float32)


def bicubic_upsample(x, scale):
    """Keys cubic (a = -0.5), half-pixel centres, replicated borders: two grouped 5-tap
    convolutions (one output channel per phase) and an interleave, as resample.rs does."""
    if scale == 1:
        return x
    n, c, h, w = x.shape
    taps = phase_taps(scale).reshape(-1).repeat(c)
    padded = F.pad(x, (2, 2, 0, 0), mode="replicate")
    phased = F.conv2d(padded, taps.reshape(c * scale, 1, 1, 5), groups=c)
    wide = phased.reshape(n, c, scale, h, w).permute(0, 1, 3, 4, 2).reshape(n, c, h, w * scale)
    padded = F.pad(wide, (0, 0, 2, 2), mode="replicate")
    phased = F.conv2d(padded, taps.reshape(c * scale, 1, 5, 1), groups=c)
    return (phased.reshape(n, c, scale, h, w * scale).permute(0, 1, 3, 2, 4)
            .reshape(n, c, h * scale, w * scale))


# ---------------------------------------------------------------- pipeline.rs

class Naosd(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.autoencoder = Autoencoder(config)
        self.unet = UNet(config)

    @property
    def latent_scale(self):
        return self.config["latent_scale"]

    def encode(self, image):
        return self.autoencoder.encoder(image) * self.latent_scale

    def decode(self, latent):
        return self.autoencoder.decoder(latent / self.latent_scale).clamp(-1.0, 1.0)

    def one_step(self, z_lr, eps, t_add=T_ADD, t_diff=T_DIFF, unet=None):
        z_noisy = add_noise(z_lr, eps, t_add)
        eps_hat = conditioned_eps(unet or self.unet, z_noisy, z_lr, t_diff)
        return x0_from_eps(z_noisy, eps_hat, t_diff)

    def project_parameters(self):
        """Every parameter under the weight file's name (`autoencoder.encoder.stages.2.blocks.0.
        global.norm.gamma`, `unet.conv_in.weight`, ...)."""
        out = {}
        for part in ("encoder", "decoder"):
            for name, p in getattr(self.autoencoder, part).project_parameters().items():
                out[f"autoencoder.{part}.{name}"] = p
        out.update({f"unet.{name}": p for name, p in self.unet.named_parameters()})
        return out

    def upscale(self, lr, scale=4, seed=0, t_add=T_ADD, t_diff=T_DIFF, stages=None):
        """Untiled one-step SR of a batch whose upsampled size the network accepts (colour fix
        none). `stages`, a dict, receives every intermediate tensor."""
        lr_up = bicubic_upsample(lr, scale)
        z_lr = self.encode(lr_up)
        eps = noise_tensor(seed, 0, tuple(z_lr.shape))
        z_noisy = add_noise(z_lr, eps, t_add)
        eps_hat = conditioned_eps(self.unet, z_noisy, z_lr, t_diff)
        z0 = x0_from_eps(z_noisy, eps_hat, t_diff)
        sr = self.decode(z0)
        if stages is not None:
            stages.update(lr_up=lr_up, noise=eps, z_lr=z_lr, z_noisy=z_noisy,
                          eps_hat=eps_hat, z0=z0, sr=sr)
        return sr


def randomise_all(model, generator=None):
    """As `bench::parity::randomise_all`: no zero residual branch left (for speed runs without
    a weight file; values do not matter there, only that nothing is trivially zero)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 4:
                std = 1.0 / math.sqrt(p.shape[1] * p.shape[2] * p.shape[3])
            elif p.dim() == 2:
                std = 1.0 / math.sqrt(p.shape[0])
            else:
                std = 0.1
            p.add_(torch.randn(p.shape, generator=generator) * std)
    return model


def load_weights(path):
    """A `Naosd` from a project weight file (f16 or f32 tensors, computed in f32)."""
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        header = json.loads(f.metadata()["gdpo_sr"])
        if header.get("trained_part"):
            raise ValueError(f"{path}: holds only the trained `{header['trained_part']}`; "
                             "compose it with the pretrained autoencoder first")
        model = Naosd(header["config"])
        own = model.project_parameters()
        names = set(f.keys())
        missing, unexpected = set(own) - names, names - set(own)
        if missing or unexpected:
            raise ValueError(f"{path}: missing {sorted(missing)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]}")
        with torch.no_grad():
            for name in names:
                t = f.get_tensor(name)
                if tuple(t.shape) != tuple(own[name].shape):
                    raise ValueError(f"{name}: shape {tuple(t.shape)}, "
                                     f"expected {tuple(own[name].shape)}")
                own[name].copy_(t.to(torch.float32))
    return model


# ---------------------------------------------------------------- trainer-native/src/loss

def depthwise(x, taps, k):
    c = x.shape[1]
    # The constant taps (SOBEL_X, GAUSS) live on the CPU; x may be on CUDA.
    kernel = taps.to(x.device).reshape(1, 1, k, k).expand(c, 1, k, k)
    return F.conv2d(x, kernel, groups=c)


def gaussian_taps():
    g = [math.exp(-((i - 3.0) ** 2) / (2.0 * 1.5 * 1.5)) for i in range(7)]
    s = sum(g)
    return torch.tensor([[a * b / (s * s) for b in g] for a in g], dtype=torch.float32)


GAUSS = gaussian_taps()
SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
SOBEL_Y = SOBEL_X.t().contiguous()


def l1(a, b):
    return (a - b).abs().mean()


def ssim(a, b):
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    a, b = (a + 1.0) * 0.5, (b + 1.0) * 0.5
    mu_a, mu_b = depthwise(a, GAUSS, 7), depthwise(b, GAUSS, 7)
    aa = depthwise(a * a, GAUSS, 7) - mu_a * mu_a
    bb = depthwise(b * b, GAUSS, 7) - mu_b * mu_b
    ab = depthwise(a * b, GAUSS, 7) - mu_a * mu_b
    num = (mu_a * mu_b * 2.0 + c1) * (ab * 2.0 + c2)
    den = (mu_a ** 2 + mu_b ** 2 + c1) * (aa + bb + c2)
    return (num / den).mean()


def halve(x):
    n, c, h, w = x.shape
    x = x[:, :, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(dim=5).mean(dim=3)


def multiscale_ssim_loss(a, b):
    side = min(a.shape[2], a.shape[3])
    scales = sum(1 for s in range(3) if side >> s >= 7)
    total = ssim(a, b)
    for _ in range(1, scales):
        a, b = halve(a), halve(b)
        total = total + ssim(a, b)
    return 1.0 - total / scales


def gradient_loss(a, b):
    d = a - b
    return (depthwise(d, SOBEL_X, 3).abs().mean() + depthwise(d, SOBEL_Y, 3).abs().mean()) / 8.0


class Discriminator(nn.Module):
    """loss/discriminator.rs: stride-2 4x4 convs, GroupNorm (not on the first), leaky ReLU."""

    def __init__(self, channels=(32, 64, 128)):
        super().__init__()
        convs, norms, inputs = [], [], 3
        for c in channels:
            convs.append(nn.Conv2d(inputs, c, 4, stride=2, padding=1))
            norms.append(nn.GroupNorm(min(8, c), c, eps=1e-5))
            inputs = c
        self.convs, self.norms = nn.ModuleList(convs), nn.ModuleList(norms)
        self.head = nn.Conv2d(inputs, 1, 3, padding=1)

    def forward(self, x, frozen=False):
        """`frozen`: parameters detached (the generator's gradient-free copy)."""
        p = (lambda t: t.detach()) if frozen else (lambda t: t)
        h = x
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = F.conv2d(h, p(conv.weight), p(conv.bias), 2, 1)
            if i > 0:
                h = F.group_norm(h, norm.num_groups, p(norm.weight), p(norm.bias), 1e-5)
            h = F.leaky_relu(h, 0.2)
        return F.conv2d(h, p(self.head.weight), p(self.head.bias), 1, 1)


NAOSD_LOSS = {"l1": 1.0, "ms_ssim": 0.2, "gradient": 0.5, "latent": 0.5, "adversarial": 0.02}


def naosd_losses(generator, discriminator, target_encoder, lr, hr, noise_seed, first_stream,
                 scale=4, weights=NAOSD_LOSS):
    """`NaosdStage::losses` (stages/naosd.rs): the inference path with training noise, then
    L1 + MS-SSIM + Sobel + latent MSE + hinge GAN (discriminator trained in the same pass).
    As there, a term whose weight is zero is not computed at all (the latent term's target
    encoder pass, the discriminator's three passes): it contributes nothing to the loss."""
    lr_up = bicubic_upsample(lr, scale)
    z_lr = generator.encode(lr_up)
    eps = noise_tensor(noise_seed, first_stream, tuple(z_lr.shape))
    z0 = generator.one_step(z_lr, eps)
    sr = generator.autoencoder.decoder(z0 / generator.latent_scale)
    total = (l1(sr, hr) * weights["l1"] + multiscale_ssim_loss(sr, hr) * weights["ms_ssim"]
             + gradient_loss(sr, hr) * weights["gradient"])
    if weights["latent"] > 0.0:
        with torch.no_grad():
            z_hr = target_encoder(hr) * generator.latent_scale
        total = total + ((z0 - z_hr) ** 2).mean() * weights["latent"]
    if weights["adversarial"] > 0.0:
        d_loss = (F.relu(1.0 - discriminator(hr)).mean()
                  + F.relu(1.0 + discriminator(sr.detach())).mean())
        g_adv = -discriminator(sr, frozen=True).mean()
        total = total + g_adv * weights["adversarial"] + d_loss
    return total


def clip_global_norm(params, max_norm):
    """train/optim.rs `clip_global_norm`: one norm over all given gradients."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.sqrt(sum((g * g).sum() for g in grads)).item() if grads else 0.0
    if math.isfinite(norm) and norm > max_norm:
        for g in grads:
            g.mul_(max_norm / (norm + 1e-6))
    return norm


# ---------------------------------------------------------------- GDPO (stages/gdpo/mod.rs)

def luma_bt601(img01):
    """metrics.rs: Y in [16, 235] from `[n, 3, h, w]` RGB in [0, 1] (float64)."""
    r, g, b = img01[:, 0], img01[:, 1], img01[:, 2]
    return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b


def psnr_y(samples01, references01, border=4):
    ya = luma_bt601(samples01)[:, border:-border, border:-border]
    yb = luma_bt601(references01)[:, border:-border, border:-border]
    mse = ((ya - yb) ** 2).reshape(ya.shape[0], -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return np.minimum(10.0 * np.log10(255.0 ** 2 / mse), 100.0)


def normalise_group(values):
    lo, hi = values.min(), values.max()
    return (values - lo) / (hi - lo) if hi - lo > 1e-12 else np.full_like(values, 0.5)


def group_advantages(rewards):
    mean, std = rewards.mean(), rewards.std(ddof=1)
    return (rewards - mean) / (std + 1e-8)


SAMPLE_NOISE, SHARED_NOISE = 0x6764706F5341, 0x6764706F5849


def denoising_errors(unet, x_t, z_lr, xi, t_diff=T_DIFF):
    """gdpo.rs `denoising_errors`: per-sample MSE of the conditioned eps prediction, `[n]`."""
    eps_hat = conditioned_eps(unet, x_t, z_lr, t_diff)
    return ((xi - eps_hat) ** 2).reshape(x_t.shape[0], -1).mean(1)


def gdpo_losses(reference, policy_unet, lr, hr, group, seed, step, omega=5000.0, scale=4):
    """`GdpoStage::step_losses` with the fidelity-only reward (PSNR-Y): group sampling by the
    frozen reference, advantages, re-encoding, shared noise, both denoising errors (each UNet
    conditioned on the sampled LR latent, `denoising_errors`), loss."""
    n_lr = lr.shape[0]
    n = n_lr * group
    first_stream = step * n
    with torch.no_grad():
        lr_up = bicubic_upsample(lr, scale)
        z_lr = reference.encode(lr_up).repeat_interleave(group, dim=0)
        eps = noise_tensor(seed ^ SAMPLE_NOISE, first_stream, tuple(z_lr.shape))
        samples = reference.decode(reference.one_step(z_lr, eps)).clamp(-1.0, 1.0)
        host = ((samples.cpu().numpy().astype(np.float64) + 1.0) * 0.5).clip(0.0, 1.0)
        refs = np.repeat(((hr.cpu().numpy().astype(np.float64) + 1.0) * 0.5), group, axis=0)
        fidelity = psnr_y(host, refs).reshape(n_lr, group)
        advantages = np.stack([group_advantages(normalise_group(f)) for f in fidelity])
        x0 = reference.encode(samples)
        xi = noise_tensor(seed ^ SHARED_NOISE, first_stream, tuple(x0.shape))
        x_t = add_noise(x0, xi, T_ADD)
        e_ref = denoising_errors(reference.unet, x_t, z_lr, xi)
    e_theta = denoising_errors(policy_unet, x_t, z_lr, xi)
    a = torch.from_numpy(advantages.astype(np.float32)).to(e_theta.device)
    margin = (a * (e_theta - e_ref).reshape(n_lr, group)).sum(1) * (-omega / 2.0)
    return -F.logsigmoid(margin).mean()


def gdpo_policy(reference, rank=4, alpha=4.0):
    """`GdpoPolicy::new`: the reference UNet, base weights frozen, fresh adapters."""
    unet = copy.deepcopy(reference.unet)
    for p in unet.parameters():
        p.requires_grad_(False)
    return unet.attach_lora(rank, alpha)
