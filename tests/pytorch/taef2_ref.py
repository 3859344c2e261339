"""TAEF2 (the TAESD-family autoencoder of FLUX.2's latent space) written again in PyTorch, as an
independent reference for model/src/autoencoder (burn) and trainer-native/src/pretrained.rs.

Architecture from the weights' README (../shared/weights/README.md) and the archives' shapes:
Block(c) = relu(conv3(relu(conv2(relu(conv1(x'))))) + x'), x' = x + pool(x) in midblocks, with
pool = 1x1 conv c->4c, GroupNorm(4), ReLU, 1x1 conv 4c->c. Images in [0, 1].

Usage: taef2_ref.py --weights DIR IMAGE.png [IMAGE.png ...]
Prints one JSON line per image: the reconstruction PSNR-Y of D(E(x)) against x (BT.601 luma
on 16..235, no border), and the mean/std of the latent, computed in float32.
"""

import argparse
import json
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def conv(cin, cout, bias=True, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


class Block(nn.Module):
    def __init__(self, c, midblock=False, groups=4):
        super().__init__()
        self.conv = nn.Sequential(conv(c, c), nn.ReLU(), conv(c, c), nn.ReLU(), conv(c, c))
        self.pool = None
        if midblock:
            self.pool = nn.Sequential(
                nn.Conv2d(c, 4 * c, 1, bias=False),
                nn.GroupNorm(groups, 4 * c),
                nn.ReLU(),
                nn.Conv2d(4 * c, c, 1, bias=False),
            )

    def forward(self, x):
        if self.pool is not None:
            x = x + self.pool(x)
        return F.relu(self.conv(x) + x)


class Clamp(nn.Module):
    def forward(self, x):
        return torch.tanh(x / 3) * 3


# `c`, `latent` and `groups` other than TAEF2's let gdpo_sr_torch.py build the project's
# smaller TAESD-family presets (`tiny`) from the same code.
def encoder(c=64, latent=32, groups=4):
    layers = [conv(3, c), Block(c)]
    for stage in range(3):
        layers += [conv(c, c, bias=False, stride=2)]
        layers += [Block(c, midblock=stage == 2, groups=groups) for _ in range(3)]
    layers += [conv(c, latent)]
    return nn.Sequential(*layers)


def decoder(c=64, latent=32, groups=4):
    layers = [Clamp(), conv(latent, c), nn.ReLU()]
    layers += [Block(c, midblock=True, groups=groups) for _ in range(3)]
    for blocks in (3, 3, 1):
        layers += [nn.Upsample(scale_factor=2), conv(c, c, bias=False)]
        layers += [Block(c) for _ in range(blocks)]
    layers += [conv(c, 3)]
    return nn.Sequential(*layers)


def load(module, path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return module.eval()


def luma(rgb01):
    r, g, b = rgb01[0], rgb01[1], rgb01[2]
    return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b


def psnr_y(a01, b01):
    mse = float(((luma(a01) - luma(b01)) ** 2).mean())
    return 10 * math.log10(255.0**2 / mse)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("images", nargs="+")
    args = ap.parse_args()
    # Imported here: gdpo_sr_torch.py imports the networks only, on machines without Pillow.
    from PIL import Image

    torch.set_num_threads(max(1, torch.get_num_threads()))
    enc = load(encoder(), f"{args.weights}/taef2_encoder.pth")
    dec = load(decoder(), f"{args.weights}/taef2_decoder.pth")
    for path in args.images:
        img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        h, w = (img.shape[0] // 8) * 8, (img.shape[1] // 8) * 8
        x = torch.from_numpy(img[:h, :w]).permute(2, 0, 1)[None]
        with torch.no_grad():
            z = enc(x)
            y = dec(z).clamp(0, 1)
        print(
            json.dumps(
                {
                    "image": path,
                    "psnr_y": psnr_y(y[0].numpy(), x[0].numpy()),
                    "latent_mean": float(z.mean()),
                    "latent_std": float(z.std()),
                }
            )
        )


if __name__ == "__main__":
    main()
