// Batch-level augmentation: Mixup / CutMix (timm's Mixup, mode "batch": one λ per batch, each
// image mixed with its mirror in the batch, b ↔ B-1-b), the soft targets that go with them
// (label smoothing, and soft augmentation's visibility-dependent confidence), and random erasing
// (timm's RandomErasing, mode "pixel": a box of normal noise per image, in normalised space).
// λ ~ Beta(α, α) is sampled on the GPU as Ga/(Ga+Gb) with Marsaglia–Tsang gamma variates
// (α < 1 boosted by U^(1/α)); 10 attempts each, every attempt accepted with probability ≥ 0.95,
// so the fallback (the gamma's mode) is reached with probability < 1e-13.
import { memo, kernel, type KernelSource, MAIN_1D } from './common.js';
import { AUGMENT_WG, IMAGE_DIMS, MAIN_PIXELS, mainPixels, PIXEL_FN, THETA_SIZE } from './augment-geometry.js';
import { WGSL_PHILOX } from './random.js';

/** Uniforms per batch consumed by mix_params. */
export const MIX_UNIFORMS = 72;
/** mix_params output: λ (weight of the image's own label), mode (0 none, 1 mixup, 2 cutmix),
 * CutMix box rows [y0, y1) and columns [x0, x1). */
export const MIX_PARAMS = 8;
/** Uniforms per image consumed by erase_params: apply coin, 10 × (area, ratio, top, left). */
export const ERASE_UNIFORMS = 44;

const WGSL_GAMMA = /* wgsl */ `
fn gamma_(alpha: f32, base: u32, boost: u32) -> f32 {
  let a = select(alpha, alpha + 1.0, alpha < 1.0);
  let d = a - 1.0 / 3.0;
  let c = 1.0 / sqrt(9.0 * d);
  var g = d;
  for (var k = 0u; k < 10u; k++) {
    let i = base + 3u * k;
    let z = sqrt(-2.0 * log(max(u[i], 1e-7))) * cos(6.283185307179586 * u[i + 1u]);
    let w = 1.0 + c * z;
    let v = w * w * w;
    if (v > 0.0 && log(max(u[i + 2u], 1e-30)) < 0.5 * z * z + d - d * v + d * log(v)) {
      g = d * v;
      break;
    }
  }
  if (alpha < 1.0) { g = g * pow(u[boost], 1.0 / alpha); }
  return g;
}
`;

