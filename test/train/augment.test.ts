import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../engine/index.js';
import { AUGMENT_DEFAULTS, augMix, augmentBatch } from '../../train/augment.js';

beforeAll(async () => {
  await T.init();
});

const norm = { mean: [0.5], std: [0.25], labelSmoothing: 0 };

function batch(B: number): { x: T.Tensor; labels: T.Tensor } {
  const x = T.tensor(Float32Array.from({ length: B * 784 }, (_, i) => ((i * 2654435761) >>> 24) / 255), [B, 1, 28, 28]);
  return { x, labels: T.tensor(Int32Array.from({ length: B }, (_, i) => i % 10), [B]) };
}

describe('training pipelines', () => {
  it('AugMix stays in [0, 1], changes the images, and repeats for the same seed', async () => {
    const { x } = batch(6);
    T.manualSeed(3);
    const a = await augMix(x).data();
    T.manualSeed(3);
    const b = await augMix(x).data();
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(Math.min(...a)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...a)).toBeLessThanOrEqual(1);
    const orig = await x.data();
    let changed = 0;
    for (let i = 0; i < a.length; i++) if (Math.abs(a[i]! - orig[i]!) > 1e-6) changed++;
    expect(changed / a.length).toBeGreaterThan(0.2);
  });

  it('pipelines return normalised views and the right targets', async () => {
    const { x, labels } = batch(8);
    const plain = augmentBatch(x, labels, 10, { ...AUGMENT_DEFAULTS, aug: 'basic' }, norm);
    expect(plain.views).toBe(1);
    expect(plain.targets).toBeNull();
    expect(plain.images.shape).toEqual([8, 1, 28, 28]);
    // Normalised with mean 0.5, std 0.25: values span [-2, 2].
    const v = await plain.images.data();
    expect(Math.min(...v)).toBeGreaterThanOrEqual(-2 - 1e-6);
    expect(Math.max(...v)).toBeLessThanOrEqual(2 + 1e-6);
    const mix = augmentBatch(x, labels, 10, { ...AUGMENT_DEFAULTS, aug: 'randaugment', mixup: 0.8, cutmix: 1, softAug: true }, { ...norm, labelSmoothing: 0.1 });
    expect(mix.targets!.shape).toEqual([8, 10]);
    for (const s of await T.sum(mix.targets!, 1).data()) expect(s).toBeCloseTo(1, 5);
    const jsd = augmentBatch(x, labels, 10, { ...AUGMENT_DEFAULTS, aug: 'augmix' }, norm);
    expect(jsd.views).toBe(3);
    expect(jsd.images.shape).toEqual([24, 1, 28, 28]);
    expect(() => augmentBatch(x, labels, 10, { ...AUGMENT_DEFAULTS, aug: 'augmix', mixup: 0.8 }, norm)).toThrow(/AugMix with Mixup\/CutMix is not supported/);
  });
});
