import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../../engine/index.js';
import * as R from '../../../engine/reference/movement.js';
import { broadcastTo, nd, sumToShape } from '../../../engine/reference/nd.js';
import { checkOp, makeData, rng } from '../../helpers.js';

beforeAll(async () => {
  await T.init();
});

// Movement copies values exactly: forward tolerance 0; backward sums at most a few terms.
const EXACT = { atol: 0, rtol: 0 };

describe('movement ops', () => {
  it('reshape is a view and its gradient reshapes back', () =>
    checkOp({ name: 'reshape', inputs: [{ shape: [6, 7] }], fwd: EXACT, gpu: (x) => T.reshape(x, [3, -1, 7]), ref: (x) => nd(x.data, [3, 2, 7]), vjp: ([x], g) => [nd(g.data, x!.shape)] }));

  for (const [shape, perm] of [
    [[7, 13], [1, 0]],
    [[2, 3, 5], [2, 0, 1]],
    [[2, 3, 4, 5], [0, 2, 1, 3]],
    [[1, 257], [1, 0]],
  ] as [number[], number[]][]) {
    it(`permute ${JSON.stringify(shape)} ${JSON.stringify(perm)}`, () =>
      checkOp({ name: 'permute', inputs: [{ shape }], fwd: EXACT, gpu: (x) => T.permute(x, perm), ref: (x) => R.permute(x, perm), vjp: (_x, g) => [R.permuteVjp(g, perm)] }));
  }

  it('transpose swaps two axes', () =>
    checkOp({ name: 'transpose', inputs: [{ shape: [3, 4, 5] }], fwd: EXACT, gpu: (x) => T.transpose(x, 0, 2), ref: (x) => R.permute(x, [2, 1, 0]), vjp: (_x, g) => [R.permuteVjp(g, [2, 1, 0])] }));

  it('slice with negative bounds', () =>
    checkOp({
      name: 'slice',
      inputs: [{ shape: [7, 13, 3] }],
      fwd: EXACT,
      gpu: (x) => T.slice(x, [2, -10], [5, 11]),
      ref: (x) => R.slice(x, [2, 3, 0], [5, 11, 3]),
      vjp: ([x], g) => [R.pad(g, [[2, 2], [3, 2], [0, 0]])],
    }));

  it('pad with a value', () =>
    checkOp({
      name: 'pad',
      inputs: [{ shape: [3, 5] }],
      fwd: EXACT,
      gpu: (x) => T.pad(x, [[1, 2], [0, 3]], -1.5),
      ref: (x) => R.pad(x, [[1, 2], [0, 3]], -1.5),
      vjp: (_x, g) => [R.slice(g, [1, 0], [4, 5])],
    }));

  it('concat along a middle axis', () =>
    checkOp({
      name: 'concat',
      inputs: [{ shape: [2, 3, 4] }, { shape: [2, 1, 4] }, { shape: [2, 5, 4] }],
      fwd: EXACT,
      gpu: (a, b, c) => T.concat([a!, b!, c!], 1),
      ref: (a, b, c) => R.concat([a!, b!, c!], 1),
      vjp: (_x, g) => [R.slice(g, [0, 0, 0], [2, 3, 4]), R.slice(g, [0, 3, 0], [2, 4, 4]), R.slice(g, [0, 4, 0], [2, 9, 4])],
    }));

  it('expand broadcasts; backward sums', () =>
    checkOp({
      name: 'expand',
      inputs: [{ shape: [3, 1] }],
      fwd: EXACT,
      bwd: { atol: 1e-5, rtol: 1e-5 },
      gpu: (x) => T.expand(x, [2, 3, 5]),
      ref: (x) => broadcastTo(x, [2, 3, 5]),
      vjp: ([x], g) => [sumToShape(g, x!.shape)],
    }));

  it('gather along an axis scatter-adds in backward (repeated indices)', () =>
    checkOp({
      name: 'gather',
      inputs: [{ shape: [3, 5, 4] }, { shape: [3, 7, 4], gen: { int: 5 } }],
      fwd: EXACT,
      gpu: (x, i) => T.gather(x!, 1, i!),
      ref: (x, i) => R.gather(x!, 1, Int32Array.from(i!.data), i!.shape),
      vjp: ([x, i], g) => [R.gatherVjp(x!.shape, 1, Int32Array.from(i!.data), g), null],
    }));

  it('gather with uniqueIndices scatters its gradient, equal to the searching backward and the reference', async () => {
    // Index rows that are parts of permutations of the 9 positions (MAE's kept patches), and whole
    // permutations along a middle axis (its unshuffle), with a trailing axis as in [B, L, D].
    const r = rng(3);
    const perm = () => [...Array(9).keys()].sort(() => r() - 0.5);
    for (const keep of [4, 9]) {
      const idx = new Int32Array(3 * keep * 5);
      for (let b = 0; b < 3; b++) {
        const p = perm();
        for (let k = 0; k < keep; k++) for (let d = 0; d < 5; d++) idx[(b * keep + k) * 5 + d] = p[k]!;
      }
      const xv = Float32Array.from({ length: 3 * 9 * 5 }, () => r() - 0.5);
      const gv = Float32Array.from({ length: 3 * keep * 5 }, () => r() - 0.5);
      const grads: Float32Array[] = [];
      for (const uniqueIndices of [false, true]) {
        const x = T.tensor(xv, [3, 9, 5]);
        x.requiresGrad = true;
        const y = T.gather(x, 1, T.tensor(idx, [3, keep, 5]), { uniqueIndices });
        expect(Array.from(await y.data())).toEqual(Array.from(R.gather({ data: Float64Array.from(xv), shape: [3, 9, 5] }, 1, idx, [3, keep, 5]).data, Math.fround));
        T.sum(T.mul(y, T.tensor(gv, [3, keep, 5]))).backward();
        grads.push((await x.grad!.data()) as Float32Array);
      }
      const ref = R.gatherVjp([3, 9, 5], 1, idx, { data: Float64Array.from(gv), shape: [3, keep, 5] });
      // Each element receives one gradient value or none: exact.
      expect(Array.from(grads[1]!)).toEqual(Array.from(grads[0]!));
      expect(Array.from(grads[1]!)).toEqual(Array.from(ref.data, Math.fround));
    }
  });

  it('indexSelect along the last axis', () => {
    const idx = [4, 0, 4, 2];
    return checkOp({
      name: 'indexSelect',
      inputs: [{ shape: [3, 5] }],
      fwd: EXACT,
      gpu: (x) => T.indexSelect(x, 1, T.tensor(Int32Array.from(idx), [4])),
      ref: (x) => R.gather(x, 1, Int32Array.from([0, 1, 2].flatMap(() => idx)), [3, 4]),
      vjp: ([x], g) => [R.gatherVjp(x!.shape, 1, Int32Array.from([0, 1, 2].flatMap(() => idx)), g)],
    });
  });

  it('int32 tensors move unchanged', async () => {
    const x = T.tensor(Int32Array.from([1, -2, 3, 2147483647, -5, 6]), [2, 3]);
    expect([...(await T.transpose(x).data())]).toEqual([1, 2147483647, -2, -5, 3, 6]);
  });

  // Innermost runs contiguous on both sides and every offset and stride a multiple of 4 words:
  // the copy moves vec4s (engine/ops/movement.ts), bit for bit, int32 included.
  it('copies in vec4 units where the innermost run allows, exactly', async () => {
    await checkOp({ name: 'permute vec4', inputs: [{ shape: [2, 3, 4, 8] }], fwd: EXACT, gpu: (x) => T.permute(x, [0, 2, 1, 3]), ref: (x) => R.permute(x, [0, 2, 1, 3]), vjp: (_x, g) => [R.permuteVjp(g, [0, 2, 1, 3])] });
    await checkOp({
      name: 'expand vec4',
      inputs: [{ shape: [1, 3, 1, 4] }],
      fwd: EXACT,
      bwd: { atol: 1e-5, rtol: 1e-5 },
      gpu: (x) => T.expand(x, [2, 3, 5, 4]),
      ref: (x) => broadcastTo(x, [2, 3, 5, 4]),
      vjp: ([x], g) => [sumToShape(g, x!.shape)],
    });
    // Small integers are subnormal as f32 bit patterns: a float copy could flush them.
    const a = T.tensor(Int32Array.from({ length: 8 }, (_, i) => i + 1), [2, 4]);
    const b = T.tensor(Int32Array.from({ length: 16 }, (_, i) => (i % 2 ? -i : 2147483647 - i)), [2, 8]);
    const c = T.concat([a, b], 1);
    const [ha, hb] = [await a.data(), await b.data()];
    expect([...(await c.data())]).toEqual([...ha.slice(0, 4), ...hb.slice(0, 8), ...ha.slice(4), ...hb.slice(8)]);
    expect([...(await T.slice(c, [0, 4], [2, 12]).data())]).toEqual([...hb]);
    expect(T.compiledKernels().some((k) => /^copy_r\d_v4$/.test(k.name))).toBe(true);
  });

  it('errors name the tensor and the fix', () => {
    const x = T.zeros([3, 4]);
    expect(() => T.reshape(x, [5, 3])).toThrow(/cannot view tensor #\d+ \[3, 4\] \(12 elements\) as \[5, 3\]/);
    expect(() => T.permute(x, [0, 0])).toThrow(/not a permutation/);
    expect(() => T.slice(x, [0, 2], [3, 9])).toThrow(/out of bounds for dimension 1/);
    expect(() => T.concat([x, T.zeros([2, 5])], 0)).toThrow(/does not match/);
    const bad = T.tensor(Int32Array.from([0, 7]), [2]);
    expect(() => T.indexSelect(x, 0, bad)).toThrow(/index values span \[0, 7\], out of range for an axis of length 3/);
  });

  it('a long random chain of movements matches the reference', async () => {
    const r = rng(9);
    const data = makeData([4, 6, 5], 'normal', r);
    const x = T.tensor(Float32Array.from(data), [4, 6, 5]);
    const y = T.slice(T.permute(T.pad(x, [[1, 0], [0, 2]]), [2, 0, 1]), [1, 1, 2], [4, 5, 7]);
    const ref = R.slice(R.permute(R.pad(nd(data, [4, 6, 5]), [[1, 0], [0, 2], [0, 0]]), [2, 0, 1]), [1, 1, 2], [4, 5, 7]);
    expect([...(await y.data())]).toEqual([...ref.data].map(Math.fround));
  });
});
