// Masked autoencoder (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners"),
// following facebookresearch/mae's models_mae.py: names, init and the loss match, so the encoder's
// weights (`patch_embed.*`, `cls_token`, `pos_embed`, `blocks.*`, `norm.*`) are a ViT's and
// initialise one for fine-tuning.
import * as T from '../engine/index.js';
import { type ViTConfig } from './vit.js';
import { Block, type Ctx, LayerNorm, Linear, Module, Params, type ParamInfo, PatchEmbed } from './layers.js';

/** models_mae.py's constructor arguments (timm's names for the encoder), plus the input
 * normalisation and the masking ratio used in pre-training. */
export interface MAEConfig {
  img_size: number;
  patch_size: number;
  in_chans: number;
  embed_dim: number;
  depth: number;
  num_heads: number;
  decoder_embed_dim: number;
  decoder_depth: number;
  decoder_num_heads: number;
  mlp_ratio: number;
  norm_pix_loss: boolean;
  mask_ratio: number;
  norm_eps: number;
  mean: number[];
  std: number[];
}

/** An MAE around a ViT preset's encoder, with a narrow decoder as the paper's ablations favour
 * for small inputs (MAE's own decoders are 512 wide and 8 deep for ViT-B/L/H). */
export function maeConfigFor(vit: ViTConfig, decoder: { dim?: number; depth?: number; heads?: number } = {}): MAEConfig {
  if (vit.conv_stem?.length) throw new Error('MAE: the encoder must patchify (a conv stem mixes neighbouring patches, so masked pixels would leak)');
  if (vit.distilled) throw new Error('MAE: a distilled ViT has no MAE encoder (drop the distillation token)');
  return {
    img_size: vit.img_size,
    patch_size: vit.patch_size,
    in_chans: vit.in_chans,
    embed_dim: vit.embed_dim,
    depth: vit.depth,
    num_heads: vit.num_heads,
    decoder_embed_dim: decoder.dim ?? vit.embed_dim,
    decoder_depth: decoder.depth ?? 2,
    decoder_num_heads: decoder.heads ?? vit.num_heads,
    mlp_ratio: vit.mlp_ratio,
    norm_pix_loss: true,
    mask_ratio: 0.75,
    norm_eps: vit.norm_eps,
    mean: [...vit.mean],
    std: [...vit.std],
  };
}

/** The ViT whose weights an MAE's encoder initialises: the encoder's shape and input
 * normalisation over `base` (a preset: its head, pooling and regularisation). */
export function vitConfigFromMae(base: ViTConfig, mae: MAEConfig): ViTConfig {
  return {
    ...base,
    img_size: mae.img_size, patch_size: mae.patch_size, in_chans: mae.in_chans, embed_dim: mae.embed_dim, depth: mae.depth,
    num_heads: mae.num_heads, mlp_ratio: mae.mlp_ratio, norm_eps: mae.norm_eps, qkv_bias: true, class_token: true,
    distilled: false, mean: [...mae.mean], std: [...mae.std], conv_stem: [],
  };
}

/** mae/util/pos_embed.py's get_2d_sincos_pos_embed with a zero row for the class token:
 * (1 + g², D), the first D/2 channels encoding the column, the rest the row. */
export function sincosPosEmbed(dim: number, grid: number): Float32Array {
  if (dim % 4 !== 0) throw new Error(`sin-cos position embedding: dim ${dim} is not a multiple of 4`);
  const out = new Float32Array((1 + grid * grid) * dim);
  const quarter = dim / 4;
  const encode = (row: number, offset: number, pos: number) => {
    for (let k = 0; k < quarter; k++) {
      const angle = pos / 10000 ** (k / quarter);
      out[row * dim + offset + k] = Math.sin(angle);
      out[row * dim + offset + quarter + k] = Math.cos(angle);
    }
  };
  for (let i = 0; i < grid; i++) {
    for (let j = 0; j < grid; j++) {
      encode(1 + i * grid + j, 0, j);
      encode(1 + i * grid + j, dim / 2, i);
    }
  }
  return out;
}

export interface MAEOutput {
  /** Mean squared error over the masked patches (scalar). */
  loss: T.Tensor;
  /** The decoder's pixel predictions for every patch: (B, L, p²·C), in normalised-target units
   * when norm_pix_loss is set. */
  pred: T.Tensor;
  /** 1 where a patch was masked, 0 where the encoder saw it: (B, L). */
  mask: T.Tensor;
}

