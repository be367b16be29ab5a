// CPU reference for the patch-embedding convolution (stride = kernel), with bias.
import { type Nd, zerosNd } from './nd.js';

export function patchEmbed(x: Nd, w: Nd, bias: Nd | null): Nd {
  const [B, C, H, W] = x.shape as [number, number, number, number];
  const [O, , P] = w.shape as [number, number, number, number];
  const Hp = Math.floor(H / P);
  const Wp = Math.floor(W / P);
  const y = zerosNd([B, O, Hp, Wp]);
  for (let b = 0; b < B; b++)
    for (let o = 0; o < O; o++)
      for (let i = 0; i < Hp; i++)
        for (let j = 0; j < Wp; j++) {
          let acc = bias ? bias.data[o]! : 0;
          for (let c = 0; c < C; c++)
            for (let u = 0; u < P; u++)
              for (let v = 0; v < P; v++) acc += w.data[((o * C + c) * P + u) * P + v]! * x.data[((b * C + c) * H + i * P + u) * W + j * P + v]!;
          y.data[((b * O + o) * Hp + i) * Wp + j] = acc;
        }
  return y;
}

export function patchEmbedVjp(x: Nd, w: Nd, g: Nd): { dx: Nd; dw: Nd; db: Nd } {
  const [B, C, H, W] = x.shape as [number, number, number, number];
  const [O, , P] = w.shape as [number, number, number, number];
  const Hp = Math.floor(H / P);
  const Wp = Math.floor(W / P);
  const dx = zerosNd(x.shape);
  const dw = zerosNd(w.shape);
  const db = zerosNd([O]);
  for (let b = 0; b < B; b++)
    for (let o = 0; o < O; o++)
      for (let i = 0; i < Hp; i++)
        for (let j = 0; j < Wp; j++) {
          const gv = g.data[((b * O + o) * Hp + i) * Wp + j]!;
          db.data[o] = db.data[o]! + gv;
          for (let c = 0; c < C; c++)
            for (let u = 0; u < P; u++)
              for (let v = 0; v < P; v++) {
                const xi = ((b * C + c) * H + i * P + u) * W + j * P + v;
                const wi = ((o * C + c) * P + u) * P + v;
                dx.data[xi] = dx.data[xi]! + gv * w.data[wi]!;
                dw.data[wi] = dw.data[wi]! + gv * x.data[xi]!;
              }
        }
  return { dx, dw, db };
}

/** torch.nn.functional.conv2d with zero padding. */
export function conv2d(x: Nd, w: Nd, bias: Nd | null, stride: number, pad: number): Nd {
  const [B, C, H, W] = x.shape as [number, number, number, number];
  const [O, , kh, kw] = w.shape as [number, number, number, number];
  const Ho = Math.floor((H + 2 * pad - kh) / stride) + 1;
  const Wo = Math.floor((W + 2 * pad - kw) / stride) + 1;
  const y = zerosNd([B, O, Ho, Wo]);
  for (let b = 0; b < B; b++)
    for (let o = 0; o < O; o++)
      for (let oy = 0; oy < Ho; oy++)
        for (let ox = 0; ox < Wo; ox++) {
          let acc = bias ? bias.data[o]! : 0;
          for (let c = 0; c < C; c++)
            for (let ky = 0; ky < kh; ky++)
              for (let kx = 0; kx < kw; kx++) {
                const iy = oy * stride - pad + ky;
                const ix = ox * stride - pad + kx;
                if (iy >= 0 && ix >= 0 && iy < H && ix < W) acc += w.data[((o * C + c) * kh + ky) * kw + kx]! * x.data[((b * C + c) * H + iy) * W + ix]!;
              }
          y.data[((b * O + o) * Ho + oy) * Wo + ox] = acc;
        }
  return y;
}

export function conv2dVjp(x: Nd, w: Nd, g: Nd, stride: number, pad: number): { dx: Nd; dw: Nd; db: Nd } {
  const [B, C, H, W] = x.shape as [number, number, number, number];
  const [O, , kh, kw] = w.shape as [number, number, number, number];
  const [, , Ho, Wo] = g.shape as [number, number, number, number];
  const dx = zerosNd(x.shape);
  const dw = zerosNd(w.shape);
  const db = zerosNd([O]);
  for (let b = 0; b < B; b++)
    for (let o = 0; o < O; o++)
      for (let oy = 0; oy < Ho; oy++)
        for (let ox = 0; ox < Wo; ox++) {
          const gv = g.data[((b * O + o) * Ho + oy) * Wo + ox]!;
          db.data[o] = db.data[o]! + gv;
          for (let c = 0; c < C; c++)
            for (let ky = 0; ky < kh; ky++)
              for (let kx = 0; kx < kw; kx++) {
                const iy = oy * stride - pad + ky;
                const ix = ox * stride - pad + kx;
                if (iy < 0 || ix < 0 || iy >= H || ix >= W) continue;
                const xi = ((b * C + c) * H + iy) * W + ix;
                const wi = ((o * C + c) * kh + ky) * kw + kx;
                dx.data[xi] = dx.data[xi]! + gv * w.data[wi]!;
                dw.data[wi] = dw.data[wi]! + gv * x.data[xi]!;
              }
        }
  return { dx, dw, db };
}
