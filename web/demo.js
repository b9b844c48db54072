// The demo page: WebGPU through rnn-gpu's wasm build (pkg/, made by web/build).
// With ?test=1 (scripts/browser-test) it runs the browser test on its own and reports to the
// harness: verify, a fixed-seed training that must lower the loss, and greedy sampling of the
// model file the native CLI made (pkg/test/), which must give the native CLI's text exactly.
import init, { Gpu, CharModel } from './pkg/rnn_gpu_web.js';

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const testing = query.has('test');
// The test of the page's no-WebGPU path (Chromium run with WebGPU off): the message must show.
const expectNoWebgpu = query.get('expect') === 'nowebgpu';
const TEXT_URL = 'pkg/tinyshakespeare.txt';

// To the harness (a no-op outside the test).
async function report(msg) {
  if (!testing) return;
  try { await fetch('/report', { method: 'POST', body: JSON.stringify(msg) }); } catch {}
}
const log = (text) => { console.log(text); return report({ log: text }); };

function setStatus(text, bad = false) {
  $('status').textContent = text;
  $('status').className = bad ? 'bad' : '';
}

let gpu = null;        // Gpu
let trained = null;    // CharModel being trained
let loaded = null;     // CharModel loaded from a file
let training = false;
let textPromise = null;
const text = () => (textPromise ??= fetch(TEXT_URL).then((r) => {
  if (!r.ok) throw new Error(`${TEXT_URL}: ${r.status}`);
  return r.text();
}).catch((e) => { textPromise = null; throw e; }));  // a failed fetch is tried again next time

// One call at a time on the GPU: a model's async calls hold it until they end, and verify shares
// the device's error log. The action buttons are off while one runs (Stop stays on).
const ACTIONS = ['start', 'save', 'fetch', 'sample', 'runverify'];
let running = 0;
function refreshButtons() {
  for (const id of ACTIONS) {
    $(id).disabled = running > 0 || (id === 'save' && !trained) || (id === 'sample' && !loaded);
  }
}
function setBusy(on) {
  running += on ? 1 : -1;
  refreshButtons();
}
async function exclusive(f) {
  setBusy(true);
  try { return await f(); } finally { setBusy(false); }
}

// ---- the loss curve (every step, halved to every other point past 2000 points)
const curve = [];
function addPoint(step, loss) {
  curve.push([step, loss]);
  if (curve.length > 2000) for (let i = 1; i < curve.length; i++) curve.splice(i, 1);
}
function drawCurve() {
  const c = $('curve'), g = c.getContext('2d');
  g.clearRect(0, 0, c.width, c.height);
  if (curve.length < 1) return;
  let lo = Infinity, hi = -Infinity;
  for (const [, v] of curve) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const n = Math.max(curve[curve.length - 1][0], 10);
  const x = (s) => 40 + (c.width - 50) * s / n;
  const y = (v) => 10 + (c.height - 30) * (hi - v) / Math.max(hi - lo, 1e-6);
  g.strokeStyle = '#999'; g.fillStyle = '#555'; g.font = '11px sans-serif';
  g.beginPath(); g.moveTo(40, 10); g.lineTo(40, c.height - 20); g.lineTo(c.width - 10, c.height - 20); g.stroke();
  g.fillText(hi.toFixed(2), 4, 14); g.fillText(lo.toFixed(2), 4, c.height - 22);
  g.fillText(`step ${n}`, c.width - 60, c.height - 6); g.fillText('training loss (nats/char)', 48, c.height - 6);
  g.strokeStyle = '#2a5db0'; g.lineWidth = 1.5; g.beginPath();
  curve.forEach(([s, v], i) => (i ? g.lineTo(x(s), y(v)) : g.moveTo(x(s), y(v))));
  g.stroke();
}

// ---- training
const SETTINGS = ['cell', 'hidden', 'layers', 'batch', 'seqlen', 'lr', 'seed'];
let trainedSettings = '';
const settings = () => JSON.stringify(SETTINGS.map((id) => $(id).value));
function integer(id) {
  const v = Number($(id).value);
  if (!Number.isSafeInteger(v) || v < 0) throw new Error(`${id}: ${$(id).value} is not a whole number`);
  return v;
}
async function trainingModel() {
  const t = await text();
  return CharModel.train_new(gpu, t, $('cell').value, integer('hidden'), integer('layers'),
    integer('seqlen'), integer('batch'), Number($('lr').value), BigInt(integer('seed')));
}