export class MaskedAutoencoderViT extends Module {
  readonly config: MAEConfig;
  readonly params: Map<string, ParamInfo>;
  readonly buffers: Map<string, T.Tensor>;
  readonly patchEmbed: PatchEmbed;
  readonly clsToken: T.Tensor;
  readonly posEmbed: T.Tensor;
  readonly blocks: Block[];
  readonly norm: LayerNorm;
  readonly decoderEmbed: Linear;
  readonly maskToken: T.Tensor;
  readonly decoderPosEmbed: T.Tensor;
  readonly decoderBlocks: Block[];
  readonly decoderNorm: LayerNorm;
  readonly decoderPred: Linear;

  constructor(config: MAEConfig, seed = 0) {
    super();
    const c = (this.config = config);
    if (!(c.mask_ratio >= 0 && c.mask_ratio < 1)) throw new Error(`MAE: mask ratio ${c.mask_ratio} must be in [0, 1)`);
    const p = Params.root(seed);
    this.params = p.store;
    this.buffers = p.buffers;
    // models_mae.py's initialize_weights: xavier_uniform for every Linear and for the patchify
    // conv's weight seen as a Linear; tokens normal(std .02); fixed sin-cos position embeddings.
    this.patchEmbed = new PatchEmbed(p.pp('patch_embed'), c.img_size, c.patch_size, c.in_chans, c.embed_dim, 'xavier_uniform');
    const grid = this.patchEmbed.gridSize[0];
    this.clsToken = p.get('cls_token', [1, 1, c.embed_dim], 'trunc_normal', { decay: false });
    this.posEmbed = p.constant('pos_embed', [1, 1 + grid * grid, c.embed_dim], sincosPosEmbed(c.embed_dim, grid));
    const block = (q: Params, dim: number, heads: number) => new Block(q, dim, heads, c.mlp_ratio, { qkvBias: true, normEps: c.norm_eps, init: 'xavier_uniform' });
    this.blocks = Array.from({ length: c.depth }, (_, i) => block(p.pp('blocks').pp(i), c.embed_dim, c.num_heads));
    this.norm = new LayerNorm(p.pp('norm'), c.embed_dim, c.norm_eps);
    this.decoderEmbed = new Linear(p.pp('decoder_embed'), c.embed_dim, c.decoder_embed_dim, { init: 'xavier_uniform' });
    this.maskToken = p.get('mask_token', [1, 1, c.decoder_embed_dim], 'trunc_normal', { decay: false });
    this.decoderPosEmbed = p.constant('decoder_pos_embed', [1, 1 + grid * grid, c.decoder_embed_dim], sincosPosEmbed(c.decoder_embed_dim, grid));
    this.decoderBlocks = Array.from({ length: c.decoder_depth }, (_, i) => block(p.pp('decoder_blocks').pp(i), c.decoder_embed_dim, c.decoder_num_heads));
    this.decoderNorm = new LayerNorm(p.pp('decoder_norm'), c.decoder_embed_dim, c.norm_eps);
    this.decoderPred = new Linear(p.pp('decoder_pred'), c.decoder_embed_dim, c.patch_size ** 2 * c.in_chans, { init: 'xavier_uniform' });
  }

  get numPatches(): number {
    return this.patchEmbed.numPatches;
  }

  /** Patches kept visible per image: int(L · (1 − mask ratio)), as models_mae.py. */
  keptPatches(maskRatio = this.config.mask_ratio): number {
    return Math.floor(this.numPatches * (1 - maskRatio));
  }

  /** (B, C, H, W) → (B, L, p²·C), each patch's pixels row by row, channels last ('nchpwq->nhwpqc'). */
  patchify(imgs: T.Tensor): T.Tensor {
    const { patch_size: p, in_chans: C } = this.config;
    const [B, , H, W] = imgs.shape as [number, number, number, number];
    const [h, w] = [H / p, W / p];
    return T.reshape(T.permute(T.reshape(imgs, [B, C, h, p, w, p]), [0, 2, 4, 3, 5, 1]), [B, h * w, p * p * C]);
  }

  /** The inverse of patchify. */
  unpatchify(x: T.Tensor): T.Tensor {
    const { patch_size: p, in_chans: C } = this.config;
    const [B, L] = x.shape as [number, number];
    const h = Math.round(Math.sqrt(L));
    return T.reshape(T.permute(T.reshape(x, [B, h, h, p, p, C]), [0, 5, 1, 3, 2, 4]), [B, C, h * p, h * p]);
  }

