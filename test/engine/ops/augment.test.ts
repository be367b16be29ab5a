import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../../engine/index.js';
import { augmentLayerUniforms } from '../../../engine/ops/augment.js';
import * as R from '../../../engine/reference/augment.js';
import * as RandomRef from '../../../engine/reference/random.js';
import { type Nd } from '../../../engine/reference/nd.js';
import { GEOMETRY_UNIFORMS } from '../../../kernels/augment-geometry.js';
import { COLOR_PARAMS, COLOR_UNIFORMS } from '../../../kernels/augment-color.js';
import { ERASE_UNIFORMS, MIX_UNIFORMS } from '../../../kernels/augment-mix.js';
import { OP_UNIFORMS } from '../../../kernels/augment-ops.js';
import { expectClose, rng } from '../../helpers.js';

beforeAll(async () => {
  await T.init();
});

// Images are 8-bit levels k/255, as decoded data are, so quantising ops (posterize, equalize)
// see no value on a rounding boundary. Resampling computes positions in f32 from coordinates
// below 32 (≈ 4e-6 error each) on data whose slope is at most 1 per pixel: 3e-5 covers it.
// Point ops and quantising ops are exact up to one f32 rounding: 2e-6.
const RESAMPLE = { atol: 3e-5, rtol: 0 };
const POINT = { atol: 2e-6, rtol: 0 };
const GEOMETRIC = new Set(['rotate', 'shear_x', 'shear_y', 'translate_x', 'translate_y']);

/** Random 8-bit levels in [lo, hi] / 255 (a narrower range gives autocontrast work to do). */
function images(shape: number[], seed: number, lo = 0, hi = 255): { t: T.Tensor; nd: Nd } {
  const r = rng(seed);
  const data = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => (lo + Math.floor(r() * (hi - lo + 1))) / 255);
  return { t: T.tensor(data, shape), nd: { data: Float64Array.from(data), shape } };
}

const SHAPES = [
  [3, 1, 28, 28],
  [2, 3, 17, 23],
  [2, 3, 32, 32],
];

