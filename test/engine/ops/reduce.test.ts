import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../../engine/index.js';
import * as R from '../../../engine/reference/reduce.js';
import { checkOp } from '../../helpers.js';

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
