// Compiles every *.wgsl file in a directory with Dawn (the `webgpu` npm package, Chrome's WebGPU
// engine, whose shader compiler is Tint) and builds a compute pipeline for each `@compute` entry
// point. Prints one line per file; exits 1 if any file fails. Run it through scripts/check-wgsl,
// which installs the package and a Vulkan driver for it.
// Usage: node check-wgsl.mjs DIR [dawn options, e.g. backend=null]
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { create, globals } from 'webgpu';

const [dir, ...dawnOptions] = process.argv.slice(2);
if (!dir) {
  console.error('usage: node check-wgsl.mjs DIR [dawn options]');
  process.exit(2);
}
Object.assign(globalThis, globals); // GPUShaderStage etc., as in a browser
const gpu = create(dawnOptions.length ? dawnOptions : ['backend=vulkan']);
const adapter = await gpu.requestAdapter();
if (!adapter) {
  console.error('check-wgsl: no WebGPU adapter (is the Vulkan driver usable? see scripts/check-wgsl)');
  process.exit(1);
}
// WebGPU's default limits, what a browser grants without asking: the engine's kernels must fit
// them (the test command runs them so too, RNN_GPU_LIMITS=webgpu).
const requiredFeatures = [];
const device = await adapter.requestDevice({ requiredFeatures });
device.onuncapturederror = (e) => console.error('check-wgsl: uncaptured error:', e.error.message);
const info = adapter.info;
console.log(`check-wgsl: ${info.vendor} ${info.architecture} ${info.device} ${info.description}`.replace(/\s+/g, ' ').trim()
  + ' (default limits)');

// Entry points: `@compute` followed by other attributes (which hold no `{` or `;`) and `fn NAME`.
// Comments are blanked first (keeping newlines) so that commented-out code is not matched.
function entryPoints(code) {
  const src = code.replace(/\/\*[\s\S]*?\*\//g, (m) => m.replace(/[^\n]/g, ' ')).replace(/\/\/.*/g, '');
  return [...src.matchAll(/@compute\b[^{;]*?\bfn\s+([A-Za-z_][A-Za-z0-9_]*)/g)].map((m) => m[1]);
}

let failed = 0;
const files = readdirSync(dir).filter((f) => f.endsWith('.wgsl')).sort();
for (const file of files) {
  const code = readFileSync(join(dir, file), 'utf8');
  const errors = [];
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code, label: file });
  const moduleError = await device.popErrorScope();
  const messages = (await module.getCompilationInfo()).messages;
  if (messages.some((m) => m.type === 'error')) {
    // Print the notes and warnings too: Tint explains uniformity errors in notes.
    for (const m of messages) errors.push(`${file}:${m.lineNum}:${m.linePos}: ${m.type}: ${m.message}`);
  } else if (moduleError) {
    errors.push(`${file}: ${moduleError.message}`);
  }
  const eps = entryPoints(code);
  if (errors.length === 0) {
    if (eps.length === 0) errors.push(`${file}: no @compute entry point found`);
    for (const entryPoint of eps) {
      device.pushErrorScope('validation');
      device.createComputePipeline({ label: `${file}:${entryPoint}`, layout: 'auto', compute: { module, entryPoint } });
      const e = await device.popErrorScope();
      if (e) errors.push(`${file}: entry point ${entryPoint}: ${e.message.trim()}`);
    }
  }
  if (errors.length) {
    failed++;
    console.log(`FAIL ${file}`);
    for (const e of errors) console.log('  ' + e.replace(/\n/g, '\n  '));
  } else {
    console.log(`OK   ${file} (${eps.length} entry points)`);
  }
}
console.log(`check-wgsl: ${files.length - failed} passed, ${failed} failed`);
device.destroy();
// Exit explicitly: the Dawn instance keeps node alive while it is referenced.
process.exit(failed || files.length === 0 ? 1 : 0);
