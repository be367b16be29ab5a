// The image operations of RandAugment / TrivialAugment, one layer per dispatch: every image of the
// batch draws its own op, magnitude, sign and apply-coin from 8 uniforms per layer
// (u[b, layer, 0..7]: op, two for the magnitude noise, sign, apply; three unused), so one
// kernel applies different ops to different images through a switch.
// Ops follow timm's "increasing" RandAugment set (auto_augment.py, rand-m9-mstd0.5-inc1) and
// torchvision's TrivialAugmentWide ranges, on float images in [0, 1]; posterize and equalize
// quantise to 8 bits as PIL does, the rest stay float. Geometric ops turn about the image centre
// and read `fill` outside the image.
// Autocontrast, equalize and contrast need per-image statistics: augment_stats computes them
// first (one invocation per image and channel), only for images whose op needs them.
import { memo, kernel, type KernelSource, MAIN_1D, type UniformField } from './common.js';
import { AUGMENT_WG, IMAGE_DIMS, mainPixels, WGSL_BILINEAR } from './augment-geometry.js';

export const AUGMENT_OPS = [
  'identity',
  'autocontrast',
  'equalize',
  'invert',
  'rotate',
  'posterize',
  'solarize',
  'solarize_add',
  'color',
  'contrast',
  'brightness',
  'sharpness',
  'shear_x',
  'shear_y',
  'translate_x',
  'translate_y',
] as const;
export type AugmentOpName = (typeof AUGMENT_OPS)[number];

/** Uniforms per image per layer. */
export const OP_UNIFORMS = 8;
/** Floats per (image, channel) in the statistics buffer: min, max, grey mean, unused, 256-entry
 * equalize table. */
export const STATS_SIZE = 260;

export const AUGMENT_OP_UNIFORMS: UniformField[] = [
  ...IMAGE_DIMS,
  { name: 'layer', type: 'u32' },
  { name: 'layers', type: 'u32' },
  /** 0: RandAugment (magnitude + Gaussian noise, out of 10); 1: TrivialAugment (31 bins). */
  { name: 'policy', type: 'u32' },
  { name: 'magnitude', type: 'f32' },
  { name: 'magnitudeStd', type: 'f32' },
  { name: 'prob', type: 'f32' },
  { name: 'fill', type: 'f32' },
  /** ≥ 0: every image gets this op (tests, per-op grids); -1: drawn per image. */
  { name: 'forceOp', type: 'i32' },
  /** Bit i set: op i may be drawn (AugMix leaves out the ops that overlap ImageNet-C). */
  { name: 'opMask', type: 'u32' },
  { name: 'rotateMax', type: 'f32' },
  { name: 'shearMax', type: 'f32' },
  { name: 'translateMaxX', type: 'f32' },
  { name: 'translateMaxY', type: 'f32' },
  { name: 'enhanceMax', type: 'f32' },
  { name: 'posterizeMax', type: 'f32' },
  { name: 'solarizeAddMax', type: 'f32' },
];

const WGSL_CHOICE = /* wgsl */ `
const NUM_OPS: u32 = ${AUGMENT_OPS.length}u;
fn uniform_base_(b: u32) -> u32 { return (b * P.layers + P.layer) * ${OP_UNIFORMS}u; }
// The op of image b in this layer; 0 (identity) when its apply-coin says no.
fn choose_op_(b: u32) -> u32 {
  let ub = uniform_base_(b);
  if (u[ub + 4u] >= P.prob) { return 0u; }
  if (P.forceOp >= 0) { return u32(P.forceOp); }
  // The k-th allowed op, k uniform over the allowed ones.
  let allowed = countOneBits(P.opMask);
  var k = min(u32(u[ub] * f32(allowed)), allowed - 1u);
  for (var i = 0u; i < NUM_OPS; i++) {
    if ((P.opMask & (1u << i)) != 0u) {
      if (k == 0u) { return i; }
      k -= 1u;
    }
  }
  return 0u;
}
// Strength in [0, 1].
fn level_(b: u32) -> f32 {
  let ub = uniform_base_(b);
  if (P.policy == 1u) { return f32(min(u32(u[ub + 1u] * 31.0), 30u)) / 30.0; }
  var m = P.magnitude;
  if (P.magnitudeStd > 0.0) {
    let z = sqrt(-2.0 * log(max(u[ub + 1u], 1e-7))) * cos(6.283185307179586 * u[ub + 2u]);
    m = m + P.magnitudeStd * z;
  }
  return clamp(m, 0.0, 10.0) / 10.0;
}
fn sign_(b: u32) -> f32 { return select(1.0, -1.0, u[uniform_base_(b) + 3u] < 0.5); }
`;

