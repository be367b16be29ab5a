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

  it('an op called outside a scope with nothing recorded leaves only its result behind', async () => {
    const keep = <X extends T.Tensor>(t: X) => T.keep(t);
    const x = keep(T.randn([6, 17, 32], { seed: 1 }));
    const w = keep(T.randn([40, 32], { seed: 2 }));
    const b = keep(T.randn([40], { seed: 3 }));
    const gamma = keep(T.randn([32], { seed: 4 }));
    const beta = keep(T.randn([32], { seed: 5 }));
    const logits = keep(T.randn([6, 10], { seed: 6 }));
    const labels = keep(T.tensor(Int32Array.from([0, 3, 9, 1, 1, 7]), [6]));
    const soft = keep(T.scope(() => T.softmax(T.randn([6, 10], { seed: 7 }))));
    const img = keep(T.randn([2, 3, 12, 12], { seed: 8 }));
    const pw = keep(T.randn([16, 3, 4, 4], { seed: 9 }));
    const cw = keep(T.randn([5, 3, 3, 3], { seed: 10 }));
    const pb = keep(T.randn([16], { seed: 11 }));
    const cb = keep(T.randn([5], { seed: 12 }));
    const ones3 = keep(T.ones([3]));
    const zeros3 = keep(T.zeros([3]));
    const runMean = keep(T.zeros([3]));
    const runVar = keep(T.ones([3]));
    const qkv = keep(T.randn([3, 17, 96], { seed: 13 }));
    const rows = keep(T.randn([50, 8], { seed: 14 }));
    const [ones8, zeros8, runMean8, runVar8] = [keep(T.ones([8])), keep(T.zeros([8])), keep(T.zeros([8])), keep(T.ones([8]))];
    const ops: [string, () => T.Tensor[]][] = [
      ['layerNorm', () => [T.layerNorm(x, gamma, beta)]],
      ['linearGelu', () => [T.linearGelu(x, w, b)]],
      ['crossEntropy', () => [T.crossEntropy(logits, labels, { labelSmoothing: 0.1 })]],
      ['crossEntropy per row', () => [T.crossEntropy(logits, labels, { reduction: 'none' })]],
      ['crossEntropy soft', () => [T.crossEntropy(logits, soft)]],
      ['softmax over an inner axis', () => [T.softmax(x, 1)]],
      ['jsdLoss', () => [T.jsdLoss(logits, soft, logits)]],
      ['patchEmbed', () => [T.patchEmbed(img, pw, pb)]],
      ['conv2d', () => [T.conv2d(img, cw, cb, { padding: 1 })]],
      ['mean over an inner axis', () => [T.mean(x, 1, { keepdim: true })]],
      ['variance', () => [T.variance(x, [0, 2])]],
      ['max', () => Object.values(T.max(x, 1))],
      ['sumToShape', () => [T.sumToShape(x, [17, 32])]],
      ['batchNorm2d, training', () => [T.batchNorm2d(img, ones3, zeros3, runMean, runVar, { training: true })]],
      ['batchNorm2d, eval', () => [T.batchNorm2d(img, ones3, zeros3, runMean, runVar, { training: false })]],
      ['batchNormChannelsLast', () => [T.batchNormChannelsLast(rows, ones8, zeros8, runMean8, runVar8, { training: true })]],
      ['attention, flash', () => [T.attention(qkv, 4, { impl: 'flash' })]],
      ['attention, flash with dropout', () => [T.attention(qkv, 4, { impl: 'flash', dropout: 0.2, training: true })]],
      ['attention, unfused', () => [T.attention(qkv, 4, { impl: 'unfused' })]],
      ['attention, unfused with dropout', () => [T.attention(qkv, 4, { impl: 'unfused', dropout: 0.2, training: true })]],
    ];
    const leaks: string[] = [];
    for (const [name, op] of ops) {
      for (const [mode, run] of [['noGrad', () => T.noGrad(op)], ['no input requires grad', op]] as const) {
        const before = T.liveBuffers();
        const results = run();
        for (const r of results) await r.data();
        for (const r of results) r.dispose();
        if (T.liveBuffers() !== before) leaks.push(`${name} (${mode}): ${T.liveBuffers() - before} buffer(s)`);
      }
    }
    expect(leaks).toEqual([]);
    // With gradients wanted on the inputs, noGrad still leaves nothing.
    for (const t of [x, w, b, gamma, beta, logits, qkv]) t.requiresGrad = true;
    const before = T.liveBuffers();
    for (const [, op] of ops.slice(0, 7).concat(ops.slice(-4))) for (const r of T.noGrad(op)) r.dispose();
    expect(T.liveBuffers()).toBe(before);
    for (const t of [x, w, b, gamma, beta, logits, labels, soft, img, pw, cw, pb, cb, ones3, zeros3, runMean, runVar, qkv, rows, ones8, zeros8, runMean8, runVar8]) t.dispose();
  });

  it('the tape releases the tensors an op saved for its backward once that backward ran, or with the op\'s result', async () => {
    const x = T.keep(T.randn([8, 24], { seed: 1 }));
    const gamma = T.keep(T.ones([24]));
    const beta = T.keep(T.zeros([24]));
    const g = T.keep(T.randn([8, 24], { seed: 2 }));
    x.requiresGrad = true;
    const before = T.liveBuffers();
    // Forward keeps the result and the row statistics; disposing the result releases both.
    const y = T.layerNorm(x, gamma, beta);
    expect(T.liveBuffers()).toBe(before + 2);
    y.dispose();
    expect(T.liveBuffers()).toBe(before);
    // After backward the statistics are gone: the result and x.grad remain.
    const y2 = T.layerNorm(x, gamma, beta);
    y2.backward(g);
    expect(T.liveBuffers()).toBe(before + 2);
    const once = await x.grad!.data();
    x.grad!.dispose();
    x.grad = null;
    y2.dispose();
    expect(T.liveBuffers()).toBe(before);
    // retainGraph keeps them for a second backward, which gives the same gradient again.
    const y3 = T.layerNorm(x, gamma, beta);
    y3.backward(g, { retainGraph: true });
    y3.backward(g);
    const twice = await x.grad!.data();
    for (let i = 0; i < once.length; i++) expect(twice[i]).toBeCloseTo(2 * once[i]!, 5);
    x.grad!.dispose();
    x.grad = null;
    y3.dispose();
    expect(T.liveBuffers()).toBe(before);
    // Attention: flash keeps its logsumexp, unfused its probabilities, until the backward ran.
    const qkv = T.keep(T.randn([2, 9, 48], { seed: 3 }));
    qkv.requiresGrad = true;
    const go = T.keep(T.randn([2, 9, 16], { seed: 4 }));
    for (const impl of ['flash', 'unfused'] as const) {
      const b0 = T.liveBuffers();
      const o = T.attention(qkv, 2, { impl });
      expect(T.liveBuffers()).toBe(b0 + 2);
      o.backward(go);
      expect(T.liveBuffers()).toBe(b0 + 2); // o and qkv.grad
      qkv.grad!.dispose();
      qkv.grad = null;
      o.dispose();
      expect(T.liveBuffers()).toBe(b0);
    }
    // Probabilities handed to `capture` are the caller's: nothing releases them behind its back.
    const captured: T.Tensor[] = [];
    const o = T.noGrad(() => T.attention(qkv, 2, { capture: (probs) => captured.push(probs) }));
    o.dispose();
    const probs = captured[0]!;
    expect(probs.isDisposed).toBe(false);
    const row = [...(await probs.data()).slice(0, 9)];
    expect(row.reduce((s, v) => s + v, 0)).toBeCloseTo(1, 5);
    probs.dispose();
    for (const t of [x, gamma, beta, g, qkv, go]) t.dispose();
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
