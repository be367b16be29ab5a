// Training-time augmentation pipelines by name, all on the GPU batch:
//   crop (pad-and-crop + flip) → image ops (RandAugment / TrivialAugment / AugMix) → normalise →
//   random erasing → Mixup / CutMix and soft targets (label smoothing, soft augmentation).
// Images enter in [0, 1]; what leaves is normalised, ready for the model.
import * as T from '../engine/index.js';
import { ERASE_UNIFORMS, MIX_UNIFORMS } from '../kernels/augment-mix.js';

export const AUG_PIPELINES = ['none', 'basic', 'randaugment', 'trivialaugment', 'augmix'] as const;
export type AugPipeline = (typeof AUG_PIPELINES)[number];

export interface AugmentConfig {
  aug: AugPipeline;
  /** Mixup and CutMix Beta(α, α) (0: off). */
  mixup: number;
  cutmix: number;
  /** Random erasing probability per image (0: off). */
  randomErasing: number;
  /** Soft augmentation: targets lose confidence as the crop hides the image, to
   * p = 1 − (1 − softAugMin)·(1 − visible)^softAugPower. */
  softAug: boolean;
  softAugMin: number;
  softAugPower: number;
  /** Pad-and-crop padding in pixels (default: 4, or a quarter of the image with soft
   * augmentation, whose point is crops that hide a lot). */
  cropPad?: number;
  /** RandAugment ops per image and magnitude (timm's rand-m9-n2-mstd0.5). */
  raLayers: number;
  raMagnitude: number;
  /** AugMix: chains per view and Jensen–Shannon weight (Hendrycks et al.: 3 chains, λ = 12). */
  augmixWidth: number;
  jsdWeight: number;
}

export const AUGMENT_DEFAULTS: AugmentConfig = {
  aug: 'none',
  mixup: 0,
  cutmix: 0,
  randomErasing: 0,
  softAug: false,
  softAugMin: 0,
  softAugPower: 2,
  raLayers: 2,
  raMagnitude: 9,
  augmixWidth: 3,
  jsdWeight: 12,
};

/** True when the pipeline changes anything (otherwise batches go to the model unchanged). */
export function augmenting(a: AugmentConfig): boolean {
  return a.aug !== 'none' || a.mixup > 0 || a.cutmix > 0 || a.randomErasing > 0 || a.softAug;
}

export function checkAugmentConfig(a: AugmentConfig): void {
  if (!AUG_PIPELINES.includes(a.aug)) throw new Error(`--aug ${a.aug}: pipelines are ${AUG_PIPELINES.join(', ')}`);
  if (!(a.mixup >= 0 && a.cutmix >= 0)) throw new Error(`--mixup ${a.mixup} / --cutmix ${a.cutmix}: Beta α must be >= 0`);
  if (!(a.randomErasing >= 0 && a.randomErasing <= 1)) throw new Error(`--random-erasing ${a.randomErasing}: a probability in [0, 1]`);
  if (!(a.softAugMin >= 0 && a.softAugMin <= 1 && a.softAugPower > 0)) throw new Error(`--soft-aug-min ${a.softAugMin} must be in [0, 1] and --soft-aug-power ${a.softAugPower} > 0`);
  if (a.softAug && a.aug === 'none') throw new Error('--soft-aug needs a cropping pipeline (--aug basic, randaugment, trivialaugment or augmix)');
}

export interface AugmentedBatch {
  /** Normalised images [V·B, C, H, W]: V = 1, or 3 for AugMix (clean, aug1, aug2). */
  images: T.Tensor;
  /** Soft targets [B, K] when mixing or soft augmentation is on, else null (use the labels). */
  targets: T.Tensor | null;
  /** Number of views stacked in `images` (3 for AugMix's Jensen–Shannon loss). */
  views: number;
}

/** AugMix (Hendrycks et al. 2020): `width` chains of 1–3 random ops, mixed with Dirichlet(1)
 * weights, then blended with the original by m ~ Beta(1, 1). Weights are drawn per image on the
 * GPU from uniforms (Dirichlet(1) = normalised −log U; Beta(1, 1) = U). */
