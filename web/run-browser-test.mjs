// Runs a WebGPU test page in headless Chromium and reports what it says. Needs only Chromium
// (Debian's chromium package) and Node 20+; scripts/browser-test installs Chromium when missing.
//
// Usage: node --experimental-websocket web/run-browser-test.mjs [options] PAGE [SCREENSHOT.png]
//   --root DIR     folder to serve (default: this script's folder, web/); PAGE is a path to a
//                  file under it, or a path relative to it, and may carry a ?query
//   --timeout S    seconds to wait for the page's final report (default 600)
//   --size WxH     viewport for the page and the screenshot (default 1200x900)
//   --chromium BIN the browser (default: $CHROMIUM, else /usr/lib/chromium/chromium, else
//                  chromium on PATH); extra flags in $BROWSER_TEST_FLAGS (space-separated)
//   --verbose      pass Chromium's own stderr through (else only its tail on failure)
//   --no-webgpu    run Chromium with WebGPU switched off (to test a page's no-WebGPU path)
//
// The page's protocol: it is opened at http://127.0.0.1:PORT/PAGE?test=1 and POSTs JSON to
// /report: {log: "text"} progress lines (printed), any other object (printed as JSON), and at
// last {done: true, ok: true|false, error?: "why", webgpu?: false, ...}. Exit status: 0 when
// ok is true, 1 otherwise (page failure, no WebGPU, crash, timeout), 2 for a usage error.
// The page's console messages and uncaught exceptions are printed too, tagged [console.*].
//
// WebGPU runs on SwiftShader, the software Vulkan driver that Chromium ships: on Linux Chromium
// only takes a Vulkan adapter that can share images with the compositor (opaque-fd semaphores),
// which Mesa's lavapipe (25.0) cannot, so even with lavapipe installed it falls back to
// SwiftShader; compositing and ANGLE on SwiftShader too are what make WebGPU canvases show up.
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { promises as fsp, mkdtempSync, rmSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const INSTALL_HINT = 'WebGPU needs Chromium with its SwiftShader (Debian: apt-get install chromium, ' +
  'or run through scripts/browser-test, which installs it) and the flags in run-browser-test.mjs.';
// All needed, and the Vulkan feature: without Vulkan and ANGLE on SwiftShader, compute works
// but a WebGPU canvas loses its device ("Could not find SharedImageBackingFactory"); without
// unsafe-webgpu there is no adapter (WebGPU on Linux and on SwiftShader is off by default).
const WEBGPU_FLAGS = ['--enable-unsafe-webgpu', '--use-vulkan=swiftshader', '--use-angle=swiftshader'];
const FEATURES = ['Vulkan']; // --enable-features, merged with any in $BROWSER_TEST_FLAGS (last one wins)
const HARNESS_FLAGS = [
  '--headless=new', '--no-sandbox',          // sandbox: refused as root, often absent in containers
  '--no-first-run', '--no-default-browser-check', '--disable-extensions', '--mute-audio',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-dev-shm-usage',                 // /dev/shm is small in containers
  // Long runs must not be slowed down as a hidden tab would be.
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
  '--remote-debugging-port=0', '--remote-debugging-address=127.0.0.1',
];
const MIME = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.wasm': 'application/wasm', '.json': 'application/json', '.css': 'text/css',
  '.wgsl': 'text/plain; charset=utf-8', '.txt': 'text/plain; charset=utf-8', '.map': 'application/json',
  '.png': 'image/png', '.jpg': 'image/jpeg', '.svg': 'image/svg+xml', '.ico': 'image/x-icon',
  '.bin': 'application/octet-stream', '.csv': 'text/csv', '.md': 'text/markdown',
};

function usage(msg) {
  console.error(`run-browser-test: ${msg}\nusage: run-browser-test.mjs [--root DIR] [--timeout S] ` +
    '[--size WxH] [--chromium BIN] [--verbose] [--no-webgpu] PAGE [SCREENSHOT.png]');
  process.exit(2);
}
const opts = { root: path.dirname(fileURLToPath(import.meta.url)), timeout: 600, size: '1200x900', verbose: false,
  webgpu: true };