describe('geometry: affine sampling and crop parameters', () => {
  it('a single bright pixel lands where the affine map says', async () => {
    const [H, W] = [17, 23];
    const x = new Float32Array(H * W);
    x[3 * W + 5] = 1; // (x 5, y 3)
    const img = T.tensor(x, [1, 1, H, W]);
    // Output (xo, yo) reads input (xo - 2, yo + 1): the pixel moves to (7, 2).
    const shift = T.tensor([1, 0, -2, 0, 1, 1, 1, 0], [1, 8]);
    const moved = await T.affineSample(img, shift).data();
    expect(moved.indexOf(1)).toBe(2 * W + 7);
    expect(Array.from(moved).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 6);
    // A quarter turn about the centre (11, 8): output (xo, yo) reads (11 + (yo - 8), 8 - (xo - 11)),
    // so input (5, 3) appears at xo = 11 - (3 - 8) = 16, yo = 8 + (5 - 11) = 2.
    const turn = T.tensor([0, 1, 11 - 8, -1, 0, 8 + 11, 1, 0], [1, 8]);
    const turned = await T.affineSample(img, turn).data();
    expect(turned.indexOf(1)).toBe(2 * W + 16);
    // Half-way between pixels, bilinear splits the value.
    const half = T.tensor([1, 0, -0.5, 0, 1, 0, 1, 0], [1, 8]);
    const split = await T.affineSample(img, half).data();
    expect(split[3 * W + 5]).toBeCloseTo(0.5, 6);
    expect(split[3 * W + 6]).toBeCloseTo(0.5, 6);
  });

  for (const mode of ['resizedCrop', 'padCrop', 'flipOnly'] as const) {
    for (const shape of SHAPES) {
      it(`${mode} ${JSON.stringify(shape)}: parameters and images match the reference`, async () => {
        const [B, , H, W] = shape as [number, number, number, number];
        const opts = { mode, scale: [0.2, 1] as [number, number], ratio: [3 / 4, 4 / 3] as [number, number], pad: 4, flipProb: 0.5 };
        const u = T.rand([B, GEOMETRY_UNIFORMS], { seed: 11 });
        const theta = T.geometryParams(u, B, H, W, opts);
        const refTheta = R.geometryParams(await u.data(), B, H, W, opts);
        expectClose(await theta.data(), refTheta, { atol: 1e-6, rtol: 1e-6 }, `${mode} theta`);
        const { t, nd } = images(shape, 3);
        const y = T.affineSample(t, theta, 0.25);
        expectClose(await y.data(), R.affineSample(nd, refTheta, 0.25).data, RESAMPLE, `${mode} images`);
      });
    }
  }

  for (const [shape, size] of [[[3, 1, 28, 28], [12, 12]], [[2, 3, 17, 23], [9, 31]], [[2, 1, 8, 8], [1, 1]]] as [number[], [number, number]][]) {
    it(`resizedCrop ${JSON.stringify(shape)} → ${size.join('×')}: parameters and images match the reference`, async () => {
      const [B, C, H, W] = shape as [number, number, number, number];
      const opts = { mode: 'resizedCrop' as const, scale: [0.05, 0.4] as [number, number], ratio: [3 / 4, 4 / 3] as [number, number], pad: 0, flipProb: 0.5, size };
      const u = T.rand([B, GEOMETRY_UNIFORMS], { seed: 21 });
      const theta = T.geometryParams(u, B, H, W, opts);
      const refTheta = R.geometryParams(await u.data(), B, H, W, opts);
      expectClose(await theta.data(), refTheta, { atol: 1e-6, rtol: 1e-6 }, 'theta');
      const { t, nd } = images(shape, 5);
      const y = T.affineSample(t, theta, 0, size);
      expect(y.shape).toEqual([B, C, ...size]);
      expectClose(await y.data(), R.affineSample(nd, refTheta, 0, size).data, RESAMPLE, 'resized crops');
    });
  }

  it('a whole-image crop to half the size averages pixel pairs (align_corners = False)', async () => {
    const x = Float32Array.from({ length: 16 }, (_, i) => i / 16);
    const y = await T.randomResizedCrop(T.tensor(x, [1, 1, 4, 4]), { scale: [1, 1], ratio: [1, 1], flipProb: 0, size: [2, 2], seed: 1 }).images.data();
    // Output (0, 0) reads input (0.5, 0.5): the mean of pixels 0, 1, 4, 5.
    expectClose(y, [2.5 / 16, 4.5 / 16, 10.5 / 16, 12.5 / 16], POINT, 'half-size');
    expect(() => T.padCrop(T.tensor(x, [1, 1, 4, 4]), { size: [2, 2] })).toThrow(/only resizedCrop changes the size/);
    expect(() => T.randomResizedCrop(T.tensor(x, [1, 1, 4, 4]), { size: [0, 2] })).toThrow(/two positive integers/);
  });

  it('identity settings return the input: full-image crop, no padding, no flip', async () => {
    const { t } = images([2, 1, 28, 28], 4);
    const x = await t.data();
    for (const y of [
      T.randomResizedCrop(t, { scale: [1, 1], ratio: [1, 1], flipProb: 0, seed: 1 }).images,
      T.padCrop(t, { pad: 0, flipProb: 0, seed: 1 }).images,
      T.randomFlip(t, { flipProb: 0, seed: 1 }).images,
    ]) {
      expectClose(await y.data(), x, POINT, 'identity geometry');
    }
    const flipped = await T.randomFlip(t, { flipProb: 1, seed: 1 }).images.data();
    expect(flipped[0]).toBe(x[27]);
  });

  it('every image gets its own crop; the same seed repeats it', async () => {
    const { t } = images([8, 1, 28, 28], 5);
    const a = await T.randomResizedCrop(t, { seed: 7 }).theta.data();
    const b = await T.randomResizedCrop(t, { seed: 7 }).theta.data();
    const c = await T.randomResizedCrop(t, { seed: 8 }).theta.data();
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(Array.from(a)).not.toEqual(Array.from(c));
    const rows = new Set(Array.from({ length: 8 }, (_, i) => Array.from(a.subarray(i * 8, i * 8 + 6)).join()));
    expect(rows.size).toBe(8);
  });
});