export const augmentStatsKernel = memo(function augmentStatsKernel(): KernelSource {
  return kernel({
    name: 'augment_stats',
    uniforms: AUGMENT_OP_UNIFORMS,
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'u', access: 'read', type: 'f32' },
      { name: 'stats', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: AUGMENT_WG,
    body: `${WGSL_CHOICE}
${MAIN_1D} {
  let t = global_index(wid, lid, nwg);
  if (t >= P.B * P.C) { return; }
  let b = t / P.C;
  let c = t % P.C;
  let op = choose_op_(b);
  let hw = P.H * P.W;
  let plane = t * hw;
  let s = t * ${STATS_SIZE}u;
  // Each op computes only what it reads: autocontrast the range, contrast the grey mean,
  // equalize the histogram and its table.
  if (op == 1u) {
    var lo = 3.4e38;
    var hi = -3.4e38;
    for (var i = 0u; i < hw; i++) {
      let v = x[plane + i];
      lo = min(lo, v);
      hi = max(hi, v);
    }
    stats[s] = lo;
    stats[s + 1u] = hi;
  } else if (op == 9u) {
    // Contrast blends towards the mean of the grey image (ITU-R 601 luma, as PIL's "L").
    var total = 0.0;
    if (P.C == 3u) {
      let base = b * 3u * hw;
      for (var i = 0u; i < hw; i++) {
        total += 0.299 * x[base + i] + 0.587 * x[base + hw + i] + 0.114 * x[base + 2u * hw + i];
      }
    } else {
      for (var i = 0u; i < hw; i++) { total += x[plane + i]; }
    }
    stats[s + 2u] = total / f32(hw);
  } else if (op == 2u) {
    var hist: array<u32, 256>;
    for (var i = 0u; i < hw; i++) {
      hist[u32(round(clamp(x[plane + i], 0.0, 1.0) * 255.0))] += 1u;
    }
    // PIL's ImageOps.equalize: step = (count - count of the last used level) / 255; identity
    // when fewer than two levels are used or the step is 0.
    var last = 0u;
    var used = 0u;
    for (var i = 0u; i < 256u; i++) {
      if (hist[i] > 0u) { last = hist[i]; used += 1u; }
    }
    let step = (hw - last) / 255u;
    var acc = step / 2u;
    for (var i = 0u; i < 256u; i++) {
      var level = f32(i);
      if (used > 1u && step > 0u) { level = f32(min(acc / step, 255u)); }
      stats[s + 4u + i] = level / 255.0;
      acc += hist[i];
    }
  }
}`,
  });
});

export const augmentOpKernel = memo(function augmentOpKernel(): KernelSource {
  return kernel({
    name: 'augment_op',
    uniforms: AUGMENT_OP_UNIFORMS,
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'u', access: 'read', type: 'f32' },
      { name: 'stats', access: 'read', type: 'f32' },
      { name: 'y', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: AUGMENT_WG,
    body: `${WGSL_CHOICE}
${WGSL_BILINEAR}
fn enhance_(v: f32, degenerate: f32, factor: f32) -> f32 { return clamp(degenerate + factor * (v - degenerate), 0.0, 1.0); }
// The image's op, level and sign are drawn once per invocation in main and passed in.
fn pixel_(t: u32, xi: u32, yi: u32, plane: u32, b: u32, c: u32, op: u32, f: f32, sgn: f32) {
  let hw = P.H * P.W;
  let v = x[t];
  if (op == 0u) { y[t] = v; return; }
  let factor = 1.0 + sgn * f * P.enhanceMax;
  let s = (b * P.C + c) * ${STATS_SIZE}u;
  let xo = f32(xi);
  let yo = f32(yi);
  let cx = (f32(P.W) - 1.0) * 0.5;
  let cy = (f32(P.H) - 1.0) * 0.5;
  var out = v;
  switch op {
    case 1u: {
      let lo = stats[s];
      let hi = stats[s + 1u];
      if (hi > lo) { out = (v - lo) / (hi - lo); }
    }
    case 2u: { out = stats[s + 4u + u32(round(clamp(v, 0.0, 1.0) * 255.0))]; }
    case 3u: { out = 1.0 - v; }
    case 4u: {
      let a = radians(sgn * f * P.rotateMax);
      let dx = xo - cx;
      let dy = yo - cy;
      out = bilinear_(plane, cx + cos(a) * dx + sin(a) * dy, cy - sin(a) * dx + cos(a) * dy);
    }
    case 5u: {
      let bits = 8u - u32(round(f * P.posterizeMax));
      let q = u32(round(clamp(v, 0.0, 1.0) * 255.0));
      out = f32(q & ((0xFFu << (8u - bits)) & 0xFFu)) / 255.0;
    }
    case 6u: { if (v >= (256.0 - 256.0 * f) / 255.0) { out = 1.0 - v; } }
    case 7u: { if (v < 128.0 / 255.0) { out = min(v + f * P.solarizeAddMax, 1.0); } }
    case 8u: {
      if (P.C == 3u) {
        let p = b * 3u * hw + yi * P.W + xi;
        let grey = 0.299 * x[p] + 0.587 * x[p + hw] + 0.114 * x[p + 2u * hw];
        out = enhance_(v, grey, factor);
      }
    }
    case 9u: { out = enhance_(v, stats[s + 2u], factor); }
    case 10u: { out = clamp(v * factor, 0.0, 1.0); }
    case 11u: {
      // PIL's SMOOTH filter (1 1 1 / 1 5 1 / 1 1 1) / 13; the border keeps its pixels.
      if (xi > 0u && yi > 0u && xi + 1u < P.W && yi + 1u < P.H) {
        var sum = 4.0 * v;
        for (var dy = 0u; dy < 3u; dy++) {
          for (var dx = 0u; dx < 3u; dx++) { sum += x[plane + (yi + dy - 1u) * P.W + xi + dx - 1u]; }
        }
        out = enhance_(v, sum / 13.0, factor);
      }
    }
    case 12u: { out = bilinear_(plane, xo + sgn * f * P.shearMax * (yo - cy), yo); }
    case 13u: { out = bilinear_(plane, xo, yo + sgn * f * P.shearMax * (xo - cx)); }
    case 14u: { out = bilinear_(plane, xo - sgn * f * P.translateMaxX, yo); }
    case 15u: { out = bilinear_(plane, xo, yo - sgn * f * P.translateMaxY); }
    default: {}
  }
  y[t] = out;
}
${mainPixels('let op = choose_op_(b);\n  let f = level_(b);\n  let sgn = sign_(b);', ', op, f, sgn')}`,
  });
});
