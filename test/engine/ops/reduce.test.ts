import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../../engine/index.js';
import * as R from '../../../engine/reference/reduce.js';
import { checkOp, rng } from '../../helpers.js';

beforeAll(async () => {
  await T.init();
});

// Sums of up to ~300 f32 terms of magnitude ~1: rounding grows like sqrt(n)·6e-8 with a
// worst case n·6e-8 ≈ 2e-5, so forward uses 1e-4 absolute.
const FWD = { atol: 1e-4, rtol: 1e-5 };
const CASES: [number[], number[] | undefined][] = [
  [[1], undefined],
  [[7, 13], undefined],
  [[7, 13], [1]],
  [[7, 13], [0]],
  [[3, 5, 17], [0, 2]],
  [[3, 5, 17], [1]],
  [[2, 3, 4, 5], [1, 3]],
  [[257], [0]],
];

describe('reductions over any axes', () => {
  for (const [shape, axes] of CASES) {
    for (const keepdim of [false, true]) {
      const tag = `${JSON.stringify(shape)} axes ${JSON.stringify(axes)} keepdim ${keepdim}`;
      it(`sum ${tag}`, () =>
        checkOp({ name: 'sum', inputs: [{ shape }], fwd: FWD, gpu: (x) => T.sum(x, axes, { keepdim }), ref: (x) => R.sum(x, axes, keepdim), vjp: ([x], g) => [R.sumVjp(x!, g, axes)] }));
      it(`mean ${tag}`, () =>
        checkOp({ name: 'mean', inputs: [{ shape }], fwd: FWD, gpu: (x) => T.mean(x, axes, { keepdim }), ref: (x) => R.mean(x, axes, keepdim), vjp: ([x], g) => [R.meanVjp(x!, g, axes)] }));
      it(`max ${tag}`, () =>
        checkOp({ name: 'max', inputs: [{ shape }], gpu: (x) => T.max(x, axes, { keepdim }).values, ref: (x) => R.max(x, axes, keepdim).values, vjp: ([x], g) => [R.maxVjp(x!, g, axes)] }));
      const n = axes ? axes.reduce((a, i) => a * shape[i]!, 1) : shape.reduce((a, b) => a * b, 1);
      if (n > 1) {
        it(`var ${tag}`, () =>
          checkOp({ name: 'var', inputs: [{ shape }], fwd: FWD, gpu: (x) => T.variance(x, axes, { keepdim }), ref: (x) => R.variance(x, axes, keepdim), vjp: ([x], g) => [R.varianceVjp(x!, g, axes)] }));
      }
    }
  }

  // Long rows in two passes (chunks of 2,048, then each row's partials), with subgroups and
  // without, forced at every shape here: rows shorter than a chunk, one and two chunks plus a
  // remainder, lengths that are and are not a multiple of 4 (vec4 loads or scalar), reductions
  // over several axes. Sums of up to 6,300 terms of magnitude ~1: rounding grows like
  // sqrt(n)·6e-8, worst case n·6e-8 ≈ 4e-4, so forward uses 5e-4 absolute.
  const LONG = { atol: 5e-4, rtol: 1e-5 };
  const SPLIT_CASES: [number[], number[] | undefined][] = [
    [[3, 5], [1]],
    [[2, 4100], [1]],
    [[1, 6143], undefined],
    [[3, 2, 2100], [1, 2]],
    [[2049], undefined],
  ];
  for (const kind of ['split', 'split-plain'] as const) {
    for (const [shape, axes] of SPLIT_CASES) {
      const tag = `${kind}: ${JSON.stringify(shape)} axes ${JSON.stringify(axes)}`;
      const forced = (f: () => Promise<void>) => async () => {
        T.useReduceKernel(kind);
        try {
          await f();
        } finally {
          T.useReduceKernel('auto');
        }
      };
      it(`sum ${tag}`, forced(() => checkOp({ name: 'sum', inputs: [{ shape }], fwd: LONG, gpu: (x) => T.sum(x, axes), ref: (x) => R.sum(x, axes), vjp: ([x], g) => [R.sumVjp(x!, g, axes)] })));
      it(`mean ${tag}`, forced(() => checkOp({ name: 'mean', inputs: [{ shape }], fwd: LONG, gpu: (x) => T.mean(x, axes, { keepdim: true }), ref: (x) => R.mean(x, axes, true), vjp: ([x], g) => [R.meanVjp(x!, g, axes)] })));
      it(`max ${tag}`, forced(async () => {
        await checkOp({ name: 'max', inputs: [{ shape }], gpu: (x) => T.max(x, axes).values, ref: (x) => R.max(x, axes).values, vjp: ([x], g) => [R.maxVjp(x!, g, axes)] });
      }));
      it(`var ${tag}`, forced(() => checkOp({ name: 'var', inputs: [{ shape }], fwd: LONG, gpu: (x) => T.variance(x, axes), ref: (x) => R.variance(x, axes), vjp: ([x], g) => [R.varianceVjp(x!, g, axes)] })));
    }
  }

  it('long rows: argmax across chunks takes the first maximum; the variance of an offset row stays accurate; auto splits only long rows', async () => {
    const n = 6000;
    const data = new Float32Array(2 * n).fill(-1e30);
    for (const at of [100, 2500, 5000]) data[at] = 7; // row 0: ties in chunks 0, 1 and 2
    for (const at of [5999, 4097]) data[n + at] = 3; // row 1: the later chunk's is first
    const x = T.tensor(data, [2, n]);
    const rowsDispatched = async (f: () => T.Tensor) => {
      T.startProfile();
      const y = T.scope(f);
      const values = await y.data();
      y.dispose();
      const { records } = await T.stopProfile();
      return { values, kernels: records.map((r) => r.kernel) };
    };
    for (const kind of ['split', 'split-plain', 'rows'] as const) {
      T.useReduceKernel(kind);
      const { values, indices } = T.max(x, 1);
      expect([...(await values.data())], kind).toEqual([7, 3]);
      expect([...(await indices.data())], kind).toEqual([100, 4097]);
      values.dispose();
      indices.dispose();
    }
    T.useReduceKernel('auto');
    // Variance of 409,600 values around 1000 (float64 reference): chunked means and Chan's merge.
    const r = rng(7);
    const big = Float32Array.from({ length: 409600 }, () => Math.fround(1000 + (r() - 0.5)));
    let mean = 0;
    for (const v of big) mean += v;
    mean /= big.length;
    let m2 = 0;
    for (const v of big) m2 += (v - mean) ** 2;
    const want = m2 / (big.length - 1);
    const bx = T.tensor(big, [big.length]);
    const auto = await rowsDispatched(() => T.variance(bx, 0));
    expect(auto.kernels.some((k) => k.includes('partial')), 'a 409,600-element variance runs in two passes').toBe(true);
    expect(Math.abs(auto.values[0]! - want) / want).toBeLessThan(1e-4);
    const sums = await rowsDispatched(() => T.sum(T.ones([16, 4097]), 1));
    expect(sums.kernels.some((k) => k.includes('partial')), '[16, 4097] stays one invocation a row').toBe(false);
    expect([...sums.values].every((v) => v === 4097)).toBe(true);
    x.dispose();
    bx.dispose();
  });

  it('argmax indexes the reduced axes, first maximum wins', async () => {
    const x = T.tensor([1, 5, 5, 2, 9, 0], [2, 3]);
    const { values, indices } = T.max(x, 1);
    expect([...(await values.data())]).toEqual([5, 9]);
    expect([...(await indices.data())]).toEqual([1, 1]);
    expect(indices.dtype).toBe('int32');
  });

  it('var with correction 0 is the population variance', async () => {
    const x = T.tensor([1, 2, 3, 4], [4]);
    expect(await T.variance(x, 0, { correction: 0 }).item()).toBeCloseTo(1.25, 6);
    expect(() => T.variance(T.zeros([1]), 0)).toThrow(/degrees of freedom/);
  });

  it('bad axes are named', () => {
    expect(() => T.sum(T.zeros([2, 3]), [2])).toThrow(/axes \[2\] are invalid for tensor #\d+ \[2, 3\]/);
  });
});
