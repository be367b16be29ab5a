// Vision Transformer (Dosovitskiy et al. 2020) and DeiT's distillation token (Touvron et al.
// 2021), following timm's vision_transformer.py: names, layouts and init match, so a checkpoint
// loads in timm unchanged.
import * as T from '../engine/index.js';
import { Block, ConvStem, type Ctx, LayerNorm, Linear, Module, Params, type ParamInfo, PatchEmbed } from './layers.js';

/** timm's field names, as stored in checkpoints' `config` metadata. */
export interface ViTConfig {
  img_size: number;
  patch_size: number;
  in_chans: number;
  num_classes: number;
  embed_dim: number;
  depth: number;
  num_heads: number;
  mlp_ratio: number;
  qkv_bias: boolean;
  class_token: boolean;
  global_pool: 'token' | 'avg';
  distilled: boolean;
  norm_eps: number;
  drop_rate: number;
  attn_drop_rate: number;
  drop_path_rate: number;
  /** Input normalisation the model was trained with (per channel). */
  mean: number[];
  std: number[];
  /** Channels of a convolutional stem (3×3 stride-2 conv + BatchNorm + ReLU each, then a 1×1
   * projection) replacing the patchify convolution; absent or empty: patchify with patch_size. */
  conv_stem?: number[];
}

export const FASHION_MNIST_NORM = { mean: [0.286], std: [0.353] };

const BASE: Omit<ViTConfig, 'img_size' | 'patch_size' | 'embed_dim' | 'depth' | 'num_heads' | 'mlp_ratio'> = {
  in_chans: 1,
  num_classes: 10,
  qkv_bias: true,
  class_token: true,
  global_pool: 'token',
  distilled: false,
  norm_eps: 1e-6,
  drop_rate: 0,
  attn_drop_rate: 0,
  drop_path_rate: 0,
  ...FASHION_MNIST_NORM,
};

