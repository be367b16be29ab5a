import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../../engine/index.js';
import * as R from '../../../engine/reference/matmul.js';
import { binary, unary, unaryVjp } from '../../../engine/reference/elementwise.js';
import { checkOp } from '../../helpers.js';

beforeAll(async () => {
  await T.init();
});

// A dot product of K f32 terms of size ~1 has error ~sqrt(K)·6e-8·|terms|, worst case K·6e-8:
// K ≤ 257 gives ≤ 1.6e-5 per unit of Σ|a·b| (~K). Tolerance: atol 1e-4·sqrt(K)-ish, stated as 5e-4.
const TOL = { atol: 5e-4, rtol: 1e-4 };

const SHAPES: [number[], number[], boolean, boolean][] = [
  [[1, 1], [1, 1], false, false],
  [[7, 13], [13, 5], false, false],
  [[13, 7], [13, 5], true, false],
  [[7, 13], [5, 13], false, true],
  [[13, 7], [5, 13], true, true],
  [[33, 65], [65, 17], false, false],
  [[5, 257], [3, 257], false, true],
  [[2, 3, 7, 5], [5, 6], false, false],
  [[3, 1, 4, 6], [2, 6, 5], false, false],
  [[4, 9, 8], [4, 10, 8], false, true],
];

// Shapes the vec4 register-blocked kernel takes (4-aligned K and contiguous dims), including
// edge blocks where M or N is not a multiple of the 8×8 tile.
const FAST: [number[], number[], boolean, boolean][] = [
  [[8, 4], [4, 8], false, false],
  [[20, 12], [12, 36], false, false],
  [[12, 20], [12, 36], true, false],
  [[20, 12], [36, 12], false, true],
  [[12, 20], [36, 12], true, true],
  [[3, 68, 64], [64, 24], false, false],
  [[2, 16, 32], [2, 32, 12], false, false],
  [[2176, 64], [192, 64], false, true],
];

// The subgroup kernel's edges: K % 4 tails with vec4 loads, rows past a 16-row tile, columns
// past a 32-column tile, a lane whose 4 columns straddle N, 8-row tiles, unaligned leading
// dimensions (scalar loads) and batch strides.
const SUBGROUP: [number[], number[], boolean, boolean][] = [
  [[17, 36], [36, 33], false, false],
  [[37, 23], [23, 70], false, false],
  [[23, 37], [23, 70], true, false],
  [[37, 23], [70, 23], false, true],
  [[23, 37], [70, 23], true, true],
  [[5, 8], [8, 4], false, false],
  [[3, 19, 12], [12, 40], false, false],
  [[2, 5, 24, 20], [2, 1, 9, 20], false, true],
  [[2176, 64], [192, 64], false, true],
];

const KERNEL_NAME = { general: 'matmul_', vec4: 'matmul_fast_', subgroup: 'matmul_sg_' } as const;

