// The npm package as a third-party site embeds it: unpack the tarball built by
// scripts/build-npm.sh into a fresh site next to its own page, serve that site, and upscale.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, readdirSync, writeFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT, SCRATCH, SHIPPED_WEIGHTS, WEIGHTS, launch, startServer } from "./harness.mjs";

test("a site embeds the npm package, upscales with it, and loads the packaged model by default", async () => {
  const npmDir = join(ROOT, "target/npm");
  const tarball = readdirSync(npmDir).find((f) => /^gdpo-sr-.*\.tgz$/.test(f));
  assert.ok(tarball, "scripts/build-npm.sh built the package");
  const site = join(SCRATCH, "site");
  const pkg = join(site, "node_modules/gdpo-sr");
  mkdirSync(pkg, { recursive: true });
  execFileSync("tar", ["-xzf", join(npmDir, tarball), "-C", pkg, "--strip-components=1"]);
  const manifest = JSON.parse(readFileSync(join(pkg, "package.json"), "utf8"));
  for (const f of manifest.files) readFileSync(join(pkg, f)); // every listed file is there
  assert.match(readFileSync(join(pkg, "web.d.ts"), "utf8"), /export interface UpscaleOptions/);
  copyFileSync(WEIGHTS, join(site, "model.safetensors"));
  writeFileSync(join(site, "index.html"),
    '<!doctype html><meta charset="utf-8"><script type="module" src="main.js"></script><p id="out">…</p>');
  writeFileSync(join(site, "main.js"), `
    import { Upscaler } from "./node_modules/gdpo-sr/gdpo-sr.js";
    const u = await Upscaler.load("model.safetensors", { backend: "webgpu" });
    const image = new ImageData(12, 10);
    image.data.fill(160);
    const r = await u.upscale(image, { scale: 2 });
    u.terminate();
    // No argument: the model packaged beside the module.
    const packaged = await Upscaler.load(undefined, { backend: "cpu", cache: false });
    const info = packaged.info();
    packaged.terminate();
    document.getElementById("out").textContent = JSON.stringify({
      w: r.width, h: r.height, backend: r.backend,
      packaged: { preset: info.preset, parameters: info.parameters },
    });
  `);
  const server = await startServer(site);
  const browser = await launch({ webgpu: true });
  try {
    const page = await browser.newPage();
    await page.goto(`${server.origin}/`);
    await page.waitForFunction(() => document.getElementById("out").textContent.startsWith("{"), null, { timeout: 120_000 });
    const out = JSON.parse(await page.textContent("#out"));
    const { packaged, ...upscaled } = out;
    assert.deepEqual(upscaled, { w: 24, h: 20, backend: "webgpu" });
    // The packaged default is the page's shipped model (the trained UNet on TAEF2, or the
    // tests' miniature where ../shared is absent).
    const shipped = readFileSync(SHIPPED_WEIGHTS);
    assert.ok(shipped.equals(readFileSync(join(pkg, "gdpo-sr.safetensors"))), "the page's weight file");
    const headerLen = Number(shipped.readBigUInt64LE(0));
    const header = JSON.parse(shipped.subarray(8, 8 + headerLen).toString("utf8"));
    const config = JSON.parse(header.__metadata__.gdpo_sr).config;
    assert.equal(packaged.preset, config.name);
    assert.ok(packaged.parameters > 0);
    assert.equal(manifest.files.includes("LICENSE-TAEF2"), packaged.preset === "taef2");
  } finally {
    await browser.close();
    server.close();
  }
});