describe('RandAugment / TrivialAugment ops', () => {
  for (const op of T.AUGMENT_OPS) {
    for (const shape of SHAPES) {
      it(`${op} ${JSON.stringify(shape)} matches the reference`, async () => {
        const [B] = shape as [number];
        const { t, nd } = images(shape, 21, 30, 220);
        const u = T.rand([B, 2, OP_UNIFORMS], { seed: 5 });
        const opts = { op, prob: 1, magnitude: 9, magnitudeStd: 0.5, fill: 0.5 };
        const y = T.augmentLayer(t, u, 1, 2, opts);
        const ref = R.augmentLayer(nd, await u.data(), augmentLayerUniforms(shape, 1, 2, opts));
        expectClose(await y.data(), ref.data, GEOMETRIC.has(op) ? RESAMPLE : POINT, op);
        if (op !== 'identity' && !(op === 'color' && shape[1] === 1)) {
          expect(Array.from(await y.data()), `${op} changes the image`).not.toEqual(Array.from(await t.data()));
        }
      });
    }
  }

  it('TrivialAugment-wide levels match the reference', async () => {
    const shape = [16, 3, 17, 23];
    const { t, nd } = images(shape, 8);
    const u = T.rand([16, 1, OP_UNIFORMS], { seed: 9 });
    const opts = { policy: 'trivialaugment' as const };
    const ref = R.augmentLayer(nd, await u.data(), augmentLayerUniforms(shape, 0, 1, opts));
    expectClose(await T.augmentLayer(t, u, 0, 1, opts).data(), ref.data, RESAMPLE, 'trivialaugment');
  });

  it('magnitude 0 leaves the image unchanged for every op with a magnitude; prob 0 for all', async () => {
    const { t } = images([4, 3, 17, 23], 12);
    const x = await t.data();
    const u = T.rand([4, 1, OP_UNIFORMS], { seed: 2 });
    for (const op of ['rotate', 'posterize', 'solarize', 'solarize_add', 'color', 'contrast', 'brightness', 'sharpness', 'shear_x', 'shear_y', 'translate_x', 'translate_y'] as const) {
      expectClose(await T.augmentLayer(t, u, 0, 1, { op, prob: 1, magnitude: 0, magnitudeStd: 0 }).data(), x, POINT, `${op} at magnitude 0`);
    }
    for (const op of T.AUGMENT_OPS) expectClose(await T.augmentLayer(t, u, 0, 1, { op, prob: 0 }).data(), x, POINT, `${op} with prob 0`);
  });

  it('a two-layer RandAugment is the reference applied layer by layer; seeds repeat; images differ', async () => {
    const shape = [12, 1, 28, 28];
    const { t } = images(shape, 13);
    const u = T.rand([12, 2, OP_UNIFORMS], { seed: 17 });
    const uh = await u.data();
    const first = T.augmentLayer(t, u, 0, 2);
    const second = T.augmentLayer(first, u, 1, 2);
    // Layer 2 is checked on layer 1's GPU output: chaining the reference would compare values that
    // sit within float error of a posterize or equalize step.
    const firstNd = { data: Float64Array.from(await first.data()), shape };
    expectClose(await second.data(), R.augmentLayer(firstNd, uh, augmentLayerUniforms(shape, 1, 2, {})).data, RESAMPLE, 'layer 2');
    const a = await T.randAugment(t, { seed: 4 }).data();
    const b = await T.randAugment(t, { seed: 4 }).data();
    expect(Array.from(a)).toEqual(Array.from(b));
    // Twelve copies of one image come out different: each drew its own ops and magnitudes.
    const same = T.tensor(Array.from({ length: 12 }, () => Array.from((images([1, 1, 28, 28], 14).nd.data))).flat(), shape);
    const out = await T.randAugment(same, { seed: 4, prob: 1 }).data();
    const distinct = new Set(Array.from({ length: 12 }, (_, i) => Array.from(out.subarray(i * 784, (i + 1) * 784)).join()));
    expect(distinct.size).toBeGreaterThan(8);
  });

  it('bad input is explained', () => {
    expect(() => T.randAugment(T.zeros([2, 28, 28]))).toThrow(/expects a float32 image batch \[B, C, H, W\], got .*\[2, 28, 28\]/);
    expect(() => T.randAugment(T.zeros([1, 1, 4, 4]), { op: 'blur' as T.AugmentOpName })).toThrow(/unknown op 'blur'/);
    expect(() => T.randAugment(T.zeros([1, 1, 4, 4]), { magnitude: 12 })).toThrow(/magnitude 12 must be in \[0, 10\]/);
    const p = T.parameter([0, 0, 0, 0], [1, 1, 2, 2]);
    expect(() => T.padCrop(p)).toThrow(/requires grad; augmentation takes data/);
  });
});

