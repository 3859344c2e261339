// The shipped model itself (TAEF2 autoencoder + the trained UNet, composed by
// scripts/compose-weights.sh) in the real page: loads, upscales a small real-sized image on
// WebGPU, and equals the native CLI for the same seed within 1/255. Skipped, with a message,
// on machines without the pretrained TAEF2 files (the page then holds a tiny miniature).
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import {
  DIST, SHIPPED_WEIGHTS, TAEF2_DIR, startServer, launch, testImage, nativeUpscale, maxAbsDiff,
} from "./harness.mjs";

const skip = existsSync(TAEF2_DIR) ? false : `${TAEF2_DIR} is absent: the page holds a miniature`;

test("the shipped model runs in the page, equals the native CLI within 1/255, and tiles exactly", { skip }, async () => {
  const server = await startServer(DIST);
  const browser = await launch({ webgpu: true });
  try {
    const page = await browser.newPage();
    await page.goto(`${server.origin}/?nosw`);
    const image = testImage(32, 32);
    const native = nativeUpscale(image, {
      scale: 4, seed: 5, tile: 4096, weights: SHIPPED_WEIGHTS,
    });
    const web = await page.evaluate(async (image) => {
      const { Upscaler } = await import("./gdpo-sr.js");
      const u = await Upscaler.load("weights/default.safetensors", { backend: "webgpu" });
      const pixels = { width: image.width, height: image.height, data: new Uint8ClampedArray(image.data) };
      const r = await u.upscale(pixels, { scale: 4, seed: 5, tileSize: 4096, float32: true });
      // The same image in 2x2 tiles: the whole-image step keeps the midblocks' GroupNorm
      // and the UNet exact, so the output must not change.
      const tiled = await u.upscale(pixels, { scale: 4, seed: 5, tileSize: 16, float32: true });
      const info = u.info();
      u.terminate();
      return {
        width: r.width, height: r.height, rgb: Array.from(r.rgb), preset: info.preset, backend: r.backend,
        tiles: [r.tiles, tiled.tiles], tiledRgb: Array.from(tiled.rgb),
      };
    }, { ...image, data: Array.from(image.data) });
    assert.equal(web.preset, "taef2");
    assert.equal(web.backend, "webgpu");
    assert.deepEqual(native.shape, [3, 128, 128]);
    const diff = maxAbsDiff(native.values, web.rgb);
    console.log(`shipped model, 32x32 -> 128x128: max |native - browser| = ${diff.toExponential(2)}`);
    assert.ok(diff < 1 / 255, `max abs diff ${diff}`);
    assert.deepEqual(web.tiles, [1, 4]);
    const tiling = maxAbsDiff(web.rgb, web.tiledRgb);
    console.log(`shipped model in the browser, 2x2 tiles vs one: max diff = ${tiling.toExponential(2)}`);
    assert.ok(tiling < 1e-3, `tiled vs untiled: max abs diff ${tiling}`);
  } finally {
    await browser.close();
    server.close();
  }
});
