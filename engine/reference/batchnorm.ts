// CPU reference for BatchNorm2d in training mode (batch statistics) and its VJP.
import { type Nd, zerosNd } from './nd.js';

function stats(x: Nd): { mean: Float64Array; variance: Float64Array; n: number } {
  const [B, C, H, W] = x.shape as [number, number, number, number];
  const n = B * H * W;
  const mean = new Float64Array(C);
  const variance = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    let s = 0;
    for (let b = 0; b < B; b++) for (let i = 0; i < H * W; i++) s += x.data[(b * C + c) * H * W + i]!;
    mean[c] = s / n;
    let v = 0;
    for (let b = 0; b < B; b++) for (let i = 0; i < H * W; i++) v += (x.data[(b * C + c) * H * W + i]! - mean[c]!) ** 2;
    variance[c] = v / n;
  }
  return { mean, variance, n };
}

export function batchNorm2d(x: Nd, w: Nd, b: Nd, eps: number): Nd {
  const [, C, H, W] = x.shape as [number, number, number, number];
  const { mean, variance } = stats(x);
  const y = zerosNd(x.shape);
  for (let i = 0; i < x.data.length; i++) {
    const c = Math.floor(i / (H * W)) % C;
    y.data[i] = ((x.data[i]! - mean[c]!) / Math.sqrt(variance[c]! + eps)) * w.data[c]! + b.data[c]!;
  }
  return y;
}

/** Running statistics after one training step from (runningMean, runningVar). */
export function runningStats(x: Nd, runningMean: number[], runningVar: number[], momentum: number): { mean: number[]; variance: number[] } {
  const { mean, variance, n } = stats(x);
  return {
    mean: runningMean.map((r, c) => (1 - momentum) * r + momentum * mean[c]!),
    variance: runningVar.map((r, c) => (1 - momentum) * r + (momentum * variance[c]! * n) / (n - 1)),
  };
}

export function batchNorm2dVjp(x: Nd, w: Nd, g: Nd, eps: number): { dx: Nd; dw: Nd; db: Nd } {
  const [, C, H, W] = x.shape as [number, number, number, number];
  const { mean, variance, n } = stats(x);
  const dx = zerosNd(x.shape);
  const dw = zerosNd([C]);
  const db = zerosNd([C]);
  const sumG = new Float64Array(C);
  const sumGXhat = new Float64Array(C);
  for (let i = 0; i < x.data.length; i++) {
    const c = Math.floor(i / (H * W)) % C;
    const xhat = (x.data[i]! - mean[c]!) / Math.sqrt(variance[c]! + eps);
    sumG[c] = sumG[c]! + g.data[i]!;
    sumGXhat[c] = sumGXhat[c]! + g.data[i]! * xhat;
  }
  for (let c = 0; c < C; c++) {
    dw.data[c] = sumGXhat[c]!;
    db.data[c] = sumG[c]!;
  }
  // dx = γ·inv/n · (n·g − Σg − x̂·Σ(g·x̂))
  for (let i = 0; i < x.data.length; i++) {
    const c = Math.floor(i / (H * W)) % C;
    const inv = 1 / Math.sqrt(variance[c]! + eps);
    const xhat = (x.data[i]! - mean[c]!) * inv;
    dx.data[i] = ((w.data[c]! * inv) / n) * (n * g.data[i]! - sumG[c]! - xhat * sumGXhat[c]!);
  }
  return { dx, dw, db };
}
