#!/usr/bin/env python3
"""Writes the hostile-input corpus (tests/hostile/images, tests/hostile/weights) and its
manifest (expected.json). Every picture is drawn here (gradients and a marker block): no
third-party image. The files are checked in; rerun only to change the corpus:

    python3 -m venv /tmp/pil && /tmp/pil/bin/pip install pillow==13.0.0
    /tmp/pil/bin/python tests/hostile/generate.py WEIGHTS.safetensors

WEIGHTS is any `tiny` weight file (f16), e.g. from `trainer-native init --preset tiny`.
The manifest says, per file, what the system must do: decode to a given size (with or without
alpha) or fail with a message matching a pattern. tests/tests/contracts/hostile_inputs.rs holds the CLI
and library to it; tests/browser/page.test.mjs feeds the weight files to the wasm module.
"""
import hashlib
import io
import json
import struct
import sys
import zlib
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"
WEIGHTS = HERE / "weights"
W, H = 24, 16  # stored size: not square, so a rotation shows in the decoded size
manifest = {"images": [], "weights": []}


def picture(mode="RGB"):
    """A gradient with a red marker block in the stored top-left corner."""
    img = Image.new("RGB", (W, H))
    px = img.load()
    for y in range(H):
        for x in range(W):
            px[x, y] = (40 + 8 * x, 30 + 12 * y, 200 - 6 * x)
    for y in range(4):
        for x in range(4):
            px[x, y] = (255, 0, 0)
    return img if mode == "RGB" else img.convert(mode)


