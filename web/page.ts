// The demo page's script: a check of the engine in a browser. It runs the forward and
// backward of a small MLP on WebGPU and shows the adapter and the results; the browser test
// calls window.tesseraMlp with its own data and compares with the CPU reference.
import * as T from '../engine/index.js';

export interface MlpInput {
  x: number[];
  xShape: [number, number];
  w1: number[];
  b1: number[];
  w2: number[];
  b2: number[];
  labels: number[];
  hidden: number;
  classes: number;
}

export interface MlpOutput {
  adapter: string;
  loss: number;
  logits: number[];
  grads: Record<'w1' | 'b1' | 'w2' | 'b2', number[]>;
}

async function tesseraMlp(input: MlpInput): Promise<MlpOutput> {
  const info = await T.init();
  const [n, d] = input.xShape;
  const x = T.tensor(input.x, [n, d]);
  const p = {
    w1: T.tensor(input.w1, [input.hidden, d], { requiresGrad: true }),
    b1: T.tensor(input.b1, [input.hidden], { requiresGrad: true }),
    w2: T.tensor(input.w2, [input.classes, input.hidden], { requiresGrad: true }),
    b2: T.tensor(input.b2, [input.classes], { requiresGrad: true }),
  };
  const labels = T.tensor(Int32Array.from(input.labels), [n]);
  const { loss, logits } = T.scope(() => {
    const h = T.gelu(T.linear(x, p.w1, p.b1));
    const z = T.linear(h, p.w2, p.b2);
    const l = T.crossEntropy(z, labels);
    l.backward();
    return { loss: l, logits: z };
  });
  const grads = {
    w1: [...(await p.w1.grad!.data())],
    b1: [...(await p.b1.grad!.data())],
    w2: [...(await p.w2.grad!.data())],
    b2: [...(await p.b2.grad!.data())],
  };
  // The logits are read into a kept array (data(into)), the gradients into new ones: both paths.
  const logitsInto = new Float32Array(logits.size);
  return { adapter: info.adapterName, loss: await loss.item(), logits: [...(await logits.data(logitsInto))], grads };
}

/** The profiler in the page: a small attention + MLP step, per-kernel GPU time as a table. */
async function tesseraProfile(): Promise<{ timestamps: boolean; rows: T.KernelSummary[]; table: string }> {
  await T.init();
  const qkv = T.randn([4, 17, 48], { seed: 1 });
  qkv.requiresGrad = true;
  const w = T.randn([16, 16], { seed: 2, std: 0.2 });
  const warm = T.scope(() => T.sum(T.linear(T.attention(qkv, 2), w)));
  await warm.data();
  const prof = T.startProfile();
  const out = T.scope(() => {
    const l = T.sum(T.gelu(T.linear(T.attention(qkv, 2), w)));
    l.backward();
    return l;
  });
  await out.data();
  const { records } = await T.stopProfile();
  const rows = T.summarize(records);
  return { timestamps: prof.timestamps, rows, table: T.summaryTable(rows) };
}

export interface AttentionRun {
  family: T.FlashKernelFamily | 'unfused';
  out: number[];
  dqkv: number[];
  kernels: string[];
}

/** Attention forward and backward in the page, through each flash kernel family and the unfused
 * path, on the same qkv (B 2, N 37: a partial last tile, 2 heads of 16). */
async function tesseraAttention(families: T.FlashKernelFamily[]): Promise<AttentionRun[]> {
  await T.init();
  const qkv = T.randn([2, 37, 96], { seed: 3 });
  qkv.requiresGrad = true;
  const g = T.randn([2, 37, 32], { seed: 4 });
  const runs: AttentionRun[] = [];
  for (const family of [...families, 'unfused' as const]) {
    if (family !== 'unfused') T.useFlashKernels(family);
    const before = new Set(T.compiledKernels().map((k) => k.name));
    try {
      const y = T.scope(() => {
        const o = T.attention(qkv, 2, { impl: family === 'unfused' ? 'unfused' : 'flash' });
        o.backward(g);
        return o;
      });
      runs.push({ family, out: [...(await y.data())], dqkv: [...(await qkv.grad!.data())], kernels: T.compiledKernels().map((k) => k.name).filter((n) => !before.has(n)) });
      y.dispose();
      qkv.grad!.dispose();
      qkv.grad = null;
    } finally {
      T.useFlashKernels('auto');
    }
  }
  return runs;
}

export interface ReduceRun {
  kind: T.ReduceKernelKind;
  sum: number[];
  max: number[];
  argmax: number[];
  variance: number[];
  kernels: string[];
}

/** Sum, max with argmax and variance over the rows of `data` ([rows, cols]) in the page, each way
 * a row reduction can run (one invocation a row; two passes with and without subgroups). */
async function tesseraReduce(data: number[], rows: number, cols: number, kinds: T.ReduceKernelKind[]): Promise<ReduceRun[]> {
  await T.init();
  const x = T.tensor(data, [rows, cols]);
  const runs: ReduceRun[] = [];
  for (const kind of kinds) {
    T.useReduceKernel(kind);
    const before = new Set(T.compiledKernels().map((k) => k.name));
    try {
      const { values, indices } = T.max(x, 1);
      const sum = T.sum(x, 1);
      const variance = T.variance(x, 1);
      runs.push({ kind, sum: [...(await sum.data())], max: [...(await values.data())], argmax: [...(await indices.data())], variance: [...(await variance.data())], kernels: T.compiledKernels().map((k) => k.name).filter((n) => !before.has(n)) });
      for (const t of [values, indices, sum, variance]) t.dispose();
    } finally {
      T.useReduceKernel('auto');
    }
  }
  x.dispose();
  return runs;
}

declare global {
  interface Window {
    tesseraMlp: typeof tesseraMlp;
    tesseraProfile: typeof tesseraProfile;
    tesseraAttention: typeof tesseraAttention;
    tesseraReduce: typeof tesseraReduce;
    tesseraReady: boolean;
  }
}

window.tesseraMlp = tesseraMlp;
window.tesseraProfile = tesseraProfile;
window.tesseraAttention = tesseraAttention;
window.tesseraReduce = tesseraReduce;

const out = document.getElementById('out');
if (out) {
  const input: MlpInput = {
    x: Array.from({ length: 8 }, (_, i) => Math.sin(i)),
    xShape: [4, 2],
    w1: Array.from({ length: 6 }, (_, i) => Math.cos(i) * 0.5),
    b1: [0, 0.1, -0.1],
    w2: Array.from({ length: 6 }, (_, i) => Math.sin(i + 1) * 0.5),
    b2: [0, 0],
    labels: [0, 1, 1, 0],
    hidden: 3,
    classes: 2,
  };
  tesseraMlp(input)
    .then(async (r) => {
      out.textContent = `adapter: ${r.adapter}\nloss: ${r.loss.toFixed(6)}\ndL/db2: ${r.grads.b2.map((v) => v.toFixed(6)).join(', ')}`;
      const p = await tesseraProfile();
      const prof = document.getElementById('profile');
      if (prof) prof.textContent = `${p.timestamps ? 'GPU timestamps' : 'no timestamp-query: times unavailable'}\n${p.table}`;
    })
    .catch((e: unknown) => (out.textContent = `error: ${String(e)}`))
    // Ready once the demo is done: a caller's profile must not overlap the demo's.
    .finally(() => (window.tesseraReady = true));
} else {
  window.tesseraReady = true;
}
