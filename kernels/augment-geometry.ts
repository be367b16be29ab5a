// Geometric augmentation on [B, C, H, W] batches. Two steps, so the parameters of every image can
// be inspected and tested on their own:
//   geometry_params: per-image uniforms (from the Philox generator) → an affine map per image,
//     theta[b] = (t0..t5, visible fraction, flipped), mapping an output pixel (x, y) to the input
//     position (t0·x + t1·y + t2, t3·x + t4·y + t5). Pixel centres are at integer coordinates.
//   affine_sample: bilinear sampling through theta; neighbours outside the image read `fill`.
// Random resized crop follows torchvision's RandomResizedCrop.get_params (10 attempts, then a
// centre crop with the ratio clamped) and its align_corners=False resize; pad-and-crop reads
// zero padding (= fill) at integer offsets.
import { memo, kernel, type KernelSource, MAIN_1D, type UniformField } from './common.js';

export const AUGMENT_WG = 64;
/** Uniforms per image consumed by geometry_params: 10 (area, log-ratio) attempts, flip, top, left. */
export const GEOMETRY_UNIFORMS = 24;
/** Floats per image in theta. */
export const THETA_SIZE = 8;

/** Pixels per invocation along a row. Per-pixel kernels define
 * `fn pixel_(t, xi, yi, plane, b, c)` and run on an 8×8 grid of invocations over (row segments,
 * rows), one image plane per z: no integer division per pixel, and on CPU backends (lavapipe)
 * the per-invocation overhead is shared by a few pixels. */
export const PIXELS_PER_INVOCATION = 4;
/** The entry point of a per-pixel kernel: `prologue` runs once per invocation (per-image values
 * read or derived once for its pixels), then `pixel_(t, xi, yi, plane, b, c` + `args`) per pixel. */
export function mainPixels(prologue = '', args = '', out = { H: 'P.H', W: 'P.W' }): string {
  return /* wgsl */ `
@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let yi = gid.y;
  if (yi >= ${out.H}) { return; }
  let plane = gid.z * ${out.H} * ${out.W};
  let b = gid.z / P.C;
  let c = gid.z % P.C;
  ${prologue}
  for (var k = 0u; k < ${PIXELS_PER_INVOCATION}u; k++) {
    let xi = gid.x * ${PIXELS_PER_INVOCATION}u + k;
    if (xi >= ${out.W}) { break; }
    pixel_(plane + yi * ${out.W} + xi, xi, yi, plane, b, c${args});
  }
}`;
}
export const MAIN_PIXELS = mainPixels();
const PIXEL_FN = 'fn pixel_(t: u32, xi: u32, yi: u32, plane: u32, b: u32, c: u32)';
export { PIXEL_FN };

/** The dispatch grid of a per-pixel kernel over B·C planes of H × W. */
export function pixelGrid(planes: number, H: number, W: number): [number, number, number] {
  if (planes > 65535) throw new Error(`augmentation: ${planes} image planes exceed the 65,535 per dispatch; split the batch`);
  return [Math.ceil(W / (8 * PIXELS_PER_INVOCATION)), Math.ceil(H / 8), planes];
}

/** The uniform fields of an image batch [B, C, H, W]. */
export const IMAGE_DIMS: UniformField[] = ['B', 'C', 'H', 'W'].map((name) => ({ name, type: 'u32' }));

export const GEOMETRY_MODES = { resizedCrop: 0, padCrop: 1, flipOnly: 2 } as const;

/** Bilinear read of image (b, c) at a fractional position, `fill` outside; shared by the kernels
 * that resample (affine_sample and the RandAugment op kernel). Expects `x`, P.C, P.H, P.W, P.fill. */
/** WGSL `fn name(plane, xs, ys) -> f32`: bilinear interpolation of the four neighbours read by
 * `read(plane, xi, yi)` (which decides what lies outside the image). */
export function wgslBilinear(name: string, read: string): string {
  return /* wgsl */ `
fn ${name}(plane: u32, xs: f32, ys: f32) -> f32 {
  let x0 = floor(xs);
  let y0 = floor(ys);
  let fx = xs - x0;
  let fy = ys - y0;
  let xi = i32(x0);
  let yi = i32(y0);
  let top = mix(${read}(plane, xi, yi), ${read}(plane, xi + 1, yi), fx);
  let bottom = mix(${read}(plane, xi, yi + 1), ${read}(plane, xi + 1, yi + 1), fx);
  return mix(top, bottom, fy);
}`;
}

export const WGSL_BILINEAR = /* wgsl */ `
fn pixel_or_fill_(plane: u32, xi: i32, yi: i32) -> f32 {
  if (xi < 0 || yi < 0 || xi >= i32(P.W) || yi >= i32(P.H)) { return P.fill; }
  return x[plane + u32(yi) * P.W + u32(xi)];
}
${wgslBilinear('bilinear_', 'pixel_or_fill_')}
`;