describe('Mixup, CutMix, soft targets, random erasing', () => {
  for (const [mixupAlpha, cutmixAlpha, switchProb] of [
    [0.8, 0, 0.5],
    [0, 1, 0.5],
    [0.2, 1, 0.5],
    [2.5, 0.3, 0.5],
  ] as const) {
    it(`mixup ${mixupAlpha} / cutmix ${cutmixAlpha}: parameters, images and targets match the reference`, async () => {
      const shape = [6, 3, 17, 23];
      const { t, nd } = images(shape, 31);
      const labels = T.tensor([0, 3, 9, 1, 1, 4], [6], { dtype: 'int32' });
      for (let seed = 0; seed < 6; seed++) {
        const opts = { mixupAlpha, cutmixAlpha, switchProb, prob: 1 };
        const u = T.rand([MIX_UNIFORMS], { seed });
        const params = T.mixParams(u, 17, 23, opts);
        const ref = R.mixParams(await u.data(), 17, 23, opts);
        expectClose(await params.data(), ref, { atol: 1e-5, rtol: 1e-5 }, `params seed ${seed}`);
        expectClose(await T.mixApply(t, params).data(), R.mixApply(nd, ref).data, POINT, `images seed ${seed}`);
        const targets = T.softTargets(labels, 10, { mix: params, labelSmoothing: 0.1 });
        const refTargets = R.softTargets([0, 3, 9, 1, 1, 4], 10, ref[0]!, { smoothing: 0.1, visible: null, softMin: 0, softPower: 2 });
        expectClose(await targets.data(), refTargets.data, { atol: 1e-6, rtol: 0 }, `targets seed ${seed}`);
        const sums = await T.sum(targets, 1).data();
        for (const s of sums) expect(s).toBeCloseTo(1, 5);
        if (ref[1] === 2) {
          // CutMix: the label weight is the share of pixels that stayed the image's own.
          const [lam, , y0, y1, x0, x1] = Array.from(ref);
          expect(1 - ((y1! - y0!) * (x1! - x0!)) / (17 * 23)).toBeCloseTo(lam!, 6);
          const mixed = await T.mixApply(t, params).data();
          const own = await t.data();
          let kept = 0;
          for (let i = 0; i < 17 * 23; i++) kept += mixed[i] === own[i] ? 1 : 0;
          expect(kept / (17 * 23)).toBeGreaterThanOrEqual(lam! - 1e-9);
        }
      }
    });
  }

  it('λ follows Beta(α, α): mean ½ and variance 1/(4(2α+1)) over 400 batches', async () => {
    for (const alpha of [0.4, 2]) {
      const lams: number[] = [];
      for (let seed = 0; seed < 400; seed++) {
        const u = T.rand([MIX_UNIFORMS], { seed: 1000 + seed });
        lams.push((await T.mixParams(u, 8, 8, { mixupAlpha: alpha }).data())[0]!);
        u.dispose();
      }
      const mean = lams.reduce((a, b) => a + b, 0) / lams.length;
      const variance = lams.reduce((a, b) => a + (b - mean) ** 2, 0) / lams.length;
      const expected = 1 / (4 * (2 * alpha + 1));
      // Standard error of the mean over 400 draws is √(var/400) ≤ 0.02; 3 of them: 0.06.
      expect(Math.abs(mean - 0.5)).toBeLessThan(0.06);
      expect(Math.abs(variance - expected) / expected).toBeLessThan(0.25);
    }
  });

  it('soft augmentation: confidence falls with the hidden fraction', async () => {
    const { t } = images([8, 1, 28, 28], 40);
    const labels = T.tensor([0, 1, 2, 3, 4, 5, 6, 7], [8], { dtype: 'int32' });
    const { theta } = T.padCrop(t, { pad: 10, seed: 3 });
    const targets = T.softTargets(labels, 10, { theta, softMin: 0, softPower: 2 });
    const visible = Array.from({ length: 8 }, (_, i) => 0);
    const th = await theta.data();
    for (let i = 0; i < 8; i++) visible[i] = th[i * 8 + 6]!;
    const ref = R.softTargets([0, 1, 2, 3, 4, 5, 6, 7], 10, 1, { smoothing: 0, visible, softMin: 0, softPower: 2 });
    const got = await targets.data();
    expectClose(got, ref.data, { atol: 1e-6, rtol: 0 }, 'soft targets');
    for (let i = 0; i < 8; i++) {
      const p = 1 - (1 - visible[i]!) ** 2;
      expect(got[i * 10 + i]).toBeCloseTo(p + (1 - p) / 10, 5);
    }
    expect(visible.some((v) => v < 0.8)).toBe(true);
  });

  it('random erasing: boxes and images match the reference; about `prob` of images are erased', async () => {
    const shape = [64, 3, 17, 23];
    const { t, nd } = images(shape, 50);
    const opts = { prob: 0.5, area: [0.02, 1 / 3] as [number, number], ratio: [0.3, 1 / 0.3] as [number, number] };
    const u = T.rand([64, ERASE_UNIFORMS], { seed: 6 });
    const boxes = T.eraseParams(u, 64, 17, 23, opts);
    const ref = R.eraseParams(await u.data(), 64, 17, 23, opts);
    expectClose(await boxes.data(), ref, { atol: 0, rtol: 0 }, 'boxes');
    const noise = T.randn(shape, { seed: 1 });
    expectClose(await T.eraseApply(t, boxes, noise).data(), R.eraseApply(nd, ref, await noise.data()).data, POINT, 'erased');
    let erased = 0;
    for (let b = 0; b < 64; b++) {
      const [h, w] = [ref[b * 4 + 2]!, ref[b * 4 + 3]!];
      if (h * w > 0) {
        erased++;
        expect((h * w) / (17 * 23)).toBeLessThan(0.45);
      }
    }
    // Binomial(64, ½): 32 ± 4; 3.5 standard deviations either side.
    expect(erased).toBeGreaterThan(18);
    expect(erased).toBeLessThan(46);
  });

  it('augmentFinish (normalise, erase, mix in one pass) equals the three steps of the reference', async () => {
    const shape = [6, 3, 17, 23];
    const { t, nd } = images(shape, 70);
    const mean = [0.4, 0.5, 0.6];
    const std = [0.2, 0.25, 0.3];
    const uErase = T.rand([6, ERASE_UNIFORMS], { seed: 3 });
    const eraseOpts = { prob: 0.7, area: [0.02, 1 / 3] as [number, number], ratio: [0.3, 1 / 0.3] as [number, number] };
    const boxes = T.eraseParams(uErase, 6, 17, 23, eraseOpts);
    const noise = T.randn(shape, { seed: 4 });
    const noiseRef = RandomRef.normal(6 * 3 * 17 * 23, 4, 0);
    expectClose(await noise.data(), noiseRef, { atol: 1e-5, rtol: 1e-5 }, 'randn');
    for (const [mixupAlpha, cutmixAlpha] of [[0.8, 0], [0, 1]]) {
      const uMix = T.rand([MIX_UNIFORMS], { seed: 5 });
      const mixOpts = { mixupAlpha: mixupAlpha!, cutmixAlpha: cutmixAlpha!, switchProb: 0.5, prob: 1 };
      const params = T.mixParams(uMix, 17, 23, mixOpts);
      const got = await T.augmentFinish(t, { mean, std, erase: { boxes, seed: 4 }, mix: params }).data();
      const normalized = { data: nd.data.map((v, i) => (v - mean[Math.floor(i / 391) % 3]!) / std[Math.floor(i / 391) % 3]!), shape };
      const erased = R.eraseApply(normalized, await boxes.data(), await noise.data());
      const ref = R.mixApply(erased, R.mixParams(await uMix.data(), 17, 23, mixOpts));
      // (x - mean) / std in f32 against float64: values up to ~5, a few ulps; the erase noise is
      // f32 Box–Muller (log, cos of f32 arguments) against float64: 1e-5 as in the randn test.
      expectClose(got, ref.data, { atol: 1e-5, rtol: 1e-5 }, `finish mixup ${mixupAlpha} cutmix ${cutmixAlpha}`);
    }
    const plain = await T.augmentFinish(t, { mean, std }).data();
    expect(plain[0]).toBeCloseTo((nd.data[0]! - 0.4) / 0.2, 5);
  });

  it('a long augmentation loop does not grow the live-buffer count', async () => {
    const { t } = images([8, 1, 28, 28], 60);
    const labels = T.tensor([0, 1, 2, 3, 4, 5, 6, 7], [8], { dtype: 'int32' });
    const run = () =>
      T.scope(() => {
        const { images: cropped, theta } = T.padCrop(t, { pad: 4 });
        const ra = T.randAugment(cropped);
        const { images: mixed, targets } = T.mixBatch(ra, labels, 10, { mixupAlpha: 0.8, cutmixAlpha: 1, theta });
        return [T.randomErasing(mixed).images, targets];
      });
    for (const r of run()) r.dispose();
    const before = T.liveBuffers();
    for (let i = 0; i < 50; i++) for (const r of run()) r.dispose();
    await T.sync();
    expect(T.liveBuffers()).toBe(before);
  });
});