// Trains `steps` steps (until Stop without a count), drawing the curve, the step time and a
// sample every 50 steps. Returns the losses.
async function train(steps = Infinity) {
  training = true;
  setBusy(true);
  $('stop').disabled = false;
  const losses = [];
  try {
    // New settings make a new model; the same ones continue training the one there is.
    if (!trained || settings() !== trainedSettings) {
      trained?.free();
      trained = null;
      trained = await trainingModel();
      trainedSettings = settings();
      curve.length = 0;
    }
    const info = trained.describe();
    let t0 = performance.now(), window = 0;
    while (training && losses.length < steps) {
      const loss = await trained.train_step();
      losses.push(loss);
      window++;
      const step = trained.steps();
      addPoint(step, loss);
      if (step % 5 === 0 || losses.length === steps) {
        const ms = (performance.now() - t0) / window;
        $('trainfig').textContent = `${info} · step ${step} · loss ${loss.toFixed(4)} · ${ms.toFixed(1)} ms/step`;
        drawCurve();
        t0 = performance.now(); window = 0;
      }
      if (step % 50 === 0) $('trainsample').textContent = await trained.sample('\n', 200, 0.8, BigInt(step));
    }
  } finally {
    training = false;
    $('stop').disabled = true;
    setBusy(false);
  }
  return losses;
}

async function save() {
  const bytes = await trained.save();
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([bytes]));
  a.download = 'browser.safetensors';
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// ---- loading and sampling
function load(name, bytes) {
  const model = CharModel.load(gpu, name, new Uint8Array(bytes));
  loaded?.free();
  loaded = model;
  $('modelinfo').textContent = `${name}: ${loaded.describe()}`;
}

async function loadUrl(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  load(url.split('/').pop(), await r.arrayBuffer());
}

async function sample() {
  const out = await loaded.sample($('prime').value || '\n', integer('len'), Number($('temp').value),
    BigInt(integer('sseed')));
  $('sampled').textContent = ($('prime').value || '\n') + out;
}

// ---- verify
async function verify() {
  $('verifysum').textContent = 'running…';
  const t0 = performance.now();
  try {
    const checks = JSON.parse(await gpu.verify());
    const failed = checks.filter((c) => !c.pass);
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    $('verifysum').innerHTML = `${checks.length} checks, <span class="${failed.length ? 'fail' : 'pass'}">` +
      `${checks.length - failed.length} passed, ${failed.length} failed</span> (${secs} s)`;
    $('verifyout').textContent = (failed.length ? failed : checks).map((c) => c.detail).join('\n');
    return { total: checks.length, passed: checks.length - failed.length, failed: failed.map((c) => c.detail) };
  } catch (e) {
    $('verifysum').textContent = '';
    throw e;
  }
}

// Errors of a button's action show in the status line, not only on the console.
const guarded = (f) => async () => {
  try { await f(); } catch (e) { setStatus(`error: ${e.message ?? e}`, true); }
};

