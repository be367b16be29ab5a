import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../../engine/index.js';
import * as R from '../../../engine/reference/sort.js';
import { rng } from '../../helpers.js';

beforeAll(async () => {
  await T.init();
});

// Indices are exact: every comparison is between the stored float32 values themselves.
async function expectArgsort(values: Float32Array | Int32Array, shape: number[], axis = -1): Promise<Int32Array> {
  const x = T.tensor(values, shape);
  const got = (await T.argsort(x, axis).data()) as Int32Array;
  const rank = shape.length;
  const a = axis < 0 ? axis + rank : axis;
  // The reference sorts the last axis: move `a` there and back.
  const perm = [...Array(rank).keys()];
  [perm[a], perm[rank - 1]] = [rank - 1, a];
  const moved = await T.permute(x, perm).data();
  const ref = R.argsort({ data: Float64Array.from(moved), shape: perm.map((p) => shape[p]!) });
  const back = await T.permute(T.tensor(Int32Array.from(ref.data), perm.map((p) => shape[p]!)), perm).data();
  expect(Array.from(got)).toEqual(Array.from(back));
  return got;
}

describe('argsort', () => {
  for (const shape of [[1], [7], [3, 49], [2, 5, 197], [4, 1000], [2, 1, 3]]) {
    it(`sorts random floats along the last axis, ${JSON.stringify(shape)}`, async () => {
      const r = rng(shape.length * 31 + shape[shape.length - 1]!);
      const v = Float32Array.from({ length: shape.reduce((p, q) => p * q, 1) }, () => r() * 2 - 1);
      const got = await expectArgsort(v, shape);
      // Each row is a permutation whose values ascend.
      const L = shape[shape.length - 1]!;
      for (let base = 0; base < v.length; base += L) {
        const row = Array.from(got.subarray(base, base + L));
        expect([...row].sort((p, q) => p - q)).toEqual([...Array(L).keys()]);
        for (let k = 1; k < L; k++) expect(v[base + row[k]!]!).toBeGreaterThanOrEqual(v[base + row[k - 1]!]!);
      }
    });
  }

  it('keeps equal values in index order (stable), for floats and int32', async () => {
    const r = rng(5);
    await expectArgsort(Float32Array.from({ length: 4 * 65 }, () => Math.floor(r() * 4) - 1.5), [4, 65]);
    await expectArgsort(Int32Array.from({ length: 3 * 50 }, () => Math.floor(r() * 7) - 3), [3, 50]);
    expect(Array.from(await T.argsort(T.tensor(new Float32Array([2, -0, 1, 0, 2, -1]), [6])).data())).toEqual([5, 1, 3, 2, 0, 4]);
  });

  it('sorts along a leading or middle axis', async () => {
    const r = rng(9);
    const v = Float32Array.from({ length: 5 * 6 * 7 }, () => r());
    await expectArgsort(v, [5, 6, 7], 0);
    await expectArgsort(v, [5, 6, 7], 1);
  });

  it("argsort of a permutation is its inverse (MAE's ids_restore)", async () => {
    const noise = T.rand([8, 49], { seed: 3 });
    const shuffle = T.argsort(noise);
    const restore = T.argsort(shuffle);
    const back = await T.gather(shuffle, 1, restore).data();
    for (let b = 0; b < 8; b++) expect(Array.from(back.subarray(b * 49, (b + 1) * 49))).toEqual([...Array(49).keys()]);
  });

  it('carries no gradient, handles empty tensors, and explains bad input', async () => {
    const x = T.tensor(new Float32Array([3, 1, 2]), [3]);
    x.requiresGrad = true;
    const y = T.argsort(x);
    expect(y.requiresGrad).toBe(false);
    expect(y.dtype).toBe('int32');
    expect(T.argsort(T.zeros([0, 5])).shape).toEqual([0, 5]);
    expect(T.argsort(T.zeros([3, 0])).shape).toEqual([3, 0]);
    expect(() => T.argsort(T.zeros([4, 5]), 2)).toThrow(/argsort: axis 2 is out of range for .*\[4, 5\]/);
    expect(() => T.argsort(T.full([], 1))).toThrow(/scalar/);
  });

  it('a loop of argsorts does not grow the live-buffer count', async () => {
    const x = T.keep(T.rand([16, 49]));
    const before = T.liveBuffers();
    for (let i = 0; i < 20; i++) T.argsort(x).dispose();
    await T.sync();
    expect(T.liveBuffers()).toBe(before);
    x.dispose();
  });
});
