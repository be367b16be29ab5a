// Patch embedding (conv2d with stride = kernel size), forward and backward for input, weight
// and bias, as in timm's PatchEmbed; and general conv2d (any kernel, stride, zero padding) as
// im2col + matmul. Rows and columns past the last whole patch are ignored,
// as a strided convolution does.
import { grid1d } from '../../kernels/common.js';
import { col2imKernel, im2colKernel, patchEmbedInputGradKernel, patchEmbedKernel, patchEmbedWeightGradKernel } from '../../kernels/conv.js';
import { composite, record } from '../autograd.js';
import { rt } from '../dispatch.js';
import { Tensor } from '../tensor.js';
import { add } from './elementwise.js';
import { linear } from './matmul.js';
import { permute, reshape } from './movement.js';

/** x [B, C, H, W], weight [O, C, P, P], bias [O] → [B, O, H/P, W/P]. */
export function patchEmbed(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  const what = `patchEmbed(${x.describe()}, weight ${weight.describe()})`;
  if (x.rank !== 4 || weight.rank !== 4) throw new Error(`${what}: expects x [B, C, H, W] and weight [O, C, P, P]`);
  const [B, C, H, W] = x.shape as [number, number, number, number];
  const [O, Cw, Pk, Pk2] = weight.shape as [number, number, number, number];
  if (Cw !== C) throw new Error(`${what}: weight has ${Cw} input channels, x has ${C}`);
  if (Pk !== Pk2 || Pk < 1) throw new Error(`${what}: the kernel must be square`);
  if (H < Pk || W < Pk) throw new Error(`${what}: the image is smaller than one patch`);
  if (bias && (bias.rank !== 1 || bias.shape[0] !== O)) throw new Error(`${what}: bias ${bias.describe()} must be [${O}]`);
  const Hp = Math.floor(H / Pk);
  const Wp = Math.floor(W / Pk);
  const dims = { B, C, H, W, O, Pk, Hp, Wp };
  return composite([x, weight, bias], () => {
    const conv = patchConv(x, weight, dims);
    return bias ? add(conv, reshape(bias, [O, 1, 1])) : conv;
  });
}

interface PatchDims { B: number; C: number; H: number; W: number; O: number; Pk: number; Hp: number; Wp: number }

function patchConv(x: Tensor, weight: Tensor, dims: PatchDims): Tensor {
  const { B, C, H, W, O, Pk, Hp, Wp } = dims;
  const y = Tensor.empty([B, O, Hp, Wp], 'float32', 'patchEmbed');
  const k = patchEmbedKernel();
  const label = `${B}x${C}x${H}x${W} p${Pk} -> ${O}`;
  if (y.size > 0) rt().run({ source: k, uniforms: { n: y.size, ...dims }, buffers: [x.buffer, weight.buffer, y.buffer], grid: grid1d(y.size, k.workgroupSize), flops: 2 * y.size * C * Pk * Pk, bytes: 4 * (x.size + weight.size + y.size), label: `patch_embed ${label}` });
  return record('patchEmbed', y, [x, weight], (g) => {
    let dx: Tensor | null = null;
    let dw: Tensor | null = null;
    if (x.requiresGrad) {
      dx = Tensor.empty(x.shape, 'float32', 'patchEmbed dx');
      const kx = patchEmbedInputGradKernel();
      rt().run({ source: kx, uniforms: { n: dx.size, ...dims }, buffers: [g.buffer, weight.buffer, dx.buffer], grid: grid1d(dx.size, kx.workgroupSize), flops: 2 * y.size * C * Pk * Pk, bytes: 4 * (x.size + weight.size + y.size), label: `patch_embed_grad_input ${label}` });
    }
    if (weight.requiresGrad) {
      dw = Tensor.empty(weight.shape, 'float32', 'patchEmbed dweight');
      const kw = patchEmbedWeightGradKernel();
      rt().run({ source: kw, uniforms: { n: dw.size, ...dims }, buffers: [g.buffer, x.buffer, dw.buffer], grid: grid1d(dw.size, kw.workgroupSize), flops: 2 * y.size * C * Pk * Pk, bytes: 4 * (x.size + weight.size + y.size), label: `patch_embed_grad_weight ${label}` });
    }
    return [dx, dw];
  });
}


export interface Conv2dOptions {
  stride?: number;
  padding?: number;
}

