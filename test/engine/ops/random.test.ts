import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../../engine/index.js';
import * as R from '../../../engine/reference/random.js';
import { nd } from '../../../engine/reference/nd.js';
import { checkOp, expectClose } from '../../helpers.js';

beforeAll(async () => {
  await T.init();
});

describe('Philox random numbers and dropout', () => {
  it('Philox 4x32-10 matches the published known-answer vector', () => {
    // Random123 kat_vectors: philox4x32_10, counter = key = 0.
    expect(R.philox([0, 0, 0, 0], [0, 0]).map((v) => v.toString(16))).toEqual(['6627e8d5', 'e169c58d', 'bc57ac4c', '9b00dbd8']);
    expect(R.philox([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff]).map((v) => v.toString(16))).toEqual(['408f276d', '41c83b0e', 'a20bc7c6', '6d5451fd']);
  });

  it('rand on the GPU equals the CPU twin bit for bit', async () => {
    const n = 1001;
    const u = await T.rand([n], { seed: 42, low: -2, high: 3 }).data();
    expectClose(u, R.uniform(n, 42, 0, -2, 3), { atol: 1e-6, rtol: 0 }, 'rand');
    const z = await T.randn([7, 13], { seed: 7, mean: 1, std: 2 }).data();
    // sin/cos/log in f32 on the GPU vs float64: 1e-5 on values of size ~2.
    expectClose(z, R.normal(91, 7, 0, 1, 2), { atol: 2e-5, rtol: 1e-5 }, 'randn');
  });

  it('same seed, same values; streams of the global generator differ', async () => {
    const a = await T.randn([64], { seed: 3 }).data();
    const b = await T.randn([64], { seed: 3 }).data();
    expect([...a]).toEqual([...b]);
    T.manualSeed(5);
    const c = await T.rand([64]).data();
    const d = await T.rand([64]).data();
    expect([...c]).not.toEqual([...d]);
    T.manualSeed(5);
    expect([...(await T.rand([64]).data())]).toEqual([...c]);
  });

  it('randn has mean 0 and std 1 over 1M samples', async () => {
    const z = await T.randn([1 << 20], { seed: 11 }).data();
    let s = 0;
    let ss = 0;
    for (const v of z) (s += v), (ss += v * v);
    const m = s / z.length;
    // Standard error of the mean is 1e-3; of the variance ~1.4e-3: 5σ bounds.
    expect(Math.abs(m)).toBeLessThan(5e-3);
    expect(Math.abs(ss / z.length - m * m - 1)).toBeLessThan(7e-3);
  });

  it('dropout: mask from Philox, inverted scaling, same mask in backward', () => {
    const p = 0.3;
    const seed = 99;
    return checkOp({
      name: 'dropout',
      inputs: [{ shape: [7, 13] }],
      gpu: (x) => T.dropout(x!, p, { seed }),
      ref: (x) => nd(x!.data.map((v, i) => v * R.dropoutScale(91, p, seed, 0)[i]!), x!.shape),
      vjp: (_x, g) => [nd(g.data.map((v, i) => v * R.dropoutScale(91, p, seed, 0)[i]!), g.shape)],
    });
  });

  it('dropout keeps about 1 - p and is the identity in eval', async () => {
    const x = T.ones([100000]);
    const y = await T.dropout(x, 0.25, { seed: 1 }).data();
    const kept = y.filter((v) => v !== 0).length / y.length;
    expect(Math.abs(kept - 0.75)).toBeLessThan(0.01);
    expect(T.dropout(x, 0.25, { training: false })).toBe(x);
    expect(() => T.dropout(x, 1)).toThrow(/must be in \[0, 1\)/);
  });
});