describe("DINO's photometric augmentation: jitter, grayscale, blur, solarize", () => {
  const DINO = { jitterProb: 0.8, brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1, grayProb: 0.2, blurProb: 0.5, blurSigma: [0.1, 2] as [number, number], solarizeProb: 0.2 };
  // The grey mean sums up to 31·37 f32 values (relative error ~1e-6 over values ≤ 1); the blur
  // sums at most 13² weighted taps whose weights come from f32 exp (relative 1e-6 each): 2e-5.
  const COLOR = { atol: 2e-5, rtol: 0 };

  for (const shape of [[6, 1, 28, 28], [5, 3, 17, 23], [3, 3, 31, 37], [4, 1, 1, 1]]) {
    it(`${JSON.stringify(shape)}: parameters and images match the reference`, async () => {
      const [B] = shape as [number];
      const { t, nd } = images(shape, 8);
      const u = T.rand([B, COLOR_UNIFORMS], { seed: 13 });
      const prm = T.colorParams(t, u, DINO);
      const ref = R.colorParams(nd, await u.data(), DINO);
      expectClose(await prm.data(), ref, { atol: 1e-5, rtol: 1e-6 }, 'color params');
      expectClose(await T.colorApply(t, prm).data(), R.colorApply(nd, ref).data, COLOR, 'colored images');
    });
  }

  it('every branch is taken somewhere in a batch of 256', async () => {
    const { t } = images([256, 3, 8, 8], 9);
    const p = await T.randomColor(t, { ...DINO, seed: 3 }).params.data();
    const col = (k: number) => Array.from({ length: 256 }, (_, b) => p[b * COLOR_PARAMS + k]!);
    expect(new Set(col(3)).size).toBe(25); // no jitter and all 24 orders of the four steps
    for (const k of [5, 6, 7]) expect(col(k).some((v) => v === 0) && col(k).some((v) => v > 0)).toBe(true);
    expect(col(8).some((v) => v < -0.05) && col(8).some((v) => v > 0.05) && col(8).every((v) => Math.abs(v) <= 0.1)).toBe(true);
  });

  it('hue: a rotation of the colour wheel as torchvision adjust_hue, identity on grey', async () => {
    const hueOnly = (shifts: number[]) => T.tensor(shifts.flatMap((h) => [1, 1, 1, 0, 0, 0, 0, 0, h]), [shifts.length, COLOR_PARAMS]);
    // Pixels (one per image, channels planar): red, a brown (0.8, 0.4, 0.2), a grey, red again.
    const rgb = T.tensor([1, 0, 0, 0.8, 0.4, 0.2, 0.3, 0.3, 0.3, 1, 0, 0], [4, 3, 1, 1]);
    const got = await T.colorApply(rgb, hueOnly([0.5, 0.1, 0.25, -1 / 3])).data();
    // Red + half a turn is cyan; the brown's hue 1/18 + 0.1 gives (v, t, p) with s = 0.75, f = 14/15;
    // grey has no hue; red − a third is blue.
    expectClose(got, [0, 1, 1, 0.8, 0.8 * (1 - 0.75 / 15), 0.2, 0.3, 0.3, 0.3, 0, 0, 1], POINT, 'hue shifts');
    const back = await T.colorApply(T.colorApply(rgb, hueOnly([0.37, 0.37, 0.37, 0.37])), hueOnly([-0.37, -0.37, -0.37, -0.37])).data();
    expectClose(back, await rgb.data(), POINT, 'a shift and its inverse');
    const one = images([2, 1, 5, 5], 4);
    expectClose(await T.colorApply(one.t, hueOnly([0.3, -0.2])).data(), await one.t.data(), { atol: 0, rtol: 0 }, 'one channel');
    expect(() => T.randomColor(rgb, { hue: 0.6 })).toThrow(/hue/);
  });

  it('known values: brightness scales and clamps, solarize inverts bright levels, a blur keeps a flat image', async () => {
    const x = T.tensor([0.2, 0.5, 0.8, 0.6], [1, 1, 2, 2]);
    // jitter with brightness factor 1.4 only (order 0 first, contrast and saturation factors 1).
    const bright = T.tensor([1.4, 1, 1, 0, 0, 0, 0, 0, 0], [1, COLOR_PARAMS]);
    expectClose(await T.colorApply(x, bright).data(), [0.28, 0.7, 1, 0.84], POINT, 'brightness');
    const sol = T.tensor([1, 1, 1, -1, 0, 0, 0, 1, 0], [1, COLOR_PARAMS]);
    expectClose(await T.colorApply(x, sol).data(), [0.2, 0.5, 0.2, 0.4], POINT, 'solarize');
    const flat = T.full([2, 3, 9, 7], 0.375);
    const blur = T.tensor(Array.from({ length: 2 }, () => [1, 1, 1, -1, 0, 0, 2.5, 0, 0]).flat(), [2, COLOR_PARAMS]);
    expectClose(await T.colorApply(flat, blur).data(), new Float32Array(2 * 3 * 63).fill(0.375), { atol: 1e-6, rtol: 0 }, 'flat blur');
    // Contrast 0 replaces the image by its grey mean; grayscale makes the channels equal.
    const rgb = images([1, 3, 4, 4], 2);
    const greyP = T.tensor([1, 0, 1, 0, 0.5, 1, 0, 0, 0], [1, COLOR_PARAMS]);
    expectClose(await T.colorApply(rgb.t, greyP).data(), new Float32Array(48).fill(0.5), POINT, 'contrast 0');
    expect(() => T.colorParams(T.zeros([1, 2, 4, 4]), T.zeros([1, COLOR_UNIFORMS]))).toThrow(/1 or 3 channels/);
    expect(() => T.randomColor(x, { blurSigma: [0.1, 9] })).toThrow(/blurSigma/);
  });

  it('probabilities 0 are the identity', async () => {
    const { t } = images([3, 3, 10, 10], 10);
    const y = T.randomColor(t, { jitterProb: 0, grayProb: 0, blurProb: 0, solarizeProb: 0, seed: 1 }).images;
    expectClose(await y.data(), await t.data(), { atol: 0, rtol: 0 }, 'identity');
  });
});
