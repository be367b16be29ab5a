// Common corruptions for robustness evaluation, after Hendrycks & Dietterich's ImageNet-C /
// CIFAR-10-C (make_cifar_c.py), on float images in [0, 1] at severities 1–5. One corruption per
// dispatch; every pixel of every image computes its own value (blurs and pixelation read their
// neighbourhood, noise comes from the in-kernel Philox generator, contrast reads each image's
// mean from a small buffer).
import { IMAGE_DIMS, mainPixels, wgslBilinear } from './augment-geometry.js';
import { memo, kernel, type KernelSource } from './common.js';
import { WGSL_PHILOX } from './random.js';

export const CORRUPTIONS = ['gaussian_noise', 'shot_noise', 'impulse_noise', 'gaussian_blur', 'defocus_blur', 'zoom_blur', 'contrast', 'brightness', 'pixelate'] as const;
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
