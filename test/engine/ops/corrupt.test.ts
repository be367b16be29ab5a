import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../../engine/index.js';
import { corruptUniforms } from '../../../engine/ops/corrupt.js';
import * as R from '../../../engine/reference/corrupt.js';
import { expectClose, rng } from '../../helpers.js';

beforeAll(async () => {
  await T.init();
});

// Positions for zoom are computed in f32 from coordinates below 32 (≈ 4e-6 each, slope ≤ 1 per
// pixel) and the noise is f32 Box–Muller (relative 1e-6 on |z| ≤ 6, times a std ≤ 0.15): 3e-5.
const TOL = { atol: 3e-5, rtol: 0 };

function images(shape: number[], seed: number): { t: T.Tensor; data: Float64Array } {
  const r = rng(seed);
  const data = Float64Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => Math.floor(r() * 256) / 255);
  return { t: T.tensor(Float32Array.from(data), shape), data };
}

describe('corruptions (ImageNet-C style)', () => {
  for (const kind of T.CORRUPTIONS) {
    for (const shape of [[2, 1, 28, 28], [2, 3, 17, 23]]) {
      it(`${kind} ${JSON.stringify(shape)} at severities 1, 3, 5 matches the reference; stronger severities change more`, async () => {
        const { t, data } = images(shape, 9);
        // How much each severity changes a smooth image (on pixel noise, averaging a 2-pixel cell
        // can change more than a 3-pixel one, so pixelate would not be monotone there).
        const [, C, H, W] = shape as [number, number, number, number];
        const smooth = Float64Array.from({ length: data.length }, (_, i) => 0.5 + 0.4 * Math.sin((i % W) / 3 + Math.floor(i / (H * W)) % C) * Math.cos(Math.floor(i / W) % H / 4));
        const change: number[] = [];
        for (const severity of [1, 3, 5]) {
          const y = await T.corrupt(t, kind, severity, { seed: 21 }).data();
          const ref = R.corrupt({ data, shape }, corruptUniforms(shape, kind, severity, { seed: 21, stream: 0 }));
          expectClose(y, ref.data, TOL, `${kind} severity ${severity}`);
          const onSmooth = R.corrupt({ data: smooth, shape }, corruptUniforms(shape, kind, severity, { seed: 21, stream: 0 }));
          change.push(onSmooth.data.reduce((a, v, i) => a + Math.abs(v - smooth[i]!), 0) / data.length);
        }
        expect(change[0]!).toBeGreaterThan(0);
        expect(change[2]!).toBeGreaterThan(change[0]!);
      });
    }
  }

  it('a loop over every corruption and severity does not grow the live-buffer count', async () => {
    const { t } = images([4, 3, 17, 23], 11);
    const before = T.liveBuffers();
    for (let i = 0; i < 3; i++) {
      for (const kind of T.CORRUPTIONS) for (let s = 1; s <= 5; s++) T.corrupt(t, kind, s).dispose();
    }
    await T.sync();
    expect(T.liveBuffers()).toBe(before);
  });

  it('the same seed repeats the noise; bad input is explained', async () => {
    const { t } = images([2, 1, 28, 28], 3);
    const a = await T.corrupt(t, 'gaussian_noise', 3, { seed: 5 }).data();
    const b = await T.corrupt(t, 'gaussian_noise', 3, { seed: 5 }).data();
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(() => T.corrupt(t, 'fog' as T.Corruption, 1)).toThrow(/unknown corruption 'fog'/);
    expect(() => T.corrupt(t, 'contrast', 6)).toThrow(/severity 6 must be an integer from 1 to 5/);
  });
});
