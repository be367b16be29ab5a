import * as T from './engine/index.js';
import { presetConfig, VisionTransformer } from './models/vit.js';
import { BatchLoader, loadDataset, normalize, subset, permutation } from './train/data.js';
await T.init();
const cfg = presetConfig('vit-fmnist-tiny');
const model = new VisionTransformer(cfg, 0);
const opt = new T.AdamW(model.paramGroups(0.05), { lr: 1e-3 });
const ds = subset(loadDataset('fashion-mnist', 'train'), 4000); normalize(ds, cfg.mean, cfg.std);
const loader = new BatchLoader(ds, 128);
const order = permutation(ds.count, 0);
const params = model.parameters();
let pos = 0;
const step = (clip: boolean) => { loader.load(order, (pos++ % 30) * 128); return T.scope(() => { const { logits } = model.forward(loader.x, { training: true }); const l = T.crossEntropy(logits, loader.y); l.backward(); const c = clip ? T.clipGradNorm(params, 1) : undefined; opt.step({ clip: c }); opt.zeroGrad(); return l; }); };
for (const clip of [false, true]) {
  for (let s = 0; s < 2; s++) { const l = step(clip); await l.item(); l.dispose(); }
  const t0 = performance.now();
  for (let s = 0; s < 5; s++) { const l = step(clip); await l.item(); l.dispose(); }
  console.log(`clip ${clip}: ${((performance.now() - t0) / 5).toFixed(1)} ms/step`);
}
T.startProfile();
for (let s = 0; s < 2; s++) { const l = step(true); await l.item(); l.dispose(); }
const { records } = await T.stopProfile();
const rows = T.summarize(records);
console.log('GPU sum', rows.reduce((a, r) => a + r.totalMs, 0).toFixed(1));
console.log(T.summaryTable(rows, 12));
process.exit(0);