describe('matmul', () => {
  for (const kind of ['general', 'vec4', 'subgroup'] as const) {
    const shapes = kind === 'vec4' ? FAST : kind === 'subgroup' ? [...SHAPES, ...SUBGROUP] : SHAPES;
    for (const [sa, sb, ta, tb] of shapes) {
      it(`${kind} kernel: ${JSON.stringify(sa)}${ta ? 'ᵀ' : ''} · ${JSON.stringify(sb)}${tb ? 'ᵀ' : ''}`, async () => {
        if (kind === 'subgroup' && !T.subgroupsOf8()) return;
        T.useMatmulKernel(kind);
        try {
          await checkOp({
            name: `matmul ${kind}`,
            inputs: [{ shape: sa }, { shape: sb }],
            fwd: TOL,
            bwd: { atol: 2e-3, rtol: 1e-4 }, // the 2176-row case sums 2,176 products per weight gradient
            fdSamples: 6,
            gpu: (a, b) => T.matmul(a!, b!, { transA: ta, transB: tb }),
            ref: (a, b) => R.matmul(a!, b!, ta, tb),
            vjp: ([a, b], g) => R.matmulVjp(a!, b!, g, ta, tb),
          });
        } finally {
          T.useMatmulKernel('auto');
        }
        const prefix = `${KERNEL_NAME[kind]}${ta ? 't' : 'n'}${tb ? 't' : 'n'}`;
        expect(T.compiledKernels().some((k) => k.name.startsWith(prefix))).toBe(true);
      });
    }
  }

  it('the subgroup kernel is what auto picks when the adapter has subgroups of 8 or more', () => {
    if (!T.subgroupsOf8()) return;
    const before = new Set(T.compiledKernels().map((k) => k.name));
    const c = T.matmul(T.ones([9, 10]), T.ones([10, 11]));
    const added = T.compiledKernels().map((k) => k.name).filter((n) => !before.has(n) && n.startsWith('matmul'));
    c.dispose();
    expect(added.every((n) => n.startsWith('matmul_sg_'))).toBe(true);
  });

  it('linear uses the [out, in] weight layout and adds the bias', () =>
    checkOp({
      name: 'linear',
      inputs: [{ shape: [2, 5, 12] }, { shape: [7, 12] }, { shape: [7] }],
      fwd: TOL,
      bwd: TOL,
      gpu: (x, w, b) => T.linear(x!, w!, b!),
      ref: (x, w, b) => binary('add', R.matmul(x!, w!, false, true), b!),
      vjp: ([x, w, b], g) => {
        const [gx, gw] = R.matmulVjp(x!, w!, g, false, true);
        const gb = new Float64Array(7);
        g.data.forEach((v, i) => (gb[i % 7] = gb[i % 7]! + v));
        return [gx, gw, { data: gb, shape: [7] }];
      },
    }));

  // The GELU epilogue (subgroup kernel) and its composed fallback: ragged tiles, K % 4 tail,
  // unaligned widths (scalar loads), with and without bias.
  for (const kind of ['subgroup', 'general'] as const) {
    for (const [shape, out, withBias] of [[[2, 9, 12], 40, true], [[37, 23], 70, true], [[5, 16], 33, false]] as [number[], number, boolean][]) {
      it(`linearGelu (${kind === 'subgroup' ? 'GELU in the matmul epilogue' : 'linear then gelu'}) ${JSON.stringify(shape)} → ${out}${withBias ? '' : ', no bias'}`, async () => {
        if (kind === 'subgroup' && !T.subgroupsOf8()) return;
        const inF = shape[shape.length - 1]!;
        T.useMatmulKernel(kind);
        try {
          await checkOp({
            name: 'linearGelu',
            inputs: [{ shape }, { shape: [out, inF] }, ...(withBias ? [{ shape: [out] }] : [])],
            fwd: TOL,
            bwd: TOL,
            gpu: (x, w, b) => T.linearGelu(x!, w!, withBias ? b! : null),
            ref: (x, w, b) => unary('gelu', withBias ? binary('add', R.matmul(x!, w!, false, true), b!) : R.matmul(x!, w!, false, true)),
            vjp: ([x, w, b], g) => {
              const z = withBias ? binary('add', R.matmul(x!, w!, false, true), b!) : R.matmul(x!, w!, false, true);
              const dz = unaryVjp('gelu', z, g);
              const [gx, gw] = R.matmulVjp(x!, w!, dz, false, true);
              if (!withBias) return [gx, gw];
              const gb = new Float64Array(out);
              dz.data.forEach((v, i) => (gb[i % out] = gb[i % out]! + v));
              return [gx, gw, { data: gb, shape: [out] }];
            },
          });
        } finally {
          T.useMatmulKernel('auto');
        }
        if (kind === 'subgroup') expect(T.compiledKernels().some((k) => k.name.startsWith(`matmul_sg_nt${withBias ? '_bias' : ''}_gelu`))).toBe(true);
      });
    }
  }

  it('shape errors name both operands', () => {
    const a = T.zeros([3, 4]);
    const b = T.zeros([5, 6]);
    expect(() => T.matmul(a, b)).toThrow(/matmul\(tensor #\d+ \[3, 4\], tensor #\d+ \[5, 6\]\): inner dimensions differ \(4 vs 5\)/);
    expect(() => T.linear(a, T.zeros([4, 3]))).toThrow(/expects 3 \(\[out, in\]\)/);
  });
});
