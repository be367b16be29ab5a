// CPU reference for softmax, log-softmax (last axis) and cross-entropy, with their VJPs.
import { type Nd, zerosNd } from './nd.js';

function rows(x: Nd): [number, number] {
  const c = x.shape[x.shape.length - 1]!;
  return [x.data.length / c, c];
}

export function logSoftmax(x: Nd): Nd {
  const [R, C] = rows(x);
  const out = zerosNd(x.shape);
  for (let r = 0; r < R; r++) {
    let mx = -Infinity;
    for (let c = 0; c < C; c++) mx = Math.max(mx, x.data[r * C + c]!);
    let s = 0;
    for (let c = 0; c < C; c++) s += Math.exp(x.data[r * C + c]! - mx);
    const lse = mx + Math.log(s);
    for (let c = 0; c < C; c++) out.data[r * C + c] = x.data[r * C + c]! - lse;
  }
  return out;
}

export const softmax = (x: Nd): Nd => ({ data: logSoftmax(x).data.map(Math.exp), shape: [...x.shape] });

export function softmaxVjp(x: Nd, g: Nd): Nd {
  const [R, C] = rows(x);
  const y = softmax(x);
  const out = zerosNd(x.shape);
  for (let r = 0; r < R; r++) {
    let s = 0;
    for (let c = 0; c < C; c++) s += g.data[r * C + c]! * y.data[r * C + c]!;
    for (let c = 0; c < C; c++) out.data[r * C + c] = y.data[r * C + c]! * (g.data[r * C + c]! - s);
  }
  return out;
}

export function logSoftmaxVjp(x: Nd, g: Nd): Nd {
  const [R, C] = rows(x);
  const y = softmax(x);
  const out = zerosNd(x.shape);
  for (let r = 0; r < R; r++) {
    let s = 0;
    for (let c = 0; c < C; c++) s += g.data[r * C + c]!;
    for (let c = 0; c < C; c++) out.data[r * C + c] = g.data[r * C + c]! - y.data[r * C + c]! * s;
  }
  return out;
}

/** Smoothed target distribution q = (1 - ε) t + ε / C, t one-hot (labels) or soft. */
export function smoothedTarget(target: Int32Array | Nd, N: number, C: number, eps: number): Nd {
  const q = zerosNd([N, C]);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const t = target instanceof Int32Array ? (target[n] === c ? 1 : 0) : target.data[n * C + c]!;
      q.data[n * C + c] = (1 - eps) * t + eps / C;
    }
  }
  return q;
}

/** Per-row cross-entropy -Σ q log softmax(z). */
export function crossEntropy(z: Nd, target: Int32Array | Nd, eps = 0): Nd {
  const [N, C] = z.shape as [number, number];
  const q = smoothedTarget(target, N, C, eps);
  const ls = logSoftmax(z);
  const out = zerosNd([N]);
  for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) out.data[n] = out.data[n]! - q.data[n * C + c]! * ls.data[n * C + c]!;
  return out;
}

/** Gradients for the logits and (soft targets only) the target, given per-row g. */
export function crossEntropyVjp(z: Nd, target: Int32Array | Nd, g: Nd, eps = 0): [Nd, Nd | null] {
  const [N, C] = z.shape as [number, number];
  const q = smoothedTarget(target, N, C, eps);
  const p = softmax(z);
  const ls = logSoftmax(z);
  const dz = zerosNd(z.shape);
  const dt = target instanceof Int32Array ? null : zerosNd(z.shape);
  for (let n = 0; n < N; n++) {
    let qs = 0;
    for (let c = 0; c < C; c++) qs += q.data[n * C + c]!;
    for (let c = 0; c < C; c++) {
      const i = n * C + c;
      dz.data[i] = (p.data[i]! * qs - q.data[i]!) * g.data[n]!;
      if (dt) dt.data[i] = -(1 - eps) * ls.data[i]! * g.data[n]!;
    }
  }
  return [dz, dt];
}

/** Jensen–Shannon consistency of n views (as engine/ops/softmax.ts jsdLoss), a scalar. */
export function jsd(views: Nd[]): Nd {
  const n = views.length;
  const B = views[0]!.shape[0]!;
  const probs = views.map(softmax);
  const logps = views.map(logSoftmax);
  const logM = probs[0]!.data.map((_, j) => Math.log(Math.min(Math.max(probs.reduce((a, p) => a + p.data[j]!, 0) / n, 1e-7), 1)));
  let s = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < logM.length; j++) s += probs[i]!.data[j]! * (logps[i]!.data[j]! - logM[j]!);
  return { data: Float64Array.of(s / (n * B)), shape: [] };
}

/** d jsd / d logits of each view: ∂L/∂p_i = (log p_i − log M)/(nB), then through the softmax. */
export function jsdVjp(views: Nd[], g: Nd): Nd[] {
  const n = views.length;
  const B = views[0]!.shape[0]!;
  const probs = views.map(softmax);
  const logM = probs[0]!.data.map((_, j) => Math.log(probs.reduce((a, p) => a + p.data[j]!, 0) / n));
  return views.map((v) => {
    const lp = logSoftmax(v);
    const dp = { data: lp.data.map((l, j) => (g.data[0]! * (l - logM[j]!)) / (n * B)), shape: [...v.shape] };
    return softmaxVjp(v, dp);
  });
}
