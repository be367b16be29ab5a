// DINO self-distillation (facebookresearch/dino's main_dino.py): multi-crop views made on the GPU
// (two global crops and n local ones: random resized crops, flips, ColorJitter, grayscale, blur,
// solarization as DataAugmentationDINO), the student trained with AdamW on the DINO loss, the
// teacher its EMA with a cosine momentum schedule, the centre updated each step; linear warmup
// then cosine for the learning rate, cosine weight decay, teacher temperature warmup, gradient
// clipping, and the prototypes frozen in the first epoch(s). Each epoch measures the teacher's
// weighted k-NN accuracy on held-out images, saves `last.safetensors` (exact resume), and draws
// the views and the teacher's class-token attention.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as T from '../engine/index.js';
import { type DINOConfig, dinoConfigFor, DINO } from '../models/dino.js';
import { presetConfig, type ViTConfig } from '../models/vit.js';
import { checkpointArch, CheckpointError, readCheckpoint, saveCheckpoint } from './checkpoint.js';
import { type Dataset, type DatasetName, loadDataset, normalize, subset } from './data.js';
import { writeImageGrid } from './image.js';
import { curvesSpec, renderCurves, smoothedLoss } from './plot.js';
import { accuracyOf, extractFeatures, knnPredict } from './probe.js';
import type { StopSignal } from './interrupt.js';
import { type EpochBase, planSteps, restoreRun, runPretrainLoop } from './pretrain-loop.js';
import { longWarmupWarning, warmupCosine } from './schedule.js';

export interface DinoPretrainConfig {
  /** The ViT preset whose encoder is pre-trained (a patchifying one). */
  preset: string;
  data: DatasetName;
  dataDir?: string;
  epochs: number;
  /** Stop after this many steps in total (the schedules still span `epochs`). */
  maxSteps?: number;
  batchSize: number;
  /** Peak learning rate, reached after the warmup (DINO: 5e-4 × batch / 256). */
  lr: number;
  minLr: number;
  warmupEpochs: number;
  /** Weight decay, cosine from `weightDecay` to `weightDecayEnd` (DINO: 0.04 → 0.4). */
  weightDecay: number;
  weightDecayEnd: number;
  /** Teacher EMA momentum, cosine from this to 1 (DINO: 0.996). */
  momentumTeacher: number;
  /** Teacher temperature, linear from `warmupTeacherTemp` over `warmupTeacherTempEpochs`. */
  teacherTemp: number;
  warmupTeacherTemp: number;
  warmupTeacherTempEpochs: number;
  /** Global gradient-norm clip (0: none). */
  clipGrad: number;
  /** Epochs in which the prototypes (the head's last layer) are not trained. */
  freezeLastLayer: number;
  localCrops: number;
  localCropSize?: number;
  globalCropScale: [number, number];
  localCropScale: [number, number];
  outDim: number;
  hiddenDim: number;
  bottleneckDim: number;
  normLastLayer: boolean;
  /** Blur sigma range in pixels (DINO's PIL radius 0.1–2 at 224 px, scaled to the image). */
  blurSigma?: [number, number];
  seed: number;
  out: string;
  resume: boolean;
  trainLimit?: number;
  /** k-NN evaluation after each epoch: bank of the first `knnTrain` training images, queries
   * the first `evalImages` test images (0: none). */
  knnTrain: number;
  evalImages: number;
  knnK: number;
  progress: boolean;
  /** Changes to the preset's encoder config (API only, e.g. a shallower model in tests). */
  modelOverrides?: Partial<ViTConfig>;
}

export const DINO_DEFAULTS: DinoPretrainConfig = {
  preset: 'vit-fmnist-p4',
  data: 'fashion-mnist',
  epochs: 10,
  batchSize: 128,
  // DINO's 5e-4 × 128 / 256 assumes 100+ epochs; short runs on small images take more.
  lr: 1e-3,
  minLr: 1e-6,
  warmupEpochs: 1,
  weightDecay: 0.04,
  weightDecayEnd: 0.4,
  momentumTeacher: 0.996,
  teacherTemp: 0.04,
  warmupTeacherTemp: 0.04,
  warmupTeacherTempEpochs: 0,
  clipGrad: 3,
  freezeLastLayer: 1,
  localCrops: 6,
  globalCropScale: [0.4, 1],
  localCropScale: [0.05, 0.4],
  outDim: 4096,
  hiddenDim: 1024,
  bottleneckDim: 128,
  normLastLayer: true,
  seed: 0,
  out: '',
  resume: false,
  knnTrain: 10000,
  evalImages: 2000,
  knnK: 20,
  progress: true,
};

