// MAE pre-training (facebookresearch/mae's main_pretrain.py): random resized crops and flips,
// 75% of the patches masked, AdamW with betas (0.9, 0.95) and weight decay 0.05 on weights only,
// linear warmup then half-cycle cosine; a run folder with config, losses, checkpoints, curves,
// reconstructions and a report, and exact resume. Its last.safetensors initialises a ViT for
// fine-tuning (`tessera train --init`).
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as T from '../engine/index.js';
import { type MAEConfig, maeConfigFor, MaskedAutoencoderViT } from '../models/mae.js';
import { presetConfig, type ViTConfig } from '../models/vit.js';
import { checkpointArch, CheckpointError, readCheckpoint, saveCheckpoint } from './checkpoint.js';
import { BatchLoader, type Dataset, type DatasetName, loadDataset, normalize, subset } from './data.js';
import { writeImageGrid } from './image.js';
import { curvesSpec, renderCurves, smoothedLoss } from './plot.js';
import type { StopSignal } from './interrupt.js';
import { type EpochBase, planSteps, restoreRun, runPretrainLoop } from './pretrain-loop.js';
import { longWarmupWarning, warmupCosine } from './schedule.js';

export interface PretrainConfig {
  /** The ViT preset whose encoder is pre-trained (models/vit.ts PRESETS; patchifying ones). */
  preset: string;
  data: DatasetName;
  dataDir?: string;
  epochs: number;
  /** Stop after this many steps in total (the schedule still spans `epochs`). */
  maxSteps?: number;
  batchSize: number;
  lr: number;
  minLr: number;
  warmupSteps: number;
  weightDecay: number;
  betas: [number, number];
  maskRatio: number;
  normPixLoss: boolean;
  decoderDim?: number;
  decoderDepth: number;
  decoderHeads?: number;
  /** Random resized crop's area range (MAE: [0.2, 1]); [1, 1] turns crops off. */
  cropScale: [number, number];
  /** Probability of a horizontal flip. */
  flipProb: number;
  seed: number;
  out: string;
  resume: boolean;
  trainLimit?: number;
  /** Test images whose masked-patch loss is measured after each epoch (same masks every time). */
  evalImages: number;
  progress: boolean;
  /** Changes to the preset's encoder config (API only, e.g. a shallower model in tests). */
  modelOverrides?: Partial<ViTConfig>;
}

export const PRETRAIN_DEFAULTS: PretrainConfig = {
  preset: 'vit-fmnist-p4',
  data: 'fashion-mnist',
  epochs: 10,
  batchSize: 128,
  // MAE's blr 1.5e-4 × batch / 256 assumes 800 epochs at batch 4096; short runs on small
  // images want more (see README, "MAE pre-training").
  lr: 1.5e-3,
  minLr: 0,
  warmupSteps: 470,
  weightDecay: 0.05,
  betas: [0.9, 0.95],
  maskRatio: 0.75,
  normPixLoss: true,
  decoderDepth: 2,
  cropScale: [0.2, 1],
  flipProb: 0.5,
  seed: 0,
  out: '',
  resume: false,
  evalImages: 1000,
  progress: true,
};

export interface PretrainEpoch extends EpochBase {
  /** Masked-patch loss on the test images, same masks every epoch. */
  test_loss: number;
}

export interface PretrainResult {
  out: string;
  metrics: PretrainEpoch[];
  losses: number[];
  seconds: number;
  imagesPerSecond: number;
  /** The signal that stopped the run early; its checkpoint holds the step reached, no report is written. */
  interrupted: StopSignal | null;
}

/** Images [B, C, H, W] in [0, 1] → cropped, flipped and normalised, as MAE's transform_train. */
function augment(x: T.Tensor, cfg: PretrainConfig, mc: MAEConfig): T.Tensor {
  const crop = cfg.cropScale[0] < 1 || cfg.flipProb > 0 ? T.randomResizedCrop(x, { scale: cfg.cropScale, flipProb: cfg.flipProb }).images : x;
  return normalizeOnGpu(crop, mc);
}

function normalizeOnGpu(x: T.Tensor, mc: MAEConfig): T.Tensor {
  if (mc.mean.length !== 1) {
    const C = mc.mean.length;
    const mean = T.tensor(Float32Array.from(mc.mean), [1, C, 1, 1]);
    const inv = T.tensor(Float32Array.from(mc.std, (s) => 1 / s), [1, C, 1, 1]);
    return T.mul(T.sub(x, mean), inv);
  }
  return T.mulScalar(T.addScalar(x, -mc.mean[0]!), 1 / mc.std[0]!);
}

