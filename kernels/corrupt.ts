// Common corruptions for robustness evaluation, after Hendrycks & Dietterich's ImageNet-C /
// CIFAR-10-C (make_cifar_c.py), on float images in [0, 1] at severities 1–5. One corruption per
// dispatch; every pixel of every image computes its own value (blurs and pixelation read their
// neighbourhood, noise comes from the in-kernel Philox generator, contrast reads each image's
// mean from a small buffer).
import { IMAGE_DIMS, mainPixels, wgslBilinear } from './augment-geometry.js';
import { memo, kernel, type KernelSource, MAIN_1D } from './common.js';
import { WGSL_PHILOX } from './random.js';

export const CORRUPTIONS = ['gaussian_noise', 'shot_noise', 'impulse_noise', 'gaussian_blur', 'defocus_blur', 'zoom_blur', 'contrast', 'brightness', 'pixelate', 'jpeg_compression'] as const;
export type Corruption = (typeof CORRUPTIONS)[number];

/** The strength of each corruption at severities 1–5 (CIFAR-10-C's constants where the
 * corruption is the same; the defocus radius and zoom range are scaled for 28–32 px images). */
export const SEVERITY: Record<Corruption, readonly number[]> = {
  gaussian_noise: [0.04, 0.06, 0.08, 0.09, 0.1], // noise std
  shot_noise: [500, 250, 100, 75, 50], // photons per unit intensity
  impulse_noise: [0.01, 0.02, 0.03, 0.05, 0.07], // fraction of salt-and-pepper pixels
  gaussian_blur: [0.4, 0.6, 0.7, 0.8, 1], // sigma in pixels
  defocus_blur: [1, 1.5, 2, 2.5, 3], // disk radius in pixels
  zoom_blur: [1.06, 1.11, 1.16, 1.21, 1.26], // largest zoom averaged
  contrast: [0.75, 0.5, 0.4, 0.3, 0.15], // factor towards the mean
  brightness: [0.05, 0.1, 0.15, 0.2, 0.3], // added to every pixel
  pixelate: [0.95, 0.9, 0.85, 0.75, 0.65], // fraction of the resolution kept
  jpeg_compression: [80, 65, 58, 50, 40], // JPEG quality (CIFAR-10-C's, for images of up to 32 px)
};

/** Zooms averaged by zoom_blur (1 and five steps up to the severity's largest zoom). */
export const ZOOM_STEPS = 6;

export const corruptKernel = memo(function corruptKernel(): KernelSource {
  return kernel({
    name: 'corrupt',
    uniforms: [
      ...IMAGE_DIMS,
      { name: 'kind', type: 'u32' },
      { name: 'strength', type: 'f32' },
      { name: 'seed', type: 'u32' },
      { name: 'stream', type: 'u32' },
      { name: 'cellsX', type: 'u32' },
      { name: 'cellsY', type: 'u32' },
    ],
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'means', access: 'read', type: 'f32' },
      { name: 'y', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: 64,
    body: `${WGSL_PHILOX}
fn at_(plane: u32, xi: i32, yi: i32) -> f32 {
  let cx = clamp(xi, 0, i32(P.W) - 1);
  let cy = clamp(yi, 0, i32(P.H) - 1);
  return x[plane + u32(cy) * P.W + u32(cx)];
}
// Bilinear read with edge clamping (zoom stays inside the image).
${wgslBilinear('bilinear_clamped_', 'at_')}
fn pixel_(t: u32, xi: u32, yi: u32, plane: u32, b: u32, c: u32) {
  let v = x[t];
  let s = P.strength;
  var out = v;
  // Two uniforms and a normal per pixel, from the words of element t.
  let r = philox_(vec4<u32>(t, 0u, 0u, 0u), vec2<u32>(P.seed, P.stream));
  let z = sqrt(-2.0 * log(to_unit_(r.x) + 1.0 / 16777216.0)) * cos(6.283185307179586 * to_unit_(r.y));
  let xf = f32(xi);
  let yf = f32(yi);
  switch P.kind {
    case 0u: { out = v + s * z; }
    // Poisson(v·s)/s by its normal approximation, exact in mean and variance.
    case 1u: { out = v + sqrt(max(v, 0.0) / s) * z; }
    case 2u: {
      let u = to_unit_(r.z);
      if (u < 0.5 * s) { out = 0.0; } else if (u < s) { out = 1.0; }
    }
    case 3u, 4u: {
      // Gaussian (sigma = s) or disk (radius = s) weights over the neighbourhood, edges clamped.
      let radius = i32(ceil(select(s, 3.0 * s, P.kind == 3u)));
      var sum = 0.0;
      var weight = 0.0;
      for (var dy = -radius; dy <= radius; dy++) {
        for (var dx = -radius; dx <= radius; dx++) {
          let d2 = f32(dx * dx + dy * dy);
          var w = 0.0;
          if (P.kind == 3u) { w = exp(-0.5 * d2 / (s * s)); } else if (d2 <= s * s) { w = 1.0; }
          sum += w * at_(plane, i32(xi) + dx, i32(yi) + dy);
          weight += w;
        }
      }
      out = sum / weight;
    }
    case 5u: {
      let cx = (f32(P.W) - 1.0) * 0.5;
      let cy = (f32(P.H) - 1.0) * 0.5;
      var sum = 0.0;
      for (var k = 0u; k < ${ZOOM_STEPS}u; k++) {
        let zoom = 1.0 + (s - 1.0) * f32(k) / ${ZOOM_STEPS - 1}.0;
        sum += bilinear_clamped_(plane, cx + (xf - cx) / zoom, cy + (yf - cy) / zoom);
      }
      out = sum / ${ZOOM_STEPS}.0;
    }
    case 6u: { let m = means[b]; out = (v - m) * s + m; }
    case 7u: { out = v + s; }
    case 8u: {
      // Box-average down to cellsX × cellsY cells, then nearest back up (integer arithmetic).
      let jx = xi * P.cellsX / P.W;
      let jy = yi * P.cellsY / P.H;
      let x0 = jx * P.W / P.cellsX;
      let x1 = max((jx + 1u) * P.W / P.cellsX, x0 + 1u);
      let y0 = jy * P.H / P.cellsY;
      let y1 = max((jy + 1u) * P.H / P.cellsY, y0 + 1u);
      var sum = 0.0;
      for (var yy = y0; yy < y1; yy++) {
        for (var xx = x0; xx < x1; xx++) { sum += x[plane + yy * P.W + xx]; }
      }
      out = sum / f32((y1 - y0) * (x1 - x0));
    }
    default: {}
  }
  y[t] = clamp(out, 0.0, 1.0);
}
${mainPixels()}`,
  });
});