def encode(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def ok(name, data, size=(W, H), alpha=False, marker="top-left", why="", chromium=None):
    (IMAGES / name).write_bytes(data)
    case = {"file": name, "expect": "ok", "size": list(size), "alpha": alpha, "marker": marker, "why": why}
    if chromium:
        case["chromium"] = chromium  # where the browser's own decoder is known to differ
    manifest["images"].append(case)


def err(name, data, message, why=""):
    (IMAGES / name).write_bytes(data)
    manifest["images"].append({"file": name, "expect": "error", "message": message, "why": why})


def either(name, data, why):
    """Damage a decoder may not notice (e.g. flipped entropy-coded bits): any clean outcome."""
    (IMAGES / name).write_bytes(data)
    manifest["images"].append({"file": name, "expect": "ok-or-error", "why": why})


def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_size(width, height, idat=b""):
    """A PNG whose IHDR declares any size, with a valid CRC (bombs, 0x0)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(idat)) + png_chunk(b"IEND", b""))


def flip(data, offset, mask=0xFF):
    b = bytearray(data)
    b[offset] ^= mask
    return bytes(b)


def exif_orientation(value):
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def images():
    IMAGES.mkdir(parents=True, exist_ok=True)
    for f in IMAGES.iterdir():
        f.unlink()
    rgb = picture()
    png, jpg = encode(rgb, "PNG"), encode(rgb, "JPEG", quality=95)
    webp, bmp = encode(rgb, "WEBP", lossless=True), encode(rgb, "BMP")

    # Valid baselines and the colour models a user's files come in.
    ok("rgb.png", png)
    ok("rgb.jpg", jpg)
    ok("rgb.webp", webp)
    ok("rgb.bmp", bmp)
    ok("one-pixel.png", encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"), size=(1, 1), marker="none")
    ok("rgb16.png", png_rgb16(rgb), why="16 bits per channel")
    ok("gray.png", encode(rgb.convert("L"), "PNG"), marker="none")
    ok("gray16.png", encode(rgb.convert("L").convert("I;16"), "PNG"), marker="none")
    ok("gray-alpha.png", encode(rgb.convert("LA"), "PNG"), marker="none")
    ok("palette.png", encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"))
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    ok("palette-transparent.png", encode(pal, "PNG", transparency=pal.getpixel((10, 10))), alpha=True)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((W, H)))
    ok("rgba.png", encode(rgba, "PNG"), alpha=True)
    ok("rgba.webp", encode(rgba, "WEBP", lossless=True), alpha=True)
    ok("opaque-alpha.png", encode(rgb.convert("RGBA"), "PNG"), why="alpha channel all 255: no alpha plane")
    ok("interlaced.png", adam7(rgb))
    ok("gray.jpg", encode(rgb.convert("L"), "JPEG"), marker="none")
    ok("cmyk.jpg", encode(rgb.convert("CMYK"), "JPEG", quality=95), why="Adobe CMYK JPEG")
    ok("progressive.jpg", encode(rgb, "JPEG", progressive=True))
    # EXIF orientation: 6 = rotate 90 clockwise to display, 3 = 180, 8 = 90 counter-clockwise.
    ok("exif-orientation-6.jpg", encode(rgb, "JPEG", quality=95, exif=exif_orientation(6)),
       size=(H, W), marker="top-right")
    ok("exif-orientation-3.jpg", encode(rgb, "JPEG", quality=95, exif=exif_orientation(3)),
       marker="bottom-right")
    ok("exif-orientation-8.png", encode(rgb, "PNG", exif=exif_orientation(8)), size=(H, W), marker="bottom-left")
    ok("exif-orientation-6.webp", encode(rgb, "WEBP", lossless=True, exif=exif_orientation(6)),
       size=(H, W), marker="top-right", chromium="ignores-orientation")
    # Animated: the first frame is upscaled (it is the one with the marker).
    frames = [rgb, Image.new("RGB", (W, H), (0, 0, 255)), Image.new("RGB", (W, H), (0, 255, 0))]
    ok("animated.gif", encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0))
    ok("animated.png", encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100))
    ok("animated.webp", encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100,
                               lossless=True))

    # Empty, degenerate and lying files.
    err("empty.png", b"", "empty")
    err("empty.jpg", b"", "empty")
    err("zero-by-zero.png", png_with_size(0, 0), "cannot decode")
    err("zero-width.bmp", bmp_with_size(0, H), "cannot decode")
    err("bomb.png", png_with_size(100_000, 100_000, b"\0" * 64), "limit|too large|exceeds",
        why="declares 10^10 pixels in a few bytes")
    err("bomb.jpg", jpeg_with_size(jpg, 65_000, 65_000), "limit|too large|exceeds")
    err("bomb.webp", webp_bomb(webp), "limit|too large|exceeds")
    err("bomb.bmp", bmp_with_size(60_000, 60_000), "limit|too large|exceeds")
    err("text.png", b"hello, I am not a picture\n", "not a recognised image|unsupported|cannot decode")
    err("html.jpg", b"<!doctype html><title>x</title><p>not a picture</p>\n", "not a recognised image|unsupported|cannot decode")
    err("pdf.webp", b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n", "not a recognised image|unsupported|cannot decode")
    err("random.bmp", bytes((i * 7919 + 13) % 251 for i in range(4096)), "not a recognised image|unsupported|cannot decode")
    err("tiff.png", encode(rgb, "TIFF"), "not a recognised image|unsupported|cannot decode",
        why="a real TIFF (not a supported format) behind a .png name")

    # Truncated and corrupted files of each format.
    err("truncated.png", png[: len(png) // 2], "cannot decode")
    err("truncated-header.png", png[:20], "cannot decode")
    err("bad-crc.png", flip(png, 40), "cannot decode", why="a flipped byte inside a chunk: CRC mismatch")
    err("truncated.jpg", jpg[: len(jpg) // 3], "cannot decode")
    err("truncated-header.jpg", jpg[:30], "cannot decode")
    either("corrupt-scan.jpg", flip(jpg, len(jpg) - 40), "a flipped bit in the entropy-coded scan")
    err("truncated.webp", webp[: len(webp) // 2], "cannot decode")
    err("truncated.bmp", bmp[: len(bmp) // 2], "cannot decode")
    err("truncated.gif", encode(rgb, "GIF")[:40], "cannot decode")


def png_rgb16(img):
    """A 16-bit RGB PNG (Pillow writes 16-bit only for grey), rows unfiltered."""
    px = img.load()
    rows = b"".join(
        b"\0" + b"".join(struct.pack(">HHH", *(257 * c for c in px[x, y])) for x in range(img.width))
        for y in range(img.height)
    )
    ihdr = struct.pack(">IIBBBBB", img.width, img.height, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b""))


def adam7(img):
    """An Adam7-interlaced 8-bit RGB PNG (Pillow cannot write one): seven sub-images."""
    px = img.load()
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes:
        for y in range(y0, img.height, dy):
            xs = range(x0, img.width, dx)
            if len(xs):
                raw += b"\0" + b"".join(bytes(px[x, y]) for x in xs)
    ihdr = struct.pack(">IIBBBBB", img.width, img.height, 8, 2, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


def jpeg_with_size(jpg, width, height):
    """Rewrites the SOF0 frame header's declared size."""
    b = bytearray(jpg)
    i = b.index(b"\xff\xc0")
    b[i + 5: i + 9] = struct.pack(">HH", height, width)
    return bytes(b)


def bmp_with_size(width, height):
    """A BMP header declaring any size with almost no pixel data."""
    header = struct.pack("<2sIHHI", b"BM", 54 + 64, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 64, 2835, 2835, 0, 0)
    return header + info + b"\0" * 64


def webp_bomb(webp):
    """A real lossless WebP (VP8L) whose header is patched to declare 16000x16000."""
    assert webp[12:16] == b"VP8L" and webp[20] == 0x2F, "expected a simple VP8L file"
    bits = struct.unpack("<I", webp[21:25])[0]
    bits = (bits & ~((1 << 28) - 1)) | 15999 | (15999 << 14)  # width-1, height-1
    return webp[:21] + struct.pack("<I", bits) + webp[25:]


# --- weight files -------------------------------------------------------------------------

def safetensors_bytes(tensors, metadata):
    """tensors: name -> (dtype, shape, bytes). Names sorted for deterministic files."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        dtype, shape, data = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def read_safetensors(data):
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8: 8 + n])
    meta = header.pop("__metadata__", None)
    body = data[8 + n:]
    tensors = {k: (v["dtype"], v["shape"], body[v["data_offsets"][0]: v["data_offsets"][1]]) for k, v in header.items()}
    return tensors, meta


def content_hash(config_json, tensors):
    """An independent implementation of model/src/weights.rs `content_hash`."""
    h = hashlib.sha256()
    h.update(b"gdpo-sr-weights")
    h.update(config_json.encode())
    for name in sorted(tensors):
        dtype, shape, data = tensors[name]
        h.update(struct.pack("<Q", len(name)) + name.encode() + dtype.encode())
        h.update(struct.pack("<Q", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape))
        h.update(struct.pack("<Q", len(data)) + data)
    return "sha256:" + h.hexdigest()


def werr(name, data, message, why):
    (WEIGHTS / name).write_bytes(data)
    manifest["weights"].append({"file": name, "expect": "error", "message": message, "why": why})


def weights(source):
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    for f in WEIGHTS.iterdir():
        f.unlink()
    good = Path(source).read_bytes()
    tensors, meta = read_safetensors(good)
    header = json.loads(meta["gdpo_sr"])
    config_json = json.dumps(header["config"], separators=(",", ":"))
    assert content_hash(config_json, tensors) == header["content_hash"], "hash reimplementation drifted"

    werr("empty.safetensors", b"", "not a valid GDPO-SR weight file", "zero bytes")
    werr("truncated.safetensors", good[: len(good) // 2], "not a valid GDPO-SR weight file", "cut in half")
    werr("truncated-header.safetensors", good[:100], "not a valid GDPO-SR weight file", "cut inside the JSON header")
    n = struct.unpack("<Q", good[:8])[0]
    werr("bit-flipped.safetensors", flip(good, 8 + n + len(good[8 + n:]) // 2, 0x10), "content hash",
         "one bit of one tensor flipped: only the content hash can tell")
    werr("png.safetensors", encode(picture(), "PNG"), "not a valid GDPO-SR weight file", "an image, not weights")
    werr("huge-header-length.safetensors", struct.pack("<Q", 1 << 62) + good[8:], "not a valid GDPO-SR weight file",
         "declares a 4 EiB header")
    newer = dict(header, format_version=99)
    werr("format-version-99.safetensors", safetensors_bytes({}, {"gdpo_sr": json.dumps(newer)}), "version",
         "written by a newer format version")
    other = dict(header, format="some-other-weights")
    werr("other-format.safetensors", safetensors_bytes({}, {"gdpo_sr": json.dumps(other)}), "format",
         "another program's metadata")
    werr("no-metadata.safetensors",
         safetensors_bytes({"first_stage_model.encoder.conv_in.weight": ("F32", [2, 3, 1, 1], b"\0" * 24)}, None),
         "not a valid GDPO-SR weight file", "a foreign network's safetensors (no GDPO-SR header)")
    # Another architecture, hashed correctly: the declared config is `tiny`, the tensors are
    # not (one layer's output channels doubled), so only the shape check can refuse it.
    name = sorted(k for k in tensors if k.endswith("conv_in.weight") and k.startswith("unet"))[0]
    dtype, shape, data = tensors[name]
    wrong = dict(tensors)
    wrong[name] = (dtype, [shape[0] * 2] + shape[1:], data + data)
    forged = dict(header, content_hash=content_hash(config_json, wrong))
    werr("other-architecture.safetensors", safetensors_bytes(wrong, {"gdpo_sr": json.dumps(forged)}),
         "shape|architecture", f"{name} has another shape than the declared config builds")


if __name__ == "__main__":
    images()
    weights(sys.argv[1])
    (HERE / "expected.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{len(manifest['images'])} images, {len(manifest['weights'])} weight files")
