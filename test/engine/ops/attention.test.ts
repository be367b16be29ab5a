import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../../engine/index.js';
import * as R from '../../../engine/reference/attention.js';
import { checkOp } from '../../helpers.js';

beforeAll(async () => {
  await T.init();
});

// Two matmuls of K ≤ 65 and a softmax: like matmul, 5e-4 absolute on values of size ~1.
const TOL = { atol: 5e-4, rtol: 1e-4 };

describe('attention from packed qkv (unfused path, strided matmuls)', () => {
  for (const [B, N, nh, hd] of [
    [1, 1, 1, 4],
    [2, 17, 4, 16],
    [3, 13, 2, 8],
    [1, 65, 3, 16],
    [2, 50, 2, 32],
  ] as [number, number, number, number][]) {
    it(`B ${B} N ${N} heads ${nh} hd ${hd}`, () =>
      checkOp({
        name: 'attention',
        inputs: [{ shape: [B, N, 3 * nh * hd] }],
        fwd: TOL,
        bwd: TOL,
        gpu: (qkv) => T.attention(qkv!, nh),
        ref: (qkv) => R.attention(qkv!, nh),
        vjp: ([qkv], g) => [R.attentionVjp(qkv!, nh, g)],
      }));
  }

  it('dropout on the probabilities is the identity outside training and changes values inside', async () => {
    const qkv = T.randn([2, 9, 24], { seed: 2 });
    const a = await T.attention(qkv, 2).data();
    const b = await T.attention(qkv, 2, { dropout: 0.5, training: false }).data();
    const c = await T.attention(qkv, 2, { dropout: 0.5, training: true, seed: 1 }).data();
    expect([...b]).toEqual([...a]);
    expect([...c]).not.toEqual([...a]);
  });

  it('refuses a qkv width that does not split into heads', () => {
    expect(() => T.attention(T.zeros([1, 4, 10]), 2)).toThrow(/\(B, N, 3·D\) with D divisible by 2 heads/);
  });
});