export interface DinoEpoch extends EpochBase {
  /** The teacher's weighted k-NN accuracy, %. */
  knn_acc: number;
}

export interface DinoPretrainResult {
  out: string;
  metrics: DinoEpoch[];
  losses: number[];
  seconds: number;
  imagesPerSecond: number;
  /** The signal that stopped the run early; its checkpoint holds the step reached, no report is written. */
  interrupted: StopSignal | null;
}

/** utils.cosine_scheduler's value at `step`: `base` → `final` over `total` steps. */
export function cosineValue(step: number, total: number, base: number, final: number): number {
  return final + 0.5 * (base - final) * (1 + Math.cos((Math.PI * Math.min(step, total)) / Math.max(total, 1)));
}

/** The teacher temperature at `epoch`: linear warmup, then constant. */
export function teacherTempAt(epoch: number, cfg: Pick<DinoPretrainConfig, 'teacherTemp' | 'warmupTeacherTemp' | 'warmupTeacherTempEpochs'>): number {
  const w = cfg.warmupTeacherTempEpochs;
  if (epoch >= w) return cfg.teacherTemp;
  return w > 1 ? cfg.warmupTeacherTemp + ((cfg.teacherTemp - cfg.warmupTeacherTemp) * epoch) / (w - 1) : cfg.warmupTeacherTemp;
}

export interface DinoViews {
  /** [2B, C, g, g]: global view 1 of every image, then global view 2. */
  globals: T.Tensor;
  /** [n·B, C, l, l], view-major; null without local crops. */
  locals: T.Tensor | null;
}

/** DataAugmentationDINO on a batch [B, C, H, W] in [0, 1], normalised: global view 1 always
 * blurred, view 2 blurred at 0.1 and solarised at 0.2, local views blurred at 0.5; all flipped
 * at 0.5 and colour-jittered at 0.8. */
export function dinoViews(x: T.Tensor, dc: DINOConfig, blurSigma: [number, number]): DinoViews {
  const view = (images: T.Tensor, size: number, scale: [number, number], blurProb: number, solarizeProb: number) => {
    const crops = T.randomResizedCrop(images, { scale, size: [size, size], flipProb: 0.5 }).images;
    return normalizeOnGpu(T.randomColor(crops, { blurProb, blurSigma, solarizeProb }).images, dc.backbone);
  };
  const g = dc.global_crop_size;
  const globals = T.concat([view(x, g, dc.global_crop_scale, 1, 0), view(x, g, dc.global_crop_scale, 0.1, 0.2)], 0);
  const n = dc.local_crops_number;
  const locals = n > 0 ? view(n > 1 ? T.concat(Array<T.Tensor>(n).fill(x), 0) : x, dc.local_crop_size, dc.local_crop_scale, 0.5, 0) : null;
  return { globals, locals };
}

function normalizeOnGpu(x: T.Tensor, c: Pick<ViTConfig, 'mean' | 'std'>): T.Tensor {
  const C = c.mean.length;
  const mean = T.tensor(Float32Array.from(c.mean), [1, C, 1, 1]);
  const inv = T.tensor(Float32Array.from(c.std, (s) => 1 / s), [1, C, 1, 1]);
  return T.mul(T.sub(x, mean), inv);
}

/** A normalised copy of the first `n` examples. */
function normalizedCopy(ds: Dataset, n: number, c: Pick<ViTConfig, 'mean' | 'std'>): Dataset {
  const s = subset(ds, n);
  const copy = { ...s, images: s.images.slice(), labels: s.labels.slice() };
  normalize(copy, c.mean, c.std);
  return copy;
}

/** Weighted k-NN accuracy (%) of the teacher backbone's class token (DINO's eval_knn.py). */
export async function teacherKnn(model: DINO, bank: Dataset, queries: Dataset, k: number): Promise<number> {
  const D = model.config.backbone.embed_dim;
  const [trainF, testF] = [await extractFeatures(model.teacher, bank), await extractFeatures(model.teacher, queries)];
  return 100 * accuracyOf(await knnPredict(trainF, bank.labels, testF, D, bank.classes, k), queries.labels);
}