/** Mean masked-patch loss over `ds` (normalised images) with masks fixed by `seed`. */
export async function maeTestLoss(model: MaskedAutoencoderViT, ds: Dataset, batchSize: number, seed: number): Promise<number> {
  const order = Int32Array.from({ length: ds.count }, (_, i) => i);
  const loader = new BatchLoader(ds, Math.min(batchSize, ds.count));
  let [sum, n] = [0, 0];
  try {
    for (let start = 0; start + loader.batchSize <= ds.count; start += loader.batchSize) {
      loader.load(order, start);
      const l = T.noGrad(() => T.scope(() => model.forward(loader.x, { training: false }, { noise: T.rand([loader.batchSize, model.numPatches], { seed: seed + start }) }).loss));
      sum += (await l.item()) * loader.batchSize;
      n += loader.batchSize;
      l.dispose();
    }
  } finally {
    loader.dispose();
  }
  return sum / n;
}

/** Rows of originals, what the encoder saw, the decoder's reconstruction, and the
 * reconstruction with the visible patches pasted back (mae/demo's figure). */
export async function writeReconstructions(model: MaskedAutoencoderViT, images: T.Tensor, seed: number, path: string, title: string): Promise<void> {
  const mc = model.config;
  const [B, C, H, W] = images.shape as [number, number, number, number];
  const { pred, mask, target } = T.noGrad(() => T.scope(() => {
    const out = model.forward(images, { training: false }, { noise: T.rand([B, model.numPatches], { seed }) });
    return { pred: out.pred, mask: out.mask, target: model.patchify(images) };
  }));
  const [p, m, t] = [(await pred.data()) as Float32Array, (await mask.data()) as Float32Array, (await target.data()) as Float32Array];
  for (const x of [pred, mask, target]) x.dispose();
  const L = model.numPatches;
  const E = mc.patch_size ** 2 * C;
  // With norm_pix_loss the decoder predicts each patch normalised: give it the patch's own mean
  // and spread back, as mae/demo does, so the pictures are in pixels.
  const recon = new Float32Array(p.length);
  const seen = new Float32Array(p.length);
  const pasted = new Float32Array(p.length);
  for (let bl = 0; bl < B * L; bl++) {
    const row = t.subarray(bl * E, (bl + 1) * E);
    const mean = row.reduce((s, v) => s + v, 0) / E;
    const sd = Math.sqrt(row.reduce((s, v) => s + (v - mean) ** 2, 0) / (E - 1) + 1e-6);
    for (let e = 0; e < E; e++) {
      const v = mc.norm_pix_loss ? p[bl * E + e]! * sd + mean : p[bl * E + e]!;
      recon[bl * E + e] = v;
      seen[bl * E + e] = m[bl] ? NaN : row[e]!;
      pasted[bl * E + e] = m[bl] ? v : row[e]!;
    }
  }
  // Back to [0, 1] pixels, masked patches grey.
  const toImages = async (values: Float32Array) => {
    const x = T.noGrad(() => T.scope(() => model.unpatchify(T.tensor(values, [B, L, E]))));
    const d = await x.data();
    x.dispose();
    return d;
  };
  const pixels = async (patches: Float32Array) => {
    const imgs = await toImages(patches.map((v) => (Number.isNaN(v) ? 0 : v)));
    const maskImg = await toImages(patches.map((v) => (Number.isNaN(v) ? 1 : 0)));
    const c = imgs.length / B / C;
    return Array.from({ length: B }, (_, b) => Float32Array.from({ length: C * c }, (_, i) => {
      const ch = Math.floor(i / c);
      const idx = b * C * c + i;
      return maskImg[idx] ? 0.5 : Math.min(Math.max(imgs[idx]! * mc.std[ch]! + mc.mean[ch]!, 0), 1);
    }));
  };
  const [orig, vis, rec, past] = [await pixels(t), await pixels(seen), await pixels(recon), await pixels(pasted)];
  writeImageGrid({
    title,
    columns: Array.from({ length: B }, (_, b) => `test ${b}`),
    rows: [
      { label: 'original', cells: orig.map((pixels) => ({ pixels })) },
      { label: `visible (${Math.round(100 * (1 - model.keptPatches() / L))}% masked)`, cells: vis.map((pixels) => ({ pixels })) },
      { label: 'reconstruction', cells: rec.map((pixels) => ({ pixels })) },
      { label: 'visible + predicted', cells: past.map((pixels) => ({ pixels })) },
    ],
    channels: C,
    height: H,
    width: W,
    zoom: 4,
  }, path);
}

