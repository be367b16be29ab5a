import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../../engine/index.js';
import { binary } from '../../../engine/reference/elementwise.js';
import * as R from '../../../engine/reference/layernorm.js';
import { checkOp } from '../../helpers.js';

beforeAll(async () => {
  await T.init();
});

// Mean/variance over ≤ 257 entries then a normalisation: ~1e-6 relative forward; the γ/β
// gradients sum over up to 65 rows: 1e-4.
// Both kernel families; for the subgroup kernels: widths not a multiple of 4 (13: scalar columns) or of 32 (24, 8: vec4
// columns with idle lanes), the model widths (64, 192), a ragged
// last block of 16 rows (37 rows), and 257 (> 256: falls back to one row per invocation).
describe('layerNorm', () => {
  const withKernel = async (kind: 'rows' | 'subgroup', body: () => Promise<void>) => {
    T.useLayerNormKernel(kind);
    try {
      await body();
    } finally {
      T.useLayerNormKernel('auto');
    }
  };

  for (const kind of ['rows', 'subgroup'] as const) {
    // [3, 67, 24] and [4100, 8]: the parameter gradient's row chunks (4 of ≤ 64 rows; 64 of 65), the
    // last one short; with the subgroup kernels blocks of 16 rows (13, the last of 9 rows; 257, of 4).
    for (const shape of [[1, 1], [7, 13], [3, 5, 64], [37, 64], [3, 192], [2, 257], [3, 67, 24], [4100, 8]]) {
      it(`${kind} kernels, affine ${JSON.stringify(shape)}`, async () => {
        const C = shape[shape.length - 1]!;
        await withKernel(kind, () =>
          checkOp({
            name: 'layerNorm',
            inputs: [{ shape }, { shape: [C] }, { shape: [C] }],
            fwd: { atol: 2e-5, rtol: 1e-5 },
            gpu: (x, w, b) => T.layerNorm(x!, w!, b!, 1e-6),
            ref: (x, w, b) => R.layerNorm(x!, w!, b!, 1e-6),
            vjp: ([x, w], g) => {
              const r = R.layerNormVjp(x!, w!, g, 1e-6);
              return [r.dx, r.dw, r.db];
            },
          }),
        );
        const sg = kind === 'subgroup' && C <= 256 && T.subgroupsOf8();
        expect(T.compiledKernels().some((k) => k.name === (sg ? `layernorm_sg${C % 4 === 0 ? 'v' : ''}_${C}` : 'layernorm'))).toBe(true);
        // The subgroup backward sums γ's and β's gradients in the same pass, per block of 16 rows.
        if (sg) expect(T.compiledKernels().some((k) => k.name === `layernorm_sg${C % 4 === 0 ? 'v' : ''}_grad_params_${C}`)).toBe(true);
      });
    }

    // Width 10 takes the subgroup kernels' scalar columns, 12 their vec4 columns.
    for (const C of [10, 12]) it(`${kind} kernels without affine parameters, width ${C}`, async () => {
      await withKernel(kind, () =>
        checkOp({
          name: 'layerNorm plain',
          inputs: [{ shape: [6, C] }],
          fwd: { atol: 2e-5, rtol: 1e-5 },
          gpu: (x) => T.layerNorm(x!, null, null, 1e-5),
          ref: (x) => R.layerNorm(x!, null, null, 1e-5),
          vjp: ([x], g) => [R.layerNormVjp(x!, null, g, 1e-5).dx],
        }),
      );
      const sg = kind === 'subgroup' && T.subgroupsOf8();
      expect(T.compiledKernels().some((k) => k.name === (sg ? `layernorm_sg${C % 4 === 0 ? 'v' : ''}_plain_grad_${C}` : 'layernorm_plain_grad'))).toBe(true);
    });
  }

  // x feeding both the norm and a residual add, as in a ViT block: the add's backward hands x its
  // gradient first, and the subgroup backward adds it into dx in its own kernel (the tape's add
  // otherwise), so dx = LN's part + g; also with the norm's output used twice.
  for (const kind of ['rows', 'subgroup'] as const) {
    for (const shape of [[37, 64], [5, 13]]) it(`${kind} kernels: x + layerNorm(x) ${JSON.stringify(shape)}, the residual's gradient folded into dx`, async () => {
      const C = shape[1]!;
      await withKernel(kind, () =>
        checkOp({
          name: 'x + layerNorm(x)',
          inputs: [{ shape }, { shape: [C] }, { shape: [C] }],
          fwd: { atol: 2e-5, rtol: 1e-5 },
          gpu: (x, w, b) => T.add(x!, T.layerNorm(x!, w!, b!, 1e-6)),
          ref: (x, w, b) => binary('add', x!, R.layerNorm(x!, w!, b!, 1e-6)),
          vjp: ([x, w], g) => {
            const r = R.layerNormVjp(x!, w!, g, 1e-6);
            return [binary('add', r.dx, g), r.dw, r.db];
          },
        }),
      );
      const sg = kind === 'subgroup' && T.subgroupsOf8();
      if (sg) expect(T.compiledKernels().some((k) => k.name === `layernorm_sg${C % 4 === 0 ? 'v' : ''}_grad_params_acc_${C}`)).toBe(true);
    });
  }

  it('a weight of the wrong size is refused', () => {
    expect(() => T.layerNorm(T.zeros([2, 4]), T.ones([3]), T.zeros([3]))).toThrow(/weight tensor #\d+ \[3\]; expected \[4\]/);
  });
});
