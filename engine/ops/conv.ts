// Patch embedding (conv2d with stride = kernel size), forward and backward for input, weight
// and bias, as in timm's PatchEmbed. Rows and columns past the last whole patch are ignored,
// as a strided convolution does.
import { grid1d } from '../../kernels/common.js';
import { patchEmbedInputGradKernel, patchEmbedKernel, patchEmbedWeightGradKernel } from '../../kernels/conv.js';
import { record } from '../autograd.js';
import { rt } from '../dispatch.js';
import { Tensor } from '../tensor.js';
import { add } from './elementwise.js';
import { reshape } from './movement.js';

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
  const y = Tensor.empty([B, O, Hp, Wp], 'float32', 'patchEmbed');
  const k = patchEmbedKernel();
  const label = `${B}x${C}x${H}x${W} p${Pk} -> ${O}`;
  if (y.size > 0) rt().run({ source: k, uniforms: { n: y.size, ...dims }, buffers: [x.buffer, weight.buffer, y.buffer], grid: grid1d(y.size, k.workgroupSize), flops: 2 * y.size * C * Pk * Pk, bytes: 4 * (x.size + weight.size + y.size), label: `patch_embed ${label}` });
  const conv = record('patchEmbed', y, [x, weight], (g) => {
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
  return bias ? add(conv, reshape(bias, [O, 1, 1])) : conv;
}

