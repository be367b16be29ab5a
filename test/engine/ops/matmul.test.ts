import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../../engine/index.js';
import * as R from '../../../engine/reference/matmul.js';
import { binary, unary, unaryVjp } from '../../../engine/reference/elementwise.js';
import type { Nd } from '../../../engine/reference/nd.js';
import { checkOp } from '../../helpers.js';

beforeAll(async () => {
  await T.init();
  // The tests below check what 'auto' picks with the untuned default (B from storage); a train()
  // run earlier in this process may have tuned it (margin Infinity keeps storage).
  await untuned();
});

const untuned = () => T.tuneMatmul({ repeats: 1, shapes: [[8, 8, 8]], smallShapes: [[8, 8, 8]], margin: Infinity });
// margin 0: the texture wins whatever the timings, as tuning makes it where it is faster.
const textureTuned = () => T.tuneMatmul({ repeats: 1, shapes: [[8, 8, 8]], smallShapes: [[8, 8, 8]], margin: 0, smallMargin: Infinity });

// A dot product of K f32 terms of size ~1 has error ~sqrt(K)·6e-8·|terms|, worst case K·6e-8:
// K ≤ 257 gives ≤ 1.6e-5 per unit of Σ|a·b| (~K). Tolerance: atol 1e-4·sqrt(K)-ish, stated as 5e-4.
const TOL = { atol: 5e-4, rtol: 1e-4 };

/** op(A)·op(B) on the GPU against the float64 reference, forward and backward (finite differences
 * on a few samples). */
function checkMatmul(name: string, sa: number[], sb: number[], ta: boolean, tb: boolean, bwd: { atol: number; rtol: number }): Promise<void> {
  return checkOp({
    name,
    inputs: [{ shape: sa }, { shape: sb }],
    fwd: TOL,
    bwd,
    fdSamples: 6,
    gpu: (a, b) => T.matmul(a!, b!, { transA: ta, transB: tb }),
    ref: (a, b) => R.matmul(a!, b!, ta, tb),
    vjp: ([a, b], g) => R.matmulVjp(a!, b!, g, ta, tb),
  });
}

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
// past a 32-column tile (64 with B from a texture or uniform arrays: 8 columns per lane, the
// second group of 4 past N or straddling it), a lane whose 4 columns straddle N, 8-row tiles, unaligned leading
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
  // 24-row tiles (M >= 512) with a partial last tile, K % 4 tails and N % 4 != 0 (scalar stores).
  [[531, 23], [23, 37], false, false],
  [[23, 531], [37, 23], true, true],
  // Row-major B of 64-multiple width: the texture kernel copies it instead of repacking.
  [[37, 23], [23, 64], false, false],
  [[23, 37], [23, 128], true, false],
  [[3, 9, 20], [3, 20, 64], false, false],
  // Row-major B of 4-multiple width (not 64): repacked with vec4 loads.
  [[37, 23], [23, 36], false, false],
  [[2, 9, 20], [2, 20, 12], false, false],
];

// B read from the scratch uniform arrays (one product, M >= 128, N % 4 == 0): every transpose, K
// % 4 tails (23, 203, 150), N = 4 (one vec4 per row), partial 16- and 24-row tiles, a 48 KiB weight
// read as stored; a transposed B with K % 4 != 0 repacked into one array; B over 64 KiB in 2 and 3
// arrays, copied (row-major) or repacked (transposed), with the tail in the last array. The
// uniform kernel must run for these.
const UNIFORM: [number[], number[], boolean, boolean][] = [
  [[130, 12], [12, 36], false, false],
  [[131, 23], [23, 40], false, false],
  [[23, 131], [23, 36], true, false],
  [[131, 20], [44, 20], false, true],
  [[20, 131], [44, 20], true, true],
  [[531, 16], [16, 4], false, false],
  [[2176, 64], [192, 64], false, true],
  [[131, 23], [40, 23], false, true],
  [[140, 203], [203, 88], false, false],
  [[150, 131], [150, 120], true, false],
  [[131, 150], [120, 150], false, true],
  [[128, 192], [192, 192], false, false],
  [[192, 130], [192, 192], true, true],
];

