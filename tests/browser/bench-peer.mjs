// Our page against a widely used browser upscaler, and our browser time against native wgpu.
// One headless Chromium (harness.mjs launch: WebGPU on SwiftShader), one generated test image
// (harness.mjs testImage), x4:
//   ours:  the gdpo-sr module of the built page (target/www) on WebGPU and on its CPU fallback;
//   peer:  UpscalerJS with its ESRGAN x4 models (tests/browser/peer, from npm) on every
//          TensorFlow.js backend this browser offers (webgpu, webgl, wasm, cpu);
//   native: trainer-native upscale --warmup, wgpu (Mesa lavapipe) and CPU.
// Every row: load, one untimed warm-up on the same image (shaders compile per shape in both
// WebGPU/WebGL stacks), then up to --runs timed runs, stopping once 30 s were spent (median
// reported), pixels read back included. The peer's first model runs on every backend; the
// others only on the backend that was fastest for it (SwiftShader rows take minutes each).
// Every request of the browser session is recorded; one leaving localhost fails the run.
//
// Usage: node tests/browser/bench-peer.mjs [--side 128] [--runs 3] [--json target/bench/browser.json]
//        [--models slim,medium,thick] [--peer-backends webgpu,webgl,wasm,cpu] [--timeout 900]
// Needs: scripts/build-web.sh, tests/browser/peer/setup.sh, and a trainer-native build.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { cpus, loadavg } from "node:os";
import { parseArgs } from "node:util";
import { DIST, ROOT, SCRATCH, SHIPPED_WEIGHTS as WEIGHTS, encodePng, launch, nativeGflopsPerOutputMp, serveStatic, startServer, testImage } from "./harness.mjs";

const { values: opt } = parseArgs({
  options: {
    side: { type: "string", default: "128" },
    runs: { type: "string", default: "3" }, // at most; a row stops once 30 s of timed runs are spent
    json: { type: "string", default: join(ROOT, "target/bench/browser.json") }, // else relative to the cwd
    models: { type: "string", default: "slim,medium,thick" },
    "peer-backends": { type: "string", default: "webgpu,webgl,wasm,cpu" },
    timeout: { type: "string", default: "900" }, // seconds per row (load + warm-up + runs)
  },
});
const side = Number(opt.side);
const runs = Number(opt.runs);
const budgetMs = 30_000;
const scale = 4; // the ESRGAN packages' x4 models; ours runs at the same scale
const timeoutMs = Number(opt.timeout) * 1000;
const outMp = (side * scale) ** 2 / 1e6;
const image = testImage(side, side);
const PEER = join(ROOT, "tests/browser/peer");
const notes = [];
const rows = [];

const pkgVersion = (name) =>
  JSON.parse(readFileSync(join(PEER, "node_modules", name, "package.json"), "utf8")).version;
if (!existsSync(join(PEER, "node_modules/upscaler"))) {
  console.error("the peer is not installed: run tests/browser/peer/setup.sh");
  process.exit(1);
}