// ---- the browser test (?test=1)
async function browserTest() {
  const result = { done: true, adapter: $('status').textContent };
  const v = await exclusive(verify);
  result.verify = { total: v.total, passed: v.passed };
  await log(`verify: ${v.passed} of ${v.total} checks pass`);
  for (const f of v.failed) await log(`  FAILED ${f}`);

  // A small model: on a CPU's WebGPU (SwiftShader, as in CI) the page's default 2x128 LSTM takes
  // seconds a step.
  const steps = 30;
  Object.entries({ cell: 'lstm', hidden: 64, layers: 1, batch: 16, seqlen: 32, lr: 0.003, seed: 1 })
    .forEach(([id, v]) => { $(id).value = v; });
  const t0 = performance.now();
  const losses = await train(steps);
  const msPerStep = (performance.now() - t0) / steps;
  $('trainsample').textContent = await trained.sample('\n', 120, 0.8, 1n);
  const mean = (a) => a.reduce((s, x) => s + x, 0) / a.length;
  const first = mean(losses.slice(0, 3)), last = mean(losses.slice(-3));
  result.training = { model: trained.describe(), steps, first_loss: first, last_loss: last, ms_per_step: msPerStep };
  await log(`training ${trained.describe()}: loss ${first.toFixed(4)} -> ${last.toFixed(4)} in ${steps} steps, ${msPerStep.toFixed(1)} ms/step`);

  await exclusive(() => loadUrl('pkg/test/native.safetensors'));
  const want = await (await fetch('pkg/test/native-sample.txt')).text();
  const fixture = JSON.parse(await (await fetch('pkg/test/native-sample.json')).text());
  $('prime').value = fixture.prime; $('len').value = fixture.len; $('temp').value = 0; $('sseed').value = fixture.seed;
  await exclusive(sample);
  const got = $('sampled').textContent;
  const same = got === want;
  let at = 0;
  while (at < Math.min(got.length, want.length) && got[at] === want[at]) at++;
  result.sample = { same, length: got.length, ...(same ? {} : { first_difference: at, browser: got.slice(at, at + 40), native: want.slice(at, at + 40) }) };
  await log(`greedy sample of the native CLI's model: ${same ? 'identical to the native CLI' : `differs at character ${at}`}`);

  const problems = [];
  if (v.passed !== v.total) problems.push(`${v.total - v.passed} verify checks failed`);
  if (!(last < first - 0.2)) problems.push(`the loss did not fall (${first.toFixed(4)} -> ${last.toFixed(4)})`);
  if (!same) problems.push('the browser sampled other text than the native CLI');
  result.ok = problems.length === 0;
  if (problems.length) result.error = problems.join('; ');
  setStatus(`${$('status').textContent} · browser test ${result.ok ? 'passed' : 'FAILED: ' + result.error}`, !result.ok);
  await report(result);
}

// ---- start
// Without WebGPU the page says so; in the no-WebGPU test that is the expected outcome.
async function noWebgpu(message, error) {
  setStatus(message, true);
  await report(expectNoWebgpu ? { done: true, ok: true, shown: message } : { done: true, ok: false, webgpu: false, error });
}

async function main() {
  if (!navigator.gpu) {
    return noWebgpu('This browser has no WebGPU, so rnn-gpu cannot run here. Use a browser with WebGPU ' +
      '(Chrome or Edge 113+, Firefox 141+ on Windows, Safari 26), or enable it (chrome://flags/#enable-unsafe-webgpu).',
      'navigator.gpu is missing');
  }
  await init();
  try {
    gpu = await Gpu.open();
  } catch (e) {
    return noWebgpu(`This browser has WebGPU but gave no GPU device, so rnn-gpu cannot run here: ${e.message ?? e}`,
      String(e.message ?? e));
  }
  if (expectNoWebgpu) {
    await report({ done: true, ok: false, error: 'WebGPU was found where the test switched it off' });
    return;
  }
  // The browser's own words for the adapter (wgpu's AdapterInfo is empty on the web).
  const info = (await navigator.gpu.requestAdapter())?.info ?? {};
  const adapter = [info.vendor, info.architecture, info.description].filter(Boolean).join(' / ') || gpu.describe();
  setStatus(`WebGPU: ${adapter}${info.isFallbackAdapter ? ' (a software fallback adapter: slow)' : ''}`);
  await log(`WebGPU adapter: ${adapter}`);
  refreshButtons();
  $('start').onclick = guarded(() => train());
  $('stop').onclick = () => { training = false; };
  $('save').onclick = guarded(() => exclusive(save));
  $('file').onchange = guarded(() => exclusive(async () => {
    const f = $('file').files[0];
    $('file').value = '';  // the same file picked again loads again
    if (f) load(f.name, await f.arrayBuffer());
  }));
  $('fetch').onclick = guarded(() => exclusive(() => loadUrl($('url').value)));
  $('sample').onclick = guarded(() => exclusive(sample));
  $('runverify').onclick = guarded(() => exclusive(verify));
  if (testing) await browserTest();
}

main().catch(async (e) => {
  setStatus(`error: ${e.message ?? e}`, true);
  await report({ done: true, ok: false, error: String(e.stack ?? e) });
});
