// DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers"),
// following facebookresearch/dino: a student ViT and a teacher ViT of the same shape, each with
// DINOHead (an MLP to a bottleneck, L2-normalisation, a weight-normalised last layer); the teacher
// is the EMA of the student, sees only the global crops, and its outputs are centred and
// sharpened; the student matches them from every other crop.
//
// Checkpoint names: the teacher under timm's names (`blocks.*`, `cls_token`, `pos_embed`,
// `patch_embed.*`, `norm.*`, `head.mlp.{0,2,4}.*`, `head.last_layer.weight_{g,v}`), as DINO's
// released backbones are its teachers, so the file initialises a ViT directly; the student
// under `student.*`; the centre as `center`.
import * as T from '../engine/index.js';
import { type Ctx, Linear, Module, Params, type ParamInfo } from './layers.js';
import { type ViTConfig, VisionTransformer } from './vit.js';

export interface DINOConfig {
  /** The backbone: a patchifying ViT without a classifier (num_classes 0). */
  backbone: ViTConfig;
  out_dim: number;
  hidden_dim: number;
  bottleneck_dim: number;
  /** Linear layers of the head's MLP (DINO: 3). */
  nlayers: number;
  /** Keep the last layer's weight_g fixed at 1 (each prototype a unit vector). */
  norm_last_layer: boolean;
  global_crop_size: number;
  local_crop_size: number;
  local_crops_number: number;
  global_crop_scale: [number, number];
  local_crop_scale: [number, number];
  student_temp: number;
  center_momentum: number;
}

/** DINO around a ViT preset's encoder. DINO's head (2048 hidden, 256 bottleneck, 65,536
 * prototypes) and crops (224 / 96 px) are for ImageNet; the defaults here scale them to small
 * images: crops at the image size and 12/28 of it (96/224), a 1024-wide head to 4096 prototypes. */
export function dinoConfigFor(vit: ViTConfig, o: Partial<Omit<DINOConfig, 'backbone'>> = {}): DINOConfig {
  if (vit.conv_stem?.length) throw new Error('DINO: the backbone must patchify (local crops need a resizable patch grid)');
  if (vit.distilled) throw new Error('DINO: a distilled ViT has no DINO backbone (drop the distillation token)');
  if (!vit.class_token) throw new Error('DINO: the backbone needs a class token (its output is what the head sees)');
  const local = o.local_crop_size ?? Math.max(vit.patch_size, Math.round((vit.img_size * 96) / 224 / vit.patch_size) * vit.patch_size);
  const cfg: DINOConfig = {
    backbone: { ...vit, num_classes: 0, mean: [...vit.mean], std: [...vit.std], conv_stem: [] },
    out_dim: 4096,
    hidden_dim: 1024,
    bottleneck_dim: 128,
    nlayers: 3,
    norm_last_layer: true,
    global_crop_size: vit.img_size,
    local_crop_size: local,
    local_crops_number: 6,
    global_crop_scale: [0.4, 1],
    local_crop_scale: [0.05, 0.4],
    student_temp: 0.1,
    center_momentum: 0.9,
    ...o,
  };
  for (const size of [cfg.global_crop_size, cfg.local_crop_size]) {
    if (!(Number.isInteger(size) && size > 0 && size % vit.patch_size === 0)) throw new Error(`DINO: crop size ${size} must be a positive multiple of the patch size ${vit.patch_size}`);
  }
  if (!(Number.isInteger(cfg.local_crops_number) && cfg.local_crops_number >= 0)) throw new Error(`DINO: local_crops_number ${cfg.local_crops_number} must be a non-negative integer`);
  if (cfg.nlayers < 1) throw new Error(`DINO: the head needs at least one layer, got nlayers ${cfg.nlayers}`);
  return cfg;
}

/** The ViT whose weights a DINO checkpoint's teacher initialises, over `base` (a preset: its
 * head, pooling and regularisation). */
export function vitConfigFromDino(base: ViTConfig, dino: DINOConfig): ViTConfig {
  return { ...base, ...dino.backbone, num_classes: base.num_classes, drop_path_rate: base.drop_path_rate, drop_rate: base.drop_rate, attn_drop_rate: base.attn_drop_rate };
}

