// BatchNorm2d as torch.nn.BatchNorm2d: in training, normalise with the batch's per-channel mean
// and biased variance over (B, H, W) and update the running statistics (momentum, unbiased
// variance); in eval, normalise with the running statistics. Composed from engine ops, so its
// backward is theirs: the batch statistics are differentiated through, as in PyTorch.
import { noGrad } from '../autograd.js';
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
  return normalize('batchNorm2d', x, C, B * H * W, channelMean, (t) => reshape(t, [1, C, 1, 1]), weight, bias, runningMean, runningVar, opts);
}

/** BatchNorm over channels-last data [..., C] (every leading position is a sample of each
 * channel): the layout of a conv stem run as im2col + matmul. */
export function batchNormChannelsLast(x: Tensor, weight: Tensor, bias: Tensor, runningMean: Tensor, runningVar: Tensor, opts: BatchNormOptions): Tensor {
  if (x.rank < 2 || x.dtype !== 'float32') throw new Error(`batchNormChannelsLast: expects a float32 [..., C], got ${x.describe()}`);
  const C = x.shape[x.rank - 1]!;
  const n = x.size / C;
  return normalize('batchNormChannelsLast', x, C, n, (t) => mean(reshape(t, [n, C]), 0), (t) => t, weight, bias, runningMean, runningVar, opts);
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
