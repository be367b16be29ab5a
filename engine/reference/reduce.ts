// CPU reference for reductions over axes (keepdim or not) and their vector-Jacobian products.
import { forEachIndex, type Nd, zerosNd } from './nd.js';

function plan(x: Nd, axes: number[] | undefined, keepdim: boolean) {
  const ax = (axes ?? x.shape.map((_, i) => i)).map((a) => (a < 0 ? a + x.shape.length : a));
  const keepShape = x.shape.map((d, i) => (ax.includes(i) ? 1 : d));
  const outShape = keepdim ? keepShape : x.shape.filter((_, i) => !ax.includes(i));
  const r = ax.reduce((acc, a) => acc * x.shape[a]!, 1);
  // Output offset of each input element (row-major over keepShape).
  const outIndex = (idx: number[]) => {
    let o = 0;
    for (let k = 0; k < idx.length; k++) o = o * keepShape[k]! + (ax.includes(k) ? 0 : idx[k]!);
    return o;
  };
  return { ax, outShape, r, outIndex };
}

export function sum(x: Nd, axes?: number[], keepdim = false, scale = 1): Nd {
  const p = plan(x, axes, keepdim);
  const out = zerosNd(p.outShape);
  forEachIndex(x.shape, (i, idx) => {
    const o = p.outIndex(idx);
    out.data[o] = out.data[o]! + x.data[i]! * scale;
  });
  return out;
}

export const mean = (x: Nd, axes?: number[], keepdim = false) => sum(x, axes, keepdim, 1 / plan(x, axes, keepdim).r);

/** d(sum)/dx: every element of a reduction gets that reduction's gradient (times scale). */
export function sumVjp(x: Nd, g: Nd, axes?: number[], scale = 1): Nd {
  const p = plan(x, axes, true);
  const out = zerosNd(x.shape);
  forEachIndex(x.shape, (i, idx) => (out.data[i] = g.data[p.outIndex(idx)]! * scale));
  return out;
}
export const meanVjp = (x: Nd, g: Nd, axes?: number[]) => sumVjp(x, g, axes, 1 / plan(x, axes, true).r);

/** Max and the first position of it (flattened over the reduced axes, row-major). */
export function max(x: Nd, axes?: number[], keepdim = false): { values: Nd; indices: Int32Array } {
  const p = plan(x, axes, keepdim);
  const values = zerosNd(p.outShape).data.fill(-Infinity);
  const indices = new Int32Array(values.length);
  const count = new Int32Array(values.length);
  const reducedShape = p.ax.map((a) => x.shape[a]!);
  forEachIndex(x.shape, (i, idx) => {
    const o = p.outIndex(idx);
    let flat = 0;
    p.ax.forEach((a, k) => (flat = flat * reducedShape[k]! + idx[a]!));
    if (x.data[i]! > values[o]! || count[o] === 0) {
      values[o] = x.data[i]!;
      indices[o] = flat;
    }
    count[o]!++;
  });
  return { values: { data: values, shape: p.outShape }, indices };
}

export function maxVjp(x: Nd, g: Nd, axes?: number[]): Nd {
  const p = plan(x, axes, true);
  const { indices } = max(x, axes, true);
  const reducedShape = p.ax.map((a) => x.shape[a]!);
  const out = zerosNd(x.shape);
  forEachIndex(x.shape, (i, idx) => {
    const o = p.outIndex(idx);
    let flat = 0;
    p.ax.forEach((a, k) => (flat = flat * reducedShape[k]! + idx[a]!));
    if (flat === indices[o]) out.data[i] = g.data[o]!;
  });
  return out;
}

export function variance(x: Nd, axes?: number[], keepdim = false, correction = 1): Nd {
  const p = plan(x, axes, keepdim);
  const m = mean(x, axes, true);
  const out = zerosNd(p.outShape);
  forEachIndex(x.shape, (i, idx) => {
    const o = p.outIndex(idx);
    const d = x.data[i]! - m.data[o]!;
    out.data[o] = out.data[o]! + (d * d) / (p.r - correction);
  });
  return out;
}

export function varianceVjp(x: Nd, g: Nd, axes?: number[], correction = 1): Nd {
  const p = plan(x, axes, true);
  const m = mean(x, axes, true);
  const out = zerosNd(x.shape);
  forEachIndex(x.shape, (i, idx) => {
    const o = p.outIndex(idx);
    out.data[i] = (g.data[o]! * 2 * (x.data[i]! - m.data[o]!)) / (p.r - correction);
  });
  return out;
}
