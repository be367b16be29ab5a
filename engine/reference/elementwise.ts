// CPU reference for elementwise ops: scalar functions and their derivatives in float64, applied
// with NumPy broadcasting. The GPU op table (engine/ops/elementwise.ts) pairs each with WGSL.
import { broadcastShapes, broadcastTo, forEachIndex, type Nd, sumToShape, zerosNd } from './nd.js';

/** erf to ~1e-15: Maclaurin series for |x| < 3, continued fraction for erfc beyond. */
export function erf(x: number): number {
  const a = Math.abs(x);
  if (a < 3) {
    let term = a;
    let sum = a;
    for (let n = 1; n < 100; n++) {
      term *= (-a * a) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.sign(x) * sum * (2 / Math.sqrt(Math.PI));
  }
  if (a > 8) return Math.sign(x);
  // erfc(a) = exp(-a^2)/sqrt(pi) * 1/(a + 1/2/(a + 1/(a + 3/2/(a + ...)))), evaluated bottom-up.
  let f = a;
  for (let k = 60; k >= 1; k--) f = a + k / 2 / f;
  const erfc = Math.exp(-a * a) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

const SQRT1_2 = Math.SQRT1_2;
export const gelu = (x: number) => 0.5 * x * (1 + erf(x * SQRT1_2));
export const geluGrad = (x: number) => 0.5 * (1 + erf(x * SQRT1_2)) + x * Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
export const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/** f(x, p, q) and df/dx(x, y = f(x), p, q) for each unary op. */
export const UNARY_REF: Record<string, { f: (x: number, p: number, q: number) => number; df: (x: number, y: number, p: number, q: number) => number }> = {
  neg: { f: (x) => -x, df: () => -1 },
  exp: { f: Math.exp, df: (_x, y) => y },
  log: { f: Math.log, df: (x) => 1 / x },
  sqrt: { f: Math.sqrt, df: (_x, y) => 0.5 / y },
  rsqrt: { f: (x) => 1 / Math.sqrt(x), df: (_x, y) => -0.5 * y * y * y },
  abs: { f: Math.abs, df: (x) => Math.sign(x) },
  tanh: { f: Math.tanh, df: (_x, y) => 1 - y * y },
  sigmoid: { f: sigmoid, df: (_x, y) => y * (1 - y) },
  relu: { f: (x) => Math.max(x, 0), df: (x) => (x > 0 ? 1 : 0) },
  gelu: { f: gelu, df: geluGrad },
  addScalar: { f: (x, p) => x + p, df: () => 1 },
  mulScalar: { f: (x, p) => x * p, df: (_x, _y, p) => p },
  powScalar: { f: (x, p) => Math.pow(x, p), df: (x, _y, p) => p * Math.pow(x, p - 1) },
  clamp: { f: (x, p, q) => Math.min(Math.max(x, p), q), df: (x, _y, p, q) => (x >= p && x <= q ? 1 : 0) },
};

/** f(a, b) and the partial derivatives for each binary op (compare ops have none). */
export const BINARY_REF: Record<string, { f: (a: number, b: number) => number; da?: (a: number, b: number) => number; db?: (a: number, b: number) => number }> = {
  add: { f: (a, b) => a + b, da: () => 1, db: () => 1 },
  sub: { f: (a, b) => a - b, da: () => 1, db: () => -1 },
  mul: { f: (a, b) => a * b, da: (_a, b) => b, db: (a) => a },
  div: { f: (a, b) => a / b, da: (_a, b) => 1 / b, db: (a, b) => -a / (b * b) },
  pow: { f: Math.pow, da: (a, b) => b * Math.pow(a, b - 1), db: (a, b) => Math.pow(a, b) * Math.log(a) },
  maximum: { f: Math.max, da: (a, b) => (a >= b ? 1 : 0), db: (a, b) => (a >= b ? 0 : 1) },
  minimum: { f: Math.min, da: (a, b) => (a <= b ? 1 : 0), db: (a, b) => (a <= b ? 0 : 1) },
  gt: { f: (a, b) => (a > b ? 1 : 0) },
  ge: { f: (a, b) => (a >= b ? 1 : 0) },
  lt: { f: (a, b) => (a < b ? 1 : 0) },
  le: { f: (a, b) => (a <= b ? 1 : 0) },
  eq: { f: (a, b) => (a === b ? 1 : 0) },
  ne: { f: (a, b) => (a !== b ? 1 : 0) },
};

export function unary(op: string, x: Nd, p = 0, q = 0): Nd {
  const f = UNARY_REF[op]!.f;
  return { data: x.data.map((v) => f(v, p, q)), shape: [...x.shape] };
}

export function unaryVjp(op: string, x: Nd, g: Nd, p = 0, q = 0): Nd {
  const { f, df } = UNARY_REF[op]!;
  return { data: x.data.map((v, i) => g.data[i]! * df(v, f(v, p, q), p, q)), shape: [...x.shape] };
}

export function binary(op: string, a: Nd, b: Nd): Nd {
  const shape = broadcastShapes(a.shape, b.shape, op);
  const A = broadcastTo(a, shape);
  const B = broadcastTo(b, shape);
  const f = BINARY_REF[op]!.f;
  return { data: A.data.map((v, i) => f(v, B.data[i]!)), shape };
}

export function binaryVjp(op: string, a: Nd, b: Nd, g: Nd): [Nd, Nd] {
  const { da, db } = BINARY_REF[op]!;
  const A = broadcastTo(a, g.shape);
  const B = broadcastTo(b, g.shape);
  const ga = zerosNd(g.shape);
  const gb = zerosNd(g.shape);
  for (let i = 0; i < g.data.length; i++) {
    ga.data[i] = g.data[i]! * da!(A.data[i]!, B.data[i]!);
    gb.data[i] = g.data[i]! * db!(A.data[i]!, B.data[i]!);
  }
  return [sumToShape(ga, a.shape), sumToShape(gb, b.shape)];
}

/** where(cond != 0, a, b) with broadcasting of all three. */
export function where(cond: Nd, a: Nd, b: Nd): Nd {
  const shape = broadcastShapes(broadcastShapes(cond.shape, a.shape), b.shape);
  const C = broadcastTo(cond, shape);
  const A = broadcastTo(a, shape);
  const B = broadcastTo(b, shape);
  const out = zerosNd(shape);
  forEachIndex(shape, (i) => (out.data[i] = C.data[i] !== 0 ? A.data[i]! : B.data[i]!));
  return out;
}

export function whereVjp(cond: Nd, a: Nd, b: Nd, g: Nd): [Nd, Nd] {
  const C = broadcastTo(cond, g.shape);
  const ga = zerosNd(g.shape);
  const gb = zerosNd(g.shape);
  for (let i = 0; i < g.data.length; i++) {
    if (C.data[i] !== 0) ga.data[i] = g.data[i]!;
    else gb.data[i] = g.data[i]!;
  }
  return [sumToShape(ga, a.shape), sumToShape(gb, b.shape)];
}
