// DINO's photometric augmentation (facebookresearch/dino DataAugmentationDINO) on [B, C, H, W]
// batches in [0, 1], C = 1 or 3. Two steps, as the geometry:
//   color_params: per-image uniforms → (brightness, contrast, saturation factors, order of the
//     four jitter steps, grey mean the contrast blends towards, grayscale flag, blur sigma,
//     solarize flag, hue shift). ColorJitter applies its steps in a random order (torchvision's
//     randperm(4)), so the mean is that of the image as it stands when contrast comes: one
//     invocation per image loops over its pixels and applies the steps before it.
//   color_apply: per pixel: jitter → grayscale → Gaussian blur (edge pixels repeat, as PIL's) →
//     solarize (PIL's threshold 128: levels ≥ 128/255 become 1 − v).
// Hue follows torchvision's tensor adjust_hue (RGB → HSV, h shifted modulo 1, back), in floats:
// DINO's PIL images shift an 8-bit hue channel instead, so PIL's result is this one quantised.
// A hue shift of exactly 0 is skipped, as ColorJitter skips hue = 0; on one channel it is a no-op.
import { kernel, type KernelSource, MAIN_1D, memo } from './common.js';
import { AUGMENT_WG, IMAGE_DIMS, mainPixels } from './augment-geometry.js';

/** Uniforms per image consumed by color_params: jitter?, brightness, contrast, saturation,
 * order, grayscale?, blur?, sigma, solarize?, hue. */
export const COLOR_UNIFORMS = 10;
/** Floats per image in the parameters: brightness, contrast, saturation factors, order (-1: no
 * jitter), grey mean, grayscale, blur sigma (0: none), solarize, hue shift. */
export const COLOR_PARAMS = 9;
/** The blur's radius in pixels is ceil(3σ), at most this. */
export const MAX_BLUR_RADIUS = 16;

/** The 24 orders of (brightness 0, contrast 1, saturation 2, hue 3) in lexicographic order,
 * indexed by floor(24u). */
export const COLOR_ORDERS: readonly (readonly [number, number, number, number])[] = (() => {
  const perms: [number, number, number, number][] = [];
  for (const a of [0, 1, 2, 3]) for (const b of [0, 1, 2, 3]) for (const c of [0, 1, 2, 3]) {
    if (a !== b && a !== c && b !== c) perms.push([a, b, c, 6 - a - b - c]);
  }
  return perms;
})();

const WGSL_COLOR = /* wgsl */ `
const LUMA = vec3<f32>(0.299, 0.587, 0.114);
const ORDERS = array<vec4<u32>, ${COLOR_ORDERS.length}>(${COLOR_ORDERS.map((o) => `vec4<u32>(${o.join('u, ')}u)`).join(', ')});

fn rgb_at_(base: u32, i: u32) -> vec3<f32> {
  let hw = P.H * P.W;
  if (P.C == 3u) { return vec3<f32>(x[base + i], x[base + hw + i], x[base + 2u * hw + i]); }
  return vec3<f32>(x[base + i]);
}

// torchvision's _rgb2hsv, h shifted by hf modulo 1, _hsv2rgb.
fn shift_hue_(rgb: vec3<f32>, hf: f32) -> vec3<f32> {
  let maxc = max(rgb.x, max(rgb.y, rgb.z));
  let minc = min(rgb.x, min(rgb.y, rgb.z));
  let eqc = maxc == minc;
  let cr = maxc - minc;
  let s = cr / select(maxc, 1.0, eqc);
  let d = (maxc - rgb) / select(cr, 1.0, eqc);
  var h = 4.0 + d.y - d.x;
  if (maxc == rgb.x) { h = d.z - d.y; } else if (maxc == rgb.y) { h = 2.0 + d.x - d.z; }
  h = fract(fract(h / 6.0 + 1.0) + hf);
  let i6 = floor(h * 6.0);
  let f = h * 6.0 - i6;
  let v = maxc;
  let p = clamp(v * (1.0 - s), 0.0, 1.0);
  let q = clamp(v * (1.0 - s * f), 0.0, 1.0);
  let t = clamp(v * (1.0 - s * (1.0 - f)), 0.0, 1.0);
  switch (u32(i6) % 6u) {
    case 0u: { return vec3<f32>(v, t, p); }
    case 1u: { return vec3<f32>(q, v, p); }
    case 2u: { return vec3<f32>(p, v, t); }
    case 3u: { return vec3<f32>(p, q, v); }
    case 4u: { return vec3<f32>(t, p, v); }
    default: { return vec3<f32>(v, p, q); }
  }
}

// One ColorJitter step (torchvision's adjust_*: blend with black, the grey mean, the grey image;
// rotate the hue). f = (brightness, contrast, saturation factors, hue shift).
fn jitter_step_(rgb: vec3<f32>, step: u32, f: vec4<f32>, mean: f32) -> vec3<f32> {
  if (step == 0u) { return clamp(rgb * f.x, vec3<f32>(0.0), vec3<f32>(1.0)); }
  if (step == 1u) { return clamp(f.y * rgb + (1.0 - f.y) * mean, vec3<f32>(0.0), vec3<f32>(1.0)); }
  if (P.C == 1u) { return rgb; }
  if (step == 3u) {
    if (f.w == 0.0) { return rgb; }
    return shift_hue_(rgb, f.w);
  }
  return clamp(f.z * rgb + (1.0 - f.z) * dot(rgb, LUMA), vec3<f32>(0.0), vec3<f32>(1.0));
}
`;

