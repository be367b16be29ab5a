// Prints the WebGPU adapter Dawn finds (one line) and exits 0, or exits 1 when there is none.
// Plain JS so that setup can run it before anything is compiled.
import { mkdirSync } from 'node:fs';
import { create, globals } from 'webgpu';

if (!process.env.XDG_RUNTIME_DIR) {
  const dir = `/tmp/tessera-xdg-${process.getuid?.() ?? 0}`;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  process.env.XDG_RUNTIME_DIR = dir;
}
Object.assign(globalThis, globals);
const gpu = create([]);
const adapter = await gpu.requestAdapter();
if (!adapter) process.exit(1);
const info = adapter.info ?? {};
const device = await adapter.requestDevice();
const features = [...adapter.features].filter((f) => ['timestamp-query', 'shader-f16', 'subgroups'].includes(f));
console.log(`${info.vendor || '?'} ${info.device || info.description || '?'} (${info.architecture || info.description || ''}) features: ${features.join(', ') || 'none'}`);
device.destroy();
process.exit(0);
