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
const IM2COL_DIMS = ['B', 'C', 'H', 'W', 'kh', 'kw', 'stride', 'pad', 'Ho', 'Wo', 'channelsLast'].map((name) => ({ name, type: 'u32' as const }));

export const im2colKernel = memo(function im2colKernel(): KernelSource {
  return kernel({
    name: 'im2col',
    uniforms: [{ name: 'n', type: 'u32' }, ...IM2COL_DIMS],
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'cols', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: CONV_WG,
    body: `${MAIN_1D} {
  let t = global_index(wid, lid, nwg);
  if (t >= P.n) { return; }
  let K = P.C * P.kh * P.kw;
  let k = t % K;
  let pos = t / K;
  let ox = pos % P.Wo;
  let oy = (pos / P.Wo) % P.Ho;
  let b = pos / (P.Wo * P.Ho);
  let kx = k % P.kw;
  let ky = (k / P.kw) % P.kh;
  let c = k / (P.kw * P.kh);
  let iy = i32(oy * P.stride + ky) - i32(P.pad);
  let ix = i32(ox * P.stride + kx) - i32(P.pad);
  var v = 0.0;
  if (iy >= 0 && ix >= 0 && iy < i32(P.H) && ix < i32(P.W)) {
    if (P.channelsLast != 0u) { v = x[((b * P.H + u32(iy)) * P.W + u32(ix)) * P.C + c]; }
    else { v = x[((b * P.C + c) * P.H + u32(iy)) * P.W + u32(ix)]; }
  }
  cols[t] = v;
}`,
  });
});

export const col2imKernel = memo(function col2imKernel(): KernelSource {
  return kernel({
    name: 'col2im',
    uniforms: [{ name: 'n', type: 'u32' }, ...IM2COL_DIMS],
    buffers: [
      { name: 'g', access: 'read', type: 'f32' },
      { name: 'dx', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: CONV_WG,
    body: `${MAIN_1D} {
  let t = global_index(wid, lid, nwg);
  if (t >= P.n) { return; }
  var ix = t % P.W;
  var iy = (t / P.W) % P.H;
  var c = (t / (P.W * P.H)) % P.C;
  let b = t / (P.W * P.H * P.C);
  if (P.channelsLast != 0u) {
    c = t % P.C;
    ix = (t / P.C) % P.W;
    iy = (t / (P.C * P.W)) % P.H;
  }
  let K = P.C * P.kh * P.kw;
  var acc = 0.0;
  for (var ky = 0u; ky < P.kh; ky++) {
    let sy = i32(iy + P.pad) - i32(ky);
    if (sy < 0 || u32(sy) % P.stride != 0u) { continue; }
    let oy = u32(sy) / P.stride;
    if (oy >= P.Ho) { continue; }
    for (var kx = 0u; kx < P.kw; kx++) {
      let sx = i32(ix + P.pad) - i32(kx);
      if (sx < 0 || u32(sx) % P.stride != 0u) { continue; }
      let ox = u32(sx) / P.stride;
      if (ox >= P.Wo) { continue; }
      acc += g[((b * P.Ho + oy) * P.Wo + ox) * K + (c * P.kh + ky) * P.kw + kx];
    }
  }
  dx[t] = acc;
}`,
  });
});
