// The hostile corpus (tests/hostile, see tests/hostile/expected.json) through the real page
// and the wasm module in headless Chromium: every weight file is refused with its reason and
// every image file ends in a clear message or a correct result, the page never breaks, and a
// normal upscale works afterwards. The browser decodes images itself (createImageBitmap), so
// a file our native decoder refuses may still be something Chromium can show: for those the
// test asks only for a clean outcome.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT, startServer, launch } from "./harness.mjs";

const CORPUS = join(ROOT, "tests/hostile");
const manifest = JSON.parse(readFileSync(join(CORPUS, "expected.json"), "utf8"));

let server;
let browser;
let page;
const pageErrors = [];

before(async () => {
  server = await startServer();
  browser = await launch({ webgpu: true });
  page = await browser.newPage();
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.goto(`${server.origin}/?nosw`);
  await page.waitForFunction(() => document.body.dataset.backend, null, { timeout: 120_000 });
});

after(async () => {
  await browser?.close();
  server?.close();
});

test("every hostile weight file is refused with its reason and the module keeps working", async () => {
  const files = manifest.weights.map((c) => ({
    ...c, base64: readFileSync(join(CORPUS, "weights", c.file)).toString("base64"),
  }));
  const results = await page.evaluate(async (files) => {
    const { Upscaler } = await import("./gdpo-sr.js");
    const out = {};
    for (const f of files) {
      const bytes = Uint8Array.from(atob(f.base64), (ch) => ch.charCodeAt(0));
      try {
        const u = await Upscaler.load(bytes, { cache: false });
        u.terminate();
        out[f.file] = "loaded";
      } catch (e) {
        out[f.file] = `${e.name}: ${e.message}`;
      }
    }
    const u = await Upscaler.load("weights/default.safetensors");
    const ok = await u.upscale({ width: 4, height: 4, data: new Uint8ClampedArray(64).fill(77) }, { scale: 2 });
    u.terminate();
    out.afterwards = [ok.width, ok.height];
    return out;
  }, files);
  for (const c of manifest.weights) {
    const alternatives = c.message.toLowerCase().split("|");
    const got = results[c.file].toLowerCase();
    assert.ok(alternatives.some((a) => got.includes(a)), `${c.file}: ${results[c.file]}`);
  }
  assert.deepEqual(results.afterwards, [8, 8]);
});

// Drops one file on the page; resolves to {error} or {done: [w, h]} from what the page shows.
async function dropAndRun(file, bytes) {
  await page.evaluate(() => {
    // A fresh status, so the wait below cannot read the previous file's outcome.
    document.body.dataset.done = "";
    const s = document.getElementById("status");
    s.textContent = "";
    s.classList.remove("error");
  });
  await page.setInputFiles("#file", { name: file, mimeType: "application/octet-stream", buffer: bytes });
  const state = await page.waitForFunction(() => {
    const s = document.getElementById("status");
    if (s.classList.contains("error")) return { error: s.textContent };
    return /Press Upscale/.test(s.textContent) ? { ready: s.textContent } : null;
  }, null, { timeout: 60_000 }).then((h) => h.jsonValue());
  if (state.error) return state;
  await page.click("#run");
  return page.waitForFunction(() => {
    const s = document.getElementById("status");
    if (s.classList.contains("error")) return { error: s.textContent };
    if (document.body.dataset.done !== "1") return null;
    const img = document.getElementById("after");
    return img.complete && img.naturalWidth ? { done: [img.naturalWidth, img.naturalHeight] } : null;
  }, null, { timeout: 120_000 }).then((h) => h.jsonValue());
}

test("every hostile image dropped on the page ends in a clear message or a correct result", async () => {
  await page.selectOption("#scale", "2");
  const problems = [];
  for (const c of manifest.images) {
    const outcome = await dropAndRun(c.file, readFileSync(join(CORPUS, "images", c.file)));
    if (c.expect === "ok") {
      let want = c.size.map((v) => 2 * v);
      // Chromium does not apply the EXIF orientation of WebP files (the native CLI does):
      // the stored orientation is what the page can show.
      if (c.chromium === "ignores-orientation") want = [want[1], want[0]];
      if (!outcome.done || outcome.done[0] !== want[0] || outcome.done[1] !== want[1]) {
        problems.push(`${c.file}: ${JSON.stringify(outcome)}, expected ${want}`);
      }
    } else if (outcome.error !== undefined && !/\S/.test(outcome.error)) {
      problems.push(`${c.file}: an empty error message`);
    }
  }
  assert.deepEqual(problems, []);
  // The page still works after the whole corpus.
  const last = await dropAndRun("rgb.png", readFileSync(join(CORPUS, "images/rgb.png")));
  assert.deepEqual(last.done, [48, 32]);
  assert.deepEqual(pageErrors, []);
});
