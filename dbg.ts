import * as T from './engine/index.js';
import { presetConfig, VisionTransformer } from './models/vit.js';
await T.init();
const preset = process.argv[2] ?? 'vit-fmnist-tiny';
const cfg = presetConfig(preset);
const model = new VisionTransformer(cfg, 0);
const opt = new T.AdamW(model.paramGroups(0.05), { lr: 1e-3 });
const B = 128;
const x = T.keep(T.randn([B, 1, 28, 28], { seed: 1 }));
const y = T.keep(T.tensor(Int32Array.from({ length: B }, (_, i) => i % 10), [B]));
const step = () => T.scope(() => { const { logits } = model.forward(x, { training: true }); const l = T.crossEntropy(logits, y); l.backward(); opt.step(); opt.zeroGrad(); return l; });
for (let s = 0; s < 2; s++) { const l = step(); await l.item(); l.dispose(); }
T.startProfile();
const t0 = performance.now();
for (let s = 0; s < 2; s++) { const l = step(); await l.item(); l.dispose(); }
const wall = performance.now() - t0;
const { records } = await T.stopProfile();
const rows = T.summarize(records);
const gpu = rows.reduce((a, r) => a + r.totalMs, 0);
console.log(`wall ${wall.toFixed(1)} ms for 2 steps, GPU kernel sum ${gpu.toFixed(1)} ms, dispatches ${records.length}`);
console.log(T.summaryTable(rows, 25));
process.exit(0);
