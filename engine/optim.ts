// Optimizers over parameter tensors, updated in place by the kernels in kernels/optimizer.ts.
// State (moments) lives on the GPU for the optimizer's lifetime; dispose() frees it.
import { ADAMW_HYPER, ADAMW_PER_DISPATCH, adamwFlatKernel, adamwMultiKernel, CLIP_CHUNK, clipFactorKernel, emaKernel, SGD_HYPER, sgdKernel, SUM_SQUARES_PER_DISPATCH, sumSquaresMultiKernel } from '../kernels/optimizer.js';
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
   * tensor from clipGradNorm(); gradients are multiplied by its factor inside the update. A group
   * none of whose parameters has a gradient is skipped and its step count stays (see groupSteps). */
  step(opts: { clip?: Tensor } = {}): void {
    this.stepCount++;
    const clip = this.clipOrNone(opts.clip);
    for (const group of this.groups) {
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
      if (!items.length) continue;
      this.groupSteps.set(group, this.stepsOf(group) + 1);
      const values = Float32Array.from(this.hyperValues(group));
      let h = this.hyper.get(group);
      if (!h) {
        h = keep(Tensor.empty([values.length], 'float32', 'optimizer hyperparameters'));
        this.hyper.set(group, h);
      }
      rt().write(h.buffer, values);
      this.updateGroup(items, h, clip);
    }
  }

  /** Steps that updated a group: its bias corrections count these, so parameters that start
   * training late (DINO's prototypes after their frozen epoch) begin as torch's per-parameter
   * state does, at step 1. Equal to stepCount for a group that always had gradients. */
  protected groupSteps = new Map<ParamGroup, number>();
  stepsOf(group: ParamGroup): number {
    return this.groupSteps.get(group) ?? 0;
  }
  /** Every group's step count, in order (checkpoints save them). */
  get groupStepCounts(): number[] {
    return this.groups.map((g) => this.stepsOf(g));
  }
  set groupStepCounts(counts: number[]) {
    if (counts.length !== this.groups.length) throw new Error(`optimizer: ${counts.length} group step counts for ${this.groups.length} groups`);
    this.groups.forEach((g, i) => this.groupSteps.set(g, counts[i]!));
  }

  protected clipOrNone(clip: Tensor | undefined): Tensor {
    if (clip) return clip;
    if (!this.noClip) {
      this.noClip = keep(Tensor.empty([2], 'float32', 'no clipping'));
      rt().write(this.noClip.buffer, Float32Array.from([0, 1]));
    }
    return this.noClip;
  }

  /** The global L2 norm of this optimizer's gradients and the factor min(1, maxNorm / norm), as
   * a [2] tensor for step({ clip }) (see clipGradNorm). */
  clipGradNorm(maxNorm: number): Tensor {
    return clipGradNorm(this.groups.flatMap((g) => g.params), maxNorm);
  }

  /** Updates one parameter group; optimizers with a multi-tensor kernel override it. */
  protected updateGroup(items: Update[], hyper: Tensor, clip: Tensor): void {
    for (const { p, g, state } of items) this.update(p, g, state, hyper, clip);
  }

  /** Frees every parameter's gradient (call after step()). */
  zeroGrad(): void {
    this.gradsChanged();
    for (const g of this.groups) for (const p of g.params) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /** Creates the state tensors of a parameter that has none yet (zeros). */
  protected initState(p: Tensor, state: Tensor[]): void {
    this.state.set(p, state);
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

  /** Called when gradients are freed or replaced. */
  protected gradsChanged(): void {}

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
  /** Pack parameters, gradients and moments into one buffer each and update every parameter in
   * one dispatch (the parameters move into the packed buffer; float32, none listed twice, no
   * live reshaped views, else an error). Off by default: the gradients still arrive in their own
   * buffers and are gathered by one copy each, and on lavapipe those copies cost what the saved
   * dispatches save (bench/results/optimizer-*: convstem16 9.4 ms either way, DeiT-tiny 116 ms
   * packed against 82 ms per tensor). Default: a few tensors per dispatch (16 storage bindings). */
  packed?: boolean;
}

/** Parameters, gradients and moments of a packed optimizer, each tensor at an aligned offset. */
interface Packed {
  total: number;
  /** Exclusive end (elements) of each parameter group. */
  groupEnds: number[];
  offsets: Map<Tensor, number>;
  params: Tensor;
  grads: Tensor;
  m: Tensor;
  v: Tensor;
  hyper: Tensor;
  /** The gradients were copied into `grads` since they last changed. */
  gathered: boolean;
}

/** AdamW with decoupled weight decay (torch.optim.AdamW defaults). `lr` may change between steps. */
export class AdamW extends Optimizer {
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
  protected stateCount = 2;
  private packed: Packed | null = null;

  constructor(params: Tensor[] | ParamGroup[], opts: AdamWOptions = {}) {
    super(params);
    this.lr = opts.lr ?? 1e-3;
    this.betas = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.01;
    if (opts.packed) {
      const reason = this.unpackable();
      if (reason) throw new Error(`AdamW({ packed: true }): ${reason}`);
      this.packed = this.pack();
    }
  }

  /** Whether parameters, gradients and moments live in one buffer each (one dispatch per step). */
  get isPacked(): boolean {
    return this.packed !== null;
  }

  private unpackable(): string | null {
    const seen = new Set<Tensor>();
    for (const g of this.groups) for (const p of g.params) {
      if (seen.has(p)) return `${p.describe()} is listed twice`;
      seen.add(p);
      if (p.dtype !== 'float32') return `${p.describe()} is not float32`;
      if (p.size === 0) return `${p.describe()} is empty`;
      if (p.hasViews) return `${p.describe()} has live views sharing its storage`;
    }
    return seen.size ? null : 'no parameters';
  }

  // Offsets are multiples of the device's storage offset alignment so that each parameter can
  // still be bound on its own by every other kernel.
  private pack(): Packed {
    // At least 4 elements, so that every slice can be bound as whole vec4s.
    const align = Math.max(4, rt().device.limits.minStorageBufferOffsetAlignment / 4);
    const offsets = new Map<Tensor, number>();
    const groupEnds: number[] = [];
    let total = 0;
    for (const g of this.groups) {
      for (const p of g.params) {
        offsets.set(p, total);
        total += Math.ceil(p.size / align) * align;
      }
      groupEnds.push(total);
    }
    const arena = (what: string) => {
      const t = keep(zeros([total]));
      t.name = what;
      return t;
    };
    const packed: Packed = {
      total, groupEnds, offsets, gathered: false,
      params: arena('packed parameters'), grads: arena('packed gradients'), m: arena('packed first moments'), v: arena('packed second moments'),
      hyper: keep(Tensor.empty([ADAMW_HYPER.length * this.groups.length], 'float32', 'optimizer hyperparameters')),
    };
    for (const [p, off] of offsets) {
      const slot = Tensor.slice(packed.params, off, p.shape);
      p.moveInto(slot);
      slot.dispose();
      this.initState(p, [keep(Tensor.slice(packed.m, off, p.shape)), keep(Tensor.slice(packed.v, off, p.shape))]);
    }
    return packed;
  }

  private allHaveGradients(): boolean {
    for (const g of this.groups) for (const p of g.params) if (!p.grad || p.grad.size !== p.size) return false;
    return true;
  }

  /** Copies every gradient into the packed gradient buffer (copies, not dispatches). */
  private gather(packed: Packed): void {
    if (packed.gathered) return;
    for (const [p, off] of packed.offsets) rt().copy(p.grad!.buffer, packed.grads.buffer, p.size * 4, 0, off * 4);
    packed.gathered = true;
  }

  protected override gradsChanged(): void {
    if (this.packed) this.packed.gathered = false;
  }

  /** Packed: the gradients are gathered once and reduced in one pass over the packed buffer (two
   * dispatches); call step() before changing them. */
  override clipGradNorm(maxNorm: number): Tensor {
    const packed = this.packed;
    if (!packed || !this.allHaveGradients()) return super.clipGradNorm(maxNorm);
    this.gather(packed);
    return packedNorm(packed.grads, maxNorm);
  }

  /** Packed and every parameter has a gradient: one dispatch. Otherwise (a parameter without a
   * gradient is left alone, as torch does) one update per tensor over the packed slices. */
  override step(opts: { clip?: Tensor } = {}): void {
    const packed = this.packed;
    if (!packed || !this.allHaveGradients()) {
      super.step(opts);
      this.gradsChanged();
      return;
    }
    this.stepCount++;
    for (const g of this.groups) this.groupSteps.set(g, this.stepsOf(g) + 1);
    const clip = this.clipOrNone(opts.clip);
    this.gather(packed);
    rt().write(packed.hyper.buffer, Float32Array.from(this.groups.flatMap((g) => this.hyperValues(g))));
    const k = adamwFlatKernel(this.groups.length);
    const uniforms: Record<string, number> = { total: packed.total };
    putList(uniforms, 'e', this.groups.length > 1 ? packed.groupEnds.slice(0, -1) : [packed.total]);
    rt().run({
      source: k, uniforms, grid: grid1d(packed.total, k.workgroupSize), label: `adamw packed ${packed.offsets.size} tensors, ${packed.total} elements`,
      buffers: [packed.params, packed.grads, packed.m, packed.v, packed.hyper, clip].map((t) => t.buffer),
    });
    packed.gathered = false;
  }

  override dispose(): void {
    super.dispose();
    const packed = this.packed;
    if (packed) for (const t of [packed.params, packed.grads, packed.m, packed.v, packed.hyper]) t.dispose();
    this.packed = null;
  }

  protected hyperValues(group: ParamGroup): number[] {
    const [b1, b2] = this.betas;
    const t = this.stepsOf(group);
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

/** [norm, factor] of one packed gradient buffer: partial sums of squares, then the factor. */
function packedNorm(grads: Tensor, maxNorm: number): Tensor {
  const chunks = Math.ceil(grads.size / CLIP_CHUNK);
  const partials = Tensor.empty([chunks], 'float32', 'clip partials');
  const out = Tensor.empty([2], 'float32', 'grad norm');
  const sq = sumSquaresMultiKernel(1);
  rt().run({ source: sq, uniforms: { total: chunks, out_off: 0, c0: chunks, n0: grads.size }, buffers: [grads.buffer, partials.buffer], grid: grid1d(chunks, sq.workgroupSize), label: `sum_squares packed ${grads.size}` });
  const fin = clipFactorKernel();
  rt().run({ source: fin, uniforms: { count: chunks, max_norm: maxNorm }, buffers: [partials.buffer, out.buffer], grid: [1, 1, 1], label: `clip_factor ${chunks}` });
  partials.dispose();
  return out;
}

export interface WeightEmaOptions {
  /** Ramp the decay up as min(decay, (1 + n) / (10 + n)) after n updates, as
   * tf.train.ExponentialMovingAverage does with num_updates, so the average does not keep
   * the random initialisation for thousands of steps. */
  warmup?: boolean;
  /** Tensors to hold the average (one per tracked tensor, same shapes), owned by the caller:
   * DINO's teacher is the EMA of its student. They start as copies of the tracked tensors. */
  into?: Tensor[];
}

/** Exponential moving average of model state (timm's ModelEmaV2, which averages the BatchNorm
 * running statistics along with the parameters): ema ← m·ema + (1 − m)·t. */
export class WeightEma {
  readonly shadow: Tensor[];
  /** Updates applied so far (the warmup's n). */
  updates = 0;
  constructor(readonly tracked: Tensor[], readonly decay: number, readonly options: WeightEmaOptions = {}) {
    const into = options.into;
    if (into) {
      if (into.length !== tracked.length) throw new Error(`WeightEma: ${into.length} tensors to hold the average of ${tracked.length}`);
      into.forEach((s, i) => {
        const t = tracked[i]!;
        if (s.size !== t.size || s.dtype !== t.dtype) throw new Error(`WeightEma: ${s.describe()} cannot hold the average of ${t.describe()}`);
      });
      this.shadow = [...into];
      this.reset();
    } else {
      this.shadow = tracked.map((t) => keep(copyOf(t)));
    }
  }
  /** The decay the next update uses. */
  currentDecay(): number {
    return this.options.warmup ? Math.min(this.decay, (1 + this.updates) / (10 + this.updates)) : this.decay;
  }
  /** One step of the average; `decay` overrides the configured one (a momentum schedule). */
  update(decay?: number): void {
    const k = emaKernel();
    const m = decay ?? this.currentDecay();
    this.tracked.forEach((t, i) => {
      rt().run({ source: k, uniforms: { n: t.size, m }, buffers: [t.buffer, this.shadow[i]!.buffer], grid: grid1d(t.size, k.workgroupSize), label: `ema ${shapeStr(t.shape)}` });
    });
    this.updates++;
  }
  /** The running average of one of the tracked tensors. */
  shadowOf(t: Tensor): Tensor | undefined {
    const i = this.tracked.indexOf(t);
    return i < 0 ? undefined : this.shadow[i];
  }
  /** Restarts the average of the given tracked tensors (all by default) from their current values. */
  reset(tensors: Tensor[] = this.tracked): void {
    for (const t of tensors) {
      const s = this.shadowOf(t);
      if (!s) throw new Error(`WeightEma.reset: ${t.describe()} is not tracked`);
      rt().copy(t.buffer, s.buffer, t.size * 4);
    }
  }
  dispose(): void {
    if (!this.options.into) for (const t of this.shadow) t.dispose();
  }
}

function copyOf(p: Tensor): Tensor {
  const t = Tensor.empty(p.shape, p.dtype, 'ema');
  rt().copy(p.buffer, t.buffer, p.size * 4);
  return t;
}