const positional = [];
for (let args = process.argv.slice(2); args.length;) {
  const a = args.shift();
  const value = () => args.length ? args.shift() : usage(`${a} needs a value`);
  if (a === '--root') opts.root = value();
  else if (a === '--timeout') opts.timeout = Number(value());
  else if (a === '--size') opts.size = value();
  else if (a === '--chromium') opts.chromium = value();
  else if (a === '--verbose') opts.verbose = true;
  else if (a === '--no-webgpu') opts.webgpu = false;
  else if (a.startsWith('--')) usage(`unknown option ${a}`);
  else positional.push(a);
}
if (positional.length < 1 || positional.length > 2) usage('give PAGE and optionally SCREENSHOT.png');
const [pageArg, screenshotPath] = positional;
const [width, height] = opts.size.split('x').map(Number);
if (!(opts.timeout > 0) || !(width > 0) || !(height > 0)) usage('bad --timeout or --size');
const root = path.resolve(opts.root);
// PAGE as a file path under root (web/x.html) or as a path inside root (x.html).
const [pageFile, pageQuery = ''] = pageArg.split(/\?(.*)/s);
let pageRel = path.relative(root, path.resolve(pageFile));
if (pageRel.startsWith('..') || !existsSync(path.join(root, pageRel))) pageRel = pageFile.replace(/^\/+/, '');
if (!existsSync(path.join(root, pageRel))) usage(`${pageArg}: no such page under ${root}`);
if (typeof WebSocket !== 'function') {
  console.error('run-browser-test: no global WebSocket; run node with --experimental-websocket (Node 20-21) or use Node 22+');
  process.exit(2);
}
const say = (msg) => console.log(`[harness] ${msg}`);
const t0 = Date.now();
const elapsed = () => ((Date.now() - t0) / 1000).toFixed(1) + ' s';

// ---- Cleanup on every exit path: Chromium (its whole process group), its profile, the server.
let chrome = null, server = null, ws = null;
const userDataDir = mkdtempSync(path.join(tmpdir(), 'browser-test-'));
function cleanup() {
  try { ws?.close(); } catch {}
  // The whole group even when the browser has exited: its GPU and renderer processes may not have.
  if (chrome?.pid) try { process.kill(-chrome.pid, 'SIGKILL'); } catch {}
  try { server?.close(); } catch {}
  // Chromium's children may still be writing for a moment after the kill: retry after a pause.
  for (let i = 0; i < 5; i++) {
    try { rmSync(userDataDir, { recursive: true, force: true }); break; } catch {}
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
  }
}
let exiting = false;
function exit(code, why) {
  if (exiting) return;
  exiting = true;
  if (why) console.log(`[harness] ${code === 0 ? 'PASS' : 'FAIL'} (${elapsed()}): ${why}`);
  cleanup();
  process.exit(code);
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => exit(130, `interrupted (${sig})`));
process.on('uncaughtException', (e) => exit(1, `harness error: ${e.stack || e}`));
process.on('unhandledRejection', (e) => exit(1, `harness error: ${e?.stack || e}`));