/** x / max(‖x‖₂, eps) along the last axis (F.normalize). */
export function l2Normalize(x: T.Tensor, eps = 1e-12): T.Tensor {
  const norm = T.sqrt(T.sum(T.mul(x, x), -1, { keepdim: true }));
  return T.div(x, T.maximum(norm, T.full([1], eps)));
}

/** vision_transformer.py's DINOHead: Linear-GELU-…-Linear to the bottleneck, L2-normalise, then
 * the weight-normalised prototypes (weight = g · v / ‖v‖ per row, bias-free). */
export class DINOHead {
  readonly mlp: Linear[] = [];
  readonly weightV: T.Tensor;
  readonly weightG: T.Tensor;
  constructor(p: Params, inDim: number, c: DINOConfig) {
    const dims = c.nlayers === 1 ? [inDim, c.bottleneck_dim] : [inDim, ...Array<number>(c.nlayers - 1).fill(c.hidden_dim), c.bottleneck_dim];
    // nn.Sequential numbers the GELUs too: the Linears are mlp.0, mlp.2, mlp.4.
    for (let i = 0; i + 1 < dims.length; i++) this.mlp.push(new Linear(p.pp('mlp').pp(2 * i), dims[i]!, dims[i + 1]!));
    const last = p.pp('last_layer');
    // weight_norm wraps a fresh nn.Linear: v keeps PyTorch's default U(±1/√fan_in); g is 1.
    this.weightV = last.get('weight_v', [c.out_dim, c.bottleneck_dim], 'fan_in_uniform');
    this.weightG = c.norm_last_layer ? last.constant('weight_g', [c.out_dim, 1], new Float32Array(c.out_dim).fill(1)) : last.get('weight_g', [c.out_dim, 1], 'ones');
  }

  forward(x: T.Tensor): T.Tensor {
    let h = x;
    this.mlp.forEach((fc, i) => {
      h = i + 1 < this.mlp.length ? T.linearGelu(h, fc.weight, fc.bias) : fc.forward(h);
    });
    const weight = T.mul(this.weightG, T.div(this.weightV, T.sqrt(T.sum(T.mul(this.weightV, this.weightV), -1, { keepdim: true }))));
    return T.linear(l2Normalize(h), weight, null);
  }
}

export class DINO extends Module {
  readonly config: DINOConfig;
  readonly params: Map<string, ParamInfo>;
  readonly buffers = new Map<string, T.Tensor>();
  readonly student: VisionTransformer;
  readonly studentHead: DINOHead;
  readonly teacher: VisionTransformer;
  readonly teacherHead: DINOHead;
  readonly center: T.Tensor;
  /** The teacher's weights as the EMA of the student's (update(momentum) after each step). */
  readonly teacherEma: T.WeightEma;

  constructor(config: DINOConfig, seed = 0) {
    super();
    const c = (this.config = config);
    const s = Params.root(seed).pp('student');
    this.student = new VisionTransformer(c.backbone, seed, s);
    this.studentHead = new DINOHead(s.pp('head'), c.backbone.embed_dim, c);
    this.params = s.store;
    const t = Params.root(seed);
    this.teacher = new VisionTransformer(c.backbone, seed, t);
    this.teacherHead = new DINOHead(t.pp('head'), c.backbone.embed_dim, c);
    for (const [name, p] of t.store) {
      p.tensor.requiresGrad = false;
      this.buffers.set(name, p.tensor);
    }
    for (const [name, b] of t.buffers) this.buffers.set(name, b);
    for (const [name, b] of s.buffers) this.buffers.set(name, b);
    this.center = T.keep(T.zeros([1, c.out_dim]));
    this.center.name = 'center';
    this.buffers.set('center', this.center);
    // The teacher starts as the student (main_dino.py: teacher.load_state_dict(student's)).
    const pairs = [...this.params].map(([name, p]) => {
      const twin = t.store.get(name.slice('student.'.length));
      if (!twin) throw new Error(`DINO: the teacher has no '${name.slice('student.'.length)}'`);
      return [p.tensor, twin.tensor] as const;
    });
    this.teacherEma = new T.WeightEma(pairs.map(([st]) => st), 0.996, { into: pairs.map(([, te]) => te) });
  }

  /** The class tokens of a batch of crops of one size. */
  private cls(model: VisionTransformer, x: T.Tensor, ctx: Ctx): T.Tensor {
    const h = model.forwardFeatures(x, ctx);
    const [B, , D] = h.shape as [number, number, number];
    return T.reshape(T.slice(h, [0, 0], [B, 1]), [B, D]);
  }

