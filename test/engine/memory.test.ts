import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../engine/index.js';
import { sizeClass } from '../../engine/memory.js';

beforeAll(async () => {
  await T.init();
});

describe('memory ownership', () => {
  it('scope frees everything created inside except what it returns', () => {
    const before = T.liveBuffers();
    const kept = T.scope(() => {
      const a = T.ones([100]);
      const b = T.mulScalar(a, 2);
      return { result: T.addScalar(b, 1), list: [T.zeros([3])] };
    });
    expect(T.liveBuffers()).toBe(before + 2);
    kept.result.dispose();
    kept.list[0]!.dispose();
    expect(T.liveBuffers()).toBe(before);
  });

  it('nested scopes move returned tensors to the parent', () => {
    const before = T.liveBuffers();
    T.scope(() => {
      const inner = T.scope(() => T.ones([4]));
      expect(inner.isDisposed).toBe(false);
    });
    expect(T.liveBuffers()).toBe(before);
  });

  it('scope frees its tensors when fn throws', () => {
    const before = T.liveBuffers();
    expect(() =>
      T.scope(() => {
        T.ones([4]);
        throw new Error('inside');
      }),
    ).toThrow('inside');
    expect(T.liveBuffers()).toBe(before);
  });

  it('views share one buffer, freed when the last holder goes', () => {
    const before = T.liveBuffers();
    const a = T.ones([2, 3]);
    const v = T.reshape(a, [6]);
    expect(T.liveBuffers()).toBe(before + 1);
    a.dispose();
    expect(v.isDisposed).toBe(false);
    v.dispose();
    expect(T.liveBuffers()).toBe(before);
  });

  it('use after dispose throws naming the tensor', async () => {
    const a = T.tensor([1, 2], [2], { name: 'blocks.0.norm1.weight' });
    a.dispose();
    a.dispose(); // idempotent
    expect(() => T.addScalar(a, 1)).toThrow(/tensor #\d+ 'blocks.0.norm1.weight' \[2\] was used after dispose\(\)/);
    await expect(a.data()).rejects.toThrow(/used after dispose/);
  });

  it('buffers are pooled by size class and reused', () => {
    expect(sizeClass(1)).toBe(256);
    expect(sizeClass(1000)).toBe(1024);
    expect(sizeClass(65537)).toBeLessThanOrEqual(65537 * 1.25);
    const created = () => T.rt().pool.liveCount + 0;
    const a = T.zeros([1000]);
    const id = a.buffer.id;
    a.dispose();
    const b = T.zeros([900]);
    expect(b.buffer.id).toBe(id);
    b.dispose();
    expect(created()).toBeGreaterThanOrEqual(0);
  });

  it('zeros in a reused buffer are zeros, in queue order after the writes before them, for both dtypes', async () => {
    // Zeros are a clearBuffer, not a kernel: it must land after the dispatch that filled the
    // buffer last, and on a slice only over the slice.
    const a = T.scope(() => T.addScalar(T.ones([1000]), 2));
    const id = a.buffer.id;
    a.dispose();
    const z = T.zeros([900]);
    expect(z.buffer.id).toBe(id);
    expect((await z.data()).every((v) => v === 0)).toBe(true);
    z.dispose();
    const zi = T.zeros([7], 'int32');
    expect([...(await zi.data())]).toEqual([0, 0, 0, 0, 0, 0, 0]);
    zi.dispose();
    const f = T.full([3], 5);
    expect([...(await f.data())]).toEqual([5, 5, 5]);
    f.dispose();
  });

  it('data(into) reads into the caller\'s array: the values, a slice at an offset, int32, a subarray; wrong arrays refused; no buffer kept', async () => {
    const a = T.scope(() => T.addScalar(T.arange(0, 1000), 0.5));
    const into = new Float32Array(1000).fill(-1);
    expect(await a.data(into)).toBe(into);
    expect([...into.slice(0, 3)]).toEqual([0.5, 1.5, 2.5]);
    expect(into[999]).toBe(999.5);
    // A view bound at an offset reads its own elements, not the parent's first ones.
    const align = T.rt().device.limits.minStorageBufferOffsetAlignment / 4;
    const part = T.Tensor.slice(a, align, [5]);
    const five = new Float32Array(5);
    await part.data(five);
    expect([...five]).toEqual([align + 0.5, align + 1.5, align + 2.5, align + 3.5, align + 4.5]);
    // Into the middle of a larger array: only those elements are written.
    const big = new Float32Array(9).fill(7);
    await part.data(big.subarray(2, 7));
    expect([...big]).toEqual([7, 7, align + 0.5, align + 1.5, align + 2.5, align + 3.5, align + 4.5, 7, 7]);
    part.dispose();
    const ints = T.tensor(new Int32Array([3, -4, 5]));
    const intsInto = new Int32Array(3);
    expect([...(await ints.data(intsInto))]).toEqual([3, -4, 5]);
    await expect(ints.data(new Float32Array(3) as unknown as Int32Array)).rejects.toThrow(/needs an Int32Array of 3 elements to read into, got a Float32Array of 3 elements/);
    await expect(a.data(new Float32Array(999))).rejects.toThrow(/tensor #\d+ .*\[1000\] needs a Float32Array of 1000 elements to read into, got a Float32Array of 999 elements; pass `new Float32Array\(1000\)`/);
    ints.dispose();
    const before = T.liveBuffers();
    for (let i = 0; i < 50; i++) await a.data(into);
    expect(T.liveBuffers()).toBe(before);
    a.dispose();
  });

  it('oversized tensors are refused before createBuffer', () => {
    expect(() => T.zeros([1 << 20, 1 << 12])).toThrow(/over the device limit/);
  });

  it('bad shapes and data lengths are explained', () => {
    expect(() => T.tensor([1, 2, 3], [2, 2])).toThrow(/3 values do not fill shape \[2, 2\]/);
    expect(() => T.zeros([2, -1])).toThrow(/invalid shape/);
    expect(() => T.tensor([1.5], [1], { dtype: 'int32' })).toThrow(/non-integer/);
  });
});
