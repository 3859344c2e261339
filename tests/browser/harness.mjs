// Shared pieces of the browser tests: the built page served like scripts/serve.sh serves it,
// Debian's Chromium driven by playwright-core, deterministic test images, and the native CLI.
import { spawn, execFileSync } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, writeFileSync, readFileSync, existsSync, cpSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, extname, join, normalize, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { deflateSync } from "node:zlib";
import { chromium } from "playwright-core";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const DIST = join(ROOT, "target/www");
export const TRAINER = join(ROOT, "target/debug/trainer-native");
export const SCRATCH = mkdtempSync(join(tmpdir(), "gdpo-browser-"));
// The page's real default weights (scripts/compose-weights.sh: the shipped TAEF2 model, or a
// tiny miniature on machines without ../shared); shipped.test.mjs runs them.
export const SHIPPED_WEIGHTS = join(ROOT, "www/weights/default.safetensors");
export const TAEF2_DIR = process.env.GDPO_SR_TAEF2_DIR ?? join(ROOT, "../shared/weights/taef2");
// Every other test runs a random-weight miniature of the same architecture (`tiny`) in a copy
// of the built page: the shipped model costs ~1 TFLOP per output megapixel, minutes per test
// on SwiftShader, and the machinery under test is the same.
export const WEIGHTS = join(SCRATCH, "tiny.safetensors");
export const TEST_DIST = join(SCRATCH, "www");
execFileSync(TRAINER, ["init", "--preset", "tiny", "--out", WEIGHTS], { stdio: "ignore" });

function testDist() {
  if (!existsSync(TEST_DIST)) {
    cpSync(DIST, TEST_DIST, { recursive: true });
    cpSync(WEIGHTS, join(TEST_DIST, "weights/default.safetensors"));
  }
  return TEST_DIST;
}

// Flags every launch needs on these machines (closed network, no first-run UI).
const BASE_FLAGS = [
  "--no-sandbox", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-quic",
  "--disable-default-apps", "--disable-extensions",
];

/** Serves `dir` (default: the built page with the miniature weights) with the CSP header
 *  (scripts/serve.py) on a free port. */
export async function startServer(dir) {
  if (!existsSync(join(DIST, "index.html"))) {
    throw new Error(`${DIST} is not built: run scripts/build-web.sh (scripts/test.sh does)`);
  }
  dir ??= testDist();
  const server = spawn("python3", [join(ROOT, "scripts/serve.py"), dir, "0"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const [line] = await once(server.stdout, "data");
  const origin = String(line).match(/http:\/\/[\d.]+:\d+/)?.[0];
  if (!origin) throw new Error(`server did not start: ${line}`);
  return { origin, close: () => server.kill() };
}

// The peer (UpscalerJS, tests/browser/peer) needs its own static server: TensorFlow.js's UMD
// bundle evaluates a string, which the CSP that scripts/serve.py sends for our page forbids
// ('unsafe-eval'). No CSP here, so a request to a CDN would not be blocked: the callers' request
// logs are what prove it never happens.
const TYPES = { ".html": "text/html", ".js": "text/javascript", ".json": "application/json",
  ".wasm": "application/wasm", ".bin": "application/octet-stream", ".png": "image/png" };
/** Serves the files under `root` (no CSP) on a free localhost port. */
export function serveStatic(root) {
  const server = createServer((req, res) => {
    const path = normalize(join(root, decodeURIComponent(new URL(req.url, "http://x").pathname)));
    if (!path.startsWith(root + sep) || !existsSync(path) || !statSync(path).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "Content-Type": TYPES[extname(path)] ?? "application/octet-stream" });
    res.end(readFileSync(path));
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () =>
    resolve({ origin: `http://127.0.0.1:${server.address().port}`, close: () => server.close() })));
}

/** GFLOPs per output megapixel of `preset`, as `trainer-native info` (binary `trainer`) prints it. */
export function nativeGflopsPerOutputMp(trainer, preset) {
  const table = execFileSync(trainer, ["info"], { encoding: "utf8" });
  const row = table.match(new RegExp(`^\\| ${preset} \\|[^|]*\\| ([\\d.]+)`, "m"));
  if (!row) throw new Error(`trainer-native info has no row for the preset ${preset}`);
  return Number(row[1]);
}

/** Headless Chromium; `webgpu: false` launches it without WebGPU (the CPU fallback). */
export async function launch({ webgpu = true } = {}) {
  const args = [...BASE_FLAGS];
  if (webgpu) args.push("--enable-unsafe-webgpu");
  else args.push("--disable-features=WebGPU");
  return chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args });
}

/** A deterministic RGBA test image (smooth gradients, edges and texture), no third-party data. */
export function testImage(width, height) {
  const data = new Uint8ClampedArray(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 4;
      const checker = ((x >> 2) + (y >> 2)) % 2 ? 50 : 0;
      data[i] = Math.round((x * 200) / width) + checker;
      data[i + 1] = Math.round((y * 200) / height) + checker;
      data[i + 2] = (x * 37 + y * 91) % 180;
      data[i + 3] = 255;
    }
  }
  return { width, height, data };
}

// Minimal PNG writer (8-bit RGB, no colour chunks, so every decoder reads the exact values).
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type, data) {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, "ascii");
  data.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}
export function encodePng({ width, height, data }) {
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < 3; c++) raw[y * (width * 3 + 1) + 1 + x * 3 + c] = data[(y * width + x) * 4 + c];
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr), chunk("IDAT", deflateSync(raw)), chunk("IEND", Buffer.alloc(0)),
  ]);
}

/** Reads tensor `name` (f32) of a safetensors file. */
export function readSafetensorF32(path, name) {
  const bytes = readFileSync(path);
  const headerLen = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLen).toString("utf8"));
  const { dtype, shape, data_offsets: [start, end] } = header[name];
  if (dtype !== "F32") throw new Error(`${name} is ${dtype}`);
  const body = bytes.subarray(8 + headerLen + start, 8 + headerLen + end);
  const values = new Float32Array(body.length / 4);
  for (let i = 0; i < values.length; i++) values[i] = body.readFloatLE(i * 4);
  return { shape, values };
}

/** The native CLI's exact output for `image` (written as PNG) with the given options. */
export function nativeUpscale(image, { scale, seed, tile, tAdd = 250, weights = WEIGHTS, detail }) {
  const input = join(SCRATCH, `in-${image.width}x${image.height}.png`);
  writeFileSync(input, encodePng(image));
  const tensor = join(SCRATCH, `native-${seed}-${scale}-${tile}-${detail ?? "default"}.safetensors`);
  execFileSync(TRAINER, [
    "upscale", "--weights", weights, "--input", input, "--output", join(SCRATCH, "native.png"),
    "--scale", String(scale), "--seed", String(seed), "--t-add", String(tAdd),
    "--tile", String(tile), "--tensor-out", tensor,
    ...(detail === undefined ? [] : ["--detail", String(detail)]),
    "--backend", "cpu",
  ], { stdio: ["ignore", "ignore", "inherit"] });
  return readSafetensorF32(tensor, "rgb");
}

export function maxAbsDiff(a, b) {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}
