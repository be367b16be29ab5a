// Data augmentation on GPU batches [B, C, H, W] of float images in [0, 1] (random erasing works
// in normalised space, after normalisation, as timm's). Every random parameter comes from the
// GPU Philox generator — an explicit seed, or the global generator's next stream — as a tensor
// of per-image uniforms, so a batch is reproducible and the CPU never waits for the GPU.
// These are data ops: they do not record gradients (an input that requires grad is refused).
import { AUGMENT_WG, affineSampleKernel, GEOMETRY_MODES, GEOMETRY_UNIFORMS, geometryParamsKernel, pixelGrid, THETA_SIZE } from '../../kernels/augment-geometry.js';
import { COLOR_PARAMS, COLOR_UNIFORMS, colorApplyKernel, colorParamsKernel, MAX_BLUR_RADIUS } from '../../kernels/augment-color.js';
import { augmentFinishKernel, ERASE_UNIFORMS, eraseApplyKernel, eraseParamsKernel, MIX_PARAMS, MIX_UNIFORMS, mixApplyKernel, mixParamsKernel, softTargetsKernel } from '../../kernels/augment-mix.js';
import { AUGMENT_OPS, type AugmentOpName, augmentOpKernel, augmentStatsKernel, OP_UNIFORMS, STATS_SIZE } from '../../kernels/augment-ops.js';
import { grid1d } from '../../kernels/common.js';
import { rt } from '../dispatch.js';
import { shapeStr, Tensor } from '../tensor.js';
import { full } from './creation.js';
import { nextKey, rand, randn } from './random.js';

export { AUGMENT_OPS, type AugmentOpName };


function checkImages(x: Tensor, what: string): [number, number, number, number] {
  if (x.rank !== 4 || x.dtype !== 'float32') throw new Error(`${what}: expects a float32 image batch [B, C, H, W], got ${x.describe()}`);
  if (x.requiresGrad) throw new Error(`${what}: ${x.describe()} requires grad; augmentation takes data, not parameters (detach() it first)`);
  return x.shape as [number, number, number, number];
}

function checkUniforms(u: Tensor, shape: number[], what: string): void {
  if (u.dtype !== 'float32' || u.size !== shape.reduce((a, b) => a * b, 1)) {
    throw new Error(`${what}: uniforms ${u.describe()} must hold ${shapeStr(shape)} float32 values in [0, 1)`);
  }
}

function checkRange(name: string, range: readonly [number, number], lo: number, hi: number, what: string): void {
  if (!(range[0] >= lo && range[1] <= hi && range[0] <= range[1])) {
    throw new Error(`${what}: ${name} [${range.join(', ')}] must satisfy ${lo} <= low <= high <= ${hi}`);
  }
}

// ---------------------------------------------------------------- geometry

export interface GeometryOptions {
  mode: keyof typeof GEOMETRY_MODES;
  /** Random resized crop: fraction of the image area (torchvision default [0.08, 1]). */
  scale?: [number, number];
  /** Random resized crop: aspect ratio w/h range (default [3/4, 4/3]). */
  ratio?: [number, number];
  /** Pad-and-crop: padding in pixels on every side. */
  pad?: number;
  /** Probability of a horizontal flip (default 0.5). */
  flipProb?: number;
  /** Output [height, width] (default the input's): a crop resized to it, as torchvision's
   * RandomResizedCrop(size). */
  size?: [number, number];
}

function outputSize(size: [number, number] | undefined, H: number, W: number, what: string): [number, number] {
  const [oh, ow] = size ?? [H, W];
  if (!(Number.isInteger(oh) && Number.isInteger(ow) && oh > 0 && ow > 0)) throw new Error(`${what}: size [${size?.join(', ')}] must be two positive integers (output height, width)`);
  return [oh, ow];
}

/** Per-image affine maps [B, 8] from uniforms [B, GEOMETRY_UNIFORMS]: (t0..t5, visible fraction,
 * flipped); output pixel (x, y) reads input (t0·x + t1·y + t2, t3·x + t4·y + t5). */
