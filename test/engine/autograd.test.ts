import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../engine/index.js';
import { folded, record } from '../../engine/autograd.js';

beforeAll(async () => {
  await T.init();
});

describe('the tape', () => {
  it('accumulates gradients on fan-out (x used three times)', async () => {
    const x = T.tensor([1, 2, 3], [3], { requiresGrad: true });
    // y = Σ (x·x + x) → dy/dx = 2x + 1
    const y = T.sum(T.add(T.mul(x, x), x));
    y.backward();
    expect([...(await x.grad!.data())]).toEqual([3, 5, 7]);
  });

  it('accumulates into .grad across backward calls until zeroed', async () => {
    const x = T.tensor([2], [1], { requiresGrad: true });
    T.sum(T.mulScalar(x, 3)).backward();
    T.sum(T.mulScalar(x, 4)).backward();
    expect(await x.grad!.item()).toBe(7);
  });

  it('a + a passes one gradient tensor to both slots without freeing it early', async () => {
    const a = T.tensor([1, 2], [2], { requiresGrad: true });
    const b = T.tensor([5, 6], [2], { requiresGrad: true });
    const y = T.sum(T.mul(T.add(a, a), b));
    y.backward();
    expect([...(await a.grad!.data())]).toEqual([10, 12]);
    expect([...(await b.grad!.data())]).toEqual([2, 4]);
  });

  it('noGrad records nothing and restores the previous state when fn throws', () => {
    const x = T.tensor([1], [1], { requiresGrad: true });
    const y = T.noGrad(() => T.mulScalar(x, 2));
    expect(y.requiresGrad).toBe(false);
    expect(() => T.noGrad(() => { throw new Error('boom'); })).toThrow('boom');
    expect(T.isGradEnabled()).toBe(true);
  });

  it('detach cuts the graph', async () => {
    const x = T.tensor([3], [1], { requiresGrad: true });
    const y = T.sum(T.mul(x, T.detach(x)));
    y.backward();
    expect(await x.grad!.item()).toBe(3);
  });

  it('a missing backward throws and names the op and input', () => {
    const x = T.tensor([1], [1], { requiresGrad: true });
    const y = record('mystery', T.copy(T.detach(x)), [x], () => [null]);
    expect(() => T.sum(y).backward()).toThrow(/no backward for mystery on input 0/);
  });

  it('a rule may fold the gradient its input already has into its own; folding one it was not handed throws', async () => {
    // y = x·3 + x through a rule for the ·3 that adds the pending gradient itself; x also feeds the add.
    const x = T.tensor([1, 2], [2], { requiresGrad: true });
    const w = T.tensor([1, 10], [2]);
    let handed: T.Tensor | undefined;
    const before = T.liveBuffers();
    T.scope(() => {
      const triple = record('triple', T.mulScalar(T.detach(x), 3), [x], (g, pending) => {
        handed = pending?.[0];
        return [pending?.[0] ? folded(T.add(T.mulScalar(g, 3), pending[0])) : T.mulScalar(g, 3)];
      });
      T.sum(T.mul(T.add(triple, x), w)).backward();
    });
    expect(handed).toBeDefined();
    expect([...(await x.grad!.data())]).toEqual([4, 40]);
    // Only x's gradient outlives the scope: the folded-over gradient was freed.
    expect(T.liveBuffers()).toBe(before + 1);
    x.grad!.dispose();
    x.grad = null;
    // Nothing pending (x's only consumer): a folded result is a bug in the rule.
    const z = T.tensor([1], [1], { requiresGrad: true });
    const bad = record('bad', T.copy(T.detach(z)), [z], (g) => [folded(T.copy(g))]);
    expect(() => T.sum(bad).backward()).toThrow(/backward of bad: input 0's gradient was folded into one the tape did not hand it/);
  });

  it('backward needs a scalar or an explicit gradient', () => {
    const x = T.tensor([1, 2], [2], { requiresGrad: true });
    expect(() => T.mulScalar(x, 2).backward()).toThrow(/not a scalar/);
    expect(() => T.zeros([1]).backward()).toThrow(/does not require grad/);
  });

  it('a deep chain (2,000 ops) does not overflow the stack', async () => {
    const x = T.tensor([1], [1], { requiresGrad: true });
    const y = T.scope(() => {
      let h = x;
      for (let i = 0; i < 2000; i++) h = T.addScalar(h, 0.001);
      const out = T.sum(h);
      out.backward();
      return out;
    });
    expect(await y.item()).toBeCloseTo(3, 3);
    expect(await x.grad!.item()).toBe(1);
  });
});
