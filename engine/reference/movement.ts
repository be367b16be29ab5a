// CPU reference for movement ops; each backward is the adjoint movement.
import { forEachIndex, type Nd, stridesOf, zerosNd } from './nd.js';

export function permute(x: Nd, perm: number[]): Nd {
  const shape = perm.map((p) => x.shape[p]!);
  const xs = stridesOf(x.shape);
  const out = zerosNd(shape);
  forEachIndex(shape, (i, idx) => {
    let o = 0;
    idx.forEach((v, k) => (o += v * xs[perm[k]!]!));
    out.data[i] = x.data[o]!;
  });
  return out;
}

export function permuteVjp(g: Nd, perm: number[]): Nd {
  const inv = new Array<number>(perm.length);
  perm.forEach((p, i) => (inv[p] = i));
  return permute(g, inv);
}

export function slice(x: Nd, starts: number[], ends: number[]): Nd {
  const shape = x.shape.map((_, i) => ends[i]! - starts[i]!);
  const xs = stridesOf(x.shape);
  const out = zerosNd(shape);
  forEachIndex(shape, (i, idx) => {
    let o = 0;
    idx.forEach((v, k) => (o += (v + starts[k]!) * xs[k]!));
    out.data[i] = x.data[o]!;
  });
  return out;
}

export function pad(x: Nd, widths: [number, number][], value = 0): Nd {
  const shape = x.shape.map((d, i) => d + widths[i]![0] + widths[i]![1]);
  const out = zerosNd(shape);
  out.data.fill(value);
  const os = stridesOf(shape);
  forEachIndex(x.shape, (i, idx) => {
    let o = 0;
    idx.forEach((v, k) => (o += (v + widths[k]![0]) * os[k]!));
    out.data[o] = x.data[i]!;
  });
  return out;
}

export function concat(xs: Nd[], axis: number): Nd {
  const shape = [...xs[0]!.shape];
  shape[axis] = xs.reduce((a, t) => a + t.shape[axis]!, 0);
  const out = zerosNd(shape);
  const os = stridesOf(shape);
  let at = 0;
  for (const t of xs) {
    forEachIndex(t.shape, (i, idx) => {
      let o = 0;
      idx.forEach((v, k) => (o += (k === axis ? v + at : v) * os[k]!));
      out.data[o] = t.data[i]!;
    });
    at += t.shape[axis]!;
  }
  return out;
}

/** torch.gather along `axis` with an index of the output's shape. */
export function gather(x: Nd, axis: number, index: Int32Array, indexShape: number[]): Nd {
  const xs = stridesOf(x.shape);
  const out = zerosNd(indexShape);
  forEachIndex(indexShape, (i, idx) => {
    let o = 0;
    idx.forEach((v, k) => (o += (k === axis ? index[i]! : v) * xs[k]!));
    out.data[i] = x.data[o]!;
  });
  return out;
}

/** Scatter-add of g into x's shape: the backward of gather. */
export function gatherVjp(xShape: number[], axis: number, index: Int32Array, g: Nd): Nd {
  const xs = stridesOf(xShape);
  const out = zerosNd(xShape);
  forEachIndex(g.shape, (i, idx) => {
    let o = 0;
    idx.forEach((v, k) => (o += (k === axis ? index[i]! : v) * xs[k]!));
    out.data[o] = out.data[o]! + g.data[i]!;
  });
  return out;
}
