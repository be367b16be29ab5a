import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../../engine/index.js';
import * as R from '../../../engine/reference/conv.js';
import { checkOp } from '../../helpers.js';

beforeAll(async () => {
  await T.init();
});

// Each output sums C·P² products (≤ 48), the weight gradient B·Hp·Wp·... (≤ 98): 1e-4.
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
