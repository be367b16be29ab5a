// Optimizers over parameter tensors, updated in place by the kernels in kernels/optimizer.ts.
// State (moments) lives on the GPU for the optimizer's lifetime; dispose() frees it.
import { ADAMW_HYPER, ADAMW_PER_DISPATCH, adamwMultiKernel, CLIP_CHUNK, clipFactorKernel, emaKernel, SGD_HYPER, sgdKernel, SUM_SQUARES_PER_DISPATCH, sumSquaresMultiKernel } from '../kernels/optimizer.js';
import { grid1d, type KernelSource, putList } from '../kernels/common.js';
import { rt } from './dispatch.js';
import { keep } from './memory.js';
import { zeros } from './ops/creation.js';
import { shapeStr, Tensor, upload } from './tensor.js';

export interface ParamGroup {
  params: Tensor[];
  /** Overrides the optimizer's weight decay for this group (0 for biases, norms, tokens). */
  weightDecay?: number;
}

interface Update {
  p: Tensor;
  g: Tensor;
  state: Tensor[];
}

abstract class Optimizer {
  readonly groups: ParamGroup[];
  stepCount = 0;
  private hyper = new Map<ParamGroup, Tensor>();
  protected state = new Map<Tensor, Tensor[]>();

  constructor(params: Tensor[] | ParamGroup[]) {
    this.groups = params.length && params[0] instanceof Tensor ? [{ params: params as Tensor[] }] : (params as ParamGroup[]);
    for (const g of this.groups) {
      for (const p of g.params) {
        if (!p.requiresGrad) throw new Error(`optimizer: ${p.describe()} does not require grad`);
      }
    }
  }

  protected abstract hyperValues(group: ParamGroup): number[];
  protected abstract update(p: Tensor, g: Tensor, state: Tensor[], hyper: Tensor, clip: Tensor): void;
  protected abstract stateCount: number;
  private noClip: Tensor | null = null;

  /** Applies one update to every parameter that has a gradient. `clip` is the [norm, factor]
   * tensor from clipGradNorm(); gradients are multiplied by its factor inside the update. */
  step(opts: { clip?: Tensor } = {}): void {
    this.stepCount++;
    if (!opts.clip && !this.noClip) {
      this.noClip = keep(Tensor.empty([2], 'float32', 'no clipping'));
      rt().write(this.noClip.buffer, Float32Array.from([0, 1]));
    }
    const clip = opts.clip ?? this.noClip!;
    for (const group of this.groups) {
      const values = Float32Array.from(this.hyperValues(group));
      let h = this.hyper.get(group);
      if (!h) {
        h = keep(Tensor.empty([values.length], 'float32', 'optimizer hyperparameters'));
        this.hyper.set(group, h);
      }
      rt().write(h.buffer, values);
      const items: Update[] = [];
      for (const p of group.params) {
        if (!p.grad) continue;
        if (p.grad.size !== p.size) throw new Error(`optimizer: gradient ${shapeStr(p.grad.shape)} does not match ${p.describe()}`);
        let s = this.state.get(p);
        if (!s) {
          s = Array.from({ length: this.stateCount }, () => keep(zeros(p.shape)));
          this.state.set(p, s);
        }
        items.push({ p, g: p.grad, state: s });
      }
      this.updateGroup(items, h, clip);
    }
  }

  /** Updates one parameter group; optimizers with a multi-tensor kernel override it. */
  protected updateGroup(items: Update[], hyper: Tensor, clip: Tensor): void {
    for (const { p, g, state } of items) this.update(p, g, state, hyper, clip);
  }

  /** Frees every parameter's gradient (call after step()). */
  zeroGrad(): void {
    for (const g of this.groups) for (const p of g.params) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /** Restores a parameter's state (e.g. from a checkpoint), in the order stateOf() returns. */
  setState(p: Tensor, values: Float32Array[]): void {
    if (values.length !== this.stateCount) throw new Error(`optimizer: ${values.length} state arrays for ${p.describe()}, expected ${this.stateCount}`);
    let s = this.state.get(p);
    if (!s) {
      s = Array.from({ length: this.stateCount }, () => keep(zeros(p.shape)));
      this.state.set(p, s);
    }
    s.forEach((t, i) => upload(t, values[i]!));
  }

  /** The optimizer's state tensors for a parameter (moments or momentum), if it has stepped. */
  stateOf(p: Tensor): readonly Tensor[] | undefined {
    return this.state.get(p);
  }

  dispose(): void {
    for (const s of this.state.values()) for (const t of s) t.dispose();
    for (const h of this.hyper.values()) h.dispose();
    this.noClip?.dispose();
    this.noClip = null;
    this.state.clear();
    this.hyper.clear();
  }

  protected launch(name: string, source: KernelSource, p: Tensor, tensors: Tensor[]): void {
    rt().run({ source, uniforms: { n: p.size }, buffers: tensors.map((t) => t.buffer), grid: grid1d(p.size, source.workgroupSize), label: `${name} ${shapeStr(p.shape)}` });
  }
}

export interface AdamWOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

/** AdamW with decoupled weight decay (torch.optim.AdamW defaults). `lr` may change between steps. */
export class AdamW extends Optimizer {
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
  protected stateCount = 2;

  constructor(params: Tensor[] | ParamGroup[], opts: AdamWOptions = {}) {
    super(params);
    this.lr = opts.lr ?? 1e-3;
    this.betas = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.01;
  }

