// Supervised training of a ViT / DeiT: AdamW with warmup + cosine, label smoothing, global-norm
// clipping, optional weight EMA and DeiT hard distillation, evaluation each epoch, a run folder
// with config, metrics, checkpoints, curves and a report, and exact resume.
import { existsSync, mkdirSync, writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import * as T from '../engine/index.js';
import { presetConfig, type ViTConfig, VisionTransformer } from '../models/vit.js';
import { checkpointArch, encoderConfig, loadEmaState, loadEncoderWeights, loadOptimizerState, loadWeights, modelFromCheckpoint, readCheckpoint, saveCheckpoint } from './checkpoint.js';
import { AUGMENT_DEFAULTS, type AugmentConfig, augmentBatch, augmenting, checkAugmentConfig } from './augment.js';
import { BatchLoader, type Dataset, type DatasetName, loadDataset, normalize, permutation, subset } from './data.js';
import { classificationMetrics, type ClassificationMetrics, confusionTable } from './metrics.js';
import { curvesSpec, renderCurves, smoothedLoss } from './plot.js';
import { InterruptWatch, type StopSignal } from './interrupt.js';
import { ProgressBar } from './progress.js';
import { openRunLogs } from './runlog.js';
import { longWarmupWarning, stepsWithinBudget, warmupCosine } from './schedule.js';

/** Training options; `{...TRAIN_DEFAULTS, ...preset recipe, ...flags}`; augmentation fields
 * as in train/augment.ts. */
export interface TrainConfig extends AugmentConfig {
  /** Model preset name (models/vit.ts PRESETS). */
  preset: string;
  /** Dataset name and folder (default: the dataset's Debian location or TESSERA_DATA). */
  data: DatasetName;
  dataDir?: string;
  epochs: number;
  /** Stop after this many optimizer steps in total (the schedule still spans `epochs`). */
  maxSteps?: number;
  /** Length of the learning-rate schedule in steps, instead of `epochs` whole epochs (a fraction
   * of an epoch is allowed; the last epoch is then partial). */
  scheduleSteps?: number;
  /** Wall-clock budget in minutes for the whole run, compilation and evaluations included: the
   * first steps are timed and the schedule is set to the steps that fit (`scheduleSteps` is then
   * recorded in config.json and the checkpoints, so a resumed run keeps it). */
  timeBudget?: number;
  batchSize: number;
  /** Peak learning rate after warmup. */
  lr: number;
  minLr: number;
  warmupSteps: number;
  weightDecay: number;
  betas: [number, number];
  labelSmoothing: number;
  /** Global-norm clipping threshold (0: off). */
  clipGrad: number;
  /** Decay of an exponential moving average of weights, evaluated alongside (0: off). */
  ema: number;
  seed: number;
  /** Run folder. */
  out: string;
  /** Continue from out/last.safetensors. */
  resume: boolean;
  /** DeiT hard distillation from this classifier checkpoint. */
  teacher?: string;
  /** Start from this checkpoint's weights and model config (fine-tuning): the optimizer, the
   * schedule and the step count start afresh, unlike `resume`. */
  init?: string;
  /** Use only the first N training / test images (quick runs, tests). */
  trainLimit?: number;
  evalLimit?: number;
  evalBatchSize: number;
  /** Print progress (false in tests). */
  progress: boolean;
  /** Changes to the preset's model config (API only, e.g. a shallower model in tests). */
  modelOverrides?: Partial<ViTConfig>;
}

export const TRAIN_DEFAULTS: TrainConfig = {
  ...AUGMENT_DEFAULTS,
  // Chosen by measurement for `npm start` (README: the trade-off table): the conv stem with 16
  // tokens learns fastest per image and runs as fast as the patch-7 ViT.
  preset: 'vit-fmnist-convstem16-d4',
  data: 'fashion-mnist',
  epochs: 3,
  batchSize: 128,
  lr: 3e-3,
  minLr: 1e-5,
  warmupSteps: 100,
  weightDecay: 0.05,
  betas: [0.9, 0.999],
  labelSmoothing: 0,
  clipGrad: 1,
  ema: 0,
  seed: 0,
  out: '',
  resume: false,
  evalBatchSize: 500,
  progress: true,
};

export interface EvalResult extends ClassificationMetrics {
  logits: Float32Array;
  labels: Int32Array;
}

export type TestTimeAugmentation = 'none' | 'flip' | 'flip-shift';
export const TTA_MODES: readonly TestTimeAugmentation[] = ['none', 'flip', 'flip-shift'];

export interface EvaluateOptions {
  /** Test-time augmentation, averaging class probabilities over views of each image (the reported
   * logits are then the log of the average): 'flip' = the image and its mirror image; 'flip-shift'
   * = those two, each also moved by one pixel left, right, up and down (10 views; the vacated edge
   * repeats the border, which is background in these datasets). */
  tta?: TestTimeAugmentation;
}

/** Index map along one axis: `shiftIndex(W, 1)[x] = x − 1` (clamped) moves the content one pixel towards higher x. */
function shiftIndex(W: number, by: number): Int32Array {
  return Int32Array.from({ length: W }, (_, i) => Math.min(W - 1, Math.max(0, i - by)));
}

/** Runs the model over a dataset in eval mode (no dropout, distilled heads averaged). */
export async function evaluate(model: VisionTransformer, ds: Dataset, batchSize: number, opts: EvaluateOptions = {}): Promise<EvalResult> {
  const C = model.config.num_classes;
  const W = model.config.img_size;
  const tta = opts.tta ?? 'none';
  const index = (a: Int32Array) => T.keep(T.tensor(a, [a.length]));
  const mirror = tta === 'none' ? null : index(Int32Array.from({ length: W }, (_, i) => W - 1 - i));
  // Each shift: the axis (2 = rows, 3 = columns) and its index map.
  const shifts = tta === 'flip-shift' ? ([[3, 1], [3, -1], [2, 1], [2, -1]] as const).map(([axis, by]) => ({ axis, map: index(shiftIndex(W, by)) })) : [];
  const predict = (x: T.Tensor): T.Tensor => {
    const logits = model.forward(x, { training: false }).logits;
    if (!mirror) return logits;
    const bases = [x, T.indexSelect(x, 3, mirror)];
    const views = [...bases, ...bases.flatMap((b) => shifts.map((s) => T.indexSelect(b, s.axis, s.map)))];
    let sum = T.softmax(logits);
    for (const v of views.slice(1)) sum = T.add(sum, T.softmax(model.forward(v, { training: false }).logits));
    return T.log(T.mulScalar(sum, 1 / views.length));
  };
  const logits = new Float32Array(ds.count * C);
  const order = Int32Array.from({ length: ds.count }, (_, i) => i);
  const full = Math.floor(ds.count / batchSize);
  const loaders = [new BatchLoader(ds, Math.min(batchSize, ds.count))];
  const rest = ds.count - full * batchSize;
  if (rest > 0 && full > 0) loaders.push(new BatchLoader(ds, rest));
  try {
    for (let start = 0; start < ds.count; ) {
      const loader = ds.count - start >= loaders[0]!.batchSize ? loaders[0]! : loaders[1]!;
      loader.load(order, start);
      const out = T.noGrad(() => T.scope(() => predict(loader.x)));
      await out.data(logits.subarray(start * C, start * C + out.size));
      out.dispose();
      start += loader.batchSize;
    }
  } finally {
    for (const l of loaders) l.dispose();
    mirror?.dispose();
    for (const s of shifts) s.map.dispose();
  }
  return { ...classificationMetrics(logits, ds.labels, C), logits, labels: ds.labels };
}

export interface EpochMetrics {
  epoch: number;
  step: number;
  train_loss: number;
  test_accuracy: number;
  test_nll: number;
  test_ece: number;
  ema_accuracy?: number;
  images_per_s: number;
  elapsed_s: number;
}

export interface TrainResult {
  out: string;
  metrics: EpochMetrics[];
  losses: number[];
  finalAccuracy: number;
  bestAccuracy: number;
  seconds: number;
  imagesPerSecond: number;
  /** The signal that stopped the run early; its checkpoint holds the step reached, no report is written. */
  interrupted: StopSignal | null;
}

function stepSeed(seed: number, step: number): number {
  return (Math.imul(seed + 1, 0x9e3779b1) ^ Math.imul(step + 1, 0x85ebca6b)) >>> 0;
}

export async function train(overrides: Partial<TrainConfig>): Promise<TrainResult> {
  const runStart = performance.now();
  const cfg: TrainConfig = { ...TRAIN_DEFAULTS, ...overrides };
  if (!cfg.out) cfg.out = join('runs', new Date().toISOString().replace(/[:.]/g, '-'));
  // The data first: a missing dataset is reported before any folder is made or kernel tuned.
  let trainSet = loadDataset(cfg.data, 'train', cfg.dataDir);
  let testSet = loadDataset(cfg.data, 'test', cfg.dataDir);
  mkdirSync(cfg.out, { recursive: true });
  const log = (s: string) => cfg.progress && console.log(s);
  await T.init();
  // Unbatched matmuls take whichever B path this machine runs faster (the results are bit-identical).
  const tuning = await T.tuneMatmul();
  if (tuning) {
    const { uniformMs, otherMs, uniform } = tuning.smallB;
    log(`matmul: B from ${tuning.choice === 'texture' ? 'a texture' : 'storage'} (tuning round ${tuning.textureMs.toFixed(1)} ms with the texture, ${tuning.storageMs.toFixed(1)} ms from storage); ` +
      `B of at most 192 KiB ${uniform ? 'from uniform arrays' : 'the same way'} (${uniformMs.toFixed(1)} ms from uniform arrays, ${otherMs.toFixed(1)} ms otherwise)`);
  }

  // ---- model, data, optimizer -----------------------------------------------------------------
  const lastPath = join(cfg.out, 'last.safetensors');
  const resuming = cfg.resume && existsSync(lastPath);
  if (cfg.resume && !resuming) log(`--resume: ${lastPath} does not exist yet; starting a new run`);
  const resumeInfo = resuming ? readCheckpoint(lastPath) : null;
  // A resumed fine-tuning run takes its weights from its own last checkpoint, not from --init.
  const initInfo = cfg.init && !resuming ? readCheckpoint(cfg.init) : null;
  // An MAE or DINO checkpoint gives the encoder (its config's encoder fields over the preset's);
  // the head starts afresh.
  const initArch = initInfo ? checkpointArch(initInfo) : 'vit';
  const mc: ViTConfig = resumeInfo?.config ?? (initInfo ? encoderConfig(initInfo, cfg.preset) : null) ?? { ...presetConfig(cfg.preset), ...cfg.modelOverrides };
  const model = new VisionTransformer(mc, cfg.seed);
  const modelName = runModelName(cfg);
  if (trainSet.channels !== mc.in_chans || trainSet.height !== mc.img_size) {
    throw new Error(`preset '${cfg.preset}' expects ${mc.in_chans}×${mc.img_size}×${mc.img_size} images; ${cfg.data} has ${trainSet.channels}×${trainSet.height}×${trainSet.width}`);
  }
  if (cfg.trainLimit) trainSet = subset(trainSet, cfg.trainLimit);
  if (cfg.evalLimit) testSet = subset(testSet, cfg.evalLimit);
  checkAugmentConfig(cfg);
  // Augmentation works on [0, 1] images and normalises on the GPU afterwards.
  const augment = augmenting(cfg);
  if (!augment) normalize(trainSet, mc.mean, mc.std);
  normalize(testSet, mc.mean, mc.std);
  const loader = new BatchLoader(trainSet, cfg.batchSize);
  const stepsPerEpoch = loader.stepsPerEpoch;
  if (stepsPerEpoch === 0) throw new Error(`batch size ${cfg.batchSize} is larger than the ${trainSet.count} training images`);
  if (cfg.timeBudget !== undefined && !(cfg.timeBudget > 0)) throw new Error(`--time-budget must be a positive number of minutes, got ${cfg.timeBudget}`);
  if (cfg.scheduleSteps !== undefined && !(Number.isInteger(cfg.scheduleSteps) && cfg.scheduleSteps > 0)) throw new Error(`--schedule-steps must be a positive integer, got ${cfg.scheduleSteps}`);
  const savedSchedule = resumeInfo?.metadata.schedule_steps;
  let totalSteps = savedSchedule ? Number(savedSchedule) : cfg.scheduleSteps ?? cfg.epochs * stepsPerEpoch;
  // A time-budgeted run trains with the epochs' schedule until its calibration steps are timed,
  // then fixes the schedule to what fits; a resumed one keeps the schedule it had.
  const budgeted = cfg.timeBudget !== undefined && !savedSchedule;
  // Only a schedule not given by --epochs is recorded, so `--resume --epochs N` can still extend a run.
  const recordSchedule = cfg.timeBudget !== undefined || cfg.scheduleSteps !== undefined || !!savedSchedule;
  const calibrationEnd = Math.min(27, stepsPerEpoch, totalSteps);
  const timingStart = Math.min(3, calibrationEnd - 1);
  let timingStarted = 0;
  // Training seconds and steps since the calibration started (evaluations excluded): the
  // per-step cost each re-plan uses.
  let timedSeconds = 0;
  let timedSteps = 0;
  let lastStep = Math.min(totalSteps, cfg.maxSteps ?? Infinity);
  const epochsOf = (steps: number) => Math.ceil(steps / stepsPerEpoch);
  const opt = new T.AdamW(model.paramGroups(cfg.weightDecay), { lr: cfg.lr, betas: cfg.betas, weightDecay: cfg.weightDecay });
  const ema = cfg.ema > 0 ? new T.WeightEma([...model.state().values()], cfg.ema, { warmup: true }) : null;
  const teacher = cfg.teacher ? modelFromCheckpoint(cfg.teacher).model : null;
  if (teacher && !mc.distilled) throw new Error(`--teacher needs a distilled preset (a model with dist_token and head_dist); '${cfg.preset}' is not`);

  if (initInfo && initArch !== 'vit') {
    const fresh = loadEncoderWeights(model, initInfo, cfg.init!);
    log(`--init ${cfg.init}: the ${initArch === 'mae' ? 'MAE encoder' : 'DINO teacher'}'s weights (step ${initInfo.step}); ${fresh.join(', ')} initialised afresh`);
  } else if (initInfo) loadWeights(model, initInfo, cfg.init!);
  const metricsPath = join(cfg.out, 'metrics.jsonl');
  const lossPath = join(cfg.out, 'loss.jsonl');
  let step = 0;
  let best = 0;
  const history: EpochMetrics[] = [];
  const losses: number[] = [];
  if (resumeInfo) {
    loadWeights(model, resumeInfo, lastPath);
    loadOptimizerState(opt, model, resumeInfo, lastPath);
    const restarted = ema ? loadEmaState(ema, model, resumeInfo, lastPath) : [];
    if (restarted.length) log(`${lastPath} holds no weight EMA for ${restarted.length === model.state().size ? 'the model' : restarted.join(', ')}: it starts from the resumed values`);
    step = resumeInfo.step;
    best = Number(resumeInfo.metadata.best_accuracy ?? 0);
    log(`resumed ${lastPath} at step ${step} (epoch ${Math.floor(step / stepsPerEpoch)})`);
  }
  const logs = openRunLogs<EpochMetrics>(metricsPath, lossPath, resumeInfo ? step : null);
  history.push(...logs.metrics);
  losses.push(...logs.losses);
  log(`tessera: ${modelName} (${model.numParams().toLocaleString()} parameters) on ${cfg.data}: ${trainSet.count} train / ${testSet.count} test images, ` +
    `${budgeted ? `a ${cfg.timeBudget} min budget` : `${formatEpochs(totalSteps / stepsPerEpoch)} epoch${totalSteps === stepsPerEpoch ? '' : 's'}`} of ${stepsPerEpoch} steps of ${cfg.batchSize}; run folder ${cfg.out}`);
  const warnLongWarmup = () => {
    const warning = longWarmupWarning(cfg.warmupSteps, totalSteps, `--warmup-steps ${cfg.warmupSteps}`);
    if (warning) log(warning);
  };
  // A budgeted run's schedule is known after its calibration steps.
  if (!budgeted) warnLongWarmup();

  const params = model.parameters();
  const started = performance.now();
  // A resumed run's clock continues from its last evaluation, so reports give the whole run's time.
  const priorSeconds = history.at(-1)?.elapsed_s ?? 0;
  let trainedImages = 0;
  let trainSeconds = 0;
  const save = async (path: string, epoch: number) =>
    saveCheckpoint(path, model, { optimizer: opt, ema: ema ?? undefined, step, epoch, extra: { best_accuracy: String(best), dataset: cfg.data, ...(recordSchedule ? { schedule_steps: String(totalSteps) } : {}) } });
  const writeConfig = () =>
    writeFileSync(join(cfg.out, 'config.json'), JSON.stringify({ train: { ...cfg, scheduleSteps: totalSteps }, model: mc, params: model.numParams() }, null, 2) + '\n');
  let evalSeconds = 0;
  let evals = 0;
  // Fits the schedule into the time budget from the seconds measured so far.
  const plan = (secondsPerStep: number) => {
    // Before the first evaluation: a forward pass costs about a third of a training step.
    const perEval = evals ? evalSeconds / evals : 0.35 * secondsPerStep * (testSet.count / cfg.batchSize) + 1;
    const fit = stepsWithinBudget({
      budgetSeconds: cfg.timeBudget! * 60, elapsedSeconds: (performance.now() - runStart) / 1000, stepsDone: step,
      secondsPerStep, secondsPerEval: perEval, stepsPerEpoch, margin: 0.03,
    });
    return Math.max(fit, 1);
  };

  writeConfig();

  // ---- the loop ---------------------------------------------------------------------------------
  const watch = new InterruptWatch(log);
  try {
    if (step >= lastStep && step > 0) log(`nothing to run: the run is already at step ${step} of ${lastStep}; --epochs N (or a larger --max-steps) extends it`);
    while (step < lastStep) {
      const epoch = Math.floor(step / stepsPerEpoch);
      const order = permutation(trainSet.count, cfg.seed * 1000 + epoch);
      const bar = cfg.progress ? new ProgressBar(`epoch ${epoch + 1}/${budgeted && step < calibrationEnd ? '?' : epochsOf(totalSteps)}`, Math.min(stepsPerEpoch, lastStep - epoch * stepsPerEpoch), cfg.batchSize, { startAt: step % stepsPerEpoch, stepsAfter: Math.max(0, lastStep - (epoch + 1) * stepsPerEpoch) }) : null;
      const epochStart = performance.now();
      let epochLoss = 0;
      let epochSteps = 0;
      for (let pos = step % stepsPerEpoch; pos < stepsPerEpoch && step < lastStep; pos++) {
        const stepStart = performance.now();
        loader.load(order, pos * cfg.batchSize);
        // Every random op of the step (dropout, drop-path) draws from a seed fixed by the step,
        // so a resumed run repeats the uninterrupted one exactly.
        T.manualSeed(stepSeed(cfg.seed, step));
        opt.lr = warmupCosine(step, totalSteps, cfg.lr, cfg.warmupSteps, cfg.minLr);
        const loss = T.scope(() => {
          const batch = augment ? augmentBatch(loader.x, loader.y, mc.num_classes, cfg, { mean: mc.mean, std: mc.std, labelSmoothing: cfg.labelSmoothing }) : null;
          const x = batch?.images ?? loader.x;
          const out = model.forward(x, { training: true });
          const B = cfg.batchSize;
          const K = mc.num_classes;
          // AugMix stacks (clean, aug1, aug2): cross-entropy on the clean view, Jensen–Shannon
          // consistency across the three.
          const views = batch?.views ?? 1;
          const view = (t: T.Tensor, v: number) => (views === 1 ? t : T.slice(t, [v * B, 0], [(v + 1) * B, K]));
          const target = batch?.targets ?? loader.y;
          let l = T.crossEntropy(view(out.logits, 0), target, { labelSmoothing: batch?.targets ? 0 : cfg.labelSmoothing });
          if (views === 3) l = T.add(l, T.mulScalar(T.jsdLoss(view(out.logits, 0), view(out.logits, 1), view(out.logits, 2)), cfg.jsdWeight));
          if (out.distLogits) {
            // DeiT hard distillation: the distillation head learns the teacher's argmax.
            const clean = views === 1 ? x : T.slice(x, [0, 0, 0, 0], [B, ...x.shape.slice(1)]);
            const target = teacher ? T.noGrad(() => T.max(teacher.forward(clean, { training: false }).logits, 1).indices) : loader.y;
            l = T.mulScalar(T.add(l, T.crossEntropy(view(out.distLogits, 0), target)), 0.5);
          }
          l.backward();
          const clip = opt.clipGradNorm(cfg.clipGrad);
          opt.step({ clip });
          opt.zeroGrad();
          ema?.update();
          return l;
        });
        const value = await loss.item(); // one wait per step keeps Dawn's queue bounded
        loss.dispose();
        if (!Number.isFinite(value)) {
          throw new Error(`training stopped: the loss is ${value} at step ${step} (epoch ${epoch + 1}); lower --lr or raise --warmup-steps`);
        }
        losses.push(value);
        appendFileSync(lossPath, JSON.stringify({ step, loss: value, lr: opt.lr }) + '\n');
        epochLoss += value;
        epochSteps++;
        step++;
        bar?.update(pos + 1, { loss: (epochLoss / epochSteps).toFixed(4), lr: opt.lr.toExponential(1) });
        if (watch.requested) break;
        if (budgeted && step > timingStart) {
          timedSeconds += (performance.now() - stepStart) / 1000;
          timedSteps++;
        }
        if (budgeted && step === timingStart) timingStarted = performance.now();
        if (budgeted && step === calibrationEnd) {
          totalSteps = plan((performance.now() - timingStarted) / 1000 / (calibrationEnd - timingStart));
          lastStep = Math.min(totalSteps, cfg.maxSteps ?? Infinity);
          bar?.retotal(Math.min(stepsPerEpoch, lastStep - epoch * stepsPerEpoch), `epoch ${epoch + 1}/${epochsOf(totalSteps)}`, Math.max(0, lastStep - (epoch + 1) * stepsPerEpoch));
          writeConfig();
          log(`\ntime budget ${cfg.timeBudget} min: ${((performance.now() - timingStarted) / (calibrationEnd - timingStart)).toFixed(0)} ms per step measured, ` +
            `schedule set to ${totalSteps} steps (${formatEpochs(totalSteps / stepsPerEpoch)} epochs); --schedule-steps ${totalSteps} repeats it`);
          warnLongWarmup();
        }
      }
      const seconds = bar ? bar.finish() : (performance.now() - epochStart) / 1000;
      trainSeconds += seconds;
      trainedImages += epochSteps * cfg.batchSize;
      const endOfEpoch = step % stepsPerEpoch === 0 || step === lastStep;
      if (watch.requested && !endOfEpoch) {
        await save(lastPath, epoch);
        log(`stopped at step ${step} (epoch ${epoch + 1}, ${step % stepsPerEpoch}/${stepsPerEpoch}); ${lastPath} holds it: continue with --out ${cfg.out} --resume`);
        break;
      }
      if (!endOfEpoch) continue;
      const evalStart = performance.now();
      const ev = await evaluate(model, testSet, cfg.evalBatchSize);
      let emaAcc: number | undefined;
      if (ema) emaAcc = await withWeights(ema.tracked, ema.shadow, () => evaluate(model, testSet, cfg.evalBatchSize)).then((r) => r.accuracy);
      const m: EpochMetrics = {
        epoch: Math.ceil(step / stepsPerEpoch),
        step,
        // From the log, which a resumed run restored: the whole epoch's even when it began in an
        // earlier process.
        train_loss: losses.slice(epoch * stepsPerEpoch, step).reduce((a, b) => a + b, 0) / Math.max(step - epoch * stepsPerEpoch, 1),
        test_accuracy: ev.accuracy,
        test_nll: ev.nll,
        test_ece: ev.ece,
        ...(emaAcc !== undefined ? { ema_accuracy: emaAcc } : {}),
        images_per_s: (epochSteps * cfg.batchSize) / seconds,
        elapsed_s: priorSeconds + (performance.now() - started) / 1000,
      };
      history.push(m);
      appendFileSync(metricsPath, JSON.stringify(m) + '\n');
      log(`epoch ${m.epoch}: train loss ${m.train_loss.toFixed(4)}, test accuracy ${(100 * m.test_accuracy).toFixed(2)}%` +
        `${emaAcc !== undefined ? ` (EMA ${(100 * emaAcc).toFixed(2)}%)` : ''}, NLL ${m.test_nll.toFixed(4)}, ECE ${m.test_ece.toFixed(4)}, ${m.images_per_s.toFixed(0)} img/s`);
      if (ev.accuracy > best) {
        best = ev.accuracy;
        await save(join(cfg.out, 'best.safetensors'), m.epoch);
      }
      await save(lastPath, m.epoch);
      // The averaged weights as a plain model checkpoint, for `tessera eval`.
      if (ema) await withWeights(ema.tracked, ema.shadow, () => saveCheckpoint(join(cfg.out, 'ema.safetensors'), model, { step, epoch: m.epoch, extra: { ema_decay: String(cfg.ema), dataset: cfg.data } }));
      evalSeconds += (performance.now() - evalStart) / 1000;
      evals++;
      // Re-plan with every step timed so far and the measured evaluations: shorten the schedule if
      // the rest would overrun the budget, lengthen it if more than 2% more steps fit (the short
      // calibration and the evaluation estimate are only guesses).
      if (budgeted && step >= calibrationEnd && step < lastStep && timedSteps > 0) {
        const perStep = timedSeconds / timedSteps;
        const fit = plan(perStep);
        if (fit < totalSteps || fit > totalSteps * 1.02) {
          log(`time budget: ${(1000 * perStep).toFixed(0)} ms per step so far, ${(evalSeconds / evals).toFixed(1)} s per evaluation; schedule ${fit < totalSteps ? 'shortened' : 'lengthened'} from ${totalSteps} to ${fit} steps`);
          totalSteps = Math.max(fit, step + 1);
          lastStep = Math.min(totalSteps, cfg.maxSteps ?? Infinity);
          writeConfig();
        }
      }
      if (watch.requested) {
        log(`stopped at step ${step}, the end of epoch ${m.epoch}; ${lastPath} holds it: continue with --out ${cfg.out} --resume`);
        break;
      }
    }
  } finally {
    watch.dispose();
  }

  // ---- report -------------------------------------------------------------------------------------
  const final = history[history.length - 1];
  const seconds = priorSeconds + (performance.now() - started) / 1000;
  const result: TrainResult = {
    out: cfg.out,
    metrics: history,
    losses,
    finalAccuracy: final?.test_accuracy ?? 0,
    bestAccuracy: best,
    seconds,
    imagesPerSecond: trainSeconds ? trainedImages / trainSeconds : 0,
    interrupted: watch.requested,
  };
  if (!result.interrupted) await writeReport({ ...cfg, scheduleSteps: totalSteps }, mc, model.numParams(), result, testSet);
  loader.dispose();
  ema?.dispose();
  opt.dispose();
  model.dispose();
  teacher?.dispose();
  return result;
}

function formatEpochs(e: number): string {
  return Number.isInteger(e) ? String(e) : e.toFixed(2);
}

/** Runs fn with `weights` copied into `params`, then restores the originals. */
async function withWeights<R>(params: T.Tensor[], weights: T.Tensor[], fn: () => Promise<R>): Promise<R> {
  const saved = params.map((p) => T.keep(T.noGrad(() => T.copy(p))));
  const swap = (from: T.Tensor[]) => params.forEach((p, i) => T.rt().copy(from[i]!.buffer, p.buffer, p.size * 4));
  swap(weights);
  try {
    return await fn();
  } finally {
    swap(saved);
    for (const s of saved) s.dispose();
  }
}

/** The model as logs and reports name it: the preset, or the checkpoint a fine-tuning run starts from. */
function runModelName(cfg: TrainConfig): string {
  return cfg.init ? `model fine-tuned from ${cfg.init}` : cfg.preset;
}

async function writeReport(cfg: TrainConfig, mc: ViTConfig, params: number, r: TrainResult, testSet: Dataset): Promise<void> {
  const modelName = runModelName(cfg);
  const smooth = smoothedLoss(r.losses);
  const evalLoss = r.metrics.map((m) => ({ step: m.step, value: m.test_nll, series: 'test NLL' }));
  const acc = r.metrics.map((m) => ({ step: m.step, value: m.test_accuracy, series: 'test accuracy' }));
  const emaAcc = r.metrics.filter((m) => m.ema_accuracy !== undefined).map((m) => ({ step: m.step, value: m.ema_accuracy!, series: 'EMA test accuracy' }));
  await renderCurves(curvesSpec([...smooth, ...evalLoss], [...acc, ...emaAcc], `${modelName} on ${cfg.data}`), join(cfg.out, 'curves.png'));
  const withEma = r.metrics.some((m) => m.ema_accuracy !== undefined);
  const emaCell = (m: EpochMetrics) => (withEma ? ` ${m.ema_accuracy !== undefined ? (100 * m.ema_accuracy).toFixed(2) : ''} |` : '');
  const rows = r.metrics.map((m) => `| ${m.epoch} | ${m.step} | ${m.train_loss.toFixed(4)} | ${(100 * m.test_accuracy).toFixed(2)} |${emaCell(m)} ${m.test_nll.toFixed(4)} | ${m.test_ece.toFixed(4)} | ${m.images_per_s.toFixed(0)} | ${m.elapsed_s.toFixed(0)} |`);
  const info = T.currentDevice();
  const md = [
    `# ${modelName} on ${cfg.data}`,
    '',
    `Final test accuracy **${(100 * r.finalAccuracy).toFixed(2)}%** (best ${(100 * r.bestAccuracy).toFixed(2)}%) on ${testSet.count} test images, ` +
      `${r.seconds.toFixed(0)} s wall clock including evaluation and compilation, ${r.imagesPerSecond.toFixed(0)} training images/s on ${info.adapterName}.`,
    '',
    `| epoch | step | train loss | test acc % |${withEma ? ' EMA acc % |' : ''} test NLL | ECE | img/s | elapsed s |`,
    `|---:|---:|---:|---:|${withEma ? '---:|' : ''}---:|---:|---:|---:|`,
    ...rows,
    '',
    '![curves](curves.png)',
    '',
    `Model: ${params.toLocaleString()} parameters, ${mc.conv_stem?.length ? `conv stem ${mc.conv_stem.join('/')} channels` : `patch ${mc.patch_size}`}, width ${mc.embed_dim}, depth ${mc.depth}, ${mc.num_heads} heads, MLP ×${mc.mlp_ratio}.`,
    '',
    '```json',
    JSON.stringify(cfg, null, 2),
    '```',
    '',
  ].join('\n');
  writeFileSync(join(cfg.out, 'report.md'), md);
}

export { confusionTable };