export const colorParamsKernel = memo(function colorParamsKernel(): KernelSource {
  return kernel({
    name: 'color_params',
    uniforms: [
      ...IMAGE_DIMS,
      { name: 'jitterProb', type: 'f32' },
      { name: 'brightness', type: 'f32' },
      { name: 'contrast', type: 'f32' },
      { name: 'saturation', type: 'f32' },
      { name: 'hue', type: 'f32' },
      { name: 'grayProb', type: 'f32' },
      { name: 'blurProb', type: 'f32' },
      { name: 'sigmaLo', type: 'f32' },
      { name: 'sigmaHi', type: 'f32' },
      { name: 'solarizeProb', type: 'f32' },
    ],
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'u', access: 'read', type: 'f32' },
      { name: 'prm', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: AUGMENT_WG,
    body: `${WGSL_COLOR}
${MAIN_1D} {
  let b = global_index(wid, lid, nwg);
  if (b >= P.B) { return; }
  let ub = b * ${COLOR_UNIFORMS}u;
  let o = b * ${COLOR_PARAMS}u;
  let jitter = u[ub] < P.jitterProb;
  // torchvision draws each factor from [max(0, 1 - s), 1 + s], the hue shift from [-hue, hue].
  let f = vec4<f32>(
    mix(max(0.0, 1.0 - P.brightness), 1.0 + P.brightness, u[ub + 1u]),
    mix(max(0.0, 1.0 - P.contrast), 1.0 + P.contrast, u[ub + 2u]),
    mix(max(0.0, 1.0 - P.saturation), 1.0 + P.saturation, u[ub + 3u]),
    mix(-P.hue, P.hue, u[ub + 9u]));
  let order = min(u32(u[ub + 4u] * ${COLOR_ORDERS.length}.0), ${COLOR_ORDERS.length - 1}u);
  var mean = 0.0;
  if (jitter) {
    let hw = P.H * P.W;
    let base = b * P.C * hw;
    let steps = ORDERS[order];
    var total = 0.0;
    for (var i = 0u; i < hw; i++) {
      var rgb = rgb_at_(base, i);
      for (var k = 0u; k < 4u; k++) {
        if (steps[k] == 1u) { break; }
        rgb = jitter_step_(rgb, steps[k], f, 0.0);
      }
      total += dot(rgb, LUMA);
    }
    mean = total / f32(hw);
  }
  prm[o] = f.x;
  prm[o + 1u] = f.y;
  prm[o + 2u] = f.z;
  prm[o + 3u] = select(-1.0, f32(order), jitter);
  prm[o + 4u] = mean;
  prm[o + 5u] = select(0.0, 1.0, u[ub + 5u] < P.grayProb);
  prm[o + 6u] = select(0.0, mix(P.sigmaLo, P.sigmaHi, u[ub + 7u]), u[ub + 6u] < P.blurProb);
  prm[o + 7u] = select(0.0, 1.0, u[ub + 8u] < P.solarizeProb);
  prm[o + 8u] = f.w;
}`,
  });
});

export const colorApplyKernel = memo(function colorApplyKernel(): KernelSource {
  return kernel({
    name: 'color_apply',
    uniforms: IMAGE_DIMS,
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'prm', access: 'read', type: 'f32' },
      { name: 'y', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: AUGMENT_WG,
    body: `${WGSL_COLOR}
struct Color { f: vec4<f32>, order: f32, mean: f32, gray: f32, sigma: f32, solarize: f32 }

// Pixel i of image b after jitter and grayscale, channel c.
fn colored_(base: u32, i: u32, c: u32, k: Color) -> f32 {
  var rgb = rgb_at_(base, i);
  if (k.order >= 0.0) {
    let steps = ORDERS[u32(k.order)];
    for (var s = 0u; s < 4u; s++) { rgb = jitter_step_(rgb, steps[s], k.f, k.mean); }
  }
  if (k.gray > 0.0 && P.C == 3u) { return dot(rgb, LUMA); }
  return rgb[min(c, 2u)];
}

fn pixel_(t: u32, xi: u32, yi: u32, plane: u32, b: u32, c: u32, k: Color) {
  let base = b * P.C * P.H * P.W;
  var v = 0.0;
  if (k.sigma > 0.0) {
    let r = i32(min(u32(ceil(3.0 * k.sigma)), ${MAX_BLUR_RADIUS}u));
    let g = -0.5 / (k.sigma * k.sigma);
    var acc = 0.0;
    var wsum = 0.0;
    for (var dy = -r; dy <= r; dy++) {
      let yy = u32(clamp(i32(yi) + dy, 0, i32(P.H) - 1));
      let wy = exp(g * f32(dy * dy));
      for (var dx = -r; dx <= r; dx++) {
        let xx = u32(clamp(i32(xi) + dx, 0, i32(P.W) - 1));
        let w = wy * exp(g * f32(dx * dx));
        acc += w * colored_(base, yy * P.W + xx, c, k);
        wsum += w;
      }
    }
    v = acc / wsum;
  } else {
    v = colored_(base, yi * P.W + xi, c, k);
  }
  if (k.solarize > 0.0 && v >= 128.0 / 255.0) { v = 1.0 - v; }
  y[t] = v;
}
${mainPixels(`let o = b * ${COLOR_PARAMS}u;
  let color = Color(vec4<f32>(prm[o], prm[o + 1u], prm[o + 2u], prm[o + 8u]), prm[o + 3u], prm[o + 4u], prm[o + 5u], prm[o + 6u], prm[o + 7u]);`, ', color')}`,
  });
});
