// The optimizer step of a whole model: global-norm clipping and AdamW over every parameter, with
// the gradients already computed. tessera packed (one buffer each for parameters, gradients and
// moments: 3 dispatches + one copy per gradient) vs per tensor (a few tensors per dispatch, the
// reference path) vs TensorFlow.js (tf ops for the norm and the clipping, tf.train.adam plus
// decoupled weight decay, over tf.Variables of the same shapes) on the same adapter.
import * as T from '../engine/index.js';
import { presetConfig, VisionTransformer } from '../models/vit.js';
import { runSuite, type BenchCase, type SuiteRow } from './harness.js';
import { loadTf } from './peers/env.js';

export const OPTIMIZER_MODELS = ['vit-fmnist-convstem16', 'deit-tiny-patch16-224'];

export async function optimizerSuite(): Promise<SuiteRow[][]> {
  await T.init();
  const tf = await loadTf();
  const all: SuiteRow[][] = [];
  const lr = 1e-4;
  const wd = 0.05;
  for (const preset of OPTIMIZER_MODELS) {
    const cases: BenchCase[] = [];
    const cleanup: (() => void)[] = [];
    let tensors = 0;
    let elements = 0;
    for (const packed of [true, false]) {
      const model = new VisionTransformer(presetConfig(preset), 0);
      const opt = new T.AdamW(model.paramGroups(wd), { lr, weightDecay: wd, packed });
      const params = model.parameters();
      tensors = params.length;
      elements = params.reduce((a, p) => a + p.size, 0);
      // The same gradients every repetition; step() leaves them in place (no zeroGrad).
      params.forEach((p, i) => (p.grad = T.keep(T.randn(p.shape, { seed: i + 1, std: 1e-2 }))));
      cases.push({
        name: `tessera ${packed ? 'packed' : 'per tensor'}: clip + AdamW`,
        work: elements,
        run: async () => {
          T.scope(() => opt.step({ clip: opt.clipGradNorm(1) }));
          await T.sync();
        },
      });
      cleanup.push(() => {
        opt.dispose();
        model.dispose();
      });
    }
    // The peer: the same shapes as tf.Variables; decay applied to the same tensors as ours.
    const model = new VisionTransformer(presetConfig(preset), 0);
    const decayed = new Set(model.paramGroups(wd).filter((g) => (g.weightDecay ?? wd) > 0).flatMap((g) => g.params));
    const shapes = model.parameters().map((p) => ({ shape: [...p.shape], decay: decayed.has(p) }));
    model.dispose();
    const vars = shapes.map((s, i) => tf.variable(tf.randomNormal(s.shape), true, `p${i}`));
    const grads = shapes.map((s) => tf.mul(tf.randomNormal(s.shape), 1e-2));
    const adam = tf.train.adam(lr, 0.9, 0.999, 1e-8);
    cases.push({
      name: 'tfjs-webgpu: clip + Adam + decoupled decay',
      work: elements,
      run: async () => {
        tf.tidy(() => {
          // tf.addN over all of them exceeds WebGPU's storage bindings per stage: add pairwise.
          const norm = tf.sqrt(grads.map((g) => tf.sum(tf.square(g))).reduce((a, b) => tf.add(a, b)));
          const factor = tf.minimum(1, tf.div(1, tf.add(norm, 1e-6)));
          vars.forEach((v, i) => shapes[i]!.decay && v.assign(tf.mul(v, 1 - lr * wd)));
          adam.applyGradients(Object.fromEntries(vars.map((v, i) => [v.name, tf.mul(grads[i]!, factor)])));
        });
        const done = tf.sum(vars[vars.length - 1]!);
        await done.data();
        done.dispose();
      },
    });
    cleanup.push(() => {
      adam.dispose();
      for (const t of [...vars, ...grads]) t.dispose();
    });
    all.push(
      await runSuite(`optimizer-${preset}`, cases, {
        baseline: 'tfjs-webgpu: clip + Adam + decoupled decay',
        rateUnit: 'M params/s',
        rateScale: 1e-6,
        note: `One optimizer step over ${preset}'s ${tensors} parameter tensors (${elements.toLocaleString('en')} values), gradients given: global-norm clipping at 1 and AdamW (lr 1e-4, weight decay 0.05 on weights only), then a GPU wait.`,
      }),
    );
    for (const f of cleanup) f();
  }
  return all;
}