// ---- JPEG-like compression -------------------------------------------------------------------
// What a baseline JPEG encoder and decoder do to an image, without the entropy coding that loses
// nothing: 8-bit samples, 8×8 blocks (partial blocks at the right and bottom edges filled by
// repeating the last column and row, as libjpeg does), level shift by 128, the 2-D DCT-II,
// quantisation by the standard tables (ITU T.81 Annex K) scaled by quality as libjpeg's
// jpeg_quality_scaling does, the inverse DCT, rounding and clamping back to 8 bits. Three channels
// are taken as RGB and coded as YCbCr (JFIF; samples rounded to 8 bits on the way in and out, as
// a codec stores them), Y with the luminance table and Cb, Cr with the chrominance one; other
// channel counts are coded channel by channel as grey. Unlike PIL's encoder
// (which CIFAR-10-C calls), chroma is not subsampled and the DCTs are exact rather than libjpeg's
// integer approximations, so the result differs from a real JPEG file by a level or so where they
// round differently. One invocation codes one block of one image, all its channels.

/** Annex K.1's luminance and chrominance tables, row-major (vertical frequency by row). */
export const JPEG_LUMA_TABLE = [
  16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
  18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
] as const;
export const JPEG_CHROMA_TABLE = [
  17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
  ...Array<number>(32).fill(99),
] as const;

/** libjpeg's quality → table scale in percent (jcparam.c, jpeg_quality_scaling). */
export function jpegQualityScale(quality: number): number {
  const q = Math.min(Math.max(Math.round(quality), 1), 100);
  return q < 50 ? Math.floor(5000 / q) : 200 - 2 * q;
}

/** A table entry at a quality scale, as libjpeg's jpeg_add_quant_table with force_baseline. */
export function jpegQuantStep(base: number, scale: number): number {
  return Math.min(Math.max(Math.floor((base * scale + 50) / 100), 1), 255);
}

/** The orthonormal DCT-II basis: entry u·8 + x is C(u)/2 · cos((2x + 1)uπ/16), C(0) = 1/√2. */
export function jpegDctBasis(): number[] {
  return Array.from({ length: 64 }, (_, i) => {
    const [u, x] = [Math.floor(i / 8), i % 8];
    return (u === 0 ? Math.SQRT1_2 : 1) * 0.5 * Math.cos(((2 * x + 1) * u * Math.PI) / 16);
  });
}

/** Round half up, the rounding both the kernel and its reference use (WGSL's round() ties to even). */
const WGSL_ROUND = 'fn round_up_(v: f32) -> f32 { return floor(v + 0.5); }';