  /** The student's outputs [(2 + local crops)·B, out_dim]: the global crops [2B, C, g, g] then the
   * local ones [n·B, C, l, l] (view-major), the head run once on all class tokens as DINO's
   * MultiCropWrapper. */
  studentForward(globals: T.Tensor, locals: T.Tensor | null, ctx: Ctx): T.Tensor {
    const tokens = [this.cls(this.student, globals, ctx)];
    if (locals && locals.shape[0]) tokens.push(this.cls(this.student, locals, ctx));
    return this.studentHead.forward(tokens.length > 1 ? T.concat(tokens, 0) : tokens[0]!);
  }

  /** The teacher's outputs [2B, out_dim] on the global crops, without gradients. */
  teacherForward(globals: T.Tensor): T.Tensor {
    return T.noGrad(() => this.teacherHead.forward(this.cls(this.teacher, globals, { training: false })));
  }

  /** DINOLoss: the mean over (teacher view g, student view v ≠ g) pairs of the cross-entropy
   * between softmax((t_g − center) / teacherTemp) and softmax(s_v / student_temp). A local view
   * pairs with both global ones; by linearity its two terms are one cross-entropy against their
   * mean target, so the fused soft-target kernel runs twice in all. */
  loss(student: T.Tensor, teacher: T.Tensor, teacherTemp: number): T.Tensor {
    const B = teacher.shape[0]! / 2;
    const nLocal = student.shape[0]! / B - 2;
    if (!Number.isInteger(B) || !Number.isInteger(nLocal) || nLocal < 0) {
      throw new Error(`DINO loss: student ${student.describe()} and teacher ${teacher.describe()} must hold (2 + n)·B and 2·B rows`);
    }
    const q = T.noGrad(() => T.softmax(T.mulScalar(T.sub(teacher, this.center), 1 / teacherTemp)));
    const [q0, q1] = [T.slice(q, [0], [B]), T.slice(q, [B], [2 * B])];
    const logits = T.mulScalar(student, 1 / this.config.student_temp);
    const globalTerm = T.crossEntropy(T.slice(logits, [0], [2 * B]), T.concat([q1, q0], 0));
    if (nLocal === 0) return globalTerm;
    const both = T.mulScalar(T.add(q0, q1), 0.5);
    const localTerm = T.crossEntropy(T.slice(logits, [2 * B], [(2 + nLocal) * B]), T.concat(Array<T.Tensor>(nLocal).fill(both), 0));
    return T.mulScalar(T.add(globalTerm, T.mulScalar(localTerm, nLocal)), 1 / (1 + nLocal));
  }

  /** The mean entropy (nats) of the teacher's targets softmax((t − center) / teacherTemp): log
   * out_dim when they are uniform, 0 when one-hot — the two collapses DINO's centring and
   * sharpening balance (Caron et al. 2021, §5.3). A scalar tensor, without gradients. */
  teacherEntropy(teacher: T.Tensor, teacherTemp: number): T.Tensor {
    return T.noGrad(() => {
      const logQ = T.logSoftmax(T.mulScalar(T.sub(teacher, this.center), 1 / teacherTemp));
      return T.mulScalar(T.sum(T.mul(T.exp(logQ), logQ)), -1 / teacher.shape[0]!);
    });
  }

  /** center ← m · center + (1 − m) · mean of the teacher's outputs over the batch. */
  updateCenter(teacher: T.Tensor): void {
    T.noGrad(() => T.scope(() => {
      const m = this.config.center_momentum;
      const next = T.add(T.mulScalar(this.center, m), T.mulScalar(T.mean(teacher, 0, { keepdim: true }), 1 - m));
      T.rt().copy(next.buffer, this.center.buffer, this.center.size * 4);
    }));
  }

  /** The prototypes' trained weights (DINO leaves them untrained in the first epoch). */
  lastLayerParams(): T.Tensor[] {
    return [...this.params].filter(([name]) => name.startsWith('student.head.last_layer.')).map(([, p]) => p.tensor);
  }

  override dispose(): void {
    this.student.dispose();
    this.teacher.dispose();
    this.center.dispose();
    this.teacherEma.dispose();
  }
}