export function augMix(x: T.Tensor, opts: { width?: number; magnitude?: number } = {}): T.Tensor {
  const [B] = x.shape as [number];
  const width = opts.width ?? 3;
  const depthMax = 3;
  return T.scope(() => {
    const w = T.rand([B, width + 2]);
    // Dirichlet(1, …, 1) chain weights from the first `width` uniforms, the blend m from the
    // next, each image's chain depth from the last.
    const e = T.neg(T.log(T.addScalar(T.slice(w, [0, 0], [B, width]), 1e-7)));
    const weights = T.div(e, T.sum(e, 1, { keepdim: true }));
    const m = T.reshape(T.slice(w, [0, width], [B, width + 1]), [B, 1, 1, 1]);
    const depthU = T.reshape(T.slice(w, [0, width + 1], [B, width + 2]), [B, 1, 1, 1]);
    let mixed: T.Tensor | null = null;
    for (let i = 0; i < width; i++) {
      const u = T.rand([B, depthMax, 8]);
      let chain = x;
      for (let d = 0; d < depthMax; d++) {
        const next = T.augmentLayer(chain, u, d, depthMax, { ops: T.AUGMIX_OPS, magnitude: opts.magnitude ?? 3, magnitudeStd: 0, prob: 1 });
        // Depth 1 + ⌊3U⌋: layer d applies where U ≥ d/3.
        chain = d === 0 ? next : T.where(T.lt(depthU, T.full([1], d / depthMax)), chain, next);
      }
      const wi = T.reshape(T.slice(weights, [0, i], [B, i + 1]), [B, 1, 1, 1]);
      mixed = mixed ? T.add(mixed, T.mul(chain, wi)) : T.mul(chain, wi);
    }
    return T.add(T.mul(x, T.addScalar(T.neg(m), 1)), T.mul(mixed!, m));
  });
}

/** Applies the pipeline to a batch of [0, 1] images with integer labels. */
export function augmentBatch(x: T.Tensor, labels: T.Tensor, classes: number, a: AugmentConfig, norm: { mean: readonly number[]; std: readonly number[]; labelSmoothing: number }): AugmentedBatch {
  return T.scope(() => {
    const [, , H] = x.shape as [number, number, number, number];
    let theta: T.Tensor | null = null;
    let images = x;
    if (a.aug !== 'none') {
      const pad = a.cropPad ?? (a.softAug ? Math.round(H / 4) : 4);
      const cropped = T.padCrop(x, { pad, flipProb: 0.5 });
      images = cropped.images;
      theta = cropped.theta;
    }
    let views = 1;
    if (a.aug === 'randaugment') images = T.randAugment(images, { layers: a.raLayers, magnitude: a.raMagnitude });
    else if (a.aug === 'trivialaugment') images = T.randAugment(images, { policy: 'trivialaugment' });
    else if (a.aug === 'augmix') {
      images = T.concat([images, augMix(images, { width: a.augmixWidth }), augMix(images, { width: a.augmixWidth })], 0);
      views = 3;
    }
    const [N, , , W] = images.shape as [number, number, number, number];
    const erase = a.randomErasing > 0 ? { boxes: T.eraseParams(T.rand([N, ERASE_UNIFORMS]), N, H, W, { prob: a.randomErasing }) } : null;
    let targets: T.Tensor | null = null;
    let mix: T.Tensor | null = null;
    if (a.mixup > 0 || a.cutmix > 0) {
      if (views !== 1) throw new Error('AugMix with Mixup/CutMix is not supported: the Jensen–Shannon views would mix differently');
      mix = T.mixParams(T.rand([MIX_UNIFORMS]), H, W, { mixupAlpha: a.mixup, cutmixAlpha: a.cutmix });
      targets = T.softTargets(labels, classes, { mix, theta: a.softAug ? theta : null, labelSmoothing: norm.labelSmoothing, softMin: a.softAugMin, softPower: a.softAugPower });
    } else if (a.softAug) {
      targets = T.softTargets(labels, classes, { theta, labelSmoothing: norm.labelSmoothing, softMin: a.softAugMin, softPower: a.softAugPower });
    }
    // Normalise, erase and mix in one pass (equal to normalizeImages → eraseApply → mixApply).
    images = T.augmentFinish(images, { mean: norm.mean, std: norm.std, erase, mix });
    return { images, targets, views };
  });
}

/** DataAugmentationDINO's three kinds of view, in [0, 1]: global 1 (always blurred), global 2
 * (blurred at 0.1, solarised at 0.2), local (12/28 of the size, blurred at 0.5; scaled back up
 * bilinearly to be shown). The blur's sigma is PIL's 0.1–2 px at 224, scaled to the image. */
