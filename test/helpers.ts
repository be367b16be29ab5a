// The op-test helper (after tinygrad's helper_test_op): random inputs at given shapes, GPU forward
// vs the float64 CPU reference, the reference's VJP vs central finite differences of the
// reference in float64, and GPU backward vs the reference VJP.
import { expect } from 'vitest';
import * as T from '../engine/index.js';
import { type Nd, nd } from '../engine/reference/nd.js';

/** Deterministic test data (mulberry32), so a failure reproduces. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export type Gen = 'normal' | 'positive' | 'unit' | { int: number };

export interface InputSpec {
  shape: number[];
  gen?: Gen;
  /** Include in gradient checks (default: true for float inputs). */
  grad?: boolean;
}

export function makeData(shape: number[], gen: Gen, r: () => number): Float64Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    if (typeof gen === 'object') out[i] = Math.floor(r() * gen.int);
    else if (gen === 'positive') out[i] = Math.fround(0.5 + 2 * r());
    else if (gen === 'unit') out[i] = Math.fround(r());
    else {
      // Box-Muller; rounded to f32 so the GPU and the reference see the same values.
      const u = Math.max(r(), 1e-12);
      out[i] = Math.fround(Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * r()));
    }
  }
  return out;
}

export interface Tolerance {
  /** |gpu - ref| <= atol + rtol * |ref| element-wise. */
  atol: number;
  rtol: number;
}

export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: Tolerance, what: string): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < expected.length; i++) {
    const e = expected[i]!;
    const a = actual[i]!;
    const excess = Math.abs(a - e) - (tol.atol + tol.rtol * Math.abs(e));
    if (!(excess <= worst) || Number.isNaN(a) !== Number.isNaN(e)) {
      if (Number.isNaN(a) && Number.isNaN(e)) continue;
      worst = Number.isNaN(excess) ? Infinity : excess;
      at = i;
    }
  }
  if (at >= 0) {
    throw new Error(`${what}: element ${at} is ${actual[at]}, expected ${expected[at]} (atol ${tol.atol}, rtol ${tol.rtol})`);
  }
}

export interface OpCase {
  name: string;
  inputs: InputSpec[];
  gpu: (...xs: T.Tensor[]) => T.Tensor;
  ref: (...xs: Nd[]) => Nd;
  /** Reference backward: gradients of Σ ref(x)·g for each input (null where none). */
  vjp?: (xs: Nd[], g: Nd) => (Nd | null)[];
  /** Forward tolerance (default 1e-5 / 1e-5: a few f32 ulps). */
  fwd?: Partial<Tolerance>;
  /** GPU-backward vs reference-VJP tolerance (default 1e-4 / 1e-4). */
  bwd?: Partial<Tolerance>;
  /** Finite-difference samples per input (default 20). */
  fdSamples?: number;
  seed?: number;
}

/** Runs one op case; everything it creates is freed before it returns. */
export async function checkOp(c: OpCase): Promise<void> {
  const r = rng(c.seed ?? 1234);
  const datas = c.inputs.map((s) => makeData(s.shape, s.gen ?? 'normal', r));
  const nds = datas.map((d, i) => nd(d, c.inputs[i]!.shape));
  const expected = c.ref(...nds);
  const fwdTol: Tolerance = { atol: 1e-5, rtol: 1e-5, ...c.fwd };
  const bwdTol: Tolerance = { atol: 1e-4, rtol: 1e-4, ...c.bwd };
  const isInt = (s: InputSpec) => typeof s.gen === 'object';
  const wantsGrad = (s: InputSpec) => !isInt(s) && s.grad !== false;

  const before = T.liveBuffers();
  const tensors = c.inputs.map((s, i) =>
    isInt(s) ? T.tensor(Int32Array.from(datas[i]!), s.shape) : T.tensor(Float32Array.from(datas[i]!), s.shape, { requiresGrad: !!c.vjp && wantsGrad(s) }),
  );
  // The upstream gradient; forward and backward run in one scope (backward needs the forward's
  // intermediates, which the scope frees when it ends).
  const g = nd(makeData(expected.shape, 'normal', r), expected.shape);
  const gT = T.tensor(Float32Array.from(g.data), g.shape);
  try {
    const y = T.scope(() => {
      const out = c.gpu(...tensors);
      if (c.vjp) out.backward(gT);
      return out;
    });
    expect(y.shape, `${c.name}: output shape`).toEqual(expected.shape);
    expectClose(await y.data(), expected.data, fwdTol, `${c.name} forward`);
    if (c.vjp) {
      const grads = c.vjp(nds, g);
      // 1. The reference VJP against central finite differences of the reference, float64.
      const loss = (xs: Nd[]) => {
        const out = c.ref(...xs);
        let s = 0;
        for (let i = 0; i < out.data.length; i++) s += out.data[i]! * g.data[i]!;
        return s;
      };
      c.inputs.forEach((s, i) => {
        if (!wantsGrad(s)) return;
        const ga = grads[i];
        expect(ga, `${c.name}: reference VJP for input ${i}`).toBeTruthy();
        const n = datas[i]!.length;
        const samples = Math.min(n, c.fdSamples ?? 20);
        for (let k = 0; k < samples; k++) {
          const j = samples === n ? k : Math.floor(r() * n);
          const x0 = nds[i]!.data[j]!;
          const h = 1e-6 * Math.max(1, Math.abs(x0));
          nds[i]!.data[j] = x0 + h;
          const lp = loss(nds);
          nds[i]!.data[j] = x0 - h;
          const lm = loss(nds);
          nds[i]!.data[j] = x0;
          const fd = (lp - lm) / (2 * h);
          // Central differences in float64: truncation O(h²) plus rounding ~1e-16·|L|/h.
          const tol = 1e-6 * (1 + Math.abs(fd)) + 1e-13 * Math.abs(lp) / h;
          if (Math.abs(fd - ga!.data[j]!) > tol) {
            throw new Error(`${c.name}: reference VJP for input ${i} element ${j} is ${ga!.data[j]}, finite differences give ${fd}`);
          }
        }
      });
      // 2. GPU backward against the reference VJP.
      for (const [i, s] of c.inputs.entries()) {
        if (!wantsGrad(s)) continue;
        const t = tensors[i]!;
        expect(t.grad, `${c.name}: input ${i} received no gradient`).toBeTruthy();
        expectClose(await t.grad!.data(), grads[i]!.data, bwdTol, `${c.name} backward, input ${i}`);
      }
    }
    y.dispose();
  } finally {
    gT.dispose();
    for (const t of tensors) t.dispose();
  }
  expect(T.liveBuffers(), `${c.name}: live buffers after the case`).toBe(before);
}