export function geometryParams(u: Tensor, B: number, H: number, W: number, opts: GeometryOptions): Tensor {
  const what = `geometryParams(${opts.mode})`;
  checkUniforms(u, [B, GEOMETRY_UNIFORMS], what);
  const scale = opts.scale ?? [0.08, 1];
  const ratio = opts.ratio ?? [3 / 4, 4 / 3];
  const pad = opts.pad ?? 4;
  const flipProb = opts.flipProb ?? 0.5;
  checkRange('scale', scale, Number.MIN_VALUE, 1, what);
  checkRange('ratio', ratio, Number.MIN_VALUE, Infinity, what);
  checkRange('flipProb', [flipProb, flipProb], 0, 1, what);
  if (!Number.isInteger(pad) || pad < 0) throw new Error(`${what}: pad ${pad} must be a non-negative integer`);
  const [outH, outW] = outputSize(opts.size, H, W, what);
  if (opts.mode !== 'resizedCrop' && (outH !== H || outW !== W)) throw new Error(`${what}: only resizedCrop changes the size; got size [${outH}, ${outW}] for ${H}×${W} images`);
  const theta = Tensor.empty([B, THETA_SIZE], 'float32', 'geometry params');
  const k = geometryParamsKernel();
  if (B > 0) {
    rt().run({
      source: k,
      uniforms: { B, H, W, mode: GEOMETRY_MODES[opts.mode], scaleLo: scale[0], scaleHi: scale[1], logRatioLo: Math.log(ratio[0]), logRatioHi: Math.log(ratio[1]), pad, flipProb, outH, outW },
      buffers: [u.buffer, theta.buffer],
      grid: grid1d(B, k.workgroupSize),
      label: `geometry_params ${opts.mode} B${B}`,
    });
  }
  return theta;
}

/** Bilinear resampling of every image through its affine map theta [B, 8] into images of
 * `size` (default the input's); `fill` outside. */
export function affineSample(x: Tensor, theta: Tensor, fill = 0, size?: [number, number]): Tensor {
  const [B, C, H, W] = checkImages(x, 'affineSample');
  if (theta.rank !== 2 || theta.shape[0] !== B || theta.shape[1] !== THETA_SIZE) {
    throw new Error(`affineSample: theta ${theta.describe()} must be [${B}, ${THETA_SIZE}] for images ${x.describe()}`);
  }
  const [outH, outW] = outputSize(size, H, W, 'affineSample');
  const y = Tensor.empty([B, C, outH, outW], 'float32', 'affineSample');
  const k = affineSampleKernel();
  if (y.size > 0) {
    rt().run({ source: k, uniforms: { B, C, H, W, fill, outH, outW }, buffers: [x.buffer, theta.buffer, y.buffer], grid: pixelGrid(B * C, outH, outW), flops: 8 * y.size, bytes: 20 * y.size, label: `affine_sample ${shapeStr(x.shape)}→${outH}x${outW}` });
  }
  return y;
}

export interface RandomGeometryOptions extends Omit<GeometryOptions, 'mode'> {
  seed?: number;
  fill?: number;
}

function randomGeometry(x: Tensor, mode: GeometryOptions['mode'], opts: RandomGeometryOptions): { images: Tensor; theta: Tensor } {
  const [B, , H, W] = checkImages(x, mode);
  const u = rand([B, GEOMETRY_UNIFORMS], { seed: opts.seed });
  const theta = geometryParams(u, B, H, W, { ...opts, mode });
  u.dispose();
  return { images: affineSample(x, theta, opts.fill ?? 0, opts.size), theta };
}

/** torchvision's RandomResizedCrop (bilinear, without antialiasing; output `size`, default the
 * input's) and a random flip. */
export const randomResizedCrop = (x: Tensor, opts: RandomGeometryOptions = {}) => randomGeometry(x, 'resizedCrop', opts);
/** Pad by `pad` pixels of `fill`, crop back to H × W at a random offset; random flip. */
export const padCrop = (x: Tensor, opts: RandomGeometryOptions = {}) => randomGeometry(x, 'padCrop', opts);
/** Horizontal flip with probability `flipProb`. */
export const randomFlip = (x: Tensor, opts: RandomGeometryOptions = {}) => randomGeometry(x, 'flipOnly', opts);

// ---------------------------------------------------------------- DINO's photometric augmentation

