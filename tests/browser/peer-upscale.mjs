// The GAN peers of the quality table (docs/quality.md, scripts/quality.sh): UpscalerJS's ESRGAN
// x4 models (tests/browser/peer, from npm; the same models bench-peer.mjs times) run in headless
// Chromium on TensorFlow.js's wasm backend (the fastest one for them on these CPU machines,
// docs/benchmarks.md) over a folder of LR PNGs. Benchmark tooling, never part of the product.
//
// Usage: node tests/browser/peer-upscale.mjs LR_DIR OUT_ROOT [--models slim,medium,thick]
// writes OUT_ROOT/esrgan-<model>/<stem>.png (x4, 8-bit RGB) and skips an image whose output
// exists (the LR folder is fixed per evaluation set: the peers run once). Each image is
// upscaled whole (no patches): the sizes of Set5, Set14 and BSD100 fit.
// Needs: tests/browser/peer/setup.sh (and the trainer-native build that harness.mjs uses).
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { ROOT, encodePng, launch, serveStatic } from "./harness.mjs";

const { values: opt, positionals } = parseArgs({
  allowPositionals: true,
  options: { models: { type: "string", default: "slim,medium,thick" } },
});
const [lrDir, outRoot] = positionals;
if (!lrDir || !outRoot) {
  console.error("usage: node tests/browser/peer-upscale.mjs LR_DIR OUT_ROOT [--models slim,medium,thick]");
  process.exit(2);
}
const PEER = join(ROOT, "tests/browser/peer");
if (!existsSync(join(PEER, "node_modules/upscaler"))) {
  console.error("the peer is not installed: run tests/browser/peer/setup.sh");
  process.exit(1);
}
const images = readdirSync(lrDir).filter((f) => f.toLowerCase().endsWith(".png")).sort();
if (!images.length) {
  console.error(`no PNG images in ${lrDir}`);
  process.exit(1);
}
const scale = 4;

const peer = await serveStatic(PEER);
const browser = await launch({ webgpu: false });
const page = await (await browser.newContext()).newPage();
const requests = [];
page.on("request", (r) => requests.push(r.url()));
await page.goto(`${peer.origin}/index.html`);
await page.evaluate(async () => {
  tf.wasm.setWasmPaths(new URL("node_modules/@tensorflow/tfjs-backend-wasm/dist/", location.href).href);
  if (!(await tf.setBackend("wasm"))) throw new Error('tf.setBackend("wasm") failed');
});

try {
  for (const model of opt.models.split(",").filter(Boolean)) {
    const outDir = join(outRoot, `esrgan-${model}`);
    mkdirSync(outDir, { recursive: true });
    let written = 0;
    const started = Date.now();
    for (const file of images) {
      const out = join(outDir, file);
      if (existsSync(out)) continue;
      const png = readFileSync(join(lrDir, file)).toString("base64");
      const r = await page.evaluate(async ({ png, model }) => {
        const bytes = Uint8Array.from(atob(png), (c) => c.charCodeAt(0));
        // PNGs without colour chunks decode to their exact values (no colour management).
        const bitmap = await createImageBitmap(new Blob([bytes], { type: "image/png" }),
          { colorSpaceConversion: "none", premultiplyAlpha: "none" });
        const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
        const ctx = canvas.getContext("2d");
        ctx.drawImage(bitmap, 0, 0);
        const { data, width, height } = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
        const rgb = new Float32Array(width * height * 3);
        for (let i = 0; i < rgb.length; i++) rgb[i] = data[Math.floor(i / 3) * 4 + (i % 3)];
        // One Upscaler per model, kept on window between images.
        const key = `upscaler_${model}`;
        window[key] ??= peerUpscaler(model); // tests/browser/peer/index.html
        const input = tf.tensor3d(rgb, [height, width, 3], "float32");
        const t = await window[key].upscale(input, { output: "tensor" });
        input.dispose();
        const out = Array.from(await t.data());
        const shape = t.shape;
        t.dispose();
        return { out, shape, width, height };
      }, { png, model });
      const [h, w] = r.shape;
      if (h !== r.height * scale || w !== r.width * scale) {
        throw new Error(`esrgan-${model} on ${file}: output ${w}x${h} for a ${r.width}x${r.height} input`);
      }
      const rgba = new Uint8ClampedArray(w * h * 4); // clamps and rounds, as the page shows it
      for (let i = 0; i < w * h; i++) {
        rgba[i * 4] = r.out[i * 3];
        rgba[i * 4 + 1] = r.out[i * 3 + 1];
        rgba[i * 4 + 2] = r.out[i * 3 + 2];
        rgba[i * 4 + 3] = 255;
      }
      writeFileSync(`${out}.partial`, encodePng({ width: w, height: h, data: rgba }));
      renameSync(`${out}.partial`, out);
      written++;
    }
    console.log(`peer-upscale: esrgan-${model}: ${written} new, ${images.length - written} kept, ` +
      `in ${outDir} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  }
} finally {
  await browser.close();
  peer.close();
}
const outside = requests.filter((u) => !/^(blob:|data:|http:\/\/(127\.0\.0\.1|localhost)[:/])/.test(u));
if (outside.length) {
  console.error(`requests outside localhost: ${outside.join(", ")}`);
  process.exit(1);
}