/** Presets by name. */
export const PRESETS: Record<string, ViTConfig> = {
  'vit-fmnist-tiny': { ...BASE, img_size: 28, patch_size: 7, embed_dim: 64, depth: 6, num_heads: 4, mlp_ratio: 2 },
  // The augmented reference row (patch 7, width 96, 456k parameters).
  'vit-fmnist-tiny-w96': { ...BASE, img_size: 28, patch_size: 7, embed_dim: 96, depth: 6, num_heads: 4, mlp_ratio: 2 },
  'vit-fmnist-p4': { ...BASE, img_size: 28, patch_size: 4, embed_dim: 64, depth: 6, num_heads: 4, mlp_ratio: 2 },
  'vit-fmnist-small': { ...BASE, img_size: 28, patch_size: 4, embed_dim: 96, depth: 6, num_heads: 4, mlp_ratio: 2, drop_path_rate: 0.05 },
  // Conv stem 28 → 14 → 7: 49 tokens; depth 4 (152k parameters), the recipe that learns fastest
  // per image in the reference runs.
  'vit-fmnist-convstem': { ...BASE, img_size: 28, patch_size: 4, embed_dim: 64, depth: 4, num_heads: 4, mlp_ratio: 2, conv_stem: [24, 48] },
  'vit-fmnist-convstem16': { ...BASE, img_size: 28, patch_size: 7, embed_dim: 64, depth: 6, num_heads: 4, mlp_ratio: 2, conv_stem: [24, 48, 64] },
  // The same with 4 blocks: 1.35× the images/s, and the most accuracy in 15 minutes (npm start).
  'vit-fmnist-convstem16-d4': { ...BASE, img_size: 28, patch_size: 7, embed_dim: 64, depth: 4, num_heads: 4, mlp_ratio: 2, conv_stem: [24, 48, 64] },
  // Twice the width and a wider stem (643k parameters, ~2.6× the cost per image of -d4): the
  // capacity for long augmented schedules, where width 64 underfits.
  'vit-fmnist-convstem16-w128': { ...BASE, img_size: 28, patch_size: 7, embed_dim: 128, depth: 4, num_heads: 4, mlp_ratio: 2, conv_stem: [32, 64, 128] },
  'deit-fmnist-tiny-distilled': { ...BASE, img_size: 28, patch_size: 7, embed_dim: 64, depth: 6, num_heads: 4, mlp_ratio: 2, distilled: true },
  'deit-tiny-patch16-224': { ...BASE, img_size: 224, patch_size: 16, in_chans: 3, num_classes: 1000, embed_dim: 192, depth: 12, num_heads: 3, mlp_ratio: 4, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
  'deit-tiny-distilled-patch16-224': { ...BASE, img_size: 224, patch_size: 16, in_chans: 3, num_classes: 1000, embed_dim: 192, depth: 12, num_heads: 3, mlp_ratio: 4, distilled: true, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
};

export function presetConfig(name: string): ViTConfig {
  const c = PRESETS[name];
  if (!c) throw new Error(`unknown preset '${name}'; presets: ${Object.keys(PRESETS).join(', ')}`);
  return { ...c, mean: [...c.mean], std: [...c.std], ...(c.conv_stem ? { conv_stem: [...c.conv_stem] } : {}) };
}

export interface ViTOutput {
  /** Class logits (B, classes); for a distilled model in eval, the mean of both heads. */
  logits: T.Tensor;
  /** Distilled models in training: the distillation head's logits (B, classes). */
  distLogits?: T.Tensor;
}

export class VisionTransformer extends Module {
  readonly config: ViTConfig;
  readonly params: Map<string, ParamInfo>;
  readonly patchEmbed: PatchEmbed | ConvStem;
  /** Non-trained saved state (BatchNorm running statistics of a conv stem). */
  readonly buffers: Map<string, T.Tensor>;
  readonly clsToken: T.Tensor | null;
  readonly distToken: T.Tensor | null;
  readonly posEmbed: T.Tensor;
  readonly blocks: Block[];
  readonly norm: LayerNorm;
  /** Absent when num_classes is 0 (timm's Identity head: a backbone, as DINO's). */
  readonly head: Linear | null;
  readonly headDist: Linear | null;
  readonly numPrefixTokens: number;
  /** Bicubic resampling matrices of the patch position embeddings, by grid size. */
  private readonly posResample = new Map<string, T.Tensor>();

  /** `params`: where to register the weights (default a fresh root store seeded by `seed`); a
   * scoped view prefixes every name (DINO's student is `student.*`). */
  constructor(config: ViTConfig, seed = 0, params?: Params) {
    super();
    const c = (this.config = config);
    if (c.distilled && !c.class_token) throw new Error('ViT: a distilled model needs the class token');
    const p = params ?? Params.root(seed);
    this.params = p.store;
    this.buffers = p.buffers;
    this.patchEmbed = c.conv_stem?.length
      ? new ConvStem(p.pp('patch_embed'), c.img_size, c.in_chans, c.conv_stem, c.embed_dim)
      : new PatchEmbed(p.pp('patch_embed'), c.img_size, c.patch_size, c.in_chans, c.embed_dim);
    this.numPrefixTokens = (c.class_token ? 1 : 0) + (c.distilled ? 1 : 0);
    this.clsToken = c.class_token ? p.get('cls_token', [1, 1, c.embed_dim], 'trunc_normal', { decay: false, std: 1e-6 }) : null;
    this.distToken = c.distilled ? p.get('dist_token', [1, 1, c.embed_dim], 'trunc_normal', { decay: false }) : null;
    this.posEmbed = p.get('pos_embed', [1, this.patchEmbed.numPatches + this.numPrefixTokens, c.embed_dim], 'trunc_normal', { decay: false });
    // Stochastic depth rises linearly with depth, as timm's dpr.
    this.blocks = Array.from({ length: c.depth }, (_, i) =>
      new Block(p.pp('blocks').pp(i), c.embed_dim, c.num_heads, c.mlp_ratio, {
        qkvBias: c.qkv_bias, drop: c.drop_rate, attnDrop: c.attn_drop_rate, dropPath: c.depth > 1 ? (c.drop_path_rate * i) / (c.depth - 1) : 0, normEps: c.norm_eps,
      }),
    );
    this.norm = new LayerNorm(p.pp('norm'), c.embed_dim, c.norm_eps);
    this.head = c.num_classes > 0 ? new Linear(p.pp('head'), c.embed_dim, c.num_classes) : null;
    this.headDist = c.distilled && c.num_classes > 0 ? new Linear(p.pp('head_dist'), c.embed_dim, c.num_classes) : null;
  }

  /** Tokens after the final norm: (B, prefix + N, D). `tap`, when given, sees the tokens entering
   * the first block (layer 0) and leaving each block (layers 1 … depth). A patchifying model also
   * takes other image sizes (multiples of the patch), with its position embeddings resampled
   * bicubically to the grid, as DINO's interpolate_pos_encoding for its local crops. */
  forwardFeatures(x: T.Tensor, ctx: Ctx, tap?: (layer: number, tokens: T.Tensor) => void): T.Tensor {
    const c = this.config;
    const native = x.rank === 4 && x.shape[2] === c.img_size && x.shape[3] === c.img_size;
    const resizable = !(this.patchEmbed instanceof ConvStem) && x.rank === 4 && x.shape[2]! % c.patch_size === 0 && x.shape[3]! % c.patch_size === 0 && x.shape[2]! > 0 && x.shape[3]! > 0;
    if (x.rank !== 4 || x.shape[1] !== c.in_chans || !(native || resizable)) {
      throw new Error(`ViT: input ${x.describe()} must be [B, ${c.in_chans}, ${c.img_size}, ${c.img_size}]` +
        (this.patchEmbed instanceof ConvStem ? ' (a conv stem takes one size)' : ` or another size divisible by the patch ${c.patch_size}`));
    }
    const B = x.shape[0]!;
    let h = this.patchEmbed.forward(x, ctx); // (B, N, D)
    const prefix = [this.clsToken, this.distToken].filter((t): t is T.Tensor => t !== null).map((t) => T.expand(t, [B, 1, c.embed_dim]));
    if (prefix.length) h = T.concat([...prefix, h], 1); // (B, prefix + N, D)
    const pos = native ? this.posEmbed : this.resampledPosEmbed(x.shape[2]! / c.patch_size, x.shape[3]! / c.patch_size);
    h = T.dropout(T.add(h, pos), c.drop_rate, { training: ctx.training });
    tap?.(0, h);
    this.blocks.forEach((blk, i) => {
      h = blk.forward(h, ctx);
      tap?.(i + 1, h);
    });
    return this.norm.forward(h);
  }

  /** The position embeddings for a gh × gw patch grid: the prefix tokens' unchanged, the
   * patches' as M · pos with M the bicubic resampling matrix (so gradients reach pos_embed). */
  private resampledPosEmbed(gh: number, gw: number): T.Tensor {
    const [g0h, g0w] = this.patchEmbed.gridSize;
    const key = `${gh}x${gw}`;
    let m = this.posResample.get(key);
    if (!m) {
      m = T.keep(T.tensor(bicubicResampleMatrix([g0h, g0w], [gh, gw]), [gh * gw, g0h * g0w]));
      this.posResample.set(key, m);
    }
    const [n, D, P] = [this.numPrefixTokens, this.config.embed_dim, g0h * g0w];
    const patches = T.matmul(m, T.reshape(T.slice(this.posEmbed, [0, n], [1, n + P]), [P, D]));
    const resampled = T.reshape(patches, [1, gh * gw, D]);
    return n ? T.concat([T.slice(this.posEmbed, [0, 0], [1, n]), resampled], 1) : resampled;
  }

  override dispose(): void {
    super.dispose();
    for (const m of this.posResample.values()) m.dispose();
    this.posResample.clear();
  }

  forward(x: T.Tensor, ctx: Ctx): ViTOutput {
    const h = this.forwardFeatures(x, ctx);
    const [B, N, D] = h.shape as [number, number, number];
    const token = (i: number) => T.reshape(T.slice(h, [0, i], [B, i + 1]), [B, D]);
    const pooled = this.config.global_pool === 'avg' ? T.mean(T.slice(h, [0, this.numPrefixTokens], [B, N]), 1) : token(0);
    if (!this.head) return { logits: pooled };
    const logits = this.head.forward(T.dropout(pooled, this.config.drop_rate, { training: ctx.training }));
    if (!this.headDist) return { logits };
    const distLogits = this.headDist.forward(token(1));
    // DeiT: during training both heads are returned; at inference their mean.
    return ctx.training ? { logits, distLogits } : { logits: T.mulScalar(T.add(logits, distLogits), 0.5) };
  }
}

/** PyTorch's bicubic interpolation (A = −0.75, align_corners = False, indices clamped at the
 * border, no antialiasing) of a [from] grid to a [to] grid, as a [to_h·to_w, from_h·from_w]
 * matrix of weights: row i holds the weights output cell i gives every input cell. */
export function bicubicResampleMatrix(from: [number, number], to: [number, number]): Float32Array {
  const weights1d = (inSize: number, outSize: number): Float64Array => {
    const w = new Float64Array(outSize * inSize);
    const A = -0.75;
    const cubic = (t: number) => [((A * (t + 1) - 5 * A) * (t + 1) + 8 * A) * (t + 1) - 4 * A, ((A + 2) * t - (A + 3)) * t * t + 1, ((A + 2) * (1 - t) - (A + 3)) * (1 - t) * (1 - t) + 1];
    for (let o = 0; o < outSize; o++) {
      const src = ((o + 0.5) * inSize) / outSize - 0.5;
      const i0 = Math.floor(src);
      const [a, b, c] = cubic(src - i0);
      const taps = [a!, b!, c!, 1 - a! - b! - c!];
      taps.forEach((v, k) => { const j = o * inSize + Math.min(Math.max(i0 - 1 + k, 0), inSize - 1); w[j] = w[j]! + v; });
    }
    return w;
  };
  const [wy, wx] = [weights1d(from[0], to[0]), weights1d(from[1], to[1])];
  const m = new Float32Array(to[0] * to[1] * from[0] * from[1]);
  for (let oy = 0; oy < to[0]; oy++) for (let ox = 0; ox < to[1]; ox++) {
    for (let iy = 0; iy < from[0]; iy++) for (let ix = 0; ix < from[1]; ix++) {
      m[(oy * to[1] + ox) * from[0] * from[1] + iy * from[1] + ix] = wy[oy * from[0] + iy]! * wx[ox * from[1] + ix]!;
    }
  }
  return m;
}

/** Parameter count by hand from the config (the test compares it with the built model). */
export function countParams(c: ViTConfig): number {
  const D = c.embed_dim;
  const H = Math.round(D * c.mlp_ratio);
  const prefix = (c.class_token ? 1 : 0) + (c.distilled ? 1 : 0);
  let N = (c.img_size / c.patch_size) ** 2;
  let patch = D * c.in_chans * c.patch_size ** 2 + D;
  if (c.conv_stem?.length) {
    // Each stage: a bias-free 3×3 conv and BatchNorm's weight and bias; then the 1×1 projection.
    let [ch, size] = [c.in_chans, c.img_size];
    patch = 0;
    for (const out of c.conv_stem) {
      patch += out * ch * 9 + 2 * out;
      [ch, size] = [out, Math.floor((size - 1) / 2) + 1];
    }
    patch += D * ch + D;
    N = size * size;
  }
  const tokens = prefix * D + (N + prefix) * D;
  const block = 2 * 2 * D + (3 * D * D + (c.qkv_bias ? 3 * D : 0)) + (D * D + D) + (H * D + H) + (D * H + D);
  const heads = (c.distilled ? 2 : 1) * (c.num_classes * D + c.num_classes);
  return patch + tokens + c.depth * block + 2 * D + heads;
}