export const jpegKernel = memo(function jpegKernel(): KernelSource {
  const list = (xs: readonly number[], f: (v: number) => string) => xs.map(f).join(', ');
  return kernel({
    name: 'corrupt_jpeg',
    uniforms: [...IMAGE_DIMS, { name: 'scale', type: 'u32' }, { name: 'blocksX', type: 'u32' }, { name: 'blocksY', type: 'u32' }],
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'y', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: 64,
    body: `const BASIS = array<f32, 64>(${list(jpegDctBasis(), (v) => v.toPrecision(9))});
const LUMA = array<u32, 64>(${list(JPEG_LUMA_TABLE, (v) => `${v}u`)});
const CHROMA = array<u32, 64>(${list(JPEG_CHROMA_TABLE, (v) => `${v}u`)});
${WGSL_ROUND}
fn quant_step_(chroma: bool, i: u32) -> f32 {
  let base = select(LUMA[i], CHROMA[i], chroma);
  return f32(clamp((base * P.scale + 50u) / 100u, 1u, 255u));
}
// The 8-bit sample of channel c at (xi, yi), edges repeated past the image.
fn sample_(b: u32, c: u32, xi: u32, yi: u32) -> f32 {
  return level_(255.0 * x[((b * P.C + c) * P.H + min(yi, P.H - 1u)) * P.W + min(xi, P.W - 1u)]);
}
// DCT, quantisation and inverse DCT of block s (64 level-shifted samples, row-major) in place.
fn code_block_(s: ptr<function, array<f32, 64>>, chroma: bool) {
  var g: array<f32, 64>;
  for (var yi = 0u; yi < 8u; yi++) {
    for (var u = 0u; u < 8u; u++) {
      var acc = 0.0;
      for (var xi = 0u; xi < 8u; xi++) { acc += BASIS[u * 8u + xi] * (*s)[yi * 8u + xi]; }
      g[yi * 8u + u] = acc;
    }
  }
  var f: array<f32, 64>;
  for (var v = 0u; v < 8u; v++) {
    for (var u = 0u; u < 8u; u++) {
      var acc = 0.0;
      for (var yi = 0u; yi < 8u; yi++) { acc += BASIS[v * 8u + yi] * g[yi * 8u + u]; }
      let q = quant_step_(chroma, v * 8u + u);
      f[v * 8u + u] = round_up_(acc / q) * q;
    }
  }
  for (var yi = 0u; yi < 8u; yi++) {
    for (var u = 0u; u < 8u; u++) {
      var acc = 0.0;
      for (var v = 0u; v < 8u; v++) { acc += BASIS[v * 8u + yi] * f[v * 8u + u]; }
      g[yi * 8u + u] = acc;
    }
  }
  for (var yi = 0u; yi < 8u; yi++) {
    for (var xi = 0u; xi < 8u; xi++) {
      var acc = 0.0;
      for (var u = 0u; u < 8u; u++) { acc += BASIS[u * 8u + xi] * g[yi * 8u + u]; }
      (*s)[yi * 8u + xi] = acc;
    }
  }
}
// A sample as the codec stores it: rounded to an integer in 0 … 255.
fn level_(v: f32) -> f32 { return clamp(round_up_(v), 0.0, 255.0); }
fn store_(b: u32, c: u32, xi: u32, yi: u32, v: f32) {
  if (xi < P.W && yi < P.H) { y[((b * P.C + c) * P.H + yi) * P.W + xi] = level_(v) / 255.0; }
}
${MAIN_1D} {
  let t = (wid.y * nwg.x + wid.x) * WG + lid.x;
  let blocks = P.blocksX * P.blocksY;
  if (t >= P.B * blocks) { return; }
  let b = t / blocks;
  let x0 = (t % blocks) % P.blocksX * 8u;
  let y0 = (t % blocks) / P.blocksX * 8u;
  if (P.C == 3u) {
    var lum: array<f32, 64>;
    var cb: array<f32, 64>;
    var cr: array<f32, 64>;
    for (var i = 0u; i < 64u; i++) {
      let r = sample_(b, 0u, x0 + i % 8u, y0 + i / 8u);
      let g = sample_(b, 1u, x0 + i % 8u, y0 + i / 8u);
      let bl = sample_(b, 2u, x0 + i % 8u, y0 + i / 8u);
      lum[i] = level_(0.299 * r + 0.587 * g + 0.114 * bl) - 128.0;
      cb[i] = level_(-0.168736 * r - 0.331264 * g + 0.5 * bl + 128.0) - 128.0;
      cr[i] = level_(0.5 * r - 0.418688 * g - 0.081312 * bl + 128.0) - 128.0;
    }
    code_block_(&lum, false);
    code_block_(&cb, true);
    code_block_(&cr, true);
    for (var i = 0u; i < 64u; i++) {
      let l = level_(lum[i] + 128.0);
      let u = level_(cb[i] + 128.0) - 128.0;
      let v = level_(cr[i] + 128.0) - 128.0;
      store_(b, 0u, x0 + i % 8u, y0 + i / 8u, l + 1.402 * v);
      store_(b, 1u, x0 + i % 8u, y0 + i / 8u, l - 0.344136 * u - 0.714136 * v);
      store_(b, 2u, x0 + i % 8u, y0 + i / 8u, l + 1.772 * u);
    }
  } else {
    for (var c = 0u; c < P.C; c++) {
      var s: array<f32, 64>;
      for (var i = 0u; i < 64u; i++) { s[i] = sample_(b, c, x0 + i % 8u, y0 + i / 8u) - 128.0; }
      code_block_(&s, false);
      for (var i = 0u; i < 64u; i++) { store_(b, c, x0 + i % 8u, y0 + i / 8u, s[i] + 128.0); }
    }
  }
}`,
  });
});