export async function pretrainMae(overrides: Partial<PretrainConfig>): Promise<PretrainResult> {
  const cfg: PretrainConfig = { ...PRETRAIN_DEFAULTS, ...overrides };
  if (!cfg.out) cfg.out = join('runs', `mae-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  if (!(cfg.maskRatio >= 0 && cfg.maskRatio < 1)) throw new Error(`--mask-ratio must be in [0, 1), got ${cfg.maskRatio}`);
  if (!(cfg.cropScale[0] > 0 && cfg.cropScale[0] <= cfg.cropScale[1] && cfg.cropScale[1] <= 1)) throw new Error(`--crop-scale ${cfg.cropScale.join(',')}: need 0 < min ≤ max ≤ 1`);
  // The data first: a missing dataset is reported before any folder is made or kernel tuned.
  let trainSet = loadDataset(cfg.data, 'train', cfg.dataDir);
  let testSet = loadDataset(cfg.data, 'test', cfg.dataDir);
  mkdirSync(cfg.out, { recursive: true });
  const log = (s: string) => cfg.progress && console.log(s);
  await T.init();
  await T.tuneMatmul();

  const lastPath = join(cfg.out, 'last.safetensors');
  const resuming = cfg.resume && existsSync(lastPath);
  if (cfg.resume && !resuming) log(`--resume: ${lastPath} does not exist yet; starting a new run`);
  const resumeInfo = resuming ? readCheckpoint<MAEConfig>(lastPath) : null;
  if (resumeInfo && checkpointArch(resumeInfo) !== 'mae') throw new CheckpointError(`${lastPath} is not an MAE checkpoint; use another --out`);
  const mc: MAEConfig = resumeInfo?.config ?? {
    ...maeConfigFor({ ...presetConfig(cfg.preset), ...cfg.modelOverrides }, { dim: cfg.decoderDim, depth: cfg.decoderDepth, heads: cfg.decoderHeads }),
    mask_ratio: cfg.maskRatio,
    norm_pix_loss: cfg.normPixLoss,
  };
  const model = new MaskedAutoencoderViT(mc, cfg.seed);
  if (trainSet.channels !== mc.in_chans || trainSet.height !== mc.img_size) {
    throw new Error(`preset '${cfg.preset}' expects ${mc.in_chans}×${mc.img_size}×${mc.img_size} images; ${cfg.data} has ${trainSet.channels}×${trainSet.height}×${trainSet.width}`);
  }
  if (cfg.trainLimit) trainSet = subset(trainSet, cfg.trainLimit);
  testSet = subset(testSet, Math.min(cfg.evalImages, testSet.count));
  normalize(testSet, mc.mean, mc.std);
  const { loader, stepsPerEpoch, totalSteps, lastStep } = planSteps(trainSet, cfg);
  const opt = new T.AdamW(model.paramGroups(cfg.weightDecay), { lr: cfg.lr, betas: cfg.betas, weightDecay: cfg.weightDecay });
  const { step, history, losses, metricsPath, lossPath } = restoreRun<PretrainEpoch>({ out: cfg.out, model, opt, resumeInfo, stepsPerEpoch, log });
  writeFileSync(join(cfg.out, 'config.json'), JSON.stringify({ pretrain: cfg, model: mc, params: model.numParams() }, null, 2) + '\n');
  log(`tessera: MAE pre-training of ${cfg.preset}'s encoder (${model.numParams().toLocaleString()} parameters with the decoder) on ${cfg.data}: ` +
    `${trainSet.count} images, ${Math.round(100 * mc.mask_ratio)}% of ${model.numPatches} patches masked, ${cfg.epochs} epoch${cfg.epochs === 1 ? '' : 's'} of ${stepsPerEpoch} steps of ${cfg.batchSize}; run folder ${cfg.out}`);
  const warmupWarning = longWarmupWarning(cfg.warmupSteps, totalSteps, `--warmup-steps ${cfg.warmupSteps}`);
  if (warmupWarning) log(warmupWarning);
  const samples = T.keep(T.tensor(testSet.images.subarray(0, 8 * mc.in_chans * mc.img_size ** 2), [8, mc.in_chans, mc.img_size, mc.img_size]));

  const checkpoint = (step: number, epoch: number) => saveCheckpoint(lastPath, model, { optimizer: opt, step, epoch, extra: { arch: 'mae', dataset: cfg.data, preset: cfg.preset } });
  const loop = await runPretrainLoop<PretrainEpoch>({
    loader, epochs: cfg.epochs, step, lastStep, seed: cfg.seed, seedSalt: 7, progress: cfg.progress, metricsPath, lossPath, history, losses,
    trainStep: (s) => {
      opt.lr = warmupCosine(s, totalSteps, cfg.lr, cfg.warmupSteps, cfg.minLr);
      const l = model.forward(augment(loader.x, cfg, mc), { training: true }).loss;
      l.backward();
      opt.step();
      opt.zeroGrad();
      return { loss: l, fields: { lr: opt.lr } };
    },
    evaluate: async (base) => ({ ...base, test_loss: await maeTestLoss(model, testSet, 250, 12345) }),
    save: async (m) => {
      log(`epoch ${m.epoch}: train loss ${m.train_loss.toFixed(4)}, test loss ${m.test_loss.toFixed(4)} (masked patches of ${testSet.count} test images), ${m.images_per_s.toFixed(0)} img/s`);
      await checkpoint(m.step, m.epoch);
      await writeReconstructions(model, samples, 777, join(cfg.out, 'reconstructions.png'), `MAE reconstructions after epoch ${m.epoch} (${cfg.data} test images)`);
    },
    checkpoint,
    checkpointPath: lastPath,
    divergenceHint: 'lower --lr or raise --warmup-steps',
  });

  const result: PretrainResult = { out: cfg.out, metrics: history, losses, ...loop };
  if (!result.interrupted) await writeReport(cfg, mc, model.numParams(), result);
  samples.dispose();
  loader.dispose();
  opt.dispose();
  model.dispose();
  return result;
}

