import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../../engine/index.js';
import * as R from '../../../engine/reference/conv.js';
import { checkOp, expectClose } from '../../helpers.js';

beforeAll(async () => {
  await T.init();
});

// Each output sums C·k² products (≤ 48); a weight gradient sums B·Ho·Wo of them (≤ 392), whose
// f32 rounding stays near 392 · 6e-8 · |terms| ≈ 3e-5 on these unit-normal inputs: 1e-4.
const TOL = { atol: 1e-4, rtol: 1e-4 };

describe('patchEmbed (conv2d, stride = kernel)', () => {
  for (const [x, w] of [
    [[2, 1, 28, 28], [5, 1, 7, 7]],
    [[1, 3, 8, 8], [4, 3, 4, 4]],
    [[3, 2, 11, 9], [3, 2, 4, 4]], // 11x9 leaves a remainder that the stride skips
    [[2, 1, 3, 3], [2, 1, 1, 1]],
  ] as [number[], number[]][]) {
    it(`${JSON.stringify(x)} * ${JSON.stringify(w)}`, () =>
      checkOp({
        name: 'patchEmbed',
        inputs: [{ shape: x }, { shape: w }, { shape: [w[0]!] }],
        fwd: TOL,
        bwd: TOL,
        gpu: (a, b, c) => T.patchEmbed(a!, b!, c!),
        ref: (a, b, c) => R.patchEmbed(a!, b!, c!),
        vjp: ([a, b], g) => {
          const r = R.patchEmbedVjp(a!, b!, g);
          return [r.dx, r.dw, r.db];
        },
      }));
  }

  it('channel mismatch is explained', () => {
    expect(() => T.patchEmbed(T.zeros([1, 3, 8, 8]), T.zeros([4, 1, 4, 4]))).toThrow(/weight has 1 input channels, x has 3/);
  });
});

describe('conv2d (im2col + matmul): any kernel, stride and zero padding', () => {
  for (const [x, w, stride, padding] of [
    [[2, 1, 28, 28], [4, 1, 3, 3], 2, 1], // the conv stem's first layer
    [[2, 3, 9, 7], [5, 3, 3, 3], 2, 1], // odd sizes: the last row/column of outputs is partial
    [[1, 4, 7, 7], [6, 4, 1, 1], 1, 0], // 1×1 projection
    [[2, 2, 6, 5], [3, 2, 3, 2], 1, 2], // rectangular kernel, padding wider than the kernel reach
    [[1, 2, 8, 8], [2, 2, 4, 4], 4, 0], // stride = kernel: the patch embedding
  ] as [number[], number[], number, number][]) {
    it(`${JSON.stringify(x)} * ${JSON.stringify(w)} stride ${stride} padding ${padding}`, () =>
      checkOp({
        name: 'conv2d',
        inputs: [{ shape: x }, { shape: w }, { shape: [w[0]!] }],
        fwd: TOL,
        bwd: TOL,
        gpu: (a, b, c) => T.conv2d(a!, b!, c!, { stride, padding }),
        ref: (a, b, c) => R.conv2d(a!, b!, c!, stride, padding),
        vjp: ([a, b], g) => {
          const r = R.conv2dVjp(a!, b!, g, stride, padding);
          return [r.dx, r.dw, r.db];
        },
      }));
  }

  it('im2col reads channels-last input as it reads NCHW, forward and backward', async () => {
    const x = T.randn([2, 3, 9, 7], { seed: 4 });
    x.requiresGrad = true;
    const g = T.randn([2 * 5 * 4, 27], { seed: 5 });
    const a = T.im2col(x, 3, 3, { stride: 2, padding: 1 });
    T.sum(T.mul(a, g)).backward();
    const xl = T.detach(T.permute(x, [0, 2, 3, 1]));
    xl.requiresGrad = true;
    const c = T.im2col(xl, 3, 3, { stride: 2, padding: 1, channelsLast: true });
    T.sum(T.mul(c, g)).backward();
    expectClose(await c.data(), await a.data(), { atol: 0, rtol: 0 }, 'columns');
    expectClose(await xl.grad!.data(), await T.permute(x.grad!, [0, 2, 3, 1]).data(), { atol: 1e-6, rtol: 1e-6 }, 'col2im');
  });

  it('bad shapes and settings are explained', () => {
    expect(() => T.conv2d(T.zeros([1, 3, 8, 8]), T.zeros([4, 2, 3, 3]))).toThrow(/weight has 2 input channels, x has 3/);
    expect(() => T.conv2d(T.zeros([1, 1, 2, 2]), T.zeros([1, 1, 3, 3]))).toThrow(/the padded image is smaller than the kernel/);
    expect(() => T.conv2d(T.zeros([1, 1, 8, 8]), T.zeros([1, 1, 3, 3]), null, { stride: 0 })).toThrow(/stride 0 must be an integer >= 1/);
  });
});