export interface ColorOptions {
  /** Probability of ColorJitter (DINO: 0.8). */
  jitterProb?: number;
  /** Jitter strengths: factors drawn from [max(0, 1 − s), 1 + s] (DINO: 0.4, 0.4, 0.2). */
  brightness?: number;
  contrast?: number;
  saturation?: number;
  /** Hue shift drawn from [−hue, hue] of a turn, hue ≤ 0.5 (DINO: 0.1; a no-op on one channel). */
  hue?: number;
  /** Probability of RandomGrayscale (DINO: 0.2; a no-op on one channel). */
  grayProb?: number;
  /** Probability of a Gaussian blur and its sigma range in pixels (DINO: [0.1, 2] at 224 px). */
  blurProb?: number;
  blurSigma?: [number, number];
  /** Probability of solarization (DINO: 0.2 on the second global view). */
  solarizeProb?: number;
}

/** Per-image photometric parameters [B, COLOR_PARAMS] from uniforms [B, COLOR_UNIFORMS] (see
 * kernels/augment-color.ts for the layout). */
export function colorParams(x: Tensor, u: Tensor, opts: ColorOptions = {}): Tensor {
  const [B, C, H, W] = checkImages(x, 'colorParams');
  if (C !== 1 && C !== 3) throw new Error(`colorParams: ${x.describe()} must have 1 or 3 channels`);
  checkUniforms(u, [B, COLOR_UNIFORMS], 'colorParams');
  const o = { jitterProb: 0.8, brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1, grayProb: 0.2, blurProb: 0, solarizeProb: 0, ...opts };
  const sigma = opts.blurSigma ?? [0.1, 2];
  for (const name of ['jitterProb', 'grayProb', 'blurProb', 'solarizeProb'] as const) checkRange(name, [o[name], o[name]], 0, 1, 'colorParams');
  for (const name of ['brightness', 'contrast', 'saturation'] as const) checkRange(name, [o[name], o[name]], 0, Infinity, 'colorParams');
  checkRange('hue', [o.hue, o.hue], 0, 0.5, 'colorParams');
  checkRange('blurSigma', sigma, Number.MIN_VALUE, MAX_BLUR_RADIUS / 3, 'colorParams');
  const prm = Tensor.empty([B, COLOR_PARAMS], 'float32', 'color params');
  const k = colorParamsKernel();
  if (B > 0) {
    rt().run({
      source: k,
      uniforms: { B, C, H, W, jitterProb: o.jitterProb, brightness: o.brightness, contrast: o.contrast, saturation: o.saturation, hue: o.hue, grayProb: o.grayProb, blurProb: o.blurProb, sigmaLo: sigma[0], sigmaHi: sigma[1], solarizeProb: o.solarizeProb },
      buffers: [x.buffer, u.buffer, prm.buffer],
      grid: grid1d(B, k.workgroupSize),
      label: `color_params ${shapeStr(x.shape)}`,
    });
  }
  return prm;
}

/** Applies colorParams: jitter (brightness, contrast, saturation, hue), grayscale, blur, solarize. */
export function colorApply(x: Tensor, params: Tensor): Tensor {
  const [B, C, H, W] = checkImages(x, 'colorApply');
  if (params.size !== B * COLOR_PARAMS) throw new Error(`colorApply: params ${params.describe()} must be [${B}, ${COLOR_PARAMS}] for ${x.describe()}`);
  const y = Tensor.empty(x.shape, 'float32', 'colorApply');
  if (y.size > 0) {
    rt().run({ source: colorApplyKernel(), uniforms: { B, C, H, W }, buffers: [x.buffer, params.buffer, y.buffer], grid: pixelGrid(B * C, H, W), bytes: 8 * y.size, label: `color_apply ${shapeStr(x.shape)}` });
  }
  return y;
}

/** DINO's photometric pipeline with random per-image parameters (explicit `seed`, or the global
 * generator's next stream). */
export function randomColor(x: Tensor, opts: ColorOptions & { seed?: number } = {}): { images: Tensor; params: Tensor } {
  const [B] = checkImages(x, 'randomColor');
  const u = rand([B, COLOR_UNIFORMS], { seed: opts.seed });
  const params = colorParams(x, u, opts);
  u.dispose();
  return { images: colorApply(x, params), params };
}