/** Rows: images, their two global and first local views (in pixels), and the teacher's last-block
 * class-token attention to the patches, one row per head (DINO's visualize_attention.py). */
export async function writeDinoFigure(model: DINO, images: T.Tensor, seed: number, blurSigma: [number, number], path: string, title: string): Promise<void> {
  const dc = model.config;
  const c = dc.backbone;
  const [B, C, H, W] = images.shape as [number, number, number, number];
  T.manualSeed(seed);
  const views = T.noGrad(() => T.scope(() => {
    const v = dinoViews(images, { ...dc, local_crops_number: Math.min(1, dc.local_crops_number) }, blurSigma);
    return { globals: v.globals, locals: v.locals };
  }));
  const last = model.teacher.blocks.at(-1)!.attn;
  let probs: T.Tensor | null = null;
  last.capture = (p) => (probs = T.keep(p));
  const normalized = T.noGrad(() => T.scope(() => normalizeOnGpu(images, c)));
  T.noGrad(() => T.scope(() => {
    model.teacher.forwardFeatures(normalized, { training: false });
  }));
  last.capture = null;
  normalized.dispose();
  const attn = probs as T.Tensor | null;
  if (!attn) throw new Error('DINO figure: the attention was not captured');
  const [, nh, N] = attn.shape as [number, number, number];
  const a = (await attn.data()) as Float32Array;
  attn.dispose();
  const grid = Math.round(Math.sqrt(N - 1));
  const pixelsOf = async (t: T.Tensor, b: number, size: number) => {
    const d = (await t.data()) as Float32Array;
    const per = C * size * size;
    return Float32Array.from(d.subarray(b * per, (b + 1) * per), (v, i) => Math.min(Math.max(v * c.std[Math.floor(i / (size * size))]! + c.mean[Math.floor(i / (size * size))]!, 0), 1));
  };
  const raw = (await images.data()) as Float32Array;
  const cellsOf = async (t: T.Tensor | null, size: number, offset: number) => t ? Promise.all(Array.from({ length: B }, async (_, b) => ({ pixels: upscale(await pixelsOf(t, offset + b, size), C, size, H) }))) : [];
  const rows = [
    { label: 'image', cells: Array.from({ length: B }, (_, b) => ({ pixels: raw.slice(b * C * H * W, (b + 1) * C * H * W) })) },
    { label: 'global view 1', cells: await cellsOf(views.globals, dc.global_crop_size, 0) },
    { label: 'global view 2', cells: await cellsOf(views.globals, dc.global_crop_size, B) },
    ...(views.locals ? [{ label: `local view ${dc.local_crop_size} px`, cells: await cellsOf(views.locals, dc.local_crop_size, 0) }] : []),
    ...Array.from({ length: nh }, (_, h) => ({
      label: `head ${h} attention`,
      cells: Array.from({ length: B }, (_, b) => {
        // Stretched to the map's own range: early in training attention is nearly uniform.
        const row = a.subarray(((b * nh + h) * N) * N + 1, ((b * nh + h) * N) * N + N);
        const [lo, hi] = [Math.min(...row), Math.max(...row)];
        const map = Float32Array.from({ length: H * W }, (_, i) => (row[Math.floor(Math.floor(i / W) * grid / H) * grid + Math.floor((i % W) * grid / W)]! - lo) / Math.max(hi - lo, 1e-12));
        return { pixels: C === 1 ? map : Float32Array.from({ length: C * H * W }, (_, i) => map[i % (H * W)]!) };
      }),
    })),
  ];
  views.globals.dispose();
  views.locals?.dispose();
  writeImageGrid({ title, columns: Array.from({ length: B }, (_, b) => `test ${b}`), rows, channels: C, height: H, width: W, zoom: 4 }, path);
}