// ---- Static server plus POST /report.
let finalReport = null;
let onFinal = () => {};
server = createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  if (req.method === 'POST' && url.pathname === '/report') {
    let body = '';
    req.setEncoding('utf8');
    for await (const chunk of req) body += chunk;
    res.writeHead(204).end();
    let msg;
    try { msg = JSON.parse(body); } catch { msg = { log: `(not JSON) ${body}` }; }
    if (msg && typeof msg.log === 'string' && Object.keys(msg).length === 1) console.log(`[page] ${msg.log}`);
    else console.log(`[page] ${JSON.stringify(msg)}`);
    if (msg?.done && !finalReport) { finalReport = msg; onFinal(); }
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') return res.writeHead(405).end();
  let file;
  try { file = path.join(root, decodeURIComponent(url.pathname)); } catch { return res.writeHead(400).end(); }
  if (file !== root && !file.startsWith(root + path.sep)) return res.writeHead(403).end();
  try {
    if ((await fsp.stat(file)).isDirectory()) file = path.join(file, 'index.html');
    const data = await fsp.readFile(file);
    res.writeHead(200, {
      'Content-Type': MIME[path.extname(file).toLowerCase()] ?? 'application/octet-stream',
      'Cache-Control': 'no-store',
      // Cross-origin isolation: SharedArrayBuffer (wasm threads) and finer performance.now().
      'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp',
    });
    res.end(req.method === 'HEAD' ? undefined : data);
  } catch {
    if (url.pathname === '/favicon.ico') return res.writeHead(204).end(); // no console noise
    say(`404 ${url.pathname}`);
    res.writeHead(404).end();
  }
});
await new Promise((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
const pageUrl = `http://127.0.0.1:${server.address().port}/${pageRel}?test=1${pageQuery ? '&' + pageQuery : ''}`;

// ---- Chromium.
const chromiumBin = opts.chromium ?? process.env.CHROMIUM ??
  (existsSync('/usr/lib/chromium/chromium') ? '/usr/lib/chromium/chromium' : 'chromium');
const extraFlags = (process.env.BROWSER_TEST_FLAGS ?? '').split(/\s+/).filter(Boolean);
const features = [...FEATURES, ...extraFlags.filter((f) => f.startsWith('--enable-features='))
  .flatMap((f) => f.slice('--enable-features='.length).split(','))];
const webgpuFlags = opts.webgpu ? WEBGPU_FLAGS : ['--disable-features=WebGPU'];
const flags = [...HARNESS_FLAGS, ...webgpuFlags, `--enable-features=${features.join(',')}`,
  `--window-size=${width},${height}`, `--user-data-dir=${userDataDir}`,
  ...extraFlags.filter((f) => !f.startsWith('--enable-features=')), 'about:blank'];
say(`serving ${root}; opening ${pageUrl}`);
if (opts.verbose) say(`${chromiumBin} ${flags.join(' ')}`);
let chromeLog = '';
// detached: its own process group, so that one kill reaches the GPU and renderer processes too.
chrome = spawn(chromiumBin, flags, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
for (const stream of [chrome.stdout, chrome.stderr]) {
  stream.setEncoding('utf8');
  stream.on('data', (s) => {
    chromeLog = (chromeLog + s).slice(-20000);
    if (opts.verbose) process.stderr.write(s);
  });
}
// Headless Chromium in a container logs harmless D-Bus and cpufreq errors: leave them out.
const logTail = () => chromeLog.split('\n').filter((l) => l.trim() && !/dbus|cpufreq/i.test(l))
  .slice(-25).map((l) => '  | ' + l).join('\n');
chrome.on('error', (e) => exit(1, `cannot start ${chromiumBin} (${e.code ?? e.message}). ${INSTALL_HINT}`));
chrome.on('exit', (code, sig) => {
  if (!exiting) exit(1, `Chromium exited early (${sig ?? 'status ' + code}); its output:\n${logTail()}`);
});

// The DevTools port: Chromium writes it to DevToolsActivePort in the profile once it listens.
let devtools;
for (const deadline = Date.now() + 30000; !devtools; await new Promise((r) => setTimeout(r, 100))) {
  try {
    const [port, wsPath] = readFileSync(path.join(userDataDir, 'DevToolsActivePort'), 'utf8').split('\n');
    if (wsPath) devtools = `ws://127.0.0.1:${port}${wsPath}`;
  } catch {}
  if (Date.now() > deadline) exit(1, `Chromium did not open its DevTools port in 30 s; its output:\n${logTail()}`);
}

// ---- A minimal Chrome DevTools Protocol client over the browser's WebSocket (flat sessions).
ws = new WebSocket(devtools);
await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error(`cannot connect to ${devtools}`)); });
let nextId = 1;
const pending = new Map();
const handlers = {};
ws.onmessage = (ev) => {
  const msg = JSON.parse(ev.data);
  if (msg.id !== undefined) {
    const p = pending.get(msg.id);
    pending.delete(msg.id);
    if (msg.error) p?.reject(new Error(`${p.method}: ${msg.error.message}`)); else p?.resolve(msg.result);
  } else handlers[msg.method]?.(msg.params);
};
ws.onclose = () => { if (!exiting) exit(1, `DevTools connection closed; Chromium's output:\n${logTail()}`); };
const send = (method, params = {}, sessionId) => new Promise((resolve, reject) => {
  const id = nextId++;
  pending.set(id, { resolve, reject, method });
  ws.send(JSON.stringify({ id, method, params, sessionId }));
});