// ---------------------------------------------------------------- RandAugment / TrivialAugment

export type AugmentPolicy = 'randaugment' | 'trivialaugment';

export interface AugmentLayerOptions {
  policy?: AugmentPolicy;
  /** RandAugment magnitude out of 10 (timm's default recipe: 9). */
  magnitude?: number;
  /** Gaussian noise on the magnitude (timm's mstd, default 0.5). */
  magnitudeStd?: number;
  /** Probability that an image's op is applied (timm: 0.5; TrivialAugment: 1). */
  prob?: number;
  fill?: number;
  /** Apply this op to every image (per-op tests and grids) instead of drawing one. */
  op?: AugmentOpName;
  /** The ops images draw from (default: all of AUGMENT_OPS). */
  ops?: readonly AugmentOpName[];
}

/** The ops of AugMix (Hendrycks et al. 2020): those that do not overlap ImageNet-C corruptions. */
export const AUGMIX_OPS: readonly AugmentOpName[] = ['autocontrast', 'equalize', 'posterize', 'rotate', 'solarize', 'shear_x', 'shear_y', 'translate_x', 'translate_y'];

/** The per-policy strength of each op at level 1 (timm inc1 and torchvision TrivialAugmentWide). */
export function policyRanges(policy: AugmentPolicy, H: number, W: number) {
  return policy === 'randaugment'
    ? { rotateMax: 30, shearMax: 0.3, translateMaxX: 0.45 * W, translateMaxY: 0.45 * H, enhanceMax: 0.9, posterizeMax: 4, solarizeAddMax: 110 / 255 }
    : { rotateMax: 135, shearMax: 0.99, translateMaxX: 32, translateMaxY: 32, enhanceMax: 0.99, posterizeMax: 6, solarizeAddMax: 110 / 255 };
}

/** The uniform values the op kernels take (shared with the CPU reference). */
export function augmentLayerUniforms(x: readonly number[], layer: number, layers: number, opts: AugmentLayerOptions): Record<string, number> {
  const [B, C, H, W] = x as [number, number, number, number];
  const policy = opts.policy ?? 'randaugment';
  const forceOp = opts.op === undefined ? -1 : AUGMENT_OPS.indexOf(opts.op);
  if (opts.op !== undefined && forceOp < 0) throw new Error(`augment: unknown op '${opts.op}'; ops: ${AUGMENT_OPS.join(', ')}`);
  let opMask = 0;
  for (const name of opts.ops ?? AUGMENT_OPS) {
    const i = AUGMENT_OPS.indexOf(name);
    if (i < 0) throw new Error(`augment: unknown op '${name}'; ops: ${AUGMENT_OPS.join(', ')}`);
    opMask |= 1 << i;
  }
  if (opMask === 0) throw new Error('augment: the op list is empty');
  const magnitude = opts.magnitude ?? 9;
  if (!(magnitude >= 0 && magnitude <= 10)) throw new Error(`augment: magnitude ${magnitude} must be in [0, 10]`);
  return {
    B,
    C,
    H,
    W,
    layer,
    layers,
    policy: policy === 'randaugment' ? 0 : 1,
    magnitude,
    magnitudeStd: opts.magnitudeStd ?? (policy === 'randaugment' ? 0.5 : 0),
    prob: opts.prob ?? (policy === 'randaugment' ? 0.5 : 1),
    fill: opts.fill ?? 0,
    forceOp,
    opMask,
    ...policyRanges(policy, H, W),
  };
}