export const geometryParamsKernel = memo(function geometryParamsKernel(): KernelSource {
  return kernel({
    name: 'geometry_params',
    uniforms: [
      { name: 'B', type: 'u32' },
      { name: 'H', type: 'u32' },
      { name: 'W', type: 'u32' },
      { name: 'mode', type: 'u32' },
      { name: 'scaleLo', type: 'f32' },
      { name: 'scaleHi', type: 'f32' },
      { name: 'logRatioLo', type: 'f32' },
      { name: 'logRatioHi', type: 'f32' },
      { name: 'pad', type: 'u32' },
      { name: 'flipProb', type: 'f32' },
      { name: 'outH', type: 'u32' },
      { name: 'outW', type: 'u32' },
    ],
    buffers: [
      { name: 'u', access: 'read', type: 'f32' },
      { name: 'theta', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: AUGMENT_WG,
    body: `${MAIN_1D} {
  let b = global_index(wid, lid, nwg);
  if (b >= P.B) { return; }
  let ub = b * ${GEOMETRY_UNIFORMS}u;
  let Wf = f32(P.W);
  let Hf = f32(P.H);
  let flip = u[ub + 20u] < P.flipProb;
  // Crop box (top, left, height, width) in input pixels, or an integer shift for pad-crop.
  var top = 0.0;
  var left = 0.0;
  var ch = Hf;
  var cw = Wf;
  var visible = 1.0;
  if (P.mode == 0u) {
    let area = Hf * Wf;
    var found = false;
    for (var k = 0u; k < 10u; k++) {
      let tarea = area * mix(P.scaleLo, P.scaleHi, u[ub + 2u * k]);
      let ratio = exp(mix(P.logRatioLo, P.logRatioHi, u[ub + 2u * k + 1u]));
      let w = round(sqrt(tarea * ratio));
      let h = round(sqrt(tarea / ratio));
      if (w > 0.0 && h > 0.0 && w <= Wf && h <= Hf) {
        cw = w;
        ch = h;
        found = true;
        break;
      }
    }
    if (!found) {
      // torchvision's fallback: the whole image, cropped to the nearest allowed ratio.
      let inRatio = Wf / Hf;
      let lo = exp(P.logRatioLo);
      let hi = exp(P.logRatioHi);
      if (inRatio < lo) { cw = Wf; ch = round(Wf / lo); }
      else if (inRatio > hi) { ch = Hf; cw = round(Hf * hi); }
      else { cw = Wf; ch = Hf; }
      top = floor((Hf - ch) / 2.0);
      left = floor((Wf - cw) / 2.0);
    } else {
      top = min(floor(u[ub + 21u] * (Hf - ch + 1.0)), Hf - ch);
      left = min(floor(u[ub + 22u] * (Wf - cw + 1.0)), Wf - cw);
    }
    visible = (ch * cw) / area;
  } else if (P.mode == 1u) {
    let span = f32(2u * P.pad + 1u);
    let padf = f32(P.pad);
    top = min(floor(u[ub + 21u] * span), span - 1.0) - padf;
    left = min(floor(u[ub + 22u] * span), span - 1.0) - padf;
    visible = ((Hf - abs(top)) * (Wf - abs(left))) / (Hf * Wf);
  }
  // Output pixel x of outW reads the crop at (x + 0.5) * cw / outW - 0.5 + left
  // (align_corners = False); a flip first maps x to outW - 1 - x.
  let sx = cw / f32(P.outW);
  let sy = ch / f32(P.outH);
  let o = b * ${THETA_SIZE}u;
  if (flip) {
    theta[o] = -sx;
    theta[o + 2u] = sx * (f32(P.outW) - 0.5) - 0.5 + left;
  } else {
    theta[o] = sx;
    theta[o + 2u] = sx * 0.5 - 0.5 + left;
  }
  theta[o + 1u] = 0.0;
  theta[o + 3u] = 0.0;
  theta[o + 4u] = sy;
  theta[o + 5u] = sy * 0.5 - 0.5 + top;
  theta[o + 6u] = visible;
  theta[o + 7u] = select(0.0, 1.0, flip);
}`,
  });
});

export const affineSampleKernel = memo(function affineSampleKernel(): KernelSource {
  return kernel({
    name: 'affine_sample',
    uniforms: [
      ...IMAGE_DIMS,
      { name: 'fill', type: 'f32' },
      { name: 'outH', type: 'u32' },
      { name: 'outW', type: 'u32' },
    ],
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'theta', access: 'read', type: 'f32' },
      { name: 'y', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: AUGMENT_WG,
    body: `${WGSL_BILINEAR}
fn pixel_(t: u32, xi: u32, yi: u32, plane: u32, b: u32, c: u32, tx: vec3<f32>, ty: vec3<f32>, inPlane: u32) {
  let p = vec3<f32>(f32(xi), f32(yi), 1.0);
  y[t] = bilinear_(inPlane, dot(tx, p), dot(ty, p));
}
${mainPixels(`let o = b * ${THETA_SIZE}u;
  let tx = vec3<f32>(theta[o], theta[o + 1u], theta[o + 2u]);
  let ty = vec3<f32>(theta[o + 3u], theta[o + 4u], theta[o + 5u]);
  let inPlane = gid.z * P.H * P.W;`, ', tx, ty, inPlane', { H: 'P.outH', W: 'P.outW' })}`,
  });
});
