// The epoch loop MAE and DINO pre-training share: a seeded order per epoch, one batch upload and
// one scoped step per iteration, the random stream fixed by the step (so a resumed run repeats
// the uninterrupted one), loss.jsonl, a progress bar, a stop on a non-finite loss, at each
// epoch's end the method's evaluation, metrics.jsonl and its checkpoint, and on Ctrl-C or
// SIGTERM a checkpoint at the step reached (train/interrupt.ts).
import { appendFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as T from '../engine/index.js';
import { type Checkpointable, type CheckpointInfo, loadOptimizerState, loadWeights } from './checkpoint.js';
import { BatchLoader, type Dataset, permutation } from './data.js';
import { InterruptWatch, type StopSignal } from './interrupt.js';
import { ProgressBar } from './progress.js';
import { openRunLogs } from './runlog.js';

/** The batches of a run: the loader, steps per epoch, the schedule's length and the last step to
 * run (`maxSteps` cuts a run short without changing its schedule). */
export function planSteps(train: Dataset, o: { batchSize: number; epochs: number; maxSteps?: number }) {
  const loader = new BatchLoader(train, o.batchSize);
  const stepsPerEpoch = loader.stepsPerEpoch;
  if (stepsPerEpoch === 0) {
    loader.dispose();
    throw new Error(`batch size ${o.batchSize} is larger than the ${train.count} training images`);
  }
  const totalSteps = o.epochs * stepsPerEpoch;
  return { loader, stepsPerEpoch, totalSteps, lastStep: Math.min(totalSteps, o.maxSteps ?? Infinity) };
}

/** A run folder's state: for a resumed run (`resumeInfo` given) the model's weights, the
 * optimizer's moments and the logs up to its step; otherwise step 0 and empty logs. */
export function restoreRun<E extends { step: number }>(o: {
  out: string; model: Checkpointable; opt: T.AdamW; resumeInfo: CheckpointInfo<unknown> | null; stepsPerEpoch: number; log: (s: string) => void;
}): { step: number; history: E[]; losses: number[]; metricsPath: string; lossPath: string } {
  const [lastPath, metricsPath, lossPath] = ['last.safetensors', 'metrics.jsonl', 'loss.jsonl'].map((f) => join(o.out, f)) as [string, string, string];
  let step = 0;
  if (o.resumeInfo) {
    loadWeights(o.model, o.resumeInfo, lastPath);
    loadOptimizerState(o.opt, o.model, o.resumeInfo, lastPath);
    step = o.resumeInfo.step;
    o.log(`resumed ${lastPath} at step ${step} (epoch ${Math.floor(step / o.stepsPerEpoch)})`);
  }
  const logs = openRunLogs<E>(metricsPath, lossPath, o.resumeInfo ? step : null);
  return { step, history: logs.metrics, losses: logs.losses, metricsPath, lossPath };
}

/** What every epoch line holds; a method adds its evaluation. */
export interface EpochBase {
  epoch: number;
  step: number;
  train_loss: number;
  images_per_s: number;
  elapsed_s: number;
}

export interface PretrainLoopOptions<E extends EpochBase> {
  loader: BatchLoader;
  epochs: number;
  /** The step to start from (0, or a resumed checkpoint's) and the last to run. */
  step: number;
  lastStep: number;
  seed: number;
  /** Distinguishes the methods' random streams. */
  seedSalt: number;
  progress: boolean;
  metricsPath: string;
  lossPath: string;
  /** Epoch lines already in metrics.jsonl (a resumed run's). */
  history: E[];
  losses: number[];
  /** One optimisation step on the uploaded batch (inside a scope): the loss, and what loss.jsonl
   * records of the step besides it: numbers, and one-element tensors read back with the loss. */
  trainStep: (step: number, epoch: number) => { loss: T.Tensor; fields: Record<string, number>; measured?: Record<string, T.Tensor> };
  /** The method's evaluation at an epoch's end: the full line. */
  evaluate: (base: EpochBase) => Promise<E>;
  /** After the line is logged: the checkpoint and pictures. */
  save: (m: E) => Promise<void>;
  /** The checkpoint alone, at a step inside an epoch (the run was interrupted there). */
  checkpoint: (step: number, epoch: number) => Promise<void>;
  /** Where the checkpoint goes, for the message on an interruption. */
  checkpointPath: string;
  /** The message for a non-finite loss, after "the loss is NaN at step s (epoch e); ". */
  divergenceHint: string;
}

/** Mixes a run's seed, a method's salt and the step into the step's random seed. */
export function stepSeed(seed: number, salt: number, step: number): number {
  return (Math.imul(seed + salt, 0x9e3779b1) ^ Math.imul(step + 1, 0x85ebca6b)) >>> 0;
}

export interface PretrainLoopResult {
  seconds: number;
  imagesPerSecond: number;
  /** The signal that stopped the run before its last step (its checkpoint is at the step reached). */
  interrupted: StopSignal | null;
}

export async function runPretrainLoop<E extends EpochBase>(o: PretrainLoopOptions<E>): Promise<PretrainLoopResult> {
  const watch = new InterruptWatch((s) => o.progress && console.log(s));
  try {
    return await loop(o, watch);
  } finally {
    watch.dispose();
  }
}

async function loop<E extends EpochBase>(o: PretrainLoopOptions<E>, watch: InterruptWatch): Promise<PretrainLoopResult> {
  const { loader } = o;
  const stepsPerEpoch = loader.stepsPerEpoch;
  const B = loader.batchSize;
  const started = performance.now();
  const priorSeconds = o.history.at(-1)?.elapsed_s ?? 0;
  let [trainedImages, trainSeconds, step] = [0, 0, o.step];
  const result = () => ({ seconds: priorSeconds + (performance.now() - started) / 1000, imagesPerSecond: trainSeconds ? trainedImages / trainSeconds : 0, interrupted: watch.requested });
  if (step >= o.lastStep && step > 0 && o.progress) console.log(`nothing to run: the run is already at step ${step} of ${o.lastStep}; --epochs N (or a larger --max-steps) extends it`);
  while (step < o.lastStep) {
    const epoch = Math.floor(step / stepsPerEpoch);
    const order = permutation(loader.ds.count, o.seed * 1000 + epoch);
    const bar = o.progress ? new ProgressBar(`epoch ${epoch + 1}/${o.epochs}`, Math.min(stepsPerEpoch, o.lastStep - epoch * stepsPerEpoch), B, { startAt: step % stepsPerEpoch, stepsAfter: Math.max(0, o.lastStep - (epoch + 1) * stepsPerEpoch) }) : null;
    const epochStart = performance.now();
    let [epochLoss, epochSteps] = [0, 0];
    for (let pos = step % stepsPerEpoch; pos < stepsPerEpoch && step < o.lastStep; pos++) {
      loader.load(order, pos * B);
      T.manualSeed(stepSeed(o.seed, o.seedSalt, step));
      let fields: Record<string, number> = {};
      let measuredNames: string[] = [];
      // The loss and the measured values in one tensor: one readback a step.
      const packed = T.scope(() => {
        const r = o.trainStep(step, epoch);
        fields = r.fields;
        measuredNames = Object.keys(r.measured ?? {});
        return T.concat([r.loss, ...Object.values(r.measured ?? {})].map((t) => T.reshape(t, [1])), 0);
      });
      const read = await packed.data();
      packed.dispose();
      const value = read[0]!;
      measuredNames.forEach((name, i) => (fields[name] = read[i + 1]!));
      if (!Number.isFinite(value)) throw new Error(`pre-training stopped: the loss is ${value} at step ${step} (epoch ${epoch + 1}); ${o.divergenceHint}`);
      o.losses.push(value);
      appendFileSync(o.lossPath, JSON.stringify({ step, loss: value, ...fields }) + '\n');
      epochLoss += value;
      epochSteps++;
      step++;
      bar?.update(pos + 1, { loss: (epochLoss / epochSteps).toFixed(4), ...('lr' in fields ? { lr: fields.lr!.toExponential(1) } : {}) });
      if (watch.requested) break;
    }
    const seconds = bar ? bar.finish() : (performance.now() - epochStart) / 1000;
    trainSeconds += seconds;
    trainedImages += epochSteps * B;
    const endOfEpoch = step % stepsPerEpoch === 0 || step === o.lastStep;
    if (watch.requested && !endOfEpoch) {
      await o.checkpoint(step, epoch);
      console.log(`stopped at step ${step} (epoch ${epoch + 1}, ${step % stepsPerEpoch}/${stepsPerEpoch}); ${o.checkpointPath} holds it: continue with --out ${dirname(o.checkpointPath)} --resume`);
      return result();
    }
    if (!endOfEpoch) continue;
    // The epoch's mean loss from the log, which a resumed run restored: the whole epoch's even
    // when it began in an earlier process.
    const epochLosses = o.losses.slice(epoch * stepsPerEpoch, step);
    const m = await o.evaluate({
      epoch: Math.ceil(step / stepsPerEpoch),
      step,
      train_loss: epochLosses.reduce((a, b) => a + b, 0) / Math.max(epochLosses.length, 1),
      images_per_s: (epochSteps * B) / seconds,
      elapsed_s: priorSeconds + (performance.now() - started) / 1000,
    });
    o.history.push(m);
    appendFileSync(o.metricsPath, JSON.stringify(m) + '\n');
    await o.save(m);
    if (watch.requested) {
      console.log(`stopped at step ${step}, the end of epoch ${m.epoch}; ${o.checkpointPath} holds it: continue with --out ${dirname(o.checkpointPath)} --resume`);
      return result();
    }
  }
  return result();
}