/** One layer of per-image ops; u holds [B, layers, OP_UNIFORMS] uniforms for all layers. */
export function augmentLayer(x: Tensor, u: Tensor, layer: number, layers: number, opts: AugmentLayerOptions = {}): Tensor {
  const [B, C] = checkImages(x, 'augmentLayer');
  checkUniforms(u, [B, layers, OP_UNIFORMS], 'augmentLayer');
  if (!(layer >= 0 && layer < layers)) throw new Error(`augmentLayer: layer ${layer} outside [0, ${layers})`);
  const uniforms = augmentLayerUniforms(x.shape, layer, layers, opts);
  const y = Tensor.empty(x.shape, 'float32', 'augment');
  if (y.size === 0) return y;
  const stats = Tensor.empty([B, C, STATS_SIZE], 'float32', 'augment stats');
  const ks = augmentStatsKernel();
  rt().run({ source: ks, uniforms, buffers: [x.buffer, u.buffer, stats.buffer], grid: grid1d(B * C, AUGMENT_WG), bytes: 4 * x.size, label: `augment_stats ${shapeStr(x.shape)}` });
  const k = augmentOpKernel();
  rt().run({ source: k, uniforms, buffers: [x.buffer, u.buffer, stats.buffer, y.buffer], grid: pixelGrid(B * C, x.shape[2]!, x.shape[3]!), bytes: 8 * y.size, label: `augment_op ${shapeStr(x.shape)}` });
  stats.dispose();
  return y;
}

export interface RandAugmentOptions extends AugmentLayerOptions {
  /** Ops per image (RandAugment's N; TrivialAugment uses 1). */
  layers?: number;
  seed?: number;
}

/** RandAugment (N layers, magnitude M with noise) or TrivialAugment-wide (one op, random level). */
export function randAugment(x: Tensor, opts: RandAugmentOptions = {}): Tensor {
  const [B] = checkImages(x, 'randAugment');
  const layers = opts.layers ?? (opts.policy === 'trivialaugment' ? 1 : 2);
  if (!Number.isInteger(layers) || layers < 1) throw new Error(`randAugment: layers ${layers} must be a positive integer`);
  const u = rand([B, layers, OP_UNIFORMS], { seed: opts.seed });
  let y = x;
  for (let l = 0; l < layers; l++) {
    const next = augmentLayer(y, u, l, layers, opts);
    if (y !== x) y.dispose();
    y = next;
  }
  u.dispose();
  return y;
}

// ---------------------------------------------------------------- Mixup / CutMix, targets, erasing

export interface MixOptions {
  /** Mixup Beta(α, α); 0 disables (timm default 0.8 when used). */
  mixupAlpha?: number;
  /** CutMix Beta(α, α); 0 disables (timm default 1.0 when used). */
  cutmixAlpha?: number;
  /** With both on: probability of CutMix for the batch (default 0.5). */
  switchProb?: number;
  /** Probability that the batch is mixed at all (default 1). */
  prob?: number;
  seed?: number;
}

/** Batch parameters [8]: λ, mode (0 none, 1 mixup, 2 cutmix), CutMix box y0, y1, x0, x1. */
export function mixParams(u: Tensor, H: number, W: number, opts: MixOptions): Tensor {
  checkUniforms(u, [MIX_UNIFORMS], 'mixParams');
  const mixupAlpha = opts.mixupAlpha ?? 0;
  const cutmixAlpha = opts.cutmixAlpha ?? 0;
  if (!(mixupAlpha >= 0 && cutmixAlpha >= 0)) throw new Error(`mix: alphas must be >= 0 (mixup ${mixupAlpha}, cutmix ${cutmixAlpha})`);
  const params = Tensor.empty([MIX_PARAMS], 'float32', 'mix params');
  rt().run({
    source: mixParamsKernel(),
    uniforms: { H, W, mixupAlpha, cutmixAlpha, switchProb: opts.switchProb ?? 0.5, prob: opts.prob ?? 1 },
    buffers: [u.buffer, params.buffer],
    grid: [1, 1, 1],
    label: 'mix_params',
  });
  return params;
}

/** Mixes every image with its mirror in the batch (b ↔ B-1-b) by the batch parameters. */
export function mixApply(x: Tensor, params: Tensor): Tensor {
  const [B, C, H, W] = checkImages(x, 'mixApply');
  if (params.size !== MIX_PARAMS) throw new Error(`mixApply: params ${params.describe()} must be the [${MIX_PARAMS}] output of mixParams`);
  const y = Tensor.empty(x.shape, 'float32', 'mix');
  if (y.size > 0) rt().run({ source: mixApplyKernel(), uniforms: { B, C, H, W }, buffers: [x.buffer, params.buffer, y.buffer], grid: pixelGrid(B * C, H, W), bytes: 12 * y.size, label: `mix_apply ${shapeStr(x.shape)}` });
  return y;
}

