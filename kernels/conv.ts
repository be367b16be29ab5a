// Patch embedding: conv2d with stride = kernel = P on [B, C, H, W], weight [O, C, P, P] (timm's
// PatchEmbed.proj). Each patch is read by exactly one output, so every kernel is a direct loop
// with no im2col buffer:
//   y[b,o,i,j]   = Σ_{c,u,v} w[o,c,u,v] · x[b,c,iP+u,jP+v]
//   dx[b,c,y,x]  = Σ_o w[o,c,y%P,x%P] · g[b,o,y/P,x/P]   (0 outside the patch grid)
//   dw[o,c,u,v]  = Σ_{b,i,j} g[b,o,i,j] · x[b,c,iP+u,jP+v]
import { memo, kernel, type KernelSource, MAIN_1D } from './common.js';

export const CONV_WG = 64;
const DIMS = ['B', 'C', 'H', 'W', 'O', 'Pk', 'Hp', 'Wp'].map((name) => ({ name, type: 'u32' as const }));

export const patchEmbedKernel = memo(function patchEmbedKernel(): KernelSource {
  return kernel({
    name: 'patch_embed',
    uniforms: [{ name: 'n', type: 'u32' }, ...DIMS],
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'w', access: 'read', type: 'f32' },
      { name: 'y', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: CONV_WG,
    body: `${MAIN_1D} {
  let t = global_index(wid, lid, nwg);
  if (t >= P.n) { return; }
  let j = t % P.Wp;
  let i = (t / P.Wp) % P.Hp;
  let o = (t / (P.Wp * P.Hp)) % P.O;
  let b = t / (P.Wp * P.Hp * P.O);
  var acc = 0.0;
  for (var c = 0u; c < P.C; c++) {
    let xb = ((b * P.C + c) * P.H + i * P.Pk) * P.W + j * P.Pk;
    let wb = (o * P.C + c) * P.Pk * P.Pk;
    for (var u = 0u; u < P.Pk; u++) {
      for (var v = 0u; v < P.Pk; v++) {
        acc += w[wb + u * P.Pk + v] * x[xb + u * P.W + v];
      }
    }
  }
  y[t] = acc;
}`,
  });
});

