import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../../engine/index.js';
import * as R from '../../../engine/reference/batchnorm.js';
import { nd } from '../../../engine/reference/nd.js';
import { checkOp, expectClose } from '../../helpers.js';

beforeAll(async () => {
  await T.init();
});

describe('batchNorm2d', () => {
  for (const shape of [[4, 3, 5, 5], [2, 2, 7, 3], [8, 1, 1, 1]]) {
    it(`training mode ${JSON.stringify(shape)}: batch statistics, gradients for x, weight and bias`, () => {
      const C = shape[1]!;
      return checkOp({
        name: 'batchNorm2d',
        inputs: [{ shape }, { shape: [C] }, { shape: [C] }],
        gpu: (x, w, b) => T.batchNorm2d(x!, w!, b!, T.zeros([C]), T.ones([C]), { training: true }),
        ref: (x, w, b) => R.batchNorm2d(x!, w!, b!, 1e-5),
        vjp: ([x, w], g) => {
          const r = R.batchNorm2dVjp(x!, w!, g, 1e-5);
          return [r.dx, r.dw, r.db];
        },
        // Normalised values are O(1) and the x-gradient subtracts two sums of n terms: 1e-4.
        fwd: { atol: 1e-5, rtol: 1e-5 },
        bwd: { atol: 1e-4, rtol: 1e-4 },
      });
    });
  }

  it('training updates the running statistics (momentum, unbiased variance); eval uses them', async () => {
    const shape = [4, 2, 3, 3];
    const data = Array.from({ length: 72 }, (_, i) => Math.sin(i * 1.7) * 2 + (i % 2));
    const x = T.tensor(data, shape);
    const w = T.tensor([1.5, 0.5], [2]);
    const b = T.tensor([0.1, -0.2], [2]);
    const rm = T.tensor([0.2, -0.1], [2]);
    const rv = T.tensor([1.2, 0.8], [2]);
    T.batchNorm2d(x, w, b, rm, rv, { training: true, momentum: 0.1 }).dispose();
    const expected = R.runningStats(nd(data, shape), [0.2, -0.1], [1.2, 0.8], 0.1);
    expectClose(await rm.data(), expected.mean, { atol: 1e-6, rtol: 1e-6 }, 'running mean');
    expectClose(await rv.data(), expected.variance, { atol: 1e-6, rtol: 1e-6 }, 'running var');
    const y = await T.batchNorm2d(x, w, b, rm, rv, { training: false }).data();
    const [m0, v0] = [expected.mean[0]!, expected.variance[0]!];
    expect(y[0]).toBeCloseTo(((data[0]! - m0) / Math.sqrt(v0 + 1e-5)) * 1.5 + 0.1, 5);
  });

  it('channels-last BatchNorm equals batchNorm2d on the same data in NHWC, with the same running statistics', async () => {
    const x = T.randn([3, 4, 5, 6], { seed: 8 }); // NCHW
    const xl = T.permute(x, [0, 2, 3, 1]); // NHWC
    const w = T.tensor([1, 2, 0.5, -1], [4]);
    const b = T.tensor([0, 0.1, 0.2, 0.3], [4]);
    const [rm1, rv1, rm2, rv2] = [T.zeros([4]), T.ones([4]), T.zeros([4]), T.ones([4])];
    const a = T.permute(T.batchNorm2d(x, w, b, rm1, rv1, { training: true }), [0, 2, 3, 1]);
    const c = T.batchNormChannelsLast(xl, w, b, rm2, rv2, { training: true });
    // Same sums in a different order: a few f32 ulps of O(1) values.
    expectClose(await c.data(), await a.data(), { atol: 1e-5, rtol: 1e-5 }, 'normalised');
    expectClose(await rm2.data(), await rm1.data(), { atol: 1e-6, rtol: 1e-5 }, 'running mean');
    expectClose(await rv2.data(), await rv1.data(), { atol: 1e-6, rtol: 1e-5 }, 'running var');
  });

  // The fused channels-last kernels: several 256-row statistics chunks and 64-row blocks with a
  // ragged end (n = 600), an odd channel count, the folded ReLU, and eval mode. [n, C] rows are
  // the NCHW reference's [n, C, 1, 1].
  for (const relu of [false, true]) {
    it(`channels-last fused kernels, training${relu ? ' + ReLU' : ''}: forward and gradients against the reference`, () => {
      const [n, C] = [600, 5];
      const asNchw = (t: { data: Float64Array; shape: number[] }) => ({ data: t.data, shape: [n, C, 1, 1] });
      return checkOp({
        name: `batchNormChannelsLast${relu ? ' relu' : ''}`,
        inputs: [{ shape: [n, C] }, { shape: [C] }, { shape: [C] }],
        gpu: (x, w, b) => T.batchNormChannelsLast(x!, w!, b!, T.zeros([C]), T.ones([C]), { training: true, relu }),
        ref: (x, w, b) => {
          const y = R.batchNorm2d(asNchw(x!), w!, b!, 1e-5);
          return { data: relu ? y.data.map((v) => Math.max(v, 0)) : y.data, shape: [n, C] };
        },
        vjp: ([x, w, b], g) => {
          const y = R.batchNorm2d(asNchw(x!), w!, b!, 1e-5);
          const gm = relu ? g.data.map((v, i) => (y.data[i]! > 0 ? v : 0)) : g.data;
          const r = R.batchNorm2dVjp(asNchw(x!), w!, { data: gm, shape: [n, C, 1, 1] }, 1e-5);
          return [{ data: r.dx.data, shape: [n, C] }, r.dw, r.db];
        },
        fdSamples: 8,
        fwd: { atol: 1e-5, rtol: 1e-5 },
        bwd: { atol: 1e-4, rtol: 1e-4 },
      });
    });
  }

  it('channels-last eval mode normalises with the running statistics; gradients treat them as constants', () => {
    const [n, C] = [70, 3];
    const rm = [0.5, -1, 2];
    const rv = [1.5, 0.25, 4];
    return checkOp({
      name: 'batchNormChannelsLast eval',
      inputs: [{ shape: [n, C] }, { shape: [C] }, { shape: [C] }],
      gpu: (x, w, b) => T.batchNormChannelsLast(x!, w!, b!, T.tensor(rm, [C]), T.tensor(rv, [C]), { training: false, relu: true }),
      ref: (x, w, b) => ({ data: x!.data.map((v, i) => Math.max(((v - rm[i % C]!) / Math.sqrt(rv[i % C]! + 1e-5)) * w!.data[i % C]! + b!.data[i % C]!, 0)), shape: [n, C] }),
      vjp: ([x, w, b], g) => {
        const dx = new Float64Array(n * C);
        const dw = new Float64Array(C);
        const db = new Float64Array(C);
        x!.data.forEach((v, i) => {
          const c = i % C;
          const xhat = (v - rm[c]!) / Math.sqrt(rv[c]! + 1e-5);
          const gi = xhat * w!.data[c]! + b!.data[c]! > 0 ? g.data[i]! : 0;
          dx[i] = (gi * w!.data[c]!) / Math.sqrt(rv[c]! + 1e-5);
          dw[c] = dw[c]! + gi * xhat;
          db[c] = db[c]! + gi;
        });
        return [{ data: dx, shape: [n, C] }, { data: dw, shape: [C] }, { data: db, shape: [C] }];
      },
      fwd: { atol: 1e-5, rtol: 1e-5 },
      bwd: { atol: 1e-4, rtol: 1e-4 },
    });
  });

  it('channels-last statistics stay accurate when the mean dwarfs the spread (shifted sums)', async () => {
    const base = Float32Array.from({ length: 2000 }, (_, i) => 10000 + Math.sin(i * 0.37));
    const x = T.tensor(base, [1000, 2]);
    const rm = T.zeros([2]);
    const rv = T.ones([2]);
    const y = await T.batchNormChannelsLast(x, T.ones([2]), T.zeros([2]), rm, rv, { training: true, momentum: 1 }).data();
    // Normalised values have unit variance per channel; a naive E[x²] − μ² in f32 would give 0 or garbage.
    for (let c = 0; c < 2; c++) {
      let s2 = 0;
      for (let r = 0; r < 1000; r++) s2 += y[r * 2 + c]! ** 2;
      expect(s2 / 1000).toBeCloseTo(1, 2);
    }
  });

  it('bad shapes are explained', () => {
    expect(() => T.batchNorm2d(T.zeros([2, 3, 4, 4]), T.ones([2]), T.zeros([3]), T.zeros([3]), T.ones([3]), { training: true })).toThrow(/weight .*\[2\].* must be \[3\]/);
    expect(() => T.batchNorm2d(T.zeros([1, 1, 1, 1]), T.ones([1]), T.zeros([1]), T.zeros([1]), T.ones([1]), { training: true })).toThrow(/more than one value per channel/);
  });
});