  /** Per-sample random masking by argsort of noise (B, L) in [0, 1): the smallest are kept. */
  randomMasking(x: T.Tensor, maskRatio: number, noise: T.Tensor): { visible: T.Tensor; mask: T.Tensor; idsRestore: T.Tensor } {
    const [B, L, D] = x.shape as [number, number, number];
    const keep = this.keptPatches(maskRatio);
    const idsShuffle = T.argsort(noise, 1);
    const idsRestore = T.argsort(idsShuffle, 1);
    const idsKeep = T.slice(idsShuffle, [0, 0], [B, keep]);
    // Each row's kept positions are distinct (part of a permutation): the backward scatters.
    const visible = T.gather(x, 1, T.expand(T.reshape(idsKeep, [B, keep, 1]), [B, keep, D]), { uniqueIndices: true });
    // 0 for the kept, 1 for the removed, in shuffled order, then unshuffled.
    const shuffled = new Float32Array(B * L);
    for (let b = 0; b < B; b++) shuffled.fill(1, b * L + keep, (b + 1) * L);
    const mask = T.gather(T.tensor(shuffled, [B, L]), 1, idsRestore);
    return { visible, mask, idsRestore };
  }

  forwardEncoder(imgs: T.Tensor, ctx: Ctx, maskRatio: number, noise: T.Tensor): { latent: T.Tensor; mask: T.Tensor; idsRestore: T.Tensor } {
    const c = this.config;
    if (imgs.rank !== 4 || imgs.shape[1] !== c.in_chans || imgs.shape[2] !== c.img_size || imgs.shape[3] !== c.img_size) {
      throw new Error(`MAE: input ${imgs.describe()} must be [B, ${c.in_chans}, ${c.img_size}, ${c.img_size}]`);
    }
    const B = imgs.shape[0]!;
    const L = this.numPatches;
    if (noise.rank !== 2 || noise.shape[0] !== B || noise.shape[1] !== L) throw new Error(`MAE: masking noise ${noise.describe()} must be [${B}, ${L}]`);
    const D = c.embed_dim;
    // Position embeddings are added before masking; the class token (with its own) after.
    let x = T.add(this.patchEmbed.forward(imgs, ctx), T.slice(this.posEmbed, [0, 1], [1, L + 1]));
    const { visible, mask, idsRestore } = this.randomMasking(x, maskRatio, noise);
    const cls = T.expand(T.add(this.clsToken, T.slice(this.posEmbed, [0, 0], [1, 1])), [B, 1, D]);
    x = T.concat([cls, visible], 1);
    for (const blk of this.blocks) x = blk.forward(x, ctx);
    return { latent: this.norm.forward(x), mask, idsRestore };
  }

  forwardDecoder(latent: T.Tensor, idsRestore: T.Tensor, ctx: Ctx): T.Tensor {
    const Dd = this.config.decoder_embed_dim;
    const [B, kept] = latent.shape as [number, number];
    const L = this.numPatches;
    const x = this.decoderEmbed.forward(latent); // (B, 1 + keep, Dd)
    const tokens = T.concat([T.slice(x, [0, 1], [B, kept]), T.expand(this.maskToken, [B, L + 1 - kept, Dd])], 1);
    const unshuffled = T.gather(tokens, 1, T.expand(T.reshape(idsRestore, [B, L, 1]), [B, L, Dd]), { uniqueIndices: true });
    let y = T.add(T.concat([T.slice(x, [0, 0], [B, 1]), unshuffled], 1), this.decoderPosEmbed);
    for (const blk of this.decoderBlocks) y = blk.forward(y, ctx);
    const pred = this.decoderPred.forward(this.decoderNorm.forward(y));
    return T.slice(pred, [0, 1], [B, L + 1]); // drop the class token
  }

  /** Mean over the masked patches of each patch's mean squared error against its pixels
   * (normalised per patch with norm_pix_loss: (t − mean) / √(var + 1e-6), var unbiased). */
  forwardLoss(imgs: T.Tensor, pred: T.Tensor, mask: T.Tensor): T.Tensor {
    let target = this.patchify(imgs);
    if (this.config.norm_pix_loss) {
      const mean = T.mean(target, -1, { keepdim: true });
      const variance = T.variance(target, -1, { keepdim: true });
      target = T.div(T.sub(target, mean), T.sqrt(T.addScalar(variance, 1e-6)));
    }
    const diff = T.sub(pred, target);
    const perPatch = T.mean(T.mul(diff, diff), -1); // (B, L)
    return T.div(T.sum(T.mul(perPatch, mask)), T.sum(mask));
  }

  /** `noise` (B, L) decides the masking; by default uniform from the global generator. */
  forward(imgs: T.Tensor, ctx: Ctx, opts: { maskRatio?: number; noise?: T.Tensor } = {}): MAEOutput {
    const noise = opts.noise ?? T.rand([imgs.shape[0]!, this.numPatches]);
    const { latent, mask, idsRestore } = this.forwardEncoder(imgs, ctx, opts.maskRatio ?? this.config.mask_ratio, noise);
    const pred = this.forwardDecoder(latent, idsRestore, ctx);
    return { loss: this.forwardLoss(imgs, pred, mask), pred, mask };
  }
}