export interface SoftTargetOptions {
  /** Mix parameters from mixParams (none: λ = 1). */
  mix?: Tensor | null;
  /** Geometry parameters whose visible fraction drives soft augmentation (none: off). */
  theta?: Tensor | null;
  labelSmoothing?: number;
  /** Soft augmentation: confidence at zero visibility (default 0) and the power k (default 2). */
  softMin?: number;
  softPower?: number;
}

/** Soft targets [B, K] for integer labels [B]: label smoothing, mixing and soft augmentation. */
export function softTargets(labels: Tensor, classes: number, opts: SoftTargetOptions = {}): Tensor {
  if (labels.rank !== 1 || labels.dtype !== 'int32') throw new Error(`softTargets: labels ${labels.describe()} must be int32 [B]`);
  const B = labels.shape[0]!;
  const smoothing = opts.labelSmoothing ?? 0;
  if (!(smoothing >= 0 && smoothing < 1)) throw new Error(`softTargets: label smoothing ${smoothing} must be in [0, 1)`);
  if (opts.theta && (opts.theta.rank !== 2 || opts.theta.shape[0] !== B || opts.theta.shape[1] !== THETA_SIZE)) {
    throw new Error(`softTargets: theta ${opts.theta.describe()} must be [${B}, ${THETA_SIZE}]`);
  }
  const lambdaOne = opts.mix ?? mixNone();
  const theta = opts.theta ?? lambdaOne;
  const targets = Tensor.empty([B, classes], 'float32', 'soft targets');
  if (targets.size > 0) {
    rt().run({
      source: softTargetsKernel(),
      uniforms: { n: targets.size, B, K: classes, smoothing, soft: opts.theta ? 1 : 0, softMin: opts.softMin ?? 0, softPower: opts.softPower ?? 2 },
      buffers: [labels.buffer, lambdaOne.buffer, theta.buffer, targets.buffer],
      grid: grid1d(targets.size, AUGMENT_WG),
      label: `soft_targets [${B}, ${classes}]`,
    });
  }
  if (!opts.mix) lambdaOne.dispose();
  return targets;
}

// Only λ = params[0] = 1 is read when nothing is mixed.
const mixNone = (): Tensor => full([MIX_PARAMS], 1);

/** Mixup / CutMix of a batch with soft targets; returns the mixed images, targets and params. */
export function mixBatch(x: Tensor, labels: Tensor, classes: number, opts: MixOptions & Omit<SoftTargetOptions, 'mix'>): { images: Tensor; targets: Tensor; params: Tensor } {
  const [, , H, W] = checkImages(x, 'mixBatch');
  const u = rand([MIX_UNIFORMS], { seed: opts.seed });
  const params = mixParams(u, H, W, opts);
  u.dispose();
  return { images: mixApply(x, params), targets: softTargets(labels, classes, { ...opts, mix: params }), params };
}

export interface ErasingOptions {
  /** Probability per image (timm default 0.25 in its recipes). */
  prob?: number;
  /** Area fraction range (default [0.02, 1/3]) and aspect ratio range (default [0.3, 1/0.3]). */
  area?: [number, number];
  ratio?: [number, number];
  seed?: number;
}

/** Per-image erase boxes [B, 4] (top, left, h, w; h = 0: none) from uniforms [B, ERASE_UNIFORMS]. */
export function eraseParams(u: Tensor, B: number, H: number, W: number, opts: ErasingOptions): Tensor {
  checkUniforms(u, [B, ERASE_UNIFORMS], 'eraseParams');
  const area = opts.area ?? [0.02, 1 / 3];
  const ratio = opts.ratio ?? [0.3, 1 / 0.3];
  checkRange('area', area, 0, 1, 'randomErasing');
  checkRange('ratio', ratio, Number.MIN_VALUE, Infinity, 'randomErasing');
  const boxes = Tensor.empty([B, 4], 'float32', 'erase boxes');
  if (B > 0) {
    rt().run({
      source: eraseParamsKernel(),
      uniforms: { B, H, W, prob: opts.prob ?? 0.25, areaLo: area[0], areaHi: area[1], logRatioLo: Math.log(ratio[0]), logRatioHi: Math.log(ratio[1]) },
      buffers: [u.buffer, boxes.buffer],
      grid: grid1d(B, AUGMENT_WG),
      label: `erase_params B${B}`,
    });
  }
  return boxes;
}

