// Attention: tessera's fused (flash) kernels vs its unfused path (matmul → softmax → matmul) vs
// the same composition in TensorFlow.js WebGPU, forward and forward+backward (tf.grads).
import * as T from '../engine/index.js';
import { onePassKeys, useFlashOnePass } from '../engine/ops/attention.js';
import { runInterleaved, runSuite, type BenchCase, type SuiteRow } from './harness.js';
import { loadTf } from './peers/env.js';

export const ATTENTION_SHAPES: [number, number, number, number][] = [
  // [batch, heads, N, head dim]: batch · heads = 128, then 512 (the first is vit-fmnist-p4's
  // attention at batch 128)
  [32, 4, 50, 16],
  [32, 4, 65, 32],
  [32, 4, 197, 64],
  [128, 4, 50, 16],
  [128, 4, 65, 32],
  [128, 4, 197, 64],
];

/** `filter` matches the suite name, e.g. /B128-/ for the 512-head shapes. */
export async function attentionSuite(filter?: RegExp): Promise<SuiteRow[][]> {
  await T.init();
  const tf = await loadTf();
  const all: SuiteRow[][] = [];
  for (const [B, nh, N, hd] of ATTENTION_SHAPES) {
    if (filter && !filter.test(`attention-B${B}-h${nh}-N${N}-d${hd}`)) continue;
    const D = nh * hd;
    const flopsFwd = 4 * B * nh * N * N * hd;
    const qkv = T.keep(T.randn([B, N, 3 * D], { seed: 1 }));
    qkv.requiresGrad = true;
    const g = T.keep(T.randn([B, N, D], { seed: 2 }));
    const hq = await qkv.data();
    // The same numbers as (B·nh, N, hd) tensors for TensorFlow.js.
    const heads = (which: number) => {
      const out = new Float32Array(B * nh * N * hd);
      for (let b = 0; b < B; b++) for (let n = 0; n < N; n++) for (let h = 0; h < nh; h++) for (let d = 0; d < hd; d++) {
        out[((b * nh + h) * N + n) * hd + d] = hq[(b * N + n) * 3 * D + which * D + h * hd + d]!;
      }
      return tf.tensor3d(out, [B * nh, N, hd]);
    };
    const [tq, tk, tv] = [heads(0), heads(1), heads(2)];
    const tg = tf.randomNormal([B * nh, N, hd]);
    const scale = hd ** -0.5;
    const tfAttn = (q: import('@tensorflow/tfjs').Tensor3D, k: import('@tensorflow/tfjs').Tensor3D, v: import('@tensorflow/tfjs').Tensor3D) =>
      tf.matMul(tf.softmax(tf.mul(tf.matMul(q, k, false, true), scale)), v);
    const tfGrads = tf.grads((q, k, v) => tf.sum(tf.mul(tfAttn(q as never, k as never, v as never), tg)));
    // tessera's results are read into arrays kept across repeats (`data(into)`), as a program
    // reading them every step would: a fresh array a repeat (4.9 MB of dQKV at B128 N50) costs V8
    // collections on the cores the kernels run on (flash forward+backward there, 150 repeats:
    // 2–4 mark-compacts and ~25 scavenges, none with a kept array; mean 13.4 → 12.1 ms).
    const gradInto = new Float32Array(B * N * 3 * D);
    const outInto = new Float32Array(B * N * D);
    const ours = (impl: 'flash' | 'unfused', backward: boolean, onePass: boolean | 'auto' = 'auto', family: T.FlashKernelFamily | 'auto' = 'auto') => async () => {
      useFlashOnePass(onePass);
      T.useFlashKernels(family);
      const y = T.scope(() => {
        const o = backward ? T.attention(qkv, nh, { impl }) : T.noGrad(() => T.attention(qkv, nh, { impl }));
        if (backward) o.backward(g);
        return o;
      });
      useFlashOnePass('auto');
      T.useFlashKernels('auto');
      await (backward ? qkv.grad!.data(gradInto) : y.data(outInto));
      y.dispose();
      qkv.grad?.dispose();
      qkv.grad = null;
    };
    const cases: BenchCase[] = [
      { name: 'tessera flash, forward', work: flopsFwd, run: ours('flash', false) },
      { name: 'tessera unfused, forward', work: flopsFwd, run: ours('unfused', false) },
      {
        name: 'tfjs-webgpu composed, forward',
        work: flopsFwd,
        run: async () => {
          const y = tf.tidy(() => tfAttn(tq, tk, tv));
          await y.data();
          y.dispose();
        },
      },
      { name: 'tessera flash, forward+backward', work: 3.5 * flopsFwd, run: ours('flash', true) },
      // The adapter's choice above is the one-pass backward where the head fits it (CPU adapters).
      ...(onePassKeys(N, hd) > 0 ? [{ name: 'tessera flash, forward+backward, two backward kernels', work: 3.5 * flopsFwd, run: ours('flash', true, false) }] : []),
      { name: 'tessera unfused, forward+backward', work: 3.5 * flopsFwd, run: ours('unfused', true) },
      {
        name: 'tfjs-webgpu composed, forward+backward',
        work: 3.5 * flopsFwd,
        run: async () => {
          const grads = tfGrads([tq, tk, tv]);
          await Promise.all(grads.map((t) => t.data()));
          for (const t of grads) t.dispose();
        },
      },
    ];
    const rows = await runSuite(`attention-B${B}-h${nh}-N${N}-d${hd}`, cases, {
      baseline: 'tfjs-webgpu composed, forward+backward',
      rateUnit: 'GFLOP/s',
      rateScale: 1e-9,
      note: `Self-attention, batch ${B} × ${nh} heads, N = ${N}, head dim ${hd}. FLOPs: 4·N²·hd per head forward, 3.5× for forward+backward. ` +
        'Forward rows compare best with the tfjs forward row; ratios in the last column are all against tfjs forward+backward.',
      maxTime: 4,
    });
    all.push(rows);
    // Flash against unfused, forward+backward, interleaved: the ratio under the host's drift.
    // Also the GPU-shaped kernels on this adapter: K/V (and Q/dO) tiles in workgroup memory, and
    // the same one-row-per-invocation kernels streaming every row from storage instead.
    const ownCases = [
      ...cases.filter((c) => c.name.endsWith('forward+backward') || c.name.endsWith('two backward kernels')).filter((c) => c.name.startsWith('tessera')),
      { name: 'tessera flash, forward+backward, K/V tiles in workgroup memory', work: 3.5 * flopsFwd, run: ours('flash', true, 'auto', 'workgroup') },
      { name: 'tessera flash, forward+backward, one row an invocation, streamed', work: 3.5 * flopsFwd, run: ours('flash', true, 'auto', 'vec4') },
    ];
    all.push(await runInterleaved(`attention-B${B}-h${nh}-N${N}-d${hd}-interleaved`, ownCases, {
      baseline: 'tessera unfused, forward+backward',
      rounds: Number(process.env.BENCH_INTERLEAVED ?? 21),
      rateUnit: 'GFLOP/s',
      rateScale: 1e-9,
      note: `Self-attention, batch ${B} × ${nh} heads, N = ${N}, head dim ${hd}, forward+backward with dQ, dK, dV read back, as in attention-B${B}-h${nh}-N${N}-d${hd}.md; tessera's own paths only, timed in interleaved rounds.`,
    }));
    qkv.dispose();
    g.dispose();
    for (const t of [tq, tk, tv, tg]) t.dispose();
  }
  return all;
}
