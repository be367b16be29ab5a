// Whole ViT training steps (forward, backward, optimizer), images/s: tessera vs the same model
// written with TensorFlow.js ops and its WebGPU backend, and with jax-js (the whole step under
// jit) on its webgpu and wasm devices, on the same adapter, batch 128.
import * as T from '../engine/index.js';
import { useMatmulKernel } from '../engine/ops/matmul.js';
import { presetConfig, VisionTransformer } from '../models/vit.js';
import { runSuite, trainStep, type BenchCase, type SuiteRow } from './harness.js';
import { loadJax, loadTf } from './peers/env.js';
import { jaxVit } from './peers/jax-vit.js';
import { tfjsVit } from './peers/tfjs-vit.js';

export async function vitSuite(): Promise<SuiteRow[]> {
  await T.init();
  // As `tessera train` does: B from a texture or from storage, whichever is faster here. Two
  // presets also run with the other form.
  const tuning = await T.tuneMatmul();
  // Each forced form is one tuned configuration: texture; storage; storage with small B from a
  // uniform array. The two that tuning did not pick are measured on two presets.
  const tunedForm = tuning ? (tuning.choice === 'texture' ? 'texture' : tuning.smallB.uniform ? 'uniform' : 'subgroup') : null;
  const otherForms = tunedForm ? (['texture', 'subgroup', 'uniform'] as const).filter((f) => f !== tunedForm) : [];
  const FORM_NAME = { texture: 'B from a texture', subgroup: 'B from storage', uniform: 'B from storage, B of at most 192 KiB from uniform arrays' } as const;
  const tf = await loadTf();
  const { jax, devices } = await loadJax();
  const B = 128;
  const cases: BenchCase[] = [];
  const cleanup: (() => void)[] = [];
  // tfjs runs the plain patchify ViT; the other presets are measured for their own throughput.
  const withPeer = new Set(['vit-fmnist-tiny', 'vit-fmnist-p4']);
  const withOtherForm = new Set(['vit-fmnist-p4', 'vit-fmnist-convstem16-w128']);
  for (const preset of ['vit-fmnist-tiny', 'vit-fmnist-tiny-w96', 'vit-fmnist-p4', 'vit-fmnist-small', 'vit-fmnist-convstem', 'vit-fmnist-convstem16', 'vit-fmnist-convstem16-d4', 'vit-fmnist-convstem16-w128', 'deit-fmnist-tiny-distilled']) {
    const cfg = presetConfig(preset);
    const model = new VisionTransformer(cfg, 0);
    const opt = new T.AdamW(model.paramGroups(0.05), { lr: 1e-4 });
    const x = T.keep(T.randn([B, 1, 28, 28], { seed: 1 }));
    const y = T.keep(T.tensor(Int32Array.from({ length: B }, (_, i) => i % 10), [B]));
    const step = () =>
      trainStep(opt, () => {
        const out = model.forward(x, { training: true });
        const loss = T.crossEntropy(out.logits, y);
        return out.distLogits ? T.mulScalar(T.add(loss, T.crossEntropy(out.distLogits, y)), 0.5) : loss;
      });
    cases.push({ name: `tessera ${preset}`, work: B, run: step });
    for (const form of withOtherForm.has(preset) ? otherForms : []) {
      // The same step with every matmul reading B another way: what the tuning gains.
      cases.push({
        name: `tessera ${preset}, matmul ${FORM_NAME[form]}`,
        work: B,
        run: async () => {
          useMatmulKernel(form);
          try {
            await step();
          } finally {
            useMatmulKernel('auto');
          }
        },
      });
    }
    cleanup.push(() => {
      model.dispose();
      opt.dispose();
      x.dispose();
      y.dispose();
    });
    if (!withPeer.has(preset)) continue;
    const tm = tfjsVit(tf, cfg);
    const tx = tf.randomNormal([B, 1, 28, 28]);
    const ty = tf.oneHot(tf.tensor1d(Array.from({ length: B }, (_, i) => i % 10), 'int32'), 10);
    cases.push({ name: `tfjs-webgpu ${preset}`, work: B, run: async () => void (await tm.step(tx, ty)) });
    cleanup.push(() => {
      tx.dispose();
      ty.dispose();
    });
    for (const device of ['webgpu', 'wasm'].filter((d) => devices.includes(d))) {
      const jm = jaxVit(jax, cfg, device);
      await jm.ready();
      const jx = await jax.devicePut(jax.random.normal(jax.random.key(1), [B, 1, 28, 28]), device as never);
      const onehot = Float32Array.from({ length: B * 10 }, (_, i) => (i % 10 === Math.floor(i / 10) % 10 ? 1 : 0));
      const jy = await jax.devicePut(jax.numpy.array(onehot).reshape([B, 10]), device as never);
      await jm.step(jx, jy); // the first jitted step compiles (tens of seconds): not timed
      cases.push({ name: `jax-js ${device} ${preset}`, work: B, run: async () => void (await jm.step(jx, jy)) });
      cleanup.push(() => {
        jm.dispose();
        jx.dispose();
        jy.dispose();
      });
    }
  }
  const rows = await runSuite('vit-train-step', cases, {
    baseline: 'tfjs-webgpu vit-fmnist-p4',
    rateUnit: 'images/s',
    note: 'One training step (forward, backward, optimizer; tessera also clips by global norm) on a 128-image batch, loss read back each step. ' +
      'vit-fmnist-tiny: patch 7, width 64, depth 6, 4 heads, MLP ×2 (17 tokens); vit-fmnist-tiny-w96: the same at width 96; vit-fmnist-p4: the same with patch 4 (50 tokens). ' +
      'vit-fmnist-small: width 96, patch 4; vit-fmnist-convstem: conv stem 24/48 channels, depth 4 (49 tokens); vit-fmnist-convstem16: conv stem 24/48/64, depth 6 (16 tokens); vit-fmnist-convstem16-d4 (the npm start default): the same with depth 4; vit-fmnist-convstem16-w128: stem 32/64/128, width 128, depth 4; deit-fmnist-tiny-distilled: tiny with a distillation token and head. ' +
      'jax-js rows: the same model with the whole step (value-and-grad, Adam) under one jit, on its webgpu (same Dawn adapter) and wasm devices. ' +
      'Compare each tessera row with the peer rows of the same preset (peers exist for the two plain presets).' +
      (tunedForm ? ` tessera rows run as tuned by \`T.tuneMatmul()\` (as \`tessera train\` does): ${FORM_NAME[tunedForm]}.` : ''),
    minSamples: 5,
    maxTime: 8,
  });
  for (const c of cleanup) c();
  return rows;
}
