// Browser vs native time per output megapixel for the shipped default weights
// (docs/web.md). Usage: node tests/browser/bench-web.mjs [LR side, default 128] [scale, default 4]
// Needs the built page (scripts/build-web.sh) and target/debug/trainer-native.
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { DIST, SCRATCH, TRAINER, SHIPPED_WEIGHTS as WEIGHTS, encodePng, launch, startServer, testImage } from "./harness.mjs";

const side = Number(process.argv[2] ?? 128);
const scale = Number(process.argv[3] ?? 4);
const image = testImage(side, side);
const outMp = (side * scale) ** 2 / 1e6;
const rows = [];

const server = await startServer(DIST); // the shipped weights
const browser = await launch({ webgpu: true });
for (const backend of ["webgpu", "cpu"]) {
  const page = await browser.newPage();
  await page.goto(`${server.origin}/?nosw`);
  const r = await page.evaluate(async ({ image, scale, backend }) => {
    const { Upscaler } = await import("./gdpo-sr.js");
    const u = await Upscaler.load("weights/default.safetensors", { cache: false, backend });
    const data = new Uint8ClampedArray(image.data);
    const input = { width: image.width, height: image.height, data };
    await u.upscale({ width: 16, height: 16, data: new Uint8ClampedArray(1024).fill(99) }, { scale }); // warm-up: shader compilation
    const t0 = performance.now();
    const out = await u.upscale(input, { scale });
    const ms = performance.now() - t0;
    const info = u.info();
    u.terminate();
    return { ms, tiles: out.tiles, backend: info.backend };
  }, { image: { ...image, data: Array.from(image.data) }, scale, backend });
  rows.push({ where: `headless Chromium, ${r.backend === "webgpu" ? "WebGPU (SwiftShader)" : "CPU backend (burn-flex in wasm)"}`, seconds: r.ms / 1000, tiles: r.tiles });
  await page.close();
}
await browser.close();
server.close();

const input = join(SCRATCH, "bench.png");
writeFileSync(input, encodePng(image));
for (const backend of ["wgpu", "cpu"]) {
  const run = () => execFileSync(TRAINER, ["upscale", "--weights", WEIGHTS, "--input", input,
    "--output", join(SCRATCH, "bench-out.png"), "--scale", String(scale), "--backend", backend, "--warmup"], { encoding: "utf8" });
  const seconds = Number(run().match(/inference ([\d.]+) s/)[1]);
  rows.push({ where: `native ${backend === "wgpu" ? "wgpu (Mesa lavapipe, Vulkan on the CPU)" : "CPU (burn-flex)"}`, seconds });
}

console.log(`| where | ${side}x${side} -> ${side * scale}x${side * scale} (s) | s per output MP |`);
console.log("|---|---:|---:|");
for (const r of rows) console.log(`| ${r.where} | ${r.seconds.toFixed(2)} | ${(r.seconds / outMp).toFixed(2)} |`);