export const mixParamsKernel = memo(function mixParamsKernel(): KernelSource {
  return kernel({
    name: 'mix_params',
    uniforms: [
      { name: 'H', type: 'u32' },
      { name: 'W', type: 'u32' },
      { name: 'mixupAlpha', type: 'f32' },
      { name: 'cutmixAlpha', type: 'f32' },
      { name: 'switchProb', type: 'f32' },
      { name: 'prob', type: 'f32' },
    ],
    buffers: [
      { name: 'u', access: 'read', type: 'f32' },
      { name: 'params', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: 1,
    body: `${WGSL_GAMMA}
${MAIN_1D} {
  var cutmix = P.cutmixAlpha > 0.0 && (P.mixupAlpha <= 0.0 || u[1] < P.switchProb);
  let alpha = select(P.mixupAlpha, P.cutmixAlpha, cutmix);
  var lam = 1.0;
  if (u[0] < P.prob && alpha > 0.0) {
    let ga = gamma_(alpha, 2u, 64u);
    let gb = gamma_(alpha, 32u, 65u);
    lam = select(0.5, ga / (ga + gb), ga + gb > 0.0);
  }
  var y0 = 0.0; var y1 = 0.0; var x0 = 0.0; var x1 = 0.0;
  var mode = select(1.0, 2.0, cutmix);
  if (lam >= 1.0) { mode = 0.0; lam = 1.0; }
  else if (cutmix) {
    let Hf = f32(P.H);
    let Wf = f32(P.W);
    let ratio = sqrt(1.0 - lam);
    let ch = floor(Hf * ratio);
    let cw = floor(Wf * ratio);
    let cy = min(floor(u[62] * Hf), Hf - 1.0);
    let cx = min(floor(u[63] * Wf), Wf - 1.0);
    y0 = clamp(cy - floor(ch / 2.0), 0.0, Hf);
    y1 = clamp(cy + floor(ch / 2.0), 0.0, Hf);
    x0 = clamp(cx - floor(cw / 2.0), 0.0, Wf);
    x1 = clamp(cx + floor(cw / 2.0), 0.0, Wf);
    // The label weight follows the box actually pasted, after clipping (timm's correct_lam).
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (Hf * Wf);
  }
  params[0] = lam;
  params[1] = mode;
  params[2] = y0;
  params[3] = y1;
  params[4] = x0;
  params[5] = x1;
  params[6] = 0.0;
  params[7] = 0.0;
}`,
  });
});

export const mixApplyKernel = memo(function mixApplyKernel(): KernelSource {
  return kernel({
    name: 'mix_apply',
    uniforms: [
      ...IMAGE_DIMS,
    ],
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'params', access: 'read', type: 'f32' },
      { name: 'y', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: AUGMENT_WG,
    body: `${PIXEL_FN} {
  let mirror = t + (P.B - 1u - 2u * b) * P.C * P.H * P.W;
  let lam = params[0];
  let mode = u32(params[1]);
  var out = x[t];
  if (mode == 1u) {
    out = lam * x[t] + (1.0 - lam) * x[mirror];
  } else if (mode == 2u) {
    let xf = f32(xi);
    let yf = f32(yi);
    if (yf >= params[2] && yf < params[3] && xf >= params[4] && xf < params[5]) { out = x[mirror]; }
  }
  y[t] = out;
}
${MAIN_PIXELS}`,
  });
});

/** Soft targets [B, K]: λ·target(b) + (1-λ)·target(B-1-b), where target(i) is the label-smoothed
 * one-hot of image i softened by its visible fraction v (theta[i, 6]) when soft augmentation is
 * on: confidence p = 1 - (1 - pMin)·(1 - v)^power, target = p·onehot + (1 - p)/K. */
export const softTargetsKernel = memo(function softTargetsKernel(): KernelSource {
  return kernel({
    name: 'soft_targets',
    uniforms: [
      { name: 'n', type: 'u32' },
      { name: 'B', type: 'u32' },
      { name: 'K', type: 'u32' },
      { name: 'smoothing', type: 'f32' },
      { name: 'soft', type: 'u32' },
      { name: 'softMin', type: 'f32' },
      { name: 'softPower', type: 'f32' },
    ],
    buffers: [
      { name: 'labels', access: 'read', type: 'i32' },
      { name: 'params', access: 'read', type: 'f32' },
      { name: 'theta', access: 'read', type: 'f32' },
      { name: 'targets', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: AUGMENT_WG,
    body: `
fn target_(i: u32, k: u32) -> f32 {
  let K = f32(P.K);
  var onehot = P.smoothing / K;
  if (u32(labels[i]) == k) { onehot += 1.0 - P.smoothing; }
  if (P.soft == 0u) { return onehot; }
  let v = clamp(theta[i * ${THETA_SIZE}u + 6u], 0.0, 1.0);
  let p = 1.0 - (1.0 - P.softMin) * pow(1.0 - v, P.softPower);
  return p * onehot + (1.0 - p) / K;
}
${MAIN_1D} {
  let t = global_index(wid, lid, nwg);
  if (t >= P.n) { return; }
  let b = t / P.K;
  let k = t % P.K;
  let lam = params[0];
  targets[t] = lam * target_(b, k) + (1.0 - lam) * target_(P.B - 1u - b, k);
}`,
  });
});

export const eraseParamsKernel = memo(function eraseParamsKernel(): KernelSource {
  return kernel({
    name: 'erase_params',
    uniforms: [
      { name: 'B', type: 'u32' },
      { name: 'H', type: 'u32' },
      { name: 'W', type: 'u32' },
      { name: 'prob', type: 'f32' },
      { name: 'areaLo', type: 'f32' },
      { name: 'areaHi', type: 'f32' },
      { name: 'logRatioLo', type: 'f32' },
      { name: 'logRatioHi', type: 'f32' },
    ],
    buffers: [
      { name: 'u', access: 'read', type: 'f32' },
      { name: 'boxes', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: AUGMENT_WG,
    body: `${MAIN_1D} {
  let b = global_index(wid, lid, nwg);
  if (b >= P.B) { return; }
  let ub = b * ${ERASE_UNIFORMS}u;
  let o = b * 4u;
  boxes[o] = 0.0; boxes[o + 1u] = 0.0; boxes[o + 2u] = 0.0; boxes[o + 3u] = 0.0;
  if (u[ub] >= P.prob) { return; }
  let Hf = f32(P.H);
  let Wf = f32(P.W);
  for (var k = 0u; k < 10u; k++) {
    let i = ub + 1u + 4u * k;
    let tarea = mix(P.areaLo, P.areaHi, u[i]) * Hf * Wf;
    let ratio = exp(mix(P.logRatioLo, P.logRatioHi, u[i + 1u]));
    let h = round(sqrt(tarea * ratio));
    let w = round(sqrt(tarea / ratio));
    if (w < Wf && h < Hf) {
      boxes[o] = min(floor(u[i + 2u] * (Hf - h + 1.0)), Hf - h);
      boxes[o + 1u] = min(floor(u[i + 3u] * (Wf - w + 1.0)), Wf - w);
      boxes[o + 2u] = h;
      boxes[o + 3u] = w;
      return;
    }
  }
}`,
  });
});

export const eraseApplyKernel = memo(function eraseApplyKernel(): KernelSource {
  return kernel({
    name: 'erase_apply',
    uniforms: [
      ...IMAGE_DIMS,
    ],
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'boxes', access: 'read', type: 'f32' },
      { name: 'noise', access: 'read', type: 'f32' },
      { name: 'y', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: AUGMENT_WG,
    body: `${PIXEL_FN} {
  let xf = f32(xi);
  let yf = f32(yi);
  let o = b * 4u;
  let inside = yf >= boxes[o] && yf < boxes[o] + boxes[o + 2u] && xf >= boxes[o + 1u] && xf < boxes[o + 1u] + boxes[o + 3u];
  y[t] = select(x[t], noise[t], inside);
}
${MAIN_PIXELS}`,
  });
});

/** The tail of a training pipeline in one pass: per-channel normalisation, random erasing (its
 * N(0, 1) noise drawn in place, equal to randn with the same key) and
 * Mixup / CutMix (each optional by flag), reading the mirror image's pixel through the same
 * normalise-and-erase. Equal to normalise → erase_apply → mix_apply, with one read and one write
 * of the batch instead of four. Up to 4 channels. */
export const augmentFinishKernel = memo(function augmentFinishKernel(): KernelSource {
  return kernel({
    name: 'augment_finish',
    uniforms: [
      ...IMAGE_DIMS,
      { name: 'erase', type: 'u32' },
      { name: 'mix', type: 'u32' },
      { name: 'seed', type: 'u32' },
      { name: 'stream', type: 'u32' },
      ...[0, 1, 2, 3].flatMap((k) => [{ name: `mean${k}`, type: 'f32' as const }, { name: `invStd${k}`, type: 'f32' as const }]),
    ],
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'boxes', access: 'read', type: 'f32' },
      { name: 'params', access: 'read', type: 'f32' },
      { name: 'y', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: AUGMENT_WG,
    body: `${WGSL_PHILOX}
// Element t of randn(shape, key): the same Philox words and Box–Muller pairs as random_normal,
// computed only for the pixels a box erases.
fn noise_(t: u32) -> f32 {
  let r = philox_(vec4<u32>(t / 4u, 0u, 0u, 0u), vec2<u32>(P.seed, P.stream));
  let e = t % 4u;
  let pair = select(vec2<u32>(r.x, r.y), vec2<u32>(r.z, r.w), e >= 2u);
  let rad = sqrt(-2.0 * log(to_unit_(pair.x) + 1.0 / 16777216.0));
  let ang = 6.283185307179586 * to_unit_(pair.y);
  return select(rad * cos(ang), rad * sin(ang), e % 2u == 1u);
}
// box = (top, left, bottom, right); an empty box when erasing is off.
fn normalized_(t: u32, xf: f32, yf: f32, box: vec4<f32>, mean: f32, inv: f32) -> f32 {
  if (yf >= box.x && yf < box.z && xf >= box.y && xf < box.w) { return noise_(t); }
  return (x[t] - mean) * inv;
}
fn box_(b: u32) -> vec4<f32> {
  if (P.erase == 0u) { return vec4<f32>(0.0); }
  let o = b * 4u;
  return vec4<f32>(boxes[o], boxes[o + 1u], boxes[o] + boxes[o + 2u], boxes[o + 1u] + boxes[o + 3u]);
}
fn pixel_(t: u32, xi: u32, yi: u32, plane: u32, b: u32, c: u32, mean: f32, inv: f32, own: vec4<f32>, other: vec4<f32>, mirror: u32, lam: f32, mode: u32, cut: vec4<f32>) {
  let xf = f32(xi);
  let yf = f32(yi);
  var out = normalized_(t, xf, yf, own, mean, inv);
  if (mode == 1u) {
    out = lam * out + (1.0 - lam) * normalized_(t + mirror, xf, yf, other, mean, inv);
  } else if (mode == 2u && yf >= cut.x && yf < cut.y && xf >= cut.z && xf < cut.w) {
    out = normalized_(t + mirror, xf, yf, other, mean, inv);
  }
  y[t] = out;
}
${mainPixels(`let mean = select(select(select(P.mean0, P.mean1, c == 1u), P.mean2, c == 2u), P.mean3, c == 3u);
  let inv = select(select(select(P.invStd0, P.invStd1, c == 1u), P.invStd2, c == 2u), P.invStd3, c == 3u);
  let own = box_(b);
  let other = box_(P.B - 1u - b);
  // Offset to the mirror image's pixel (wrapping u32 arithmetic when it lies before this one).
  let mirror = (P.B - 1u - 2u * b) * P.C * P.H * P.W;
  var lam = 1.0;
  var mode = 0u;
  var cut = vec4<f32>(0.0);
  if (P.mix != 0u) {
    lam = params[0];
    mode = u32(params[1]);
    cut = vec4<f32>(params[2], params[3], params[4], params[5]);
  }`, ', mean, inv, own, other, mirror, lam, mode, cut')}`,
  });
});
