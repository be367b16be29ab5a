// One ViT block (timm's pre-norm Block: LayerNorm → qkv → attention → proj → residual, LayerNorm →
// fc1 → GELU → fc2 → residual) forward and backward, gradients of every parameter and of the input:
// tessera vs the same block written with TensorFlow.js ops (tf.variableGrads) on the same adapter.
import * as T from '../engine/index.js';
import { Block, Params } from '../models/layers.js';
import { runSuite, type BenchCase, type SuiteRow } from './harness.js';
import { loadTf } from './peers/env.js';
import { tfjsBlock } from './peers/tfjs-vit.js';

export const BLOCK_SHAPES: { name: string; B: number; N: number; D: number; heads: number; mlp: number }[] = [
  { name: 'fmnist-tiny', B: 128, N: 17, D: 64, heads: 4, mlp: 2 },
  { name: 'fmnist-p4', B: 128, N: 50, D: 64, heads: 4, mlp: 2 },
  { name: 'deit-tiny', B: 8, N: 197, D: 192, heads: 3, mlp: 4 },
];

/** Multiply-adds × 2 of one block's forward pass (the backward is about twice that). */
export function blockFlops(B: number, N: number, D: number, mlp: number): number {
  const tokens = B * N;
  const linear = 2 * tokens * D * (3 * D + D + 2 * mlp * D);
  const attention = 4 * B * N * N * D;
  return linear + attention;
}

export async function blockSuite(): Promise<SuiteRow[][]> {
  await T.init();
  // As `tessera train` runs: the matmul forms measured fastest on this machine.
  const tuning = await T.tuneMatmul();
  const tf = await loadTf();
  const all: SuiteRow[][] = [];
  for (const s of BLOCK_SHAPES) {
    const hidden = s.D * s.mlp;
    const flops = 3 * blockFlops(s.B, s.N, s.D, s.mlp);
    const root = Params.root(0);
    const block = new Block(root, s.D, s.heads, s.mlp, { qkvBias: true, normEps: 1e-6 });
    const params = [...root.store.values()].map((p) => p.tensor);
    const x = T.keep(T.randn([s.B, s.N, s.D], { seed: 1 }));
    x.requiresGrad = true;
    const g = T.keep(T.randn([s.B, s.N, s.D], { seed: 2 }));
    const tb = tfjsBlock(tf, s.D, s.heads, hidden, 1e-6);
    const tx = tf.variable(tf.randomNormal([s.B, s.N, s.D]));
    const tg = tf.randomNormal([s.B, s.N, s.D]);
    const cases: BenchCase[] = [
      {
        name: 'tessera block, forward+backward',
        work: flops,
        run: async () => {
          T.scope(() => block.forward(x, { training: true }).backward(g));
          await x.grad!.data();
          for (const t of [x, ...params]) {
            t.grad?.dispose();
            t.grad = null;
          }
        },
      },
      {
        name: 'tfjs-webgpu block, forward+backward',
        work: flops,
        run: async () => {
          const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(tb.forward(tx), tg)), [tx, ...tb.variables]);
          await grads[tx.name]!.data();
          value.dispose();
          for (const t of Object.values(grads)) t.dispose();
        },
      },
    ];
    all.push(
      await runSuite(`block-${s.name}-B${s.B}-N${s.N}-D${s.D}`, cases, {
        baseline: 'tfjs-webgpu block, forward+backward',
        rateUnit: 'GFLOP/s',
        rateScale: 1e-9,
        note: `One ViT block (timm Block: pre-norm attention with ${s.heads} heads and MLP ×${s.mlp}, exact-erf GELU) on (${s.B}, ${s.N}, ${s.D}) tokens, ` +
          'forward and backward to the input and every parameter, the input gradient read back. FLOPs counted as 3× the forward multiply-adds × 2.' +
          (tuning ? ` tessera's matmuls as tuned by \`T.tuneMatmul()\`: B from ${tuning.choice === 'texture' ? 'a texture' : 'storage'}${tuning.smallB.uniform ? ', B of at most 192 KiB from uniform arrays' : ''}.` : ''),
        minSamples: 5,
        maxTime: 6,
      }),
    );
    x.dispose();
    g.dispose();
    for (const p of params) p.dispose();
    tx.dispose();
    tg.dispose();
    for (const v of tb.variables) v.dispose();
  }
  return all;
}