// Runs `fn` in a fresh page of `context`; a row that hangs past --timeout is recorded, not awaited.
async function inPage(context, url, fn, arg) {
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  try {
    await page.goto(url);
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${opt.timeout} s`)), timeoutMs);
    });
    return await Promise.race([page.evaluate(fn, arg), timeout]).finally(() => clearTimeout(timer));
  } catch (e) {
    return { error: String(e.message ?? e).split("\n")[0] + (errors.length ? ` (page: ${errors[0]})` : "") };
  } finally {
    await page.close().catch(() => {});
  }
}

// The fastest row whose `who` starts with `prefix` (and backend with one of `backends`).
const best = (prefix, backends) => rows.filter((r) => r.who.startsWith(prefix) && (!backends || backends.some((b) => r.backend.startsWith(b))))
  .reduce((a, r) => (a && a.seconds <= r.seconds ? a : r), null);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
function addRow(who, backend, r, extra = {}) {
  if (r.error) {
    notes.push(`${who} on ${backend}: failed: ${r.error}`);
    console.error(`${who} on ${backend}: ${r.error}`);
    return;
  }
  const seconds = median(r.ms) / 1000;
  const row = { who, backend, seconds, s_per_out_mp: seconds / outMp, runs_s: r.ms.map((m) => m / 1000), ...extra };
  rows.push(row);
  console.error(`${who} on ${backend}: ${seconds.toFixed(2)} s`);
}

// Rows run one after another on a shared machine: the load says how much to trust them.
const loadAtStart = loadavg()[0];
const pixels = { width: side, height: side, data: Array.from(image.data) };
const ours = await startServer(DIST); // the shipped weights
const peer = await serveStatic(PEER);
const browser = await launch({ webgpu: true });
const context = await browser.newContext();
const requests = [];
context.on("request", (r) => requests.push(r.url()));
// tfjs-backend-webgpu 4.11 (the version UpscalerJS 1.0 pins) calls GPUAdapter.requestAdapterInfo(),
// which Chromium has since removed in favour of the GPUAdapter.info attribute; this one-line
// shim gives it the same object, otherwise that backend fails to initialise.
await context.addInitScript(() => {
  if (globalThis.GPUAdapter && !GPUAdapter.prototype.requestAdapterInfo) {
    GPUAdapter.prototype.requestAdapterInfo = function () { return Promise.resolve(this.info); };
  }
});

// (a) ours, the same module the page uses (in its worker), as a site embedding it would.
for (const backend of ["webgpu", "cpu"]) {
  const r = await inPage(context, `${ours.origin}/?nosw`, async ({ pixels, scale, backend, runs, budgetMs }) => {
    const { Upscaler } = await import("./gdpo-sr.js");
    const u = await Upscaler.load("weights/default.safetensors", { cache: false, backend });
    const input = { width: pixels.width, height: pixels.height, data: new Uint8ClampedArray(pixels.data) };
    await u.upscale(input, { scale }); // warm-up
    const ms = [];
    let out;
    while (ms.length < runs && ms.reduce((a, b) => a + b, 0) < budgetMs) {
      const t0 = performance.now();
      out = await u.upscale(input, { scale });
      ms.push(performance.now() - t0);
    }
    const info = u.info();
    u.terminate();
    return { ms, tiles: out.tiles, backend: info.backend, adapter: info.adapter?.architecture, preset: info.preset, params: info.parameters };
  }, { pixels, scale, backend, runs, budgetMs });
  if (!r.error && r.backend !== backend) r.error = `asked for ${backend}, got ${r.backend}`;
  const label = backend === "webgpu" ? `WebGPU (${r.adapter})` : "CPU (burn-flex in wasm)";
  addRow(`ours (gdpo-sr, ${r.preset} preset)`, label, r, { tiles: r.tiles, params: r.params });
}

// (b) the peer: its first model on every backend asked for, the others on the fastest of those.
let tfjsVersion = null;
let peerBackends = opt["peer-backends"].split(",");
// Parameters and conv GFLOPs per output MP from the model file: 2 * kh * kw * cin * cout per
// pixel of each Conv2D, at LR resolution until the upsampling layer, at HR after it.
function peerCost(model) {
  const json = JSON.parse(readFileSync(join(PEER, `node_modules/@upscalerjs/esrgan-${model}/models/x4/model.json`), "utf8"));
  const shapes = new Map(json.weightsManifest.flatMap((g) => g.weights).map((w) => [w.name, w.shape]));
  const size = (shape) => shape.reduce((a, b) => a * b, 1);
  let perOutPixel = 0;
  let pixelsPerOut = 1 / scale ** 2;
  for (const layer of json.modelTopology.model_config.config.layers) {
    if (/^(UpSampling2D|PixelShuffle)/.test(layer.class_name)) pixelsPerOut = 1;
    if (layer.class_name === "Conv2D") perOutPixel += 2 * size(shapes.get(`${layer.config.name}/kernel`)) * pixelsPerOut;
  }
  return { params: [...shapes.values()].reduce((n, s) => n + size(s), 0), gflops_per_out_mp: perOutPixel / 1e3 };
}
for (const model of opt.models.split(",")) {
  for (const backend of peerBackends) {
    const r = await inPage(context, `${peer.origin}/index.html`, async ({ pixels, model, backend, runs, budgetMs }) => {
      const here = (p) => new URL(p, location.href).href;
      if (backend === "wasm") tf.wasm.setWasmPaths(here("node_modules/@tensorflow/tfjs-backend-wasm/dist/"));
      if (!(await tf.setBackend(backend)) || tf.getBackend() !== backend) throw new Error(`tf.setBackend("${backend}") failed`);
      let device = null;
      if (backend === "webgl") {
        const gl = tf.backend().gpgpu.gl;
        device = gl.getParameter(gl.getExtension("WEBGL_debug_renderer_info").UNMASKED_RENDERER_WEBGL);
      } else if (backend === "webgpu") {
        device = tf.backend().adapterInfo?.architecture ?? null;
      } else if (backend === "wasm") {
        device = `simd ${tf.env().getBool("WASM_HAS_SIMD_SUPPORT")}, threads ${tf.env().getBool("WASM_HAS_MULTITHREAD_SUPPORT")}`;
      }
      const upscaler = peerUpscaler(model); // tests/browser/peer/index.html
      // Input as a float32 tensor, not an ImageData: fromPixels gives int32, and tfjs-webgpu's
      // first conv (3 input channels) then emits `vec3<f32>(i32, i32, i32)`, which Chromium's WGSL
      // compiler rejects (the pipeline is invalid and the output all zeros). Same on every backend.
      const rgb = new Float32Array(pixels.width * pixels.height * 3);
      for (let i = 0; i < rgb.length; i++) rgb[i] = pixels.data[Math.floor(i / 3) * 4 + (i % 3)];
      const once = async () => {
        const input = tf.tensor3d(rgb, [pixels.height, pixels.width, 3], "float32");
        const t = await upscaler.upscale(input, { output: "tensor" });
        input.dispose();
        const data = await t.data(); // read back, as ours returns pixels
        const shape = t.shape;
        t.dispose();
        return { data, shape };
      };
      await once(); // warm-up
      const ms = [];
      let out;
      while (ms.length < runs && ms.reduce((a, b) => a + b, 0) < budgetMs) {
        const t0 = performance.now();
        out = await once();
        ms.push(performance.now() - t0);
      }
      // Sanity: right size, and the mean level survives (a broken backend gives zeros or noise).
      let meanIn = 0, meanOut = 0;
      for (let i = 0; i < pixels.data.length; i += 4) meanIn += pixels.data[i] + pixels.data[i + 1] + pixels.data[i + 2];
      for (const v of out.data) meanOut += v;
      await upscaler.dispose();
      return { ms, shape: out.shape, meanIn: meanIn / (pixels.data.length * 0.75), meanOut: meanOut / out.data.length, device, tfjs: tf.version.tfjs };
    }, { pixels, model, backend, runs, budgetMs });
    if (!r.error) {
      tfjsVersion = r.tfjs;
      const [h, w] = r.shape;
      if (h !== side * scale || w !== side * scale) r.error = `output is ${w}x${h}`;
      else if (Math.abs(r.meanIn - r.meanOut) > 20) r.error = `output mean ${r.meanOut.toFixed(1)} vs input ${r.meanIn.toFixed(1)}: broken output`;
    }
    addRow(`UpscalerJS esrgan-${model}`, `${backend}${r.device ? ` (${r.device})` : ""}`, r, peerCost(model));
  }
  const fastest = best(`UpscalerJS esrgan-${model}`);
  if (fastest && peerBackends.length > 1) {
    peerBackends = [fastest.backend.split(" ")[0]];
    notes.push(`UpscalerJS models after esrgan-${model} ran only on its fastest backend here, ${peerBackends[0]}`);
  }
}
const chromiumVersion = browser.version();
await browser.close();
ours.close();
peer.close();

// (c) native, the same image and scale; release build where there is one.
const profile = existsSync(join(ROOT, "target/release/trainer-native")) ? "release" : "debug";
const trainer = join(ROOT, "target", profile, "trainer-native");
const input = join(SCRATCH, "bench-peer.png");
writeFileSync(input, encodePng(image));
for (const backend of ["wgpu", "cpu"]) {
  let r;
  try {
    const out = execFileSync(trainer, ["upscale", "--weights", WEIGHTS, "--input", input, "--output",
      join(SCRATCH, "bench-peer-out.png"), "--scale", String(scale), "--backend", backend, "--warmup"], { encoding: "utf8" });
    r = { ms: [Number(out.match(/inference ([\d.]+) s/)[1]) * 1000] };
  } catch (e) {
    r = { error: String(e.message).split("\n")[0] };
  }
  addRow(`ours native (trainer-native ${profile})`, backend === "wgpu" ? "wgpu (Mesa lavapipe)" : "CPU (burn-flex)", r);
}

// Our model's cost, from the same binary (`info`: GFLOPs per output MP of each preset).
try {
  const preset = rows.find((r) => r.who.startsWith("ours ("))?.who.match(/, (\w+) preset/)?.[1];
  const gflops = nativeGflopsPerOutputMp(trainer, preset);
  for (const r of rows) if (r.who.startsWith("ours")) r.gflops_per_out_mp = gflops;
} catch (e) {
  notes.push(`could not read our model's GFLOPs from trainer-native info: ${String(e.message).split("\n")[0]}`);
}

// Privacy and fairness: nothing of either upscaler came from outside this machine.
const outside = requests.filter((u) => !/^(blob:|data:|http:\/\/(127\.0\.0\.1|localhost)[:/])/.test(u));
notes.push(`${requests.length} requests in the browser session, ${outside.length} outside localhost`);

const ratio = (a, b) => (a && b ? a.seconds / b.seconds : null);
const oursBrowser = best("ours (");
const ratios = {
  "ours best browser / native wgpu": ratio(oursBrowser, best("ours native", ["wgpu"])),
  "ours browser WebGPU / native wgpu": ratio(best("ours (", ["WebGPU"]), best("ours native", ["wgpu"])),
  "ours browser CPU / native CPU": ratio(best("ours (", ["CPU"]), best("ours native", ["CPU"])),
};
for (const model of opt.models.split(",")) {
  const p = best(`UpscalerJS esrgan-${model}`);
  ratios[`ours best browser / esrgan-${model} best browser`] = ratio(oursBrowser, p);
  const sameBackend = ratio(best("ours (", ["WebGPU"]), best(`UpscalerJS esrgan-${model}`, ["webgpu"]));
  if (sameBackend !== null) ratios[`ours WebGPU / esrgan-${model} webgpu`] = sameBackend;
}
notes.push(`${cpus().length} CPU cores; 1-minute load average ${loadAtStart.toFixed(1)} at the start, ${loadavg()[0].toFixed(1)} at the end`);
notes.push(`native times from target/${profile}/trainer-native; ours: ${oursBrowser ? `best browser row is ${oursBrowser.backend}` : "no browser row"}`);
notes.push(`timing: load, one warm-up on the same image, median of up to ${runs} timed runs (fewer once 30 s were spent) incl. read-back; ratios < 1 mean ours is faster`);
notes.push("UpscalerJS 1.0 pins tfjs ~4.11: its WebGPU backend needed a shim for GPUAdapter.requestAdapterInfo (removed from Chromium) and a float32 tensor input (its int32 conv path emits WGSL Chromium rejects); tfjs wasm uses wasm SIMD (XNNPACK) and no threads (no cross-origin isolation); ours also uses wasm SIMD (burn-flex's simd feature, +simd128 in .cargo/config.toml) and is single-threaded too");
notes.push("browser WebGPU here is SwiftShader and native wgpu is Mesa lavapipe: two different CPU rasterisers, so that ratio is not the browser overhead on a real GPU; browser CPU is single-threaded wasm, native CPU uses every core");

const result = {
  chromium: chromiumVersion, upscaler: pkgVersion("upscaler"), tfjs: tfjsVersion,
  models: Object.fromEntries(opt.models.split(",").map((m) => [`@upscalerjs/esrgan-${m}`, pkgVersion(`@upscalerjs/esrgan-${m}`)])),
  image: [side, side], scale, out_mp: outMp, rows, ratios, requests_outside_localhost: outside, notes,
};
const jsonPath = resolve(opt.json);
mkdirSync(dirname(jsonPath), { recursive: true });
writeFileSync(jsonPath, JSON.stringify(result, null, 2) + "\n");

console.log(`Headless Chromium ${chromiumVersion}, ${side}x${side} -> ${side * scale}x${side * scale} (x${scale}, ${outMp.toFixed(3)} output MP)\n`);
console.log("| who | backend | parameters | GFLOPs per output MP | seconds | s per output MP | GFLOP/s |");
console.log("|---|---|---:|---:|---:|---:|---:|");
for (const r of rows) {
  const g = r.gflops_per_out_mp;
  console.log(`| ${r.who} | ${r.backend} | ${r.params ?? ""} | ${g?.toFixed(1) ?? ""} | ${r.seconds.toFixed(2)} | ${r.s_per_out_mp.toFixed(2)} | ${g ? (g / r.s_per_out_mp).toFixed(2) : ""} |`);
}
console.log("\n| ratio | value |\n|---|---:|");
for (const [k, v] of Object.entries(ratios)) console.log(`| ${k} | ${v === null ? "n/a" : v.toFixed(2)} |`);
console.log(`\n${notes.map((n) => `- ${n}`).join("\n")}\nwrote ${jsonPath}`);
if (outside.length) {
  console.error(`requests left localhost:\n${outside.join("\n")}`);
  process.exit(1);
}