const { targetInfos } = await send('Target.getTargets');
const target = targetInfos.find((t) => t.type === 'page');
if (!target) exit(1, 'Chromium opened no page');
const { sessionId } = await send('Target.attachToTarget', { targetId: target.targetId, flatten: true });
const page = (method, params) => send(method, params, sessionId);

// A console argument as text; objects from their preview, as DevTools shows them.
const remoteText = (o) => {
  if (o.type === 'string') return o.value;
  if (o.preview?.properties) {
    const props = o.preview.properties.map((p) => o.preview.subtype === 'array' ? p.value : `${p.name}: ${p.value}`);
    const [l, r] = o.preview.subtype === 'array' ? ['[', ']'] : ['{', '}'];
    return `${l}${props.join(', ')}${o.preview.overflow ? ', …' : ''}${r}`;
  }
  return o.unserializableValue ?? o.description ?? (o.value !== undefined ? JSON.stringify(o.value) : o.type);
};
handlers['Runtime.consoleAPICalled'] = (p) => console.log(`[console.${p.type}] ${p.args.map(remoteText).join(' ')}`);
handlers['Runtime.exceptionThrown'] = ({ exceptionDetails: d }) =>
  console.log(`[console.exception] ${d.exception?.description ?? d.text} (${d.url ?? ''}:${d.lineNumber + 1})`);
handlers['Log.entryAdded'] = ({ entry: e }) => {
  if (e.level === 'error' || e.level === 'warning') console.log(`[console.${e.level}] ${e.text}${e.url ? ` (${e.url})` : ''}`);
};
handlers['Inspector.targetCrashed'] = () => exit(1, 'the page crashed (renderer process died)');
// alert()/confirm() would stall the page: print and dismiss them.
handlers['Page.javascriptDialogOpening'] = ({ type, message }) => {
  console.log(`[console.${type}] ${message}`);
  page('Page.handleJavaScriptDialog', { accept: true }).catch(() => {});
};

await page('Runtime.enable');
await page('Log.enable');
await page('Inspector.enable');
await page('Page.enable');
await page('Emulation.setDeviceMetricsOverride', { width, height, deviceScaleFactor: 1, mobile: false });
const nav = await page('Page.navigate', { url: pageUrl });
if (nav.errorText) exit(1, `cannot load ${pageUrl}: ${nav.errorText}`);

// ---- Wait for the final report (or the timeout), then screenshot and verdict.
const timedOut = !await new Promise((resolve) => {
  if (finalReport) return resolve(true);
  onFinal = () => resolve(true);
  setTimeout(() => resolve(false), opts.timeout * 1000);
});
// A hung page must not hang the harness: each step here gets 20 s.
const within = (p, what) => Promise.race([p, new Promise((_, reject) =>
  setTimeout(() => reject(new Error(`${what} took over 20 s`)), 20000).unref())]);
if (screenshotPath) {
  try {
    // Let the page paint what it showed last.
    await within(page('Runtime.evaluate', { awaitPromise: true,
      expression: 'new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))' }), 'painting');
    const { data } = await within(page('Page.captureScreenshot', { format: 'png' }), 'the screenshot');
    await fsp.mkdir(path.dirname(path.resolve(screenshotPath)), { recursive: true });
    await fsp.writeFile(screenshotPath, Buffer.from(data, 'base64'));
    say(`screenshot: ${screenshotPath}`);
  } catch (e) {
    say(`no screenshot: ${e.message}`);
  }
}
if (timedOut) exit(1, `no final report ({done: true}) from the page within ${opts.timeout} s`);
if (finalReport.ok === true) exit(0, 'the page reports ok');
const why = finalReport.error ?? JSON.stringify(finalReport);
exit(1, `the page reports failure: ${why}` + (finalReport.webgpu === false
  ? `\n[harness] ${INSTALL_HINT}\n[harness] Chromium's output:\n${logTail()}` : ''));
