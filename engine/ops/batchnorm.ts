// BatchNorm2d as torch.nn.BatchNorm2d: in training, normalise with the batch's per-channel mean
// and biased variance over (B, H, W) and update the running statistics (momentum, unbiased
// variance); in eval, normalise with the running statistics. batchNorm2d (NCHW) is composed
// from engine ops, so its backward is theirs; the channels-last op is fused. Both differentiate
// through the batch statistics, as PyTorch does.
import { BN_BLOCK, BN_CHUNK, bnApplyKernel, bnGradFinishKernel, bnGradInputKernel, bnGradPartialKernel, bnStatsFinishKernel, bnStatsPartialKernel } from '../../kernels/batchnorm.js';
import { grid1d, type KernelSource } from '../../kernels/common.js';
import { composite, noGrad, record } from '../autograd.js';
import { rt } from '../dispatch.js';
import { Tensor } from '../tensor.js';
import { add, addScalar, mul, mulScalar, rsqrt, sub } from './elementwise.js';
import { reshape } from './movement.js';
import { mean } from './reduce.js';

export interface BatchNormOptions {
  training: boolean;
  /** Weight of the new batch in the running statistics (PyTorch default 0.1). */
  momentum?: number;
  eps?: number;
}

/** BatchNorm over [B, C, H, W] (channel axis 1). */
export function batchNorm2d(x: Tensor, weight: Tensor, bias: Tensor, runningMean: Tensor, runningVar: Tensor, opts: BatchNormOptions): Tensor {
  if (x.rank !== 4 || x.dtype !== 'float32') throw new Error(`batchNorm2d: expects a float32 [B, C, H, W], got ${x.describe()}`);
  const [B, C, H, W] = x.shape as [number, number, number, number];
  // Per-channel means as two row/column reductions of [B, C, H·W]: no permute of the batch.
  const channelMean = (t: Tensor) => mean(mean(reshape(t, [B, C, H * W]), 2), 0);
  return composite([x, weight, bias], () => normalize('batchNorm2d', x, C, B * H * W, channelMean, (t) => reshape(t, [1, C, 1, 1]), weight, bias, runningMean, runningVar, opts));
}

/** BatchNorm over channels-last data [..., C] (every leading position is a sample of each
 * channel): the layout of a conv stem run as im2col + matmul. Fused kernels (kernels/
 * batchnorm.ts): statistics in two reductions, one pass to normalise, and with `relu` the
 * activation folded into the same pass and its mask into the backward. */
export function batchNormChannelsLast(x: Tensor, weight: Tensor, bias: Tensor, runningMean: Tensor, runningVar: Tensor, opts: BatchNormOptions & { relu?: boolean }): Tensor {
  const what = 'batchNormChannelsLast';
  if (x.rank < 2 || x.dtype !== 'float32') throw new Error(`${what}: expects a float32 [..., C], got ${x.describe()}`);
  const C = x.shape[x.rank - 1]!;
  const n = x.size / C;
  for (const [name, t] of [['weight', weight], ['bias', bias], ['running mean', runningMean], ['running var', runningVar]] as const) {
    if (t.rank !== 1 || t.shape[0] !== C) throw new Error(`${what}: ${name} ${t.describe()} must be [${C}] for ${x.describe()}`);
  }
  const training = opts.training;
  if (training && n < 2) throw new Error(`${what}: training needs more than one value per channel, got ${x.describe()}`);
  const relu = opts.relu ?? false;
  const chunks = Math.ceil(n / BN_CHUNK);
  const uniforms = { n, C, chunks, eps: opts.eps ?? 1e-5, momentum: opts.momentum ?? 0.1 };
  const label = `[${n}, ${C}]`;
  const run = (source: KernelSource, buffers: Tensor[], threads: number, name: string) =>
    rt().run({ source, uniforms, buffers: buffers.map((t) => t.buffer), grid: grid1d(threads, source.workgroupSize), label: `${name} ${label}` });
  const blocks = Math.ceil(n / BN_BLOCK) * C;

  const stats = Tensor.empty([C, 4], 'float32', 'batchNorm stats');
  const part = Tensor.empty([Math.max(chunks * C * 3, 1)], 'float32', 'batchNorm partials');
  if (training) run(bnStatsPartialKernel(), [x, part], chunks * C, 'bn_stats_partial');
  run(bnStatsFinishKernel(training), [part, weight, bias, runningMean, runningVar, stats], C, 'bn_stats_finish');
  part.dispose();
  const y = Tensor.empty(x.shape, 'float32', what);
  run(bnApplyKernel(relu), [x, stats, y], blocks, relu ? 'bn_apply_relu' : 'bn_apply');

  return record(what, y, [x, weight, bias], (g) => {
    const gpart = Tensor.empty([Math.max(chunks * C * 2, 1)], 'float32', 'batchNorm grad partials');
    run(bnGradPartialKernel(relu), [x, y, g, stats, gpart], chunks * C, 'bn_grad_partial');
    const dweight = Tensor.empty([C], 'float32', 'batchNorm dweight');
    const dbias = Tensor.empty([C], 'float32', 'batchNorm dbias');
    run(bnGradFinishKernel(), [gpart, dweight, dbias], C, 'bn_grad_finish');
    gpart.dispose();
    let dx: Tensor | null = null;
    if (x.requiresGrad) {
      dx = Tensor.empty(x.shape, 'float32', 'batchNorm dx');
      run(bnGradInputKernel(relu, training), [x, y, g, stats, dweight, dbias, dx], blocks, 'bn_grad_input');
    }
    return [dx, dweight, dbias];
  }, [stats]);
}

function normalize(
  what: string,
  x: Tensor,
  C: number,
  n: number,
  channelMean: (t: Tensor) => Tensor,
  perChannel: (t: Tensor) => Tensor,
  weight: Tensor,
  bias: Tensor,
  runningMean: Tensor,
  runningVar: Tensor,
  opts: BatchNormOptions,
): Tensor {
  for (const [name, t] of [['weight', weight], ['bias', bias], ['running mean', runningMean], ['running var', runningVar]] as const) {
    if (t.rank !== 1 || t.shape[0] !== C) throw new Error(`${what}: ${name} ${t.describe()} must be [${C}] for ${x.describe()}`);
  }
  const eps = opts.eps ?? 1e-5;
  const momentum = opts.momentum ?? 0.1;
  let centered: Tensor;
  let inv: Tensor;
  if (opts.training) {
    if (n < 2) throw new Error(`${what}: training needs more than one value per channel, got ${x.describe()}`);
    const mu = channelMean(x); // [C]
    centered = sub(x, perChannel(mu));
    const variance = channelMean(mul(centered, centered)); // biased, as PyTorch normalises
    inv = perChannel(rsqrt(addScalar(variance, eps)));
    noGrad(() => {
      const newMean = add(mulScalar(runningMean, 1 - momentum), mulScalar(mu, momentum));
      const newVar = add(mulScalar(runningVar, 1 - momentum), mulScalar(variance, (momentum * n) / (n - 1)));
      // In place, in order with the step's other GPU work.
      rt().copy(newMean.buffer, runningMean.buffer, 4 * C);
      rt().copy(newVar.buffer, runningVar.buffer, 4 * C);
      newMean.dispose();
      newVar.dispose();
    });
  } else {
    centered = sub(x, perChannel(runningMean));
    inv = perChannel(rsqrt(addScalar(runningVar, eps)));
  }
  return add(mul(mul(centered, inv), perChannel(weight)), perChannel(bias));
}