/** Replaces each image's box with the matching values of `noise` (same shape as x). */
export function eraseApply(x: Tensor, boxes: Tensor, noise: Tensor): Tensor {
  const [B, C, H, W] = checkImages(x, 'eraseApply');
  if (boxes.rank !== 2 || boxes.shape[0] !== B || boxes.shape[1] !== 4) throw new Error(`eraseApply: boxes ${boxes.describe()} must be [${B}, 4]`);
  if (noise.size !== x.size) throw new Error(`eraseApply: noise ${noise.describe()} must match ${x.describe()}`);
  const y = Tensor.empty(x.shape, 'float32', 'erase');
  if (y.size > 0) rt().run({ source: eraseApplyKernel(), uniforms: { B, C, H, W }, buffers: [x.buffer, boxes.buffer, noise.buffer, y.buffer], grid: pixelGrid(B * C, H, W), bytes: 12 * y.size, label: `erase_apply ${shapeStr(x.shape)}` });
  return y;
}

/** timm's RandomErasing (mode "pixel"): per image with probability `prob`, a box of N(0, 1). */
export function randomErasing(x: Tensor, opts: ErasingOptions = {}): { images: Tensor; boxes: Tensor } {
  const [B, , H, W] = checkImages(x, 'randomErasing');
  const u = rand([B, ERASE_UNIFORMS], { seed: opts.seed });
  const boxes = eraseParams(u, B, H, W, opts);
  u.dispose();
  const noise = randn(x.shape, { seed: opts.seed === undefined ? undefined : opts.seed + 1 });
  const images = eraseApply(x, boxes, noise);
  noise.dispose();
  return { images, boxes };
}

export interface FinishOptions {
  mean: readonly number[];
  std: readonly number[];
  /** Erase boxes [B, 4] (eraseParams); they show randn(x.shape, { seed }) (default: the global
   * generator's next stream). */
  erase?: { boxes: Tensor; seed?: number } | null;
  /** Mix parameters (mixParams). */
  mix?: Tensor | null;
}

/** normalise → eraseApply → mixApply in one pass over the batch (the training pipeline's tail). */
export function augmentFinish(x: Tensor, o: FinishOptions): Tensor {
  const [B, C, H, W] = checkImages(x, 'augmentFinish');
  if (C > 4 || o.mean.length !== C || o.std.length !== C) throw new Error(`augmentFinish: ${o.mean.length} means and ${o.std.length} stds for ${x.describe()} (one per channel, at most 4)`);
  if (o.erase && o.erase.boxes.size !== B * 4) throw new Error(`augmentFinish: erase boxes ${o.erase.boxes.describe()} must be [${B}, 4] for ${x.describe()}`);
  if (o.mix && o.mix.size !== MIX_PARAMS) throw new Error(`augmentFinish: mix params ${o.mix.describe()} must be the [${MIX_PARAMS}] output of mixParams`);
  const key = o.erase ? nextKey(o.erase.seed) : { seed: 0, stream: 0 };
  const uniforms: Record<string, number> = { B, C, H, W, erase: o.erase ? 1 : 0, mix: o.mix ? 1 : 0, seed: key.seed, stream: key.stream };
  for (let k = 0; k < 4; k++) {
    uniforms[`mean${k}`] = o.mean[k] ?? 0;
    uniforms[`invStd${k}`] = 1 / (o.std[k] ?? 1);
  }
  const y = Tensor.empty(x.shape, 'float32', 'augmentFinish');
  // Unused inputs bind x in their place (read-only, never read when their flag is off).
  if (y.size > 0) {
    rt().run({
      source: augmentFinishKernel(),
      uniforms,
      buffers: [x.buffer, o.erase?.boxes.buffer ?? x.buffer, o.mix?.buffer ?? x.buffer, y.buffer],
      grid: pixelGrid(B * C, H, W),
      bytes: 8 * y.size,
      label: `augment_finish ${shapeStr(x.shape)}`,
    });
  }
  return y;
}