function dinoView(x: T.Tensor, kind: number): T.Tensor {
  const [, , H, W] = x.shape as [number, number, number, number];
  const blurSigma: [number, number] = [(0.1 * H) / 224, (2 * H) / 224];
  if (kind < 2) {
    const crop = T.randomResizedCrop(x, { scale: [0.4, 1] }).images;
    return T.randomColor(crop, kind === 0 ? { blurProb: 1, blurSigma } : { blurProb: 0.1, solarizeProb: 0.2, blurSigma }).images;
  }
  const size: [number, number] = [Math.max(1, Math.round((H * 12) / 28)), Math.max(1, Math.round((W * 12) / 28))];
  const local = T.randomColor(T.randomResizedCrop(x, { scale: [0.05, 0.4], size }).images, { blurProb: 0.5, blurSigma }).images;
  return T.randomResizedCrop(local, { scale: [1, 1], ratio: [size[1] / size[0], size[1] / size[0]], flipProb: 0, size: [H, W] }).images;
}

export const GRID_KINDS = ['basic', 'randaugment', 'trivialaugment', 'augmix', 'mixup', 'cutmix', 'erasing', 'crop', 'dino', 'ops', 'corruptions'] as const;
export type GridKind = (typeof GRID_KINDS)[number];

export interface GridOptions {
  kind: GridKind;
  /** [N, C, H, W] images in [0, 1] (one per row) and their row labels. */
  images: T.Tensor;
  labels: string[];
  columns: number;
  seed: number;
  /** RandAugment magnitude for `randaugment` and `ops`. */
  magnitude: number;
  /** Corruption severity (1–5) for `corruptions`. */
  severity: number;
}

/** The images of an augmentation grid: row i holds image i then `columns` augmented versions
 * (kind `ops`: one row per op, applied to every image at the given magnitude). */
export async function augmentGrid(o: GridOptions): Promise<{ columns: string[]; rows: { label: string; cells: Float32Array[] }[] }> {
  const [N, C, H, W] = o.images.shape as [number, number, number, number];
  const per = C * H * W;
  const split = (data: Float32Array | Int32Array) => Array.from({ length: N }, (_, i) => Float32Array.from(data.subarray(i * per, (i + 1) * per)));
  const original = split(await o.images.data());
  if (o.kind === 'ops') {
    const rows = [{ label: 'original', cells: original }];
    for (const op of T.AUGMENT_OPS) {
      T.manualSeed(o.seed);
      const y = T.scope(() => T.randAugment(o.images, { layers: 1, op, prob: 1, magnitude: o.magnitude, magnitudeStd: 0 }));
      rows.push({ label: op, cells: split(await y.data()) });
      y.dispose();
    }
    return { columns: o.labels, rows };
  }
  if (o.kind === 'corruptions') {
    const rows = [{ label: 'original', cells: original }];
    for (const kind of T.CORRUPTIONS) {
      const y = T.corrupt(o.images, kind, o.severity, { seed: o.seed });
      rows.push({ label: kind, cells: split(await y.data()) });
      y.dispose();
    }
    return { columns: o.labels, rows };
  }
  const columns: Float32Array[][] = [];
  for (let c = 0; c < o.columns; c++) {
    T.manualSeed(o.seed * 1000 + c);
    const y = T.scope(() => {
      switch (o.kind) {
        case 'crop': return T.randomResizedCrop(o.images, { scale: [0.35, 1] }).images;
        case 'basic': return T.padCrop(o.images, { pad: 4 }).images;
        case 'randaugment': return T.randAugment(T.padCrop(o.images, { pad: 4 }).images, { magnitude: o.magnitude });
        case 'trivialaugment': return T.randAugment(o.images, { policy: 'trivialaugment' });
        case 'augmix': return augMix(o.images);
        case 'mixup': return T.mixApply(o.images, T.mixParams(T.rand([MIX_UNIFORMS]), H, W, { mixupAlpha: 0.8 }));
        case 'cutmix': return T.mixApply(o.images, T.mixParams(T.rand([MIX_UNIFORMS]), H, W, { cutmixAlpha: 1 }));
        case 'erasing': return T.clamp(T.randomErasing(o.images, { prob: 1 }).images, 0, 1);
        case 'dino': return dinoView(o.images, c % 3);
        default: throw new Error(`augment grid: unknown kind '${o.kind as string}'`);
      }
    });
    columns.push(split(await y.data()));
    y.dispose();
  }
  return {
    columns: ['original', ...columns.map((_, c) => (o.kind === 'dino' ? ['global 1', 'global 2', 'local'][c % 3]! : `${o.kind} ${c + 1}`))],
    rows: o.labels.map((label, i) => ({ label, cells: [original[i]!, ...columns.map((col) => col[i]!)] })),
  };
}
