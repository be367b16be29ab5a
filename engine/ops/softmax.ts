// softmax, log-softmax (any axis; non-last axes are permuted last) and fused softmax
// cross-entropy with integer labels or soft targets and label smoothing.
import { grid1d } from '../../kernels/common.js';
import { crossEntropyGradKernel, crossEntropyKernel, softmaxGradKernel, softmaxKernel } from '../../kernels/softmax.js';
import { composite, record } from '../autograd.js';
import { rt } from '../dispatch.js';
import { shapeStr, Tensor } from '../tensor.js';
import { add, clamp, log, mapElements, mul, mulScalar, sub } from './elementwise.js';
import { transpose } from './movement.js';
import { mean, sum } from './reduce.js';

function rowsOf(x: Tensor): [number, number] {
  const cols = x.shape[x.rank - 1] ?? 1;
  return [cols === 0 ? 0 : x.size / cols, cols];
}

function softmaxLast(x: Tensor, log: boolean): Tensor {
  const op = log ? 'logSoftmax' : 'softmax';
  if (x.dtype !== 'float32' || x.rank === 0) throw new Error(`${op}: ${x.describe()} must be a float32 tensor with at least one dimension`);
  const [rows, cols] = rowsOf(x);
  const y = Tensor.empty(x.shape, 'float32', op);
  const source = softmaxKernel(log);
  if (rows > 0) rt().run({ source, uniforms: { rows, cols, scale: 1 }, buffers: [x.buffer, y.buffer], grid: grid1d(rows, source.workgroupSize), label: `${source.name} ${rows}x${cols}` });
  return record(op, y, [x], (g) => {
    const dx = Tensor.empty(x.shape, 'float32', `${op} backward`);
    const gs = softmaxGradKernel(log);
    if (rows > 0) rt().run({ source: gs, uniforms: { rows, cols, scale: 1 }, buffers: [y.buffer, g.buffer, dx.buffer], grid: grid1d(rows, gs.workgroupSize), label: `${gs.name} ${rows}x${cols}` });
    return [dx];
  });
}

function alongAxis(x: Tensor, axis: number, log: boolean): Tensor {
  const a = axis < 0 ? axis + x.rank : axis;
  if (a < 0 || a >= x.rank) throw new Error(`${log ? 'logSoftmax' : 'softmax'}: axis ${axis} is out of range for ${x.describe()}`);
  if (a === x.rank - 1) return softmaxLast(x, log);
  return composite([x], () => transpose(softmaxLast(transpose(x, a, -1), log), a, -1));
}

export const softmax = (x: Tensor, axis = -1) => alongAxis(x, axis, false);
export const logSoftmax = (x: Tensor, axis = -1) => alongAxis(x, axis, true);

export interface CrossEntropyOptions {
  /** ε: the target becomes (1 - ε) · target + ε / classes. */
  labelSmoothing?: number;
  /** 'mean' (default) over rows, or 'none' for the per-row losses. */
  reduction?: 'mean' | 'none';
}

/** Cross-entropy of logits [N, C] against int32 labels [N] or soft targets [N, C] (rows summing
 * to 1). Softmax and the loss are one kernel; backward is one kernel. */
export function crossEntropy(logits: Tensor, target: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const eps = opts.labelSmoothing ?? 0;
  if (!(eps >= 0 && eps <= 1)) throw new Error(`crossEntropy: labelSmoothing ${eps} must be in [0, 1]`);
  if (logits.rank !== 2 || logits.dtype !== 'float32') throw new Error(`crossEntropy: logits ${logits.describe()} must be float32 [N, C]`);
  const [N, C] = logits.shape as [number, number];
  const soft = target.dtype === 'float32';
  if (soft && (target.rank !== 2 || target.shape[0] !== N || target.shape[1] !== C)) {
    throw new Error(`crossEntropy: soft target ${target.describe()} must match logits ${shapeStr(logits.shape)}${target.rank === 1 && target.shape[0] === N ? `; for class indices pass an int32 tensor (tensor(labels, [${N}], { dtype: 'int32' }) or an Int32Array)` : ''}`);
  }
  if (!soft) {
    if (target.rank !== 1 || target.shape[0] !== N) throw new Error(`crossEntropy: labels ${target.describe()} must be int32 [${N}] for logits ${shapeStr(logits.shape)}`);
    const r = target.knownRange;
    if (r && N > 0 && (r[0] < 0 || r[1] >= C)) throw new Error(`crossEntropy: labels span [${r[0]}, ${r[1]}], outside the ${C} classes of logits ${shapeStr(logits.shape)}`);
  }
  return composite([logits, target], () => {
    const perRow = crossEntropyRows(logits, target, soft, eps);
    return opts.reduction === 'none' ? perRow : mean(perRow);
  });
}