export const patchEmbedInputGradKernel = memo(function patchEmbedInputGradKernel(): KernelSource {
  return kernel({
    name: 'patch_embed_grad_input',
    uniforms: [{ name: 'n', type: 'u32' }, ...DIMS],
    buffers: [
      { name: 'g', access: 'read', type: 'f32' },
      { name: 'w', access: 'read', type: 'f32' },
      { name: 'dx', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: CONV_WG,
    body: `${MAIN_1D} {
  let t = global_index(wid, lid, nwg);
  if (t >= P.n) { return; }
  let xx = t % P.W;
  let yy = (t / P.W) % P.H;
  let c = (t / (P.W * P.H)) % P.C;
  let b = t / (P.W * P.H * P.C);
  let i = yy / P.Pk;
  let j = xx / P.Pk;
  if (i >= P.Hp || j >= P.Wp) { dx[t] = 0.0; return; }
  let u = yy % P.Pk;
  let v = xx % P.Pk;
  var acc = 0.0;
  for (var o = 0u; o < P.O; o++) {
    acc += w[((o * P.C + c) * P.Pk + u) * P.Pk + v] * g[((b * P.O + o) * P.Hp + i) * P.Wp + j];
  }
  dx[t] = acc;
}`,
  });
});

export const patchEmbedWeightGradKernel = memo(function patchEmbedWeightGradKernel(): KernelSource {
  return kernel({
    name: 'patch_embed_grad_weight',
    uniforms: [{ name: 'n', type: 'u32' }, ...DIMS],
    buffers: [
      { name: 'g', access: 'read', type: 'f32' },
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'dw', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: CONV_WG,
    body: `${MAIN_1D} {
  let t = global_index(wid, lid, nwg);
  if (t >= P.n) { return; }
  let v = t % P.Pk;
  let u = (t / P.Pk) % P.Pk;
  let c = (t / (P.Pk * P.Pk)) % P.C;
  let o = t / (P.Pk * P.Pk * P.C);
  var acc = 0.0;
  for (var b = 0u; b < P.B; b++) {
    for (var i = 0u; i < P.Hp; i++) {
      for (var j = 0u; j < P.Wp; j++) {
        acc += g[((b * P.O + o) * P.Hp + i) * P.Wp + j] * x[((b * P.C + c) * P.H + i * P.Pk + u) * P.W + j * P.Pk + v];
      }
    }
  }
  dw[t] = acc;
}`,
  });
});

// General conv2d (kernel kh × kw, stride, zero padding) as im2col + matmul: im2col writes each
// output position's receptive field as a row, cols[b, oy, ox, (c, ky, kx)], so the product with the
// [O, C·kh·kw] weight is one matmul on the fast kernel; col2im is its adjoint (each input pixel
// gathers the rows that read it), the backward of im2col.
// channelsLast = 1: x is [B, H, W, C] (and dx too), which lets a conv stem chain im2col → matmul
// → BatchNorm over rows without permuting between layers.
// Kernel size, stride and padding are compiled in and each invocation owns one output position
// (im2col) or one input pixel (col2im) and loops over channels: integer division has no SIMD
// instruction on x86, so on lavapipe every `/` or `%` by a runtime value costs a scalar division
// per lane. Specialised, the stride tests are shifts and masks, and the few divisions that split
// the invocation index are paid once per position instead of once per element (measured 8–12×
// faster than one invocation per element with six divisions each).
const IM2COL_DIMS = ['B', 'C', 'H', 'W', 'Ho', 'Wo', 'channelsLast'].map((name) => ({ name, type: 'u32' as const }));

/** WGSL for x's flat index of (b, c, y, x) in either layout, as base + c · step. */
const PIXEL_BASE = `fn pixel_base(b: u32, y: u32, x: u32) -> u32 {
  if (P.channelsLast != 0u) { return ((b * P.H + y) * P.W + x) * P.C; }
  return (b * P.C * P.H + y) * P.W + x;
}
fn channel_step() -> u32 { return select(P.H * P.W, 1u, P.channelsLast != 0u); }`;

export const im2colKernel = memo(function im2colKernel(kh: number, kw: number, stride: number, pad: number): KernelSource {
  return kernel({
    name: `im2col_k${kh}x${kw}_s${stride}_p${pad}`,
    uniforms: [{ name: 'n', type: 'u32' }, ...IM2COL_DIMS],
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'cols', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: CONV_WG,
    body: `const KH = ${kh}u;
const KW = ${kw}u;
const S = ${stride}u;
const PAD = ${pad};
${PIXEL_BASE}
${MAIN_1D} {
  let t = global_index(wid, lid, nwg);
  if (t >= P.n) { return; }
  let ox = t % P.Wo;
  let oy = (t / P.Wo) % P.Ho;
  let b = t / (P.Wo * P.Ho);
  let row = t * P.C * KH * KW;
  let step = channel_step();
  for (var ky = 0u; ky < KH; ky++) {
    let iy = i32(oy * S + ky) - PAD;
    for (var kx = 0u; kx < KW; kx++) {
      let ix = i32(ox * S + kx) - PAD;
      let inside = iy >= 0 && ix >= 0 && iy < i32(P.H) && ix < i32(P.W);
      // Clamped so the load stays in bounds; outside the image the value is the zero padding.
      let base = pixel_base(b, u32(clamp(iy, 0, i32(P.H) - 1)), u32(clamp(ix, 0, i32(P.W) - 1)));
      var o = row + ky * KW + kx;
      for (var c = 0u; c < P.C; c++) {
        cols[o] = select(0.0, x[base + c * step], inside);
        o += KH * KW;
      }
    }
  }
}`,
  });
});

export const col2imKernel = memo(function col2imKernel(kh: number, kw: number, stride: number, pad: number): KernelSource {
  return kernel({
    name: `col2im_k${kh}x${kw}_s${stride}_p${pad}`,
    uniforms: [{ name: 'n', type: 'u32' }, ...IM2COL_DIMS],
    buffers: [
      { name: 'g', access: 'read', type: 'f32' },
      { name: 'dx', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: CONV_WG,
    body: `const KH = ${kh}u;
const KW = ${kw}u;
const S = ${stride}u;
const PAD = ${pad}u;
${PIXEL_BASE}
${MAIN_1D} {
  let t = global_index(wid, lid, nwg);
  if (t >= P.n) { return; }
  let ix = t % P.W;
  let iy = (t / P.W) % P.H;
  let b = t / (P.W * P.H);
  let K = P.C * KH * KW;
  let base = pixel_base(b, iy, ix);
  let step = channel_step();
  for (var c = 0u; c < P.C; c++) {
    var acc = 0.0;
    // Output positions whose receptive field covers (iy, ix): oy·S + ky − PAD = iy.
    for (var ky = 0u; ky < KH; ky++) {
      let sy = iy + PAD;
      if (sy < ky || (sy - ky) % S != 0u) { continue; }
      let oy = (sy - ky) / S;
      if (oy >= P.Ho) { continue; }
      for (var kx = 0u; kx < KW; kx++) {
        let sx = ix + PAD;
        if (sx < kx || (sx - kx) % S != 0u) { continue; }
        let ox = (sx - kx) / S;
        if (ox >= P.Wo) { continue; }
        acc += g[((b * P.Ho + oy) * P.Wo + ox) * K + (c * KH + ky) * KW + kx];
      }
    }
    dx[base + c * step] = acc;
  }
}`,
  });
});
