// The GDPO-SR page: decode a picked/dropped image in the browser, upscale it in a worker
// (gdpo-sr.js), show before/after with a slider, offer the PNG. Nothing is uploaded.
import { Upscaler } from "./gdpo-sr.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const DEFAULT_WEIGHTS = "weights/default.safetensors";

let upscaler = null;
let input = null; // {imageData, url, name}
let running = null; // AbortController of the upscale in flight
let resultUrl = null;
let speed = null; // {gflopsPerSecond, upscaler}: measured on this device for the loaded model
let calibrating = false; // the speed probe is running: an upscale now would distort it

function updateRunButton() {
  $("run").disabled = !(upscaler && input) || calibrating || running !== null;
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function describe(info) {
  const where = info.backend === "webgpu"
    ? `WebGPU (${[info.adapter?.vendor, info.adapter?.architecture, info.adapter?.description].filter(Boolean).join(" ") || "adapter"})`
    : `the CPU${info.fallbackReason ? ` (WebGPU unavailable: ${info.fallbackReason})` : ""}`;
  return `Model "${info.preset}", ${(info.parameters / 1e6).toFixed(2)} M parameters, running on ${where}.`;
}

function setDetail(value) {
  $("detail").value = String(value);
  $("detail-value").textContent = Number($("detail").value).toFixed(2);
}

async function loadModel(weights, label) {
  $("run").disabled = true;
  status(`Loading ${label}…`);
  try {
    const next = await Upscaler.load(weights, { backend: params.get("backend") ?? "auto" });
    upscaler?.terminate();
    upscaler = next;
    const info = upscaler.info();
    $("model-info").textContent = describe(info);
    // The detail knob moves the model between its two trained ends; weights with one model
    // have no knob.
    $("detail").disabled = info.detailDefault === null;
    if (info.detailDefault !== null) setDetail(info.detailDefault);
    document.body.dataset.backend = info.backend;
    status(input ? "Ready." : "Ready: drop or pick an image.");
    calibrate(upscaler);
  } catch (e) {
    status(`Cannot load ${label}: ${e.message}`, true);
  }
  updateRunButton();
}

// The speed of this device for the loaded model: a small probe upscaled twice (the first run
// includes one-off work such as WebGPU shader compilation), the second timed. Estimates scale
// it by the model's FLOPs per output pixel; a probe pays more fixed cost per pixel than a
// large image, so they err on the long side.
async function calibrate(model) {
  speed = null;
  calibrating = true;
  updateRunButton();
  estimate();
  const side = 16;
  const probe = new ImageData(side, side);
  for (let i = 0; i < probe.data.length; i++) probe.data[i] = i % 4 === 3 ? 255 : (i * 37) % 256;
  try {
    await model.upscale(probe, { scale: 4 });
    const started = performance.now();
    await model.upscale(probe, { scale: 4 });
    const seconds = Math.max((performance.now() - started) / 1000, 1e-3);
    if (model !== upscaler) return; // another model was loaded meanwhile
    const gflop = model.info().gflopsPerOutputMegapixel * ((side * 4) ** 2 / 1e6);
    speed = { gflopsPerSecond: gflop / seconds, upscaler: model };
  } catch (e) {
    console.warn("no time estimate:", e);
    if (model === upscaler) speed = { gflopsPerSecond: null, upscaler: model };
  }
  if (model === upscaler) calibrating = false;
  updateRunButton();
  estimate();
}

function formatSeconds(s) {
  if (s < 1) return "under a second";
  if (s < 90) return `about ${Math.round(s)} s`;
  if (s < 5400) return `about ${Math.round(s / 60)} min`;
  return `about ${(s / 3600).toFixed(1)} h`;
}

// Before starting: how long the chosen image will take here, from the measured speed.
function estimate() {
  const el = $("estimate");
  delete el.dataset.seconds;
  if (!upscaler || !input) {
    el.textContent = "";
    return;
  }
  if (!speed || speed.upscaler !== upscaler) {
    el.textContent = "Measuring this device's speed for an estimate…";
    return;
  }
  if (speed.gflopsPerSecond === null) {
    el.textContent = "No time estimate: measuring this device's speed failed (see the console).";
    return;
  }
  const scale = Number($("scale").value);
  const w = input.imageData.width * scale, h = input.imageData.height * scale;
  const gflop = upscaler.info().gflopsPerOutputMegapixel * (w * h / 1e6);
  const seconds = gflop / speed.gflopsPerSecond;
  const where = upscaler.info().backend === "webgpu" ? "with WebGPU" : "on the CPU";
  el.dataset.seconds = String(seconds);
  el.textContent = `Estimated time for ${w}×${h}: ${formatSeconds(seconds)} ${where} ` +
    `(${gflop >= 1000 ? `${(gflop / 1000).toFixed(1)} TFLOP` : `${gflop >= 100 ? Math.round(gflop) : gflop.toPrecision(2)} GFLOP`} at the ` +
    `${speed.gflopsPerSecond >= 100 ? Math.round(speed.gflopsPerSecond) : speed.gflopsPerSecond.toPrecision(3)} ` +
    "GFLOP/s measured here)." +
    (seconds > 60 ? " You can cancel at any time." : "");
}

async function decode(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    throw new Error(`"${file.name}" is not an image this browser can decode`);
  }
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  return ctx.getImageData(0, 0, canvas.width, canvas.height);
}