/** Nearest-neighbour resize of a [C, s, s] image to [C, S, S] (the figure's cells share one size). */
function upscale(img: Float32Array, C: number, s: number, S: number): Float32Array {
  if (s === S) return img;
  return Float32Array.from({ length: C * S * S }, (_, i) => {
    const c = Math.floor(i / (S * S));
    const y = Math.floor((Math.floor(i / S) % S) * s / S);
    const x = Math.floor((i % S) * s / S);
    return img[c * s * s + y * s + x]!;
  });
}

export async function pretrainDino(overrides: Partial<DinoPretrainConfig>): Promise<DinoPretrainResult> {
  const cfg: DinoPretrainConfig = { ...DINO_DEFAULTS, ...overrides };
  if (!cfg.out) cfg.out = join('runs', `dino-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  for (const [name, s] of [['--global-crop-scale', cfg.globalCropScale], ['--local-crop-scale', cfg.localCropScale]] as const) {
    if (!(s[0] > 0 && s[0] <= s[1] && s[1] <= 1)) throw new Error(`${name} ${s.join(',')}: need 0 < min ≤ max ≤ 1`);
  }
  if (!(cfg.momentumTeacher >= 0 && cfg.momentumTeacher <= 1)) throw new Error(`--momentum-teacher must be in [0, 1], got ${cfg.momentumTeacher}`);
  if (!(cfg.teacherTemp > 0 && cfg.warmupTeacherTemp > 0)) throw new Error(`--teacher-temp and --warmup-teacher-temp must be positive, got ${cfg.teacherTemp} and ${cfg.warmupTeacherTemp}`);
  // The data first: a missing dataset is reported before any folder is made or kernel tuned.
  let trainSet = loadDataset(cfg.data, 'train', cfg.dataDir);
  const testSet = loadDataset(cfg.data, 'test', cfg.dataDir);
  mkdirSync(cfg.out, { recursive: true });
  const log = (s: string) => cfg.progress && console.log(s);
  await T.init();
  await T.tuneMatmul();

  const lastPath = join(cfg.out, 'last.safetensors');
  const resuming = cfg.resume && existsSync(lastPath);
  if (cfg.resume && !resuming) log(`--resume: ${lastPath} does not exist yet; starting a new run`);
  const resumeInfo = resuming ? readCheckpoint<DINOConfig>(lastPath) : null;
  if (resumeInfo && checkpointArch(resumeInfo) !== 'dino') throw new CheckpointError(`${lastPath} is not a DINO checkpoint; use another --out`);
  const vit = { ...presetConfig(cfg.preset), ...cfg.modelOverrides };
  const dc: DINOConfig = resumeInfo?.config ?? dinoConfigFor(vit, {
    out_dim: cfg.outDim, hidden_dim: cfg.hiddenDim, bottleneck_dim: cfg.bottleneckDim, norm_last_layer: cfg.normLastLayer,
    local_crops_number: cfg.localCrops, global_crop_scale: cfg.globalCropScale, local_crop_scale: cfg.localCropScale,
    ...(cfg.localCropSize ? { local_crop_size: cfg.localCropSize } : {}),
  });
  const blurSigma = cfg.blurSigma ?? [(0.1 * dc.global_crop_size) / 224, (2 * dc.global_crop_size) / 224];
  const model = new DINO(dc, cfg.seed);
  const bb = dc.backbone;
  if (trainSet.channels !== bb.in_chans || trainSet.height !== bb.img_size) {
    throw new Error(`preset '${cfg.preset}' expects ${bb.in_chans}×${bb.img_size}×${bb.img_size} images; ${cfg.data} has ${trainSet.channels}×${trainSet.height}×${trainSet.width}`);
  }
  if (cfg.trainLimit) trainSet = subset(trainSet, cfg.trainLimit);
  const knnBank = cfg.evalImages > 0 ? normalizedCopy(trainSet, cfg.knnTrain, bb) : null;
  const knnQueries = cfg.evalImages > 0 ? normalizedCopy(testSet, cfg.evalImages, bb) : null;
  const { loader, stepsPerEpoch, totalSteps, lastStep } = planSteps(trainSet, cfg);
  // The prototypes get their own group: frozen in the first epoch(s), their AdamW bias
  // corrections then start at 1, as torch's per-parameter step does. All weights decay on one
  // schedule (DINO's regularised group).
  const prototypes = new Set(model.lastLayerParams());
  const groups = model.paramGroups(cfg.weightDecay).map((g) => ({ ...g, params: g.params.filter((p) => !prototypes.has(p)) }));
  groups.push({ params: [...prototypes], weightDecay: cfg.weightDecay });
  const decayed = [groups[0]!, groups[2]!];
  const opt = new T.AdamW(groups, { lr: cfg.lr, betas: [0.9, 0.999], weightDecay: cfg.weightDecay });
  const { step, history, losses, metricsPath, lossPath } = restoreRun<DinoEpoch>({ out: cfg.out, model, opt, resumeInfo, stepsPerEpoch, log });
  const backboneParams = [...model.params.keys()].filter((k) => !k.startsWith('student.head.')).reduce((n, k) => n + model.params.get(k)!.tensor.size, 0);
  writeFileSync(join(cfg.out, 'config.json'), JSON.stringify({ pretrain: cfg, model: dc, params: model.numParams(), backbone_params: backboneParams }, null, 2) + '\n');
  log(`tessera: DINO pre-training of ${cfg.preset}'s encoder (${backboneParams.toLocaleString()} parameters, ${(model.numParams() - backboneParams).toLocaleString()} in the head) on ${cfg.data}: ` +
    `${trainSet.count} images × (2 global ${dc.global_crop_size} px + ${dc.local_crops_number} local ${dc.local_crop_size} px crops), ${cfg.epochs} epoch${cfg.epochs === 1 ? '' : 's'} of ${stepsPerEpoch} steps of ${cfg.batchSize}; run folder ${cfg.out}`);
  const warmupWarning = longWarmupWarning(cfg.warmupEpochs * stepsPerEpoch, totalSteps, `--warmup-epochs ${cfg.warmupEpochs}, ${cfg.warmupEpochs * stepsPerEpoch} steps`);
  if (warmupWarning) log(warmupWarning);
  const samples = T.keep(T.tensor(testSet.images.subarray(0, 8 * bb.in_chans * bb.img_size ** 2), [8, bb.in_chans, bb.img_size, bb.img_size]));

  const checkpoint = (step: number, epoch: number) => saveCheckpoint(lastPath, model, { optimizer: opt, step, epoch, extra: { arch: 'dino', dataset: cfg.data, preset: cfg.preset } });
  const loop = await runPretrainLoop<DinoEpoch>({
    loader, epochs: cfg.epochs, step, lastStep, seed: cfg.seed, seedSalt: 11, progress: cfg.progress, metricsPath, lossPath, history, losses,
    trainStep: (s, epoch) => {
      opt.lr = warmupCosine(s, totalSteps, cfg.lr, cfg.warmupEpochs * stepsPerEpoch, cfg.minLr);
      const wd = cosineValue(s, totalSteps, cfg.weightDecay, cfg.weightDecayEnd);
      for (const g of decayed) g.weightDecay = wd;
      const momentum = cosineValue(s, totalSteps, cfg.momentumTeacher, 1);
      const teacherTemp = teacherTempAt(epoch, cfg);
      const { globals, locals } = dinoViews(loader.x, dc, blurSigma);
      const teacher = model.teacherForward(globals);
      const l = model.loss(model.studentForward(globals, locals, { training: true }), teacher, teacherTemp);
      // Before the centre moves: the entropy of the targets this step's loss used.
      const entropy = model.teacherEntropy(teacher, teacherTemp);
      l.backward();
      if (epoch < cfg.freezeLastLayer) {
        // main_dino.py's cancel_gradients_last_layer: p.grad = None, so AdamW skips them.
        for (const p of prototypes) {
          p.grad?.dispose();
          p.grad = null;
        }
      }
      opt.step({ clip: cfg.clipGrad > 0 ? opt.clipGradNorm(cfg.clipGrad) : undefined });
      opt.zeroGrad();
      model.updateCenter(teacher);
      model.teacherEma.update(momentum);
      return { loss: l, fields: { lr: opt.lr, wd, momentum, teacher_temp: teacherTemp }, measured: { teacher_entropy: entropy } };
    },
    evaluate: async (base) => ({ ...base, knn_acc: knnBank && knnQueries ? await teacherKnn(model, knnBank, knnQueries, cfg.knnK) : NaN }),
    save: async (m) => {
      log(`epoch ${m.epoch}: train loss ${m.train_loss.toFixed(4)}, teacher ${cfg.knnK}-NN accuracy ${m.knn_acc.toFixed(2)}% (${knnQueries?.count ?? 0} test images against ${knnBank?.count ?? 0} training images), ${m.images_per_s.toFixed(0)} img/s`);
      await checkpoint(m.step, m.epoch);
      await writeDinoFigure(model, samples, 777, blurSigma, join(cfg.out, 'views.png'), `DINO views and teacher attention after epoch ${m.epoch} (${cfg.data} test images)`);
    },
    checkpoint,
    checkpointPath: lastPath,
    divergenceHint: 'lower --lr or raise --warmup-epochs',
  });

  const result: DinoPretrainResult = { out: cfg.out, metrics: history, losses, ...loop };
  if (!result.interrupted) await writeReport(cfg, dc, backboneParams, result);
  samples.dispose();
  loader.dispose();
  opt.dispose();
  model.dispose();
  return result;
}

