"""Independent reference for model/src/noise.rs golden values (pure Python, float64 math).

Run: python3 model/tests/reference/noise_golden.py
Prints the f32 values of NoiseField::new(0).sample(0, 0, 0, x) for x = 0..3.
"""
import math
import struct

M = (1 << 64) - 1


def mix64(z):
    z &= M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)


def unit_open(bits):
    return ((bits >> 11) + 1.0) * (1.0 / (1 << 53))


def sample(seed, stream, channel, y, x):
    key = (mix64(seed ^ 0x9E3779B97F4A7C15)
           ^ mix64((stream + 0x632BE59BD9B4E019) & M)
           ^ ((mix64((channel << 1) | 1) * 3 + mix64((y << 32) | x)) & M))
    a = mix64(key)
    b = mix64(a ^ 0xD1B54A32D192ED03)
    r = math.sqrt(-2.0 * math.log(unit_open(a)))
    v = r * math.cos(2.0 * math.pi * unit_open(b))
    return struct.unpack("f", struct.pack("f", v))[0]


if __name__ == "__main__":
    print([repr(sample(0, 0, 0, 0, x)) for x in range(4)])