async function pick(file) {
  if (!file) return;
  try {
    const imageData = await decode(file);
    if (input) URL.revokeObjectURL(input.url);
    input = { imageData, url: URL.createObjectURL(file), name: file.name };
    $("output").hidden = true;
    status(`${file.name}: ${imageData.width}×${imageData.height}. ${upscaler ? "Press Upscale." : ""}`);
  } catch (e) {
    input = null;
    status(e.message, true);
  }
  estimate();
  updateRunButton();
}

async function toPngUrl(result) {
  const canvas = new OffscreenCanvas(result.width, result.height);
  canvas.getContext("2d").putImageData(new ImageData(result.data, result.width, result.height), 0, 0);
  return URL.createObjectURL(await canvas.convertToBlob({ type: "image/png" }));
}

async function run() {
  if (!upscaler || !input) return;
  delete document.body.dataset.done;
  running = new AbortController();
  updateRunButton();
  $("cancel").disabled = false;
  $("progress").value = 0;
  $("progress").dataset.events = "0";
  const started = performance.now();
  status("Upscaling…");
  try {
    const result = await upscaler.upscale(input.imageData, {
      scale: Number($("scale").value),
      seed: Number($("seed").value),
      ...($("detail").disabled ? {} : { detail: Number($("detail").value) }),
      colourFix: $("colour-fix").value,
      signal: running.signal,
      onProgress: ({ done, total }) => {
        $("progress").value = done / total;
        $("progress").dataset.events = String(Number($("progress").dataset.events) + 1);
        // Time left from the steps done so far (encode and decode steps of one tile size
        // cost about the same; the one whole-image step is small).
        const left = ((performance.now() - started) / 1000) * (total - done) / Math.max(done, 1);
        status(`Upscaling… step ${done} of ${total}${done < total ? `, ${formatSeconds(left)} left` : ""}`);
      },
    });
    if (resultUrl) URL.revokeObjectURL(resultUrl);
    resultUrl = await toPngUrl(result);
    $("before").src = input.url;
    // Show the comparison at least 512 px wide (small images are enlarged, pixels kept sharp).
    $("compare").style.width = `${Math.max(result.width, 512)}px`;
    $("after").src = resultUrl;
    $("download").href = resultUrl;
    $("download").download = input.name.replace(/\.[^.]*$/, "") + `-x${$("scale").value}.png`;
    $("output").hidden = false;
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    status(`Done: ${result.width}×${result.height} in ${seconds} s (${result.tiles} tile${result.tiles === 1 ? "" : "s"}, ${result.backend}).`);
    document.body.dataset.done = "1";
  } catch (e) {
    status(e.name === "AbortError" ? "Cancelled." : `Upscale failed: ${e.message}`, e.name !== "AbortError");
  } finally {
    running = null;
    $("cancel").disabled = true;
    updateRunButton();
  }
}

$("file").addEventListener("change", (e) => pick(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  pick(e.dataTransfer.files[0]);
});
$("run").addEventListener("click", run);
$("cancel").addEventListener("click", () => running?.abort());
$("scale").addEventListener("change", estimate);
$("detail").addEventListener("input", (e) => setDetail(e.target.value));
$("split").addEventListener("input", (e) => {
  $("after-clip").style.clipPath = `inset(0 0 0 ${e.target.value}%)`;
});
$("weights-file").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  if (file) await loadModel(new Uint8Array(await file.arrayBuffer()), `"${file.name}"`);
});

// Offline after the first visit: the service worker keeps the page, the module and the weights.
if ("serviceWorker" in navigator && !params.has("nosw")) {
  navigator.serviceWorker.register("sw.js").catch((e) => console.warn("no offline support:", e));
}
loadModel(DEFAULT_WEIGHTS, "the default model");