async function writeReport(cfg: DinoPretrainConfig, dc: DINOConfig, params: number, r: DinoPretrainResult): Promise<void> {
  const knn = r.metrics.map((m) => ({ step: m.step, value: m.knn_acc, series: `teacher ${cfg.knnK}-NN accuracy %` }));
  // The whole run's log (a resumed run's earlier steps included): the targets' entropy beside the loss.
  const entropy = readFileSync(join(cfg.out, 'loss.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { teacher_entropy?: number }).teacher_entropy ?? NaN);
  const lossPanel = [...smoothedLoss(r.losses), ...(entropy.every(Number.isFinite) ? smoothedLoss(entropy, `teacher target entropy (uniform: ${Math.log(dc.out_dim).toFixed(2)})`) : [])];
  await renderCurves(curvesSpec(lossPanel, knn, `DINO pre-training, ${cfg.preset} on ${cfg.data}`, 'k-NN accuracy %', 'nats'), join(cfg.out, 'curves.png'));
  const rows = r.metrics.map((m) => `| ${m.epoch} | ${m.step} | ${m.train_loss.toFixed(4)} | ${m.knn_acc.toFixed(2)} | ${m.images_per_s.toFixed(0)} | ${m.elapsed_s.toFixed(0)} |`);
  const last = r.metrics.at(-1);
  const md = [
    `# DINO pre-training: ${cfg.preset} on ${cfg.data}`,
    '',
    `${last ? `Teacher ${cfg.knnK}-NN accuracy **${last.knn_acc.toFixed(2)}%**` : 'No epoch finished'} (class token, cosine similarity, votes weighted exp(sim / 0.07), ` +
      `${cfg.evalImages} test images against the first ${cfg.knnTrain} training images), ${r.seconds.toFixed(0)} s, ${r.imagesPerSecond.toFixed(0)} images/s on ${T.currentDevice().adapterName}. ` +
      `Probe it on the whole set with \`tessera probe --checkpoint ${join(cfg.out, 'last.safetensors')}\`; fine-tune with \`tessera train --init ${join(cfg.out, 'last.safetensors')}\`.`,
    '',
    '| epoch | step | train loss | k-NN % | img/s | elapsed s |',
    '|---:|---:|---:|---:|---:|---:|',
    ...rows,
    '',
    '![curves](curves.png)',
    '',
    '![views and attention](views.png)',
    '',
    `Backbone: ${params.toLocaleString()} parameters; patch ${dc.backbone.patch_size}, width ${dc.backbone.embed_dim}, depth ${dc.backbone.depth}, ${dc.backbone.num_heads} heads. ` +
      `Head: ${dc.nlayers} layers, hidden ${dc.hidden_dim}, bottleneck ${dc.bottleneck_dim}, ${dc.out_dim} prototypes${dc.norm_last_layer ? ' (normalised)' : ''}. ` +
      `Crops: 2 × ${dc.global_crop_size} px (scale ${dc.global_crop_scale.join('–')}), ${dc.local_crops_number} × ${dc.local_crop_size} px (scale ${dc.local_crop_scale.join('–')}).`,
    '',
    '```json',
    JSON.stringify(cfg, null, 2),
    '```',
    '',
  ].join('\n');
  writeFileSync(join(cfg.out, 'report.md'), md);
}
