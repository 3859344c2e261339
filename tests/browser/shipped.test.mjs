// The shipped model itself (TAEF2 autoencoder + the trained UNets' detail range, composed by
// scripts/compose-weights.sh) in the real page: loads with the detail knob at the weights'
// default, upscales a small real-sized image on WebGPU, and equals the native CLI for the
// same seed within 1/255, at the default detail and at another point of the range. Skipped, with a message,
// on machines without the pretrained TAEF2 files (the page then holds a tiny miniature).
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import {
  DIST, SHIPPED_WEIGHTS, TAEF2_DIR, startServer, launch, testImage, nativeUpscale, maxAbsDiff,
} from "./harness.mjs";

const skip = existsSync(TAEF2_DIR) ? false : `${TAEF2_DIR} is absent: the page holds a miniature`;

test("the shipped model runs in the page, equals the native CLI within 1/255 at its default and another detail, and tiles exactly", { skip }, async () => {
  const server = await startServer(DIST);
  const browser = await launch({ webgpu: true });
  try {
    const page = await browser.newPage();
    await page.goto(`${server.origin}/?nosw`);
    // The page's detail knob starts at the weights' default.
    await page.waitForFunction(() => document.body.dataset.backend, null, { timeout: 120_000 });
    const knob = await page.evaluate(() => {
      const k = document.getElementById("detail");
      return { disabled: k.disabled, value: k.value, shown: document.getElementById("detail-value").textContent };
    });
    assert.deepEqual(knob, { disabled: false, value: "0.35", shown: "0.35" });
    const image = testImage(32, 32);
    const native = nativeUpscale(image, {
      scale: 4, seed: 5, tile: 4096, weights: SHIPPED_WEIGHTS,
    });
    const nativeDetailed = nativeUpscale(image, {
      scale: 4, seed: 5, tile: 4096, weights: SHIPPED_WEIGHTS, detail: 0.8,
    });
    const web = await page.evaluate(async (image) => {
      const { Upscaler } = await import("./gdpo-sr.js");
      const u = await Upscaler.load("weights/default.safetensors", { backend: "webgpu" });
      const pixels = { width: image.width, height: image.height, data: new Uint8ClampedArray(image.data) };
      const r = await u.upscale(pixels, { scale: 4, seed: 5, tileSize: 4096, float32: true });
      // The same image in 2x2 tiles: the whole-image step keeps the midblocks' GroupNorm
      // and the UNet exact, so the output must not change.
      const tiled = await u.upscale(pixels, { scale: 4, seed: 5, tileSize: 16, float32: true });
      // The detail knob: the default by name, another point, and the two ends.
      const at = (detail) => u.upscale(pixels, { scale: 4, seed: 5, tileSize: 4096, float32: true, detail });
      const runs = [];
      for (const d of [u.info().detailDefault, 0.8, 0, 1]) runs.push(await at(d));
      const [named, detailed, low, high] = runs;
      const info = u.info();
      u.terminate();
      const meanAbs = (a, b) => a.reduce((s, v, i) => s + Math.abs(v - b[i]), 0) / a.length;
      return {
        width: r.width, height: r.height, rgb: Array.from(r.rgb), preset: info.preset, backend: r.backend,
        tiles: [r.tiles, tiled.tiles], tiledRgb: Array.from(tiled.rgb), detailDefault: info.detailDefault,
        namedIsDefault: named.rgb.every((v, i) => v === r.rgb[i]),
        detailedRgb: Array.from(detailed.rgb), endsApart: meanAbs(low.rgb, high.rgb),
      };
    }, { ...image, data: Array.from(image.data) });
    assert.equal(web.preset, "taef2");
    assert.equal(web.backend, "webgpu");
    assert.deepEqual(native.shape, [3, 128, 128]);
    const diff = maxAbsDiff(native.values, web.rgb);
    console.log(`shipped model, 32x32 -> 128x128: max |native - browser| = ${diff.toExponential(2)}`);
    assert.ok(diff < 1 / 255, `max abs diff ${diff}`);
    assert.ok(Math.abs(web.detailDefault - 0.35) < 1e-6, `detailDefault ${web.detailDefault}`);
    assert.ok(web.namedIsDefault, "detail = its default gives the default output");
    const detailDiff = maxAbsDiff(nativeDetailed.values, web.detailedRgb);
    console.log(`detail 0.8: max |native - browser| = ${detailDiff.toExponential(2)}; ends 0 / 1 differ by ${(web.endsApart * 255).toFixed(2)}/255 on average`);
    assert.ok(detailDiff < 1 / 255, `detail 0.8: max abs diff ${detailDiff}`);
    assert.ok(maxAbsDiff(web.rgb, web.detailedRgb) > 1 / 255, "detail 0.8 changes the output");
    assert.ok(web.endsApart > 0.5 / 255, `the ends barely differ: ${web.endsApart}`);
    assert.deepEqual(web.tiles, [1, 4]);
    const tiling = maxAbsDiff(web.rgb, web.tiledRgb);
    console.log(`shipped model in the browser, 2x2 tiles vs one: max diff = ${tiling.toExponential(2)}`);
    assert.ok(tiling < 1e-3, `tiled vs untiled: max abs diff ${tiling}`);
  } finally {
    await browser.close();
    server.close();
  }
});