async function writeReport(cfg: PretrainConfig, mc: MAEConfig, params: number, r: PretrainResult): Promise<void> {
  const test = r.metrics.map((m) => ({ step: m.step, value: m.test_loss, series: 'test loss (fixed masks)' }));
  const speed = r.metrics.map((m) => ({ step: m.step, value: m.images_per_s, series: 'training images/s' }));
  await renderCurves(curvesSpec([...smoothedLoss(r.losses), ...test], speed, `MAE pre-training, ${cfg.preset} on ${cfg.data}`, 'images/s'), join(cfg.out, 'curves.png'));
  const rows = r.metrics.map((m) => `| ${m.epoch} | ${m.step} | ${m.train_loss.toFixed(4)} | ${m.test_loss.toFixed(4)} | ${m.images_per_s.toFixed(0)} | ${m.elapsed_s.toFixed(0)} |`);
  const md = [
    `# MAE pre-training: ${cfg.preset} on ${cfg.data}`,
    '',
    `${r.metrics.at(-1) ? `Final test loss **${r.metrics.at(-1)!.test_loss.toFixed(4)}**` : 'No epoch finished'} (mean squared error of the masked patches${mc.norm_pix_loss ? ', each normalised by its own mean and spread' : ''}), ` +
      `${r.seconds.toFixed(0)} s, ${r.imagesPerSecond.toFixed(0)} images/s on ${T.currentDevice().adapterName}. Fine-tune the encoder with \`tessera train --init ${join(cfg.out, 'last.safetensors')}\`.`,
    '',
    '| epoch | step | train loss | test loss | img/s | elapsed s |',
    '|---:|---:|---:|---:|---:|---:|',
    ...rows,
    '',
    '![curves](curves.png)',
    '',
    '![reconstructions](reconstructions.png)',
    '',
    `Model: ${params.toLocaleString()} parameters; encoder patch ${mc.patch_size}, width ${mc.embed_dim}, depth ${mc.depth}, ${mc.num_heads} heads; ` +
      `decoder width ${mc.decoder_embed_dim}, depth ${mc.decoder_depth}, ${mc.decoder_num_heads} heads; ${Math.round(100 * mc.mask_ratio)}% masked.`,
    '',
    '```json',
    JSON.stringify(cfg, null, 2),
    '```',
    '',
  ].join('\n');
  writeFileSync(join(cfg.out, 'report.md'), md);
}