export interface Im2colOptions extends Conv2dOptions {
  /** x is [B, H, W, C] instead of [B, C, H, W] (columns keep PyTorch's (c, ky, kx) order). */
  channelsLast?: boolean;
}

/** Receptive fields as rows: x [B, C, H, W] (or [B, H, W, C]) → [B·Ho·Wo, C·kh·kw]; backward
 * is col2im. */
export function im2col(x: Tensor, kh: number, kw: number, opts: Im2colOptions = {}): Tensor {
  const stride = opts.stride ?? 1;
  const pad = opts.padding ?? 0;
  const what = `im2col(${x.describe()}, kernel ${kh}x${kw}, stride ${stride}, padding ${pad})`;
  if (x.rank !== 4) throw new Error(`${what}: expects x [B, C, H, W]`);
  for (const [name, v, lo] of [['kernel height', kh, 1], ['kernel width', kw, 1], ['stride', stride, 1], ['padding', pad, 0]] as const) {
    if (!Number.isInteger(v) || v < lo) throw new Error(`${what}: ${name} ${v} must be an integer >= ${lo}`);
  }
  const channelsLast = opts.channelsLast ?? false;
  const [B, C, H, W] = (channelsLast ? [x.shape[0], x.shape[3], x.shape[1], x.shape[2]] : x.shape) as [number, number, number, number];
  const Ho = Math.floor((H + 2 * pad - kh) / stride) + 1;
  const Wo = Math.floor((W + 2 * pad - kw) / stride) + 1;
  if (Ho < 1 || Wo < 1) throw new Error(`${what}: the padded image is smaller than the kernel`);
  const dims = { B, C, H, W, Ho, Wo, channelsLast: channelsLast ? 1 : 0 };
  const cols = Tensor.empty([B * Ho * Wo, C * kh * kw], 'float32', 'im2col');
  const k = im2colKernel(kh, kw, stride, pad);
  const label = `${B}x${C}x${H}x${W}${channelsLast ? ' nhwc' : ''} k${kh}x${kw} s${stride} p${pad}`;
  if (cols.size > 0) rt().run({ source: k, uniforms: { n: B * Ho * Wo, ...dims }, buffers: [x.buffer, cols.buffer], grid: grid1d(B * Ho * Wo, k.workgroupSize), bytes: 8 * cols.size, label: `im2col ${label}` });
  return record('im2col', cols, [x], (g) => {
    const dx = Tensor.empty(x.shape, 'float32', 'col2im');
    const kb = col2imKernel(kh, kw, stride, pad);
    if (dx.size > 0) rt().run({ source: kb, uniforms: { n: B * H * W, ...dims }, buffers: [g.buffer, dx.buffer], grid: grid1d(B * H * W, kb.workgroupSize), bytes: 4 * (g.size + dx.size), label: `col2im ${label}` });
    return [dx];
  });
}

/** conv2d as torch.nn.functional.conv2d: x [B, C, H, W], weight [O, C, kh, kw], bias [O]. */
export function conv2d(x: Tensor, weight: Tensor, bias?: Tensor | null, opts: Conv2dOptions = {}): Tensor {
  const what = `conv2d(${x.describe()}, weight ${weight.describe()})`;
  if (x.rank !== 4 || weight.rank !== 4) throw new Error(`${what}: expects x [B, C, H, W] and weight [O, C, kh, kw]`);
  const [B, C, H, W] = x.shape as [number, number, number, number];
  const [O, Cw, kh, kw] = weight.shape as [number, number, number, number];
  if (Cw !== C) throw new Error(`${what}: weight has ${Cw} input channels, x has ${C}`);
  if (bias && (bias.rank !== 1 || bias.shape[0] !== O)) throw new Error(`${what}: bias ${bias.describe()} must be [${O}]`);
  const stride = opts.stride ?? 1;
  const pad = opts.padding ?? 0;
  const Ho = Math.floor((H + 2 * pad - kh) / stride) + 1;
  const Wo = Math.floor((W + 2 * pad - kw) / stride) + 1;
  return composite([x, weight, bias], () => {
    const rows = linear(im2col(x, kh, kw, opts), reshape(weight, [O, C * kh * kw]), bias ?? null); // [B·Ho·Wo, O]
    return permute(reshape(rows, [B, Ho, Wo, O]), [0, 3, 1, 2]);
  });
}
