import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../../engine/index.js';
import jpegJs from 'jpeg-js';
import { corruptUniforms, jpegUniforms } from '../../../engine/ops/corrupt.js';
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
  // JPEG rounds: its own tests below.
  for (const kind of T.CORRUPTIONS.filter((k) => k !== 'jpeg_compression')) {
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

// A smooth image with a little pixel noise, on the 8-bit grid ([C, H, W] planes).
function photo(C: number, H: number, W: number, seed: number, noise = 0.05): Float64Array {
  const r = rng(seed);
  const out = new Float64Array(C * H * W);
  for (let c = 0; c < C; c++) for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    const v = 0.5 + 0.35 * Math.sin(x / 3 + c) * Math.cos(y / 4) + noise * (r() - 0.5);
    out[(c * H + y) * W + x] = Math.round(Math.min(Math.max(v, 0), 1) * 255) / 255;
  }
  return out;
}

describe('jpeg_compression', () => {
  // The kernel rounds in float32 what the reference rounds in float64: quantised coefficients
  // F/Q and 8-bit levels. Their float32 sums (8 terms of at most 1,024, twice per DCT) err by
  // ~1e-5 of a step typically (1e-3 at worst), so a block is compared exactly where the reference
  // kept every rounded quantity at least 1e-4 of a step from a boundary; nearer blocks may round
  // one the other way (exact ties happen: Cb = 0.5·b + 128 when r = g = 0). Measured on these
  // images: no block with a margin of 1e-5 or more differs.
  const MARGIN = 1e-4;
  for (const shape of [[4, 1, 28, 28], [3, 3, 17, 23], [2, 2, 9, 8]]) {
    it(`${JSON.stringify(shape)} at severities 1–5 matches the reference block by block, on the 8-bit grid`, async () => {
      const { t, data } = images(shape, 13);
      const [B, C, H, W] = shape as [number, number, number, number];
      const [bx, by] = [Math.ceil(W / 8), Math.ceil(H / 8)];
      const smooth = Float64Array.from(Array.from({ length: B }, () => [...photo(C, H, W, 5)]).flat());
      const change: number[] = [];
      for (let severity = 1; severity <= 5; severity++) {
        const y = await T.corrupt(t, 'jpeg_compression', severity).data();
        const ref = R.jpeg({ data, shape }, jpegUniforms(shape, severity));
        let checked = 0;
        for (let b = 0; b < B; b++) {
          for (let k = 0; k < bx * by; k++) {
            if (ref.margins[b * bx * by + k]! < MARGIN) continue;
            checked++;
            for (let c = 0; c < C; c++) for (let yy = 0; yy < 8; yy++) for (let xx = 0; xx < 8; xx++) {
              const [X, Y] = [(k % bx) * 8 + xx, Math.floor(k / bx) * 8 + yy];
              if (X >= W || Y >= H) continue;
              const i = ((b * C + c) * H + Y) * W + X;
              if (Math.abs(y[i]! - ref.data[i]!) > 1e-6) throw new Error(`severity ${severity}: image ${b} channel ${c} pixel (${X}, ${Y}) is ${y[i]! * 255}/255, reference ${ref.data[i]! * 255}/255 (block margin ${ref.margins[b * bx * by + k]})`);
            }
          }
        }
        // Most blocks are compared (the rest is not a loophole for a wrong kernel).
        expect(checked).toBeGreaterThanOrEqual(0.6 * B * bx * by);
        for (const v of y) expect(Math.abs(v * 255 - Math.round(v * 255))).toBeLessThan(1e-4);
        const onSmooth = R.jpeg({ data: smooth, shape }, jpegUniforms(shape, severity));
        change.push(onSmooth.data.reduce((a, v, i) => a + Math.abs(v - smooth[i]!), 0) / data.length);
      }
      expect(change[0]!).toBeGreaterThan(0);
      expect(change[4]!).toBeGreaterThan(change[0]!);
    });
  }

  // jpeg-js encodes and decodes real baseline JPEG files (4:4:4, a float DCT; its decoder
  // truncates RGB to integers where ours rounds): an independent check of the tables, their
  // quality scaling, the DCT's normalisation, edge repetition and the colour transform.
  for (const [C, H, W] of [[1, 32, 32], [1, 27, 30], [3, 24, 16]] as const) {
    it(`the reference matches jpeg-js's encode → decode at qualities 80 … 40 (${C}×${H}×${W})`, () => {
      const data = photo(C, H, W, 17);
      const shape = [1, C, H, W];
      for (let severity = 1; severity <= 5; severity++) {
        const ref = R.jpeg({ data, shape }, jpegUniforms(shape, severity));
        const rgba = Buffer.alloc(H * W * 4, 255);
        for (let i = 0; i < H * W; i++) for (let k = 0; k < 3; k++) rgba[i * 4 + k] = Math.round(data[(C === 3 ? k : 0) * H * W + i]! * 255);
        const quality = T.SEVERITY.jpeg_compression[severity - 1]!;
        const decoded = jpegJs.decode(jpegJs.encode({ data: rgba, width: W, height: H }, quality).data, { useTArray: true }).data;
        let [sum, within, changed] = [0, 0, 0];
        for (let i = 0; i < H * W; i++) for (let k = 0; k < C; k++) {
          const d = Math.abs(ref.data[k * H * W + i]! * 255 - decoded[i * 4 + k]!);
          sum += d;
          if (d <= 1) within++;
          changed += Math.abs(data[k * H * W + i]! * 255 - decoded[i * 4 + k]!);
        }
        const n = C * H * W;
        // Its float DCT rounds a coefficient the other way now and then, which moves the pixels
        // of that block by up to a quarter of the step (5–25 levels at high frequencies). Measured
        // with four image seeds × five qualities, grey: mean 0.05–0.23 levels, 92–100% of pixels
        // within a level; RGB, where the decoder's truncation adds half a level on average:
        // mean 0.52–0.92, 82–99% within a level.
        if (C === 1) {
          expect(within / n, `quality ${quality}`).toBeGreaterThanOrEqual(0.9);
          expect(sum / n, `quality ${quality}`).toBeLessThan(0.3);
        } else {
          expect(within / n, `quality ${quality}`).toBeGreaterThanOrEqual(0.75);
          expect(sum / n, `quality ${quality}`).toBeLessThan(1);
        }
        // …and JPEG does change the image by more than that (measured 2.6–5.0 levels on average).
        expect(changed / n).toBeGreaterThan(2);
      }
    });
  }
});
