// CPU reference for LayerNorm over the last axis (biased variance, as torch).
import { type Nd, zerosNd } from './nd.js';

export function layerNorm(x: Nd, w: Nd | null, b: Nd | null, eps: number): Nd {
  const C = x.shape[x.shape.length - 1]!;
  const R = x.data.length / C;
  const out = zerosNd(x.shape);
  for (let r = 0; r < R; r++) {
    let m = 0;
    for (let c = 0; c < C; c++) m += x.data[r * C + c]!;
    m /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x.data[r * C + c]! - m) ** 2;
    const rstd = 1 / Math.sqrt(v / C + eps);
    for (let c = 0; c < C; c++) {
      const xh = (x.data[r * C + c]! - m) * rstd;
      out.data[r * C + c] = w && b ? xh * w.data[c]! + b.data[c]! : xh;
    }
  }
  return out;
}

export function layerNormVjp(x: Nd, w: Nd | null, g: Nd, eps: number): { dx: Nd; dw: Nd; db: Nd } {
  const C = x.shape[x.shape.length - 1]!;
  const R = x.data.length / C;
  const dx = zerosNd(x.shape);
  const dw = zerosNd([C]);
  const db = zerosNd([C]);
  for (let r = 0; r < R; r++) {
    let m = 0;
    for (let c = 0; c < C; c++) m += x.data[r * C + c]!;
    m /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x.data[r * C + c]! - m) ** 2;
    const rstd = 1 / Math.sqrt(v / C + eps);
    let m1 = 0;
    let m2 = 0;
    for (let c = 0; c < C; c++) {
      const i = r * C + c;
      const xh = (x.data[i]! - m) * rstd;
      const gh = g.data[i]! * (w ? w.data[c]! : 1);
      m1 += gh / C;
      m2 += (gh * xh) / C;
      dw.data[c] = dw.data[c]! + g.data[i]! * xh;
      db.data[c] = db.data[c]! + g.data[i]!;
    }
    for (let c = 0; c < C; c++) {
      const i = r * C + c;
      const xh = (x.data[i]! - m) * rstd;
      const gh = g.data[i]! * (w ? w.data[c]! : 1);
      dx.data[i] = rstd * (gh - m1 - xh * m2);
    }
  }
  return { dx, dw, db };
}