  protected hyperValues(group: ParamGroup): number[] {
    const [b1, b2] = this.betas;
    const t = this.stepCount;
    const v: Record<(typeof ADAMW_HYPER)[number], number> = {
      lr: this.lr, beta1: b1, beta2: b2, eps: this.eps, weightDecay: group.weightDecay ?? this.weightDecay,
      bc1: 1 - Math.pow(b1, t), bc2: 1 - Math.pow(b2, t),
    };
    return ADAMW_HYPER.map((k) => v[k]);
  }

  protected update(p: Tensor, g: Tensor, state: Tensor[], hyper: Tensor, clip: Tensor): void {
    this.updateGroup([{ p, g, state }], hyper, clip);
  }

  /** Up to ADAMW_PER_DISPATCH parameters per dispatch (the storage-binding limit). */
  protected override updateGroup(items: Update[], hyper: Tensor, clip: Tensor): void {
    for (let i = 0; i < items.length; i += ADAMW_PER_DISPATCH) {
      const chunk = items.slice(i, i + ADAMW_PER_DISPATCH);
      const k = adamwMultiKernel(chunk.length);
      const total = chunk.reduce((a, u) => a + u.p.size, 0);
      const uniforms: Record<string, number> = { total };
      putList(uniforms, 'n', chunk.map((u) => u.p.size));
      const buffers = [...chunk.flatMap((u) => [u.p, u.g, u.state[0]!, u.state[1]!]), hyper, clip].map((t) => t.buffer);
      rt().run({ source: k, uniforms, buffers, grid: grid1d(total, k.workgroupSize), label: `adamw${chunk.length > 1 ? ` ×${chunk.length}` : ''} ${chunk.map((u) => shapeStr(u.p.shape)).join(' ')}` });
    }
  }
}

export interface SGDOptions {
  lr?: number;
  momentum?: number;
  weightDecay?: number;
}

/** SGD with momentum (torch.optim.SGD, dampening 0, not Nesterov). */
export class SGD extends Optimizer {
  lr: number;
  momentum: number;
  weightDecay: number;
  protected stateCount = 1;

  constructor(params: Tensor[] | ParamGroup[], opts: SGDOptions = {}) {
    super(params);
    this.lr = opts.lr ?? 1e-2;
    this.momentum = opts.momentum ?? 0;
    this.weightDecay = opts.weightDecay ?? 0;
  }

  protected hyperValues(group: ParamGroup): number[] {
    const v: Record<(typeof SGD_HYPER)[number], number> = {
      lr: this.lr, momentum: this.momentum, weightDecay: group.weightDecay ?? this.weightDecay, first: this.stepCount === 1 ? 1 : 0,
    };
    return SGD_HYPER.map((k) => v[k]);
  }

  protected update(p: Tensor, g: Tensor, [buf]: Tensor[], hyper: Tensor, clip: Tensor): void {
    this.launch('sgd', sgdKernel(), p, [p, g, buf!, hyper, clip]);
  }
}

// ---- clipping and weight averaging ------------------------------------------------------------

/** The global L2 norm of all gradients and the factor min(1, maxNorm / norm), as a [2] tensor,
 * computed on the GPU (no readback): pass it to step({ clip }). maxNorm <= 0 only measures. */
export function clipGradNorm(params: Tensor[], maxNorm: number): Tensor {
  const grads = params.map((p) => p.grad).filter((g): g is Tensor => g !== null);
  const chunks = grads.map((g) => Math.ceil(g.size / CLIP_CHUNK));
  const total = chunks.reduce((a, b) => a + b, 0);
  const partials = Tensor.empty([Math.max(total, 1)], 'float32', 'clip partials');
  const out = Tensor.empty([2], 'float32', 'grad norm');
  // Up to SUM_SQUARES_PER_DISPATCH gradients per dispatch, partials written one after another.
  let off = 0;
  for (let i = 0; i < grads.length; i += SUM_SQUARES_PER_DISPATCH) {
    const gs = grads.slice(i, i + SUM_SQUARES_PER_DISPATCH);
    const cs = chunks.slice(i, i + SUM_SQUARES_PER_DISPATCH);
    const count = cs.reduce((a, b) => a + b, 0);
    const sq = sumSquaresMultiKernel(gs.length);
    const uniforms: Record<string, number> = { total: count, out_off: off };
    putList(uniforms, 'c', cs);
    putList(uniforms, 'n', gs.map((g) => g.size));
    rt().run({ source: sq, uniforms, buffers: [...gs.map((g) => g.buffer), partials.buffer], grid: grid1d(count, sq.workgroupSize), label: `sum_squares ×${gs.length}` });
    off += count;
  }
  const fin = clipFactorKernel();
  rt().run({ source: fin, uniforms: { count: total, max_norm: maxNorm }, buffers: [partials.buffer, out.buffer], grid: [1, 1, 1], label: `clip_factor ${total}` });
  partials.dispose();
  return out;
}

/** Exponential moving average of parameters (timm's ModelEmaV2): ema ← m·ema + (1 − m)·p. */
export class WeightEma {
  readonly shadow: Tensor[];
  constructor(readonly params: Tensor[], readonly decay: number) {
    this.shadow = params.map((p) => keep(copyOf(p)));
  }
  update(): void {
    const k = emaKernel();
    this.params.forEach((p, i) => {
      rt().run({ source: k, uniforms: { n: p.size, m: this.decay }, buffers: [p.buffer, this.shadow[i]!.buffer], grid: grid1d(p.size, k.workgroupSize), label: `ema ${shapeStr(p.shape)}` });
    });
  }
  dispose(): void {
    for (const t of this.shadow) t.dispose();
  }
}

function copyOf(p: Tensor): Tensor {
  const t = Tensor.empty(p.shape, p.dtype, 'ema');
  rt().copy(p.buffer, t.buffer, p.size * 4);
  return t;
}