const KERNEL_NAME = { general: 'matmul_', vec4: 'matmul_fast_', subgroup: 'matmul_sg_', texture: 'matmul_sg_', uniform: 'matmul_sg_' } as const;

describe('matmul', () => {
  for (const kind of ['general', 'vec4', 'subgroup', 'texture', 'uniform'] as const) {
    const shapes = kind === 'vec4' ? FAST : kind === 'uniform' ? [...UNIFORM, ...SHAPES, ...SUBGROUP] : kind === 'subgroup' || kind === 'texture' ? [...SHAPES, ...SUBGROUP] : SHAPES;
    for (const [sa, sb, ta, tb] of shapes) {
      it(`${kind} kernel: ${JSON.stringify(sa)}${ta ? 'ᵀ' : ''} · ${JSON.stringify(sb)}${tb ? 'ᵀ' : ''}`, async () => {
        if ((kind === 'subgroup' || kind === 'texture' || kind === 'uniform') && !T.subgroupsOf8()) return;
        T.useMatmulKernel(kind);
        try {
          // The 2176-row case sums 2,176 products per weight gradient.
          await checkMatmul(`matmul ${kind}`, sa, sb, ta, tb, { atol: 2e-3, rtol: 1e-4 });
        } finally {
          T.useMatmulKernel('auto');
        }
        const prefix = `${KERNEL_NAME[kind]}${ta ? 't' : 'n'}${kind === 'texture' ? 'x' : tb ? 't' : 'n'}`;
        expect(T.compiledKernels().some((k) => k.name.startsWith(prefix))).toBe(true);
        if (kind === 'texture') expect(T.compiledKernels().some((k) => k.name === `matmul_pack_b_${tb ? 't' : 'n'}`)).toBe(true);
        // B gathered from a texture or uniform arrays: 8 columns per lane (64 per subgroup).
        if (kind === 'texture' || kind === 'uniform') expect(T.compiledKernels().some((k) => k.name.startsWith(prefix) && /_(8|16)x8$/.test(k.name))).toBe(true);
        if (kind === 'uniform') {
          // The forward product reads B from the uniform array exactly for the UNIFORM shapes.
          const [a, b] = [T.randn(sa, { seed: 1 }), T.randn(sb, { seed: 2 })];
          T.useMatmulKernel('uniform');
          const before = T.rt().stats.uniformOperands;
          const c = T.matmul(a, b, { transA: ta, transB: tb });
          T.useMatmulKernel('auto');
          expect(T.rt().stats.uniformOperands - before).toBe(UNIFORM.some((u) => JSON.stringify(u) === JSON.stringify([sa, sb, ta, tb])) ? 1 : 0);
          for (const t of [a, b, c]) t.dispose();
        }
      });
    }
  }

  describe('with B from a texture, as tuning chooses it where it is faster', () => {
    beforeAll(textureTuned);
    afterAll(untuned);

    it('auto keeps B in storage untuned, and reads it from a texture once tuning chose one', async () => {
      if (!T.subgroupsOf8()) return;
      await untuned();
      const [x, y] = [T.ones([130, 40]), T.ones([40, 11])];
      const untunedStats = { ...T.rt().stats };
      T.matmul(x, y).dispose();
      expect(T.rt().stats.dispatches - untunedStats.dispatches).toBe(1);
      expect(T.rt().stats.texturesCreated - untunedStats.texturesCreated).toBe(0);
      x.dispose();
      y.dispose();
      await textureTuned();
      // A size no other test uses: its scratch texture is new, and the matmul is two dispatches.
      const [a, b] = [T.ones([130, 1031]), T.ones([1031, 11])];
      const { dispatches, texturesCreated } = T.rt().stats;
      const c = T.matmul(a, b);
      expect(T.rt().stats.dispatches - dispatches).toBe(2);
      expect(T.rt().stats.texturesCreated - texturesCreated).toBe(1);
      expect(T.compiledKernels().some((k) => k.name.startsWith('matmul_sg_nx'))).toBe(true);
      // Row-major, 64-multiple wide B is copied into the texture: one dispatch, at any M.
      const a9 = T.ones([9, 1031]);
      const b64 = T.ones([1031, 64]);
      const before = T.rt().stats.dispatches;
      const c64 = T.matmul(a9, b64);
      expect(T.rt().stats.dispatches - before).toBe(1);
      // Few row tiles and a B that would need a repack: B stays in storage, no texture.
      const b13 = T.ones([1031, 13]);
      const stats = { ...T.rt().stats };
      const c13 = T.matmul(a9, b13);
      expect(T.rt().stats.dispatches - stats.dispatches).toBe(1);
      expect(T.rt().stats.texturesCreated - stats.texturesCreated).toBe(0);
      expect(T.compiledKernels().some((k) => k.name.startsWith('matmul_sg_nn'))).toBe(true);
      for (const t of [a, b, c, a9, b64, c64, b13, c13]) t.dispose();
    });

    it('a B taller than the texture size limit falls back to the storage-buffer subgroup kernel', async () => {
      if (!T.subgroupsOf8()) return;
      const K = T.rt().device.limits.maxTextureDimension2D + 3;
      const a = T.ones([2, K]);
      const b = T.ones([K, 5]);
      const created = T.rt().stats.texturesCreated;
      const c = T.matmul(a, b);
      expect(Array.from(await c.data())).toEqual(new Array(10).fill(K));
      expect(T.rt().stats.texturesCreated).toBe(created);
      for (const t of [a, b, c]) t.dispose();
    });

    it('repeated matmuls reuse one scratch texture per size', async () => {
      if (!T.subgroupsOf8()) return;
      const x = T.ones([40, 24]);
      const w = T.ones([36, 24]);
      T.linear(x, w).dispose();
      const live = T.rt().liveTextures;
      const created = T.rt().stats.texturesCreated;
      for (let i = 0; i < 20; i++) T.linear(x, w).dispose();
      await T.sync();
      expect(T.rt().liveTextures).toBe(live);
      expect(T.rt().stats.texturesCreated).toBe(created);
      x.dispose();
      w.dispose();
    });
  });

  // linear and linearGelu on every matmul kernel. With the subgroup kernels the bias gradient
  // comes out of the weight gradient's product (row sums of g) and the GELU runs in the forward
  // product's epilogue; otherwise a reduction and an elementwise kernel do it. Shapes: K % 4 tails
  // in both products (10, 18, 37, 531 rows; 12, 23 features), partial 16- and 24-row tiles,
  // several column tiles, unaligned widths (scalar loads), with and without bias.
  const LINEAR_CASES: ['linear' | 'linearGelu', number[], number, boolean][] = [
    ['linear', [2, 5, 12], 7, true],
    ['linear', [37, 70], 23, true],
    ['linear', [531, 9], 40, true],
    ['linearGelu', [2, 9, 12], 40, true],
    ['linearGelu', [37, 23], 70, true],
    ['linearGelu', [5, 16], 33, false],
    // Where the uniform kernel takes the forward product (M >= 128, in % 4 == 0).
    ['linear', [2, 80, 12], 40, true],
    ['linearGelu', [150, 16], 36, true],
  ];
  for (const kind of ['subgroup', 'texture', 'uniform', 'general'] as const) {
    for (const [op, shape, out, withBias] of LINEAR_CASES) {
      const gelu = op === 'linearGelu';
      it(`${op} (${kind} matmul${gelu && kind !== 'general' ? ', GELU in its epilogue' : ''}) ${JSON.stringify(shape)} → ${out}${withBias ? '' : ', no bias'}`, async () => {
        if (kind !== 'general' && !T.subgroupsOf8()) return;
        const inF = shape[shape.length - 1]!;
        const preact = (x: Nd, w: Nd, b: Nd | undefined) => (withBias ? binary('add', R.matmul(x, w, false, true), b!) : R.matmul(x, w, false, true));
        T.useMatmulKernel(kind);
        try {
          await checkOp({
            name: op,
            inputs: [{ shape }, { shape: [out, inF] }, ...(withBias ? [{ shape: [out] }] : [])],
            fwd: TOL,
            bwd: TOL,
            gpu: (x, w, b) => (gelu ? T.linearGelu : T.linear)(x!, w!, withBias ? b! : null),
            ref: (x, w, b) => (gelu ? unary('gelu', preact(x!, w!, b)) : preact(x!, w!, b)),
            vjp: ([x, w, b], g) => {
              const dz = gelu ? unaryVjp('gelu', preact(x!, w!, b), g) : g;
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
        if (kind === 'general') return;
        const names = T.compiledKernels().map((k) => k.name);
        if (gelu) expect(names.some((n) => n.startsWith(`matmul_sg_n${kind === 'texture' ? 'x' : 't'}`) && n.includes(`${withBias ? '_bias' : ''}_gelu`))).toBe(true);
        if (withBias) expect(names.some((n) => n.startsWith('matmul_sg_t') && n.includes('_rs_'))).toBe(true);
      });
    }
  }

  it('shape errors name both operands', () => {
    const a = T.zeros([3, 4]);
    const b = T.zeros([5, 6]);
    expect(() => T.matmul(a, b)).toThrow(/matmul\(tensor #\d+ \[3, 4\], tensor #\d+ \[5, 6\]\): inner dimensions differ \(4 vs 5\)/);
    expect(() => T.linear(a, T.zeros([4, 3]))).toThrow(/expects 3 \(\[out, in\]\)/);
  });

  it('tuneMatmul times B from a texture against B from storage, then small B from a uniform array against that, and keeps the faster; all give bit-identical products', async () => {
    const r = await T.tuneMatmul({ repeats: 3, shapes: [[512, 64, 64]], smallShapes: [[512, 64, 64]] });
    if (!T.subgroupsOf8()) {
      expect(r).toBeNull();
      return;
    }
    expect(r!.textureMs).toBeGreaterThan(0);
    expect(r!.storageMs).toBeGreaterThan(0);
    expect(r!.smallB.uniformMs).toBeGreaterThan(0);
    expect(r!.smallB.otherMs).toBeGreaterThan(0);
    // margin 0: any ratio wins, so 'auto' takes the texture and the uniform array; Infinity: neither.
    const probe = async (margin: number) => {
      const t = await T.tuneMatmul({ repeats: 1, shapes: [[64, 64, 64]], smallShapes: [[256, 64, 64]], margin });
      const [x, w, wide] = [T.zeros([300, 40]), T.zeros([64, 40]), T.zeros([40, 1102])];
      const before = T.rt().stats.uniformOperands;
      T.linear(x, w).dispose();
      T.matmul(x, wide).dispose(); // N % 4 != 0: never the uniform arrays
      const used = { uniform: T.rt().stats.uniformOperands - before };
      for (const z of [x, w, wide]) z.dispose();
      return { t: t!, used };
    };
    const eager = await probe(0);
    expect([eager.t.choice, eager.t.smallB.uniform, eager.used.uniform]).toEqual(['texture', true, 1]);
    const strict = await probe(Infinity);
    expect([strict.t.choice, strict.t.smallB.uniform, strict.used.uniform]).toEqual(['subgroup', false, 0]);
    await T.tuneMatmul({ repeats: 3, shapes: [[512, 64, 64]], smallShapes: [[512, 64, 64]] });
    // Rows past 128 and a B that is copied into its texture: 'auto' takes the tuned choice here.
    const x = T.randn([300, 40], { seed: 1 });
    const w = T.randn([40, 64], { seed: 2 });
    const bias = T.randn([64], { seed: 3 });
    // And B over 64 KiB: three uniform arrays of 16 rows, copied (row-major) or repacked (a weight).
    const wide = T.randn([40, 1000], { seed: 4 });
    const wideWeight = T.randn([1000, 40], { seed: 5 });
    const auto = await T.matmul(x, w).data();
    const autoLinear = await T.linear(x, T.transpose(w, 0, 1), bias).data();
    const autoWide = await T.matmul(x, wide).data();
    const autoWideLinear = await T.linear(x, wideWeight).data();
    try {
      for (const kind of ['texture', 'subgroup', 'uniform'] as const) {
        T.useMatmulKernel(kind);
        expect(await T.matmul(x, w).data()).toEqual(auto);
        expect(await T.linear(x, T.transpose(w, 0, 1), bias).data()).toEqual(autoLinear);
        const before = T.rt().stats.uniformOperands;
        expect(await T.matmul(x, wide).data()).toEqual(autoWide);
        expect(await T.linear(x, wideWeight).data()).toEqual(autoWideLinear);
        expect(T.rt().stats.uniformOperands - before).toBe(kind === 'uniform' ? 2 : 0);
      }
    } finally {
      T.useMatmulKernel('auto');
      // Back to the untuned default for the tests that follow.
      await T.tuneMatmul({ repeats: 1, shapes: [[64, 64, 64]], smallShapes: [[64, 64, 64]], margin: Infinity });
    }
  });

  // K = 16: each weight copied as stored; K = 18: each repacked by a kernel (K % 4 != 0).
  for (const K of [16, 18]) {
    it(`products recorded together each read their own B through the one scratch buffer (K = ${K}: ${K % 4 ? 'repacked' : 'copied'})`, async () => {
      if (!T.subgroupsOf8()) return;
      const x = T.randn([200, K], { seed: 4 });
      const ws = [5, 6, 7].map((seed) => T.randn([24, K], { seed }));
      T.useMatmulKernel('uniform');
      const before = T.rt().stats.uniformOperands;
      // No readback in between: the three moves into the scratch buffer and the three products are
      // recorded in one submission, so each product must see the B moved just before it.
      const ys = ws.map((w) => T.linear(x, w));
      T.useMatmulKernel('auto');
      expect(T.rt().stats.uniformOperands - before).toBe(3);
      if (K % 4) expect(T.compiledKernels().some((k) => k.name.startsWith('matmul_pack_b_uniform_t'))).toBe(true);
      const xs = await x.data();
      for (let i = 0; i < 3; i++) {
        const [w, y] = [await ws[i]!.data(), await ys[i]!.data()];
        const ref = R.matmul({ data: Float64Array.from(xs), shape: [200, K] }, { data: Float64Array.from(w), shape: [24, K] }, false, true);
        let err = 0;
        y.forEach((v, j) => (err = Math.max(err, Math.abs(v - ref.data[j]!))));
        expect(err).toBeLessThan(1e-4); // K ≤ 18 terms of size ~1: f32 rounding ~1e-6
      }
      for (const t of [x, ...ws, ...ys]) t.dispose();
    });
  }

  // B gathered (texture, uniform arrays) at 24 rows a subgroup tile, as `tuneMatmulShapes` may
  // choose where M >= 512: partial last tiles (531 = 22·24 + 3), K % 4 tails, every transpose,
  // N % 4 != 0 (texture) and the second 4-column group past N; the bias, the GELU epilogue and
  // the weight gradient's row sums (531-row linear layers).
  const GATHERED_24: ['texture' | 'uniform', number[], number[], boolean, boolean][] = [
    ['texture', [531, 23], [23, 37], false, false],
    ['texture', [23, 531], [37, 23], true, true],
    ['texture', [531, 20], [20, 64], false, false],
    ['uniform', [531, 23], [23, 40], false, false],
    ['uniform', [531, 20], [44, 20], false, true],
    ['uniform', [23, 531], [23, 36], true, false],
  ];
  for (const [kind, sa, sb, ta, tb] of GATHERED_24) {
    it(`${kind} kernel at 24 rows: ${JSON.stringify(sa)}${ta ? 'ᵀ' : ''} · ${JSON.stringify(sb)}${tb ? 'ᵀ' : ''}, bit-identical to 16 rows`, async () => {
      if (!T.subgroupsOf8()) return;
      T.useMatmulKernel(kind, { rows: 24 });
      try {
        await checkMatmul(`matmul ${kind} 24 rows`, sa, sb, ta, tb, TOL);
      } finally {
        T.useMatmulKernel('auto');
      }
      const [a, b] = [T.randn(sa, { seed: 1 }), T.randn(sb, { seed: 2 })];
      const run = async (rows: 16 | 24) => {
        T.useMatmulKernel(kind, { rows });
        T.startProfile();
        const c = T.matmul(a, b, { transA: ta, transB: tb });
        const { records } = await T.stopProfile();
        T.useMatmulKernel('auto');
        const out = await c.data();
        c.dispose();
        return { out, kernels: records.map((r) => r.kernel).filter((k) => k.startsWith('matmul_sg_')) };
      };
      const [r16, r24] = [await run(16), await run(24)];
      expect(r24.kernels).toHaveLength(1);
      expect(r24.kernels[0]).toMatch(/_24x8$/);
      expect(r16.kernels[0]).toMatch(/_16x8$/);
      expect(r24.out).toEqual(r16.out);
      a.dispose();
      b.dispose();
    });
  }
  for (const kind of ['texture', 'uniform'] as const) {
    for (const gelu of [false, true]) {
      it(`${gelu ? 'linearGelu' : 'linear'} with bias, ${kind} matmul at 24 rows: [531, 16] → 40`, async () => {
        if (!T.subgroupsOf8()) return;
        const preact = (x: Nd, w: Nd, b: Nd) => binary('add', R.matmul(x, w, false, true), b);
        T.useMatmulKernel(kind, { rows: 24 });
        try {
          await checkOp({
            name: 'linear 24 rows',
            inputs: [{ shape: [531, 16] }, { shape: [40, 16] }, { shape: [40] }],
            fwd: TOL,
            bwd: { atol: 2e-3, rtol: 1e-4 }, // the weight and bias gradients sum 531 products
            fdSamples: 6,
            gpu: (x, w, b) => (gelu ? T.linearGelu : T.linear)(x!, w!, b!),
            ref: (x, w, b) => (gelu ? unary('gelu', preact(x!, w!, b!)) : preact(x!, w!, b!)),
            vjp: ([x, w, b], g) => {
              const dz = gelu ? unaryVjp('gelu', preact(x!, w!, b!), g) : g;
              const [gx, gw] = R.matmulVjp(x!, w!, dz, false, true);
              const gb = new Float64Array(40);
              dz.data.forEach((v, i) => (gb[i % 40] = gb[i % 40]! + v));
              return [gx, gw, { data: gb, shape: [40] }];
            },
          });
        } finally {
          T.useMatmulKernel('auto');
        }
        expect(T.compiledKernels().some((k) => k.name.startsWith(`matmul_sg_n${kind === 'texture' ? 'x' : 't'}`) && k.name.includes(`_bias${gelu ? '_gelu' : ''}`) && k.name.endsWith('_24x8'))).toBe(true);
      });
    }
  }

  it('tuneMatmulShapes races every form a shape can take and keeps the fastest for that shape; matmulShapesOf lists the shapes', async () => {
    if (!T.subgroupsOf8()) {
      expect(await T.tuneMatmulShapes([{ M: 600, N: 40, K: 20, transA: false, transB: false }])).toEqual([]);
      return;
    }
    await untuned();
    // The unbatched shapes a linear layer's forward and backward launch; a batched product is not one.
    const x = T.randn([600, 20], { seed: 1 });
    const w = T.randn([40, 20], { seed: 2 });
    const bias = T.randn([40], { seed: 3 });
    x.requiresGrad = w.requiresGrad = bias.requiresGrad = true;
    const batched = [T.randn([3, 5, 7], { seed: 4 }), T.randn([3, 7, 6], { seed: 5 })];
    const shapes = await T.matmulShapesOf(() => {
      T.scope(() => {
        T.sum(T.linear(x, w, bias)).backward();
        T.matmul(batched[0]!, batched[1]!);
      });
    });
    const key = (s: T.MatmulShape) => `${s.M}x${s.N}x${s.K}${s.transA ? 't' : 'n'}${s.transB ? 't' : 'n'}`;
    expect(shapes.map(key).sort()).toEqual(['40x20x600tn', '600x20x40nn', '600x40x20nt']);
    const auto = async () => {
      T.startProfile();
      const y = T.linear(x, w, bias);
      const { records } = await T.stopProfile();
      const out = await y.data();
      y.dispose();
      return { out, kernels: records.map((r) => r.kernel).filter((k) => k.startsWith('matmul_sg_')) };
    };
    const before = await auto();
    expect(before.kernels).toEqual([expect.stringMatching(/^matmul_sg_nt_bias.*_24$/)]); // B from storage, untuned
    // margin Infinity: no form displaces the one 'auto' took; every candidate still raced, and the
    // race's operands and products are all released.
    const live = T.liveBuffers();
    const kept = await T.tuneMatmulShapes([...shapes, shapes[0]!], { repeats: 1, margin: Infinity });
    expect(T.liveBuffers()).toBe(live);
    expect(kept).toHaveLength(3);
    const forward = kept.find((t) => key(t.shape) === '600x40x20nt')!;
    const raced = forward.forms.map((f) => `${f.form.kind}${f.form.rows ?? ''}`);
    expect(raced).toEqual(['subgroup', 'texture16', 'uniform16', 'texture24', 'uniform24']);
    expect(forward.forms.every((f) => f.ms > 0)).toBe(true);
    expect(forward.choice).toEqual({ kind: 'subgroup' });
    // The weight gradient (M = 40): no 24-row tile to race, and no uniform arrays below 128 rows.
    expect(kept.find((t) => key(t.shape) === '40x20x600tn')!.forms.map((f) => `${f.form.kind}${f.form.rows ?? ''}`)).toEqual(['subgroup', 'texture16']);
    expect((await auto()).kernels).toEqual(before.kernels);
    // margin 0: the fastest form other than storage is taken whatever the times; whichever it is,
    // the product runs it and is bit-identical.
    const eager = await T.tuneMatmulShapes([shapes.find((s) => key(s) === '600x40x20nt')!], { repeats: 3, margin: 0 });
    const choice = eager[0]!.choice;
    expect(choice.kind).not.toBe('subgroup');
    const after = await auto();
    expect(after.out).toEqual(before.out);
    expect(after.kernels).toEqual([expect.stringMatching(new RegExp(`^matmul_sg_n${choice.kind === 'texture' ? 'x' : 't_bu'}.*_${choice.rows}x8$`))]);
    // Untuning forgets the shape's form.
    await untuned();
    await expect(T.tuneMatmulShapes([{ M: 600, N: 0, K: 20, transA: false, transB: false }])).rejects.toThrow(/tuneMatmulShapes: shape \{"M":600,"N":0,"K":20,.*needs positive integer M, N and K/);
    expect((await auto()).kernels).toEqual(before.kernels);
    for (const t of [x, w, bias, ...batched]) t.dispose();
  });
});