/** Per-row losses [N]; the row's logsumexp is saved for the backward. */
function crossEntropyRows(logits: Tensor, target: Tensor, soft: boolean, eps: number): Tensor {
  const [N, C] = logits.shape as [number, number];
  const loss = Tensor.empty([N], 'float32', 'crossEntropy');
  const lse = Tensor.empty([N], 'float32', 'crossEntropy lse');
  const source = crossEntropyKernel(soft);
  if (N > 0) rt().run({ source, uniforms: { rows: N, cols: C, eps }, buffers: [logits.buffer, target.buffer, loss.buffer, lse.buffer], grid: grid1d(N, source.workgroupSize), label: `${source.name} ${N}x${C}` });
  return record('crossEntropy', loss, [logits, target], (g) => {
    let dz: Tensor | null = null;
    if (logits.requiresGrad) {
      dz = Tensor.empty(logits.shape, 'float32', 'crossEntropy backward');
      const gs = crossEntropyGradKernel(soft);
      rt().run({ source: gs, uniforms: { rows: N, cols: C, eps }, buffers: [logits.buffer, target.buffer, lse.buffer, g.buffer, dz.buffer], grid: grid1d(N, gs.workgroupSize), label: `${gs.name} ${N}x${C}` });
    }
    // d loss / d t_c = -(1 - ε) log_softmax(z)_c = (1 - ε)(lse - z_c), times the row's gradient.
    const dt = soft && target.requiresGrad ? mapElements('crossEntropy_target_grad', '(1.0 - p) * (b - a) * c', [logits, reshapeCol(lse), reshapeCol(g)], logits.shape, eps) : null;
    return [dz, dt];
  }, [lse]);
}

function reshapeCol(t: Tensor): Tensor {
  return Tensor.view(t, [t.size, 1]);
}

/** AugMix's Jensen–Shannon consistency loss over views of the same images (logits [B, K] each):
 * mean over the batch of (1/n) Σ_i KL(p_i ‖ M), M = (1/n) Σ_i p_i, with log M clamped at 1e-7
 * as in the reference code (augmix/imagenet.py). Composed from ops, so autograd gives backward. */
export function jsdLoss(...views: Tensor[]): Tensor {
  return composite(views, () => jsdOfViews(views));
}

function jsdOfViews(views: Tensor[]): Tensor {
  if (views.length < 2) throw new Error(`jsdLoss: needs at least two views of the batch, got ${views.length}`);
  const first = views[0]!;
  for (const v of views) {
    if (v.rank !== 2 || v.shape[0] !== first.shape[0] || v.shape[1] !== first.shape[1]) {
      throw new Error(`jsdLoss: every view must be [B, K] like ${first.describe()}; got ${v.describe()}`);
    }
  }
  const n = views.length;
  const probs = views.map((v) => softmax(v));
  let total = probs[0]!;
  for (const p of probs.slice(1)) total = add(total, p);
  const logMixture = log(clamp(mulScalar(total, 1 / n), 1e-7, 1));
  let kl: Tensor | null = null;
  views.forEach((v, i) => {
    const term = sum(mul(probs[i]!, sub(logSoftmax(v), logMixture)));
    kl = kl ? add(kl, term) : term;
  });
  return mulScalar(kl!, 1 / (n * first.shape[0]!));
}
