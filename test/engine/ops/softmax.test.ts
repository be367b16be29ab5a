import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../../engine/index.js';
import { nd } from '../../../engine/reference/nd.js';
import { permute, permuteVjp } from '../../../engine/reference/movement.js';
import { mean } from '../../../engine/reference/reduce.js';
import * as R from '../../../engine/reference/softmax.js';
import { checkOp } from '../../helpers.js';

beforeAll(async () => {
  await T.init();
});

// exp/log over rows of ≤ 257 entries: a few ulps per term, 1e-5 forward; backward 1e-4.
describe('softmax family', () => {
  for (const shape of [[1, 1], [7, 13], [3, 5, 17], [2, 257]]) {
    it(`softmax ${JSON.stringify(shape)}`, () =>
      checkOp({ name: 'softmax', inputs: [{ shape }], gpu: (x) => T.softmax(x), ref: R.softmax, vjp: ([x], g) => [R.softmaxVjp(x!, g)] }));
    it(`logSoftmax ${JSON.stringify(shape)}`, () =>
      checkOp({ name: 'logSoftmax', inputs: [{ shape }], gpu: (x) => T.logSoftmax(x), ref: R.logSoftmax, vjp: ([x], g) => [R.logSoftmaxVjp(x!, g)] }));
  }

  it('softmax along a non-last axis', () =>
    checkOp({
      name: 'softmax axis 0',
      inputs: [{ shape: [5, 3] }],
      gpu: (x) => T.softmax(x, 0),
      ref: (x) => permute(R.softmax(permute(x, [1, 0])), [1, 0]),
      vjp: ([x], g) => [permuteVjp(R.softmaxVjp(permute(x!, [1, 0]), permute(g, [1, 0])), [1, 0])],
    }));

  it('softmax is stable for large logits', async () => {
    const y = await T.softmax(T.tensor([1000, 1001, -1000], [1, 3])).data();
    expect(y[1]! / y[0]!).toBeCloseTo(Math.E, 5);
    expect(Number.isFinite(y[2]!)).toBe(true);
  });

  for (const eps of [0, 0.1]) {
    it(`cross-entropy with integer labels, label smoothing ${eps}`, () =>
      checkOp({
        name: 'crossEntropy labels',
        inputs: [{ shape: [13, 10] }, { shape: [13], gen: { int: 10 } }],
        gpu: (z, t) => T.crossEntropy(z!, t!, { labelSmoothing: eps, reduction: 'none' }),
        ref: (z, t) => R.crossEntropy(z!, Int32Array.from(t!.data), eps),
        vjp: ([z, t], g) => [R.crossEntropyVjp(z!, Int32Array.from(t!.data), g, eps)[0], null],
      }));
    it(`cross-entropy with soft targets, label smoothing ${eps}`, () =>
      checkOp({
        name: 'crossEntropy soft',
        inputs: [{ shape: [7, 5] }, { shape: [7, 5], gen: 'unit' }],
        gpu: (z, t) => T.crossEntropy(z!, t!, { labelSmoothing: eps, reduction: 'none' }),
        ref: (z, t) => R.crossEntropy(z!, t!, eps),
        vjp: ([z, t], g) => R.crossEntropyVjp(z!, t!, g, eps),
      }));
  }

  it('cross-entropy mean reduction', () =>
    checkOp({
      name: 'crossEntropy mean',
      inputs: [{ shape: [9, 4] }, { shape: [9], gen: { int: 4 } }],
      gpu: (z, t) => T.crossEntropy(z!, t!),
      ref: (z, t) => mean(R.crossEntropy(z!, Int32Array.from(t!.data))),
      vjp: ([z, t], g) => [R.crossEntropyVjp(z!, Int32Array.from(t!.data), nd(new Array(9).fill(g.data[0]! / 9), [9]))[0], null],
    }));

  it('labels out of range are refused with the class count', () => {
    const z = T.zeros([2, 3]);
    expect(() => T.crossEntropy(z, T.tensor(Int32Array.from([0, 3]), [2]))).toThrow(/labels span \[0, 3\], outside the 3 classes/);
    expect(() => T.crossEntropy(z, T.tensor(Int32Array.from([0, 1, 2]), [3]))).toThrow(/must be int32 \[2\]/);
    // Class indices given as floats read as soft targets of the wrong shape: the message says how to pass indices.
    expect(() => T.crossEntropy(z, T.tensor([0, 1], [2]))).toThrow(/soft target .* must match logits \[2, 3\]; for class indices pass an int32 tensor/);
  });

  for (const views of [2, 3]) {
    it(`Jensen–Shannon consistency of ${views} views (AugMix)`, () =>
      checkOp({
        name: `jsdLoss ${views}`,
        inputs: Array.from({ length: views }, () => ({ shape: [5, 7] })),
        gpu: (...zs) => T.jsdLoss(...zs),
        ref: (...zs) => R.jsd(zs),
        vjp: (zs, g) => R.jsdVjp(zs, g),
      }));
  }

  it('jsdLoss is 0 for identical views and explains mismatched shapes', async () => {
    const z = T.tensor([1, 2, 3, -1, 0, 4], [2, 3]);
    expect(Math.abs(await T.jsdLoss(z, z, z).item())).toBeLessThan(1e-7);
    expect(() => T.jsdLoss(z, T.zeros([3, 3]))).toThrow(/every view must be \[B, K\]/);
  });
});
