import { spawn, spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../engine/index.js';
import { loadSafetensors, readCheckpoint } from '../../train/checkpoint.js';
import { evaluate, train, TRAIN_DEFAULTS } from '../../train/trainer.js';
import { presetConfig, VisionTransformer } from '../../models/vit.js';
import type { Dataset } from '../../train/data.js';
import { longWarmupWarning, stepsWithinBudget, warmupCosine } from '../../train/schedule.js';
import { writeSynthDataset } from './fixtures.js';

beforeAll(async () => {
  await T.init();
});

const small = { depth: 2 };
const base = { preset: 'vit-fmnist-tiny', progress: false, batchSize: 64, warmupSteps: 5, lr: 2e-3, modelOverrides: small, evalBatchSize: 100 };

describe('training runs', () => {
  const dataDir = writeSynthDataset(mkdtempSync(join(tmpdir(), 'tessera-synth-')), 960, 200);

  it('learns a synthetic task and writes the run folder', async () => {
    const out = mkdtempSync(join(tmpdir(), 'tessera-run-'));
    const before = T.liveBuffers();
    const r = await train({ ...base, dataDir, epochs: 3, out });
    // Ten patterns, each in one random patch: chance is 10%; measured 100% after 3 epochs.
    expect(r.finalAccuracy).toBeGreaterThan(0.9);
    for (const f of ['config.json', 'metrics.jsonl', 'last.safetensors', 'best.safetensors', 'curves.png', 'report.md', 'loss.jsonl']) {
      expect(existsSync(join(out, f)), f).toBe(true);
    }
    const lines = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n');
    expect(lines).toHaveLength(3);
    expect(readFileSync(join(out, 'report.md'), 'utf8')).toContain('Final test accuracy');
    const ck = readCheckpoint(join(out, 'last.safetensors'));
    expect(ck.metadata.step).toBe('45');
    // A schedule given by --epochs is not recorded: `--resume --epochs N` may extend the run.
    expect(ck.metadata.schedule_steps).toBeUndefined();
    expect(JSON.parse(ck.metadata.config!).depth).toBe(2);
    // The run frees what it allocated: the model, the optimizer, the batches.
    expect(T.liveBuffers()).toBe(before);
  });

  it('a time budget sets the schedule to the steps that fit, records it, and a resumed run keeps it', async () => {
    const out = mkdtempSync(join(tmpdir(), 'tessera-budget-'));
    const budgetMinutes = 0.25;
    const r = await train({ ...base, dataDir, epochs: 1, timeBudget: budgetMinutes, out });
    const schedule = Number(readCheckpoint(join(out, 'last.safetensors')).metadata.schedule_steps);
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as { train: { scheduleSteps: number } };
    // The calibration epoch alone is 15 steps; 15 s hold many more on any machine that runs the suite.
    expect(schedule).toBeGreaterThan(15);
    expect(config.train.scheduleSteps).toBe(schedule);
    expect(r.losses).toHaveLength(schedule);
    // The cosine reaches its floor exactly at the planned last step: the schedule was fitted, not cut.
    const lrs = readFileSync(join(out, 'loss.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { lr: number }).lr);
    expect(lrs[lrs.length - 1]).toBeCloseTo(warmupCosine(schedule - 1, schedule, base.lr, base.warmupSteps, TRAIN_DEFAULTS.minLr), 12);
    // The planner keeps 3% of the budget for noise; a loaded machine may still overrun a little.
    expect(r.seconds).toBeLessThan(budgetMinutes * 60 * 1.15);
    // Resuming a budgeted run follows the recorded schedule instead of planning a new one.
    const b = mkdtempSync(join(tmpdir(), 'tessera-budget-b-'));
    await train({ ...base, dataDir, scheduleSteps: schedule, maxSteps: 20, out: b });
    const resumed = await train({ ...base, dataDir, epochs: 1, timeBudget: 5, out: b, resume: true });
    expect(resumed.losses).toHaveLength(schedule);
    expect(readCheckpoint(join(b, 'last.safetensors')).metadata.schedule_steps).toBe(String(schedule));
    await expect(train({ ...base, dataDir, timeBudget: -1, out: b })).rejects.toThrow(/--time-budget must be a positive number of minutes/);
  });

  it('resume from a checkpoint taken mid-epoch reproduces the uninterrupted loss curve exactly', async () => {
    const a = mkdtempSync(join(tmpdir(), 'tessera-a-'));
    const b = mkdtempSync(join(tmpdir(), 'tessera-b-'));
    const opts = { ...base, dataDir, epochs: 2, modelOverrides: { ...small, drop_path_rate: 0.1, drop_rate: 0.1 } };
    const full = await train({ ...opts, out: a });
    const first = await train({ ...opts, out: b, maxSteps: 10 });
    expect(first.losses).toHaveLength(10);
    // As if killed two steps after the checkpoint: those steps are logged and will run again.
    appendFileSync(join(b, 'loss.jsonl'), '{"step":10,"loss":9,"lr":0}\n{"step":11,"loss":9,"lr":0}\n');
    appendFileSync(join(b, 'metrics.jsonl'), readFileSync(join(b, 'metrics.jsonl'), 'utf8').trim().replace('"step":10', '"step":12') + '\n');
    const resumed = await train({ ...opts, out: b, resume: true });
    // The clock goes on from the interrupted run's last evaluation.
    const stopped = first.metrics.at(-1)!.elapsed_s;
    expect(resumed.metrics.find((m) => m.step === 15)!.elapsed_s).toBeGreaterThan(stopped);
    expect(resumed.seconds).toBeGreaterThan(resumed.metrics.find((m) => m.step === 15)!.elapsed_s);
    expect(resumed.losses).toHaveLength(30);
    expect(resumed.losses).toEqual(full.losses);
    expect(resumed.finalAccuracy).toBe(full.finalAccuracy);
    const steps = (dir: string, file: string) => readFileSync(join(dir, file), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { step: number }).step);
    expect(steps(b, 'loss.jsonl')).toEqual(steps(a, 'loss.jsonl'));
    expect(steps(b, 'metrics.jsonl')).toEqual([10, ...steps(a, 'metrics.jsonl')]);
  });

  it('Ctrl-C (a real SIGINT to `tessera train`) stops after the step under way with a checkpoint there, exit 130, and `--out DIR --resume` alone finishes as the uninterrupted run', async () => {
    const a = mkdtempSync(join(tmpdir(), 'tessera-int-a-'));
    const b = mkdtempSync(join(tmpdir(), 'tessera-int-b-'));
    // As the CLI runs it: the full-depth preset, the default evaluation batch.
    const opts = { ...base, dataDir, epochs: 2, modelOverrides: undefined, evalBatchSize: TRAIN_DEFAULTS.evalBatchSize };
    const full = await train({ ...opts, out: a });
    const flags = ['--preset', 'vit-fmnist-tiny', '--batch-size', '64', '--warmup-steps', '5', '--lr', '2e-3', '--epochs', '2', '--out', b];
    // Relaunched for huge pages unless the tunable is set: the signal then goes to the parent,
    // which passes it on.
    const child = spawn(process.execPath, ['bin/tessera.js', 'train', ...flags], { env: { ...process.env, TESSERA_DATA: dataDir } });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stdout += d.toString()));
    const lossLines = () => (existsSync(join(b, 'loss.jsonl')) ? readFileSync(join(b, 'loss.jsonl'), 'utf8').trim().split('\n').filter(Boolean).length : 0);
    const status = await new Promise<number | null>((resolve) => {
      const poll = setInterval(() => {
        if (lossLines() >= 3) {
          clearInterval(poll);
          child.kill('SIGINT');
        }
      }, 5);
      child.on('exit', (code) => {
        clearInterval(poll);
        resolve(code);
      });
    });
    expect(status, stdout).toBe(130);
    const stopped = Number(/stopped at step (\d+)/.exec(stdout)?.[1]);
    // 30 steps in all; the run must have stopped well before its end, where it was asked to.
    expect(stopped).toBeGreaterThanOrEqual(3);
    expect(stopped).toBeLessThan(30);
    expect(stdout).toContain(`continue with --out ${b} --resume`);
    expect(readCheckpoint(join(b, 'last.safetensors')).metadata.step).toBe(String(stopped));
    expect(lossLines()).toBe(stopped);
    expect(existsSync(join(b, 'report.md'))).toBe(false);
    // As a user continues: no flag repeated, the run's own settings come from its config.json.
    const again = spawnSync(process.execPath, ['bin/tessera.js', 'train', '--out', b, '--resume'], { env: { ...process.env, TESSERA_DATA: dataDir }, encoding: 'utf8' });
    expect(again.status, again.stdout + again.stderr).toBe(0);
    expect(again.stdout).toContain(`--resume: the run's settings from ${join(b, 'config.json')}`);
    const jsonl = <R>(file: string) => readFileSync(join(b, file), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as R);
    expect(jsonl<{ loss: number }>('loss.jsonl').map((l) => l.loss)).toEqual(full.losses);
    const metrics = jsonl<{ test_accuracy: number; train_loss: number }>('metrics.jsonl');
    expect(metrics.at(-1)!.test_accuracy).toBe(full.finalAccuracy);
    // Each epoch's line holds the mean loss of all its steps, also of the one split by the stop.
    expect(metrics.map((m) => m.train_loss)).toEqual(full.metrics.map((m) => m.train_loss));
    const settings = (dir: string) => (JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { train: Record<string, unknown> }).train;
    expect(settings(b)).toMatchObject({ preset: 'vit-fmnist-tiny', batchSize: 64, warmupSteps: 5, lr: 2e-3, epochs: 2 });
    // Once more: the run is complete, and says how to extend it.
    const done = spawnSync(process.execPath, ['bin/tessera.js', 'train', '--out', b, '--resume'], { env: { ...process.env, TESSERA_DATA: dataDir }, encoding: 'utf8' });
    expect(done.stdout).toContain('nothing to run: the run is already at step 30 of 30; --epochs N (or a larger --max-steps) extends it');
    expect(jsonl<{ loss: number }>('loss.jsonl')).toHaveLength(30);
  });

  it('a weight EMA is evaluated, written as ema.safetensors, and resumed exactly', async () => {
    const a = mkdtempSync(join(tmpdir(), 'tessera-ema-a-'));
    const b = mkdtempSync(join(tmpdir(), 'tessera-ema-b-'));
    const opts = { ...base, dataDir, epochs: 2, ema: 0.9 };
    const full = await train({ ...opts, out: a });
    await train({ ...opts, out: b, maxSteps: 10 });
    const listeners = process.listenerCount('SIGINT');
    const resumed = await train({ ...opts, out: b, resume: true });
    // The run's Ctrl-C handler is gone with it.
    expect(process.listenerCount('SIGINT')).toBe(listeners);
    expect(resumed.interrupted).toBeNull();
    expect(resumed.losses).toEqual(full.losses);
    // Epoch ends only: the interrupted run also evaluated at its stop, step 10.
    const emaAcc = (r: typeof full) => r.metrics.filter((m) => m.step % 15 === 0).map((m) => m.ema_accuracy);
    // The decay ramps up from 0.1, so the average follows the trained weights (> 90% like them).
    expect(full.metrics.at(-1)!.ema_accuracy).toBeGreaterThan(0.9);
    // The EMA of a resumed run restarting from the resumed weights would differ in its last bits
    // at least: the stored average must come back exactly.
    expect(emaAcc(resumed)).toEqual(emaAcc(full));
    const stored = (dir: string) => loadSafetensors(join(dir, 'ema.safetensors')).tensors;
    const [ea, eb] = [stored(a), stored(b)];
    const live = loadSafetensors(join(a, 'last.safetensors')).tensors;
    const name = 'blocks.0.attn.qkv.weight';
    expect(eb.get(name)!.data).toEqual(ea.get(name)!.data);
    expect(live.get(`optim.ema.${name}`)!.data).toEqual(ea.get(name)!.data);
    expect(ea.get(name)!.data).not.toEqual(live.get(name)!.data);
    expect(readFileSync(join(a, 'report.md'), 'utf8')).toContain('EMA acc %');
  });

  it('--init fine-tunes from a checkpoint: its weights and model, a fresh optimizer and step count', async () => {
    const source = mkdtempSync(join(tmpdir(), 'tessera-init-src-'));
    const trained = await train({ ...base, dataDir, epochs: 1, out: source });
    const init = join(source, 'last.safetensors');
    // With a zero learning rate (decay is scaled by it too) the weights stay the checkpoint's, so
    // the fine-tuning run evaluates to the source run's accuracy; the preset's model (depth 6
    // here) is not what gets built.
    const frozen = mkdtempSync(join(tmpdir(), 'tessera-init-a-'));
    const still = await train({ ...base, modelOverrides: {}, dataDir, epochs: 1, maxSteps: 2, lr: 0, minLr: 0, warmupSteps: 0, init, out: frozen });
    expect(still.finalAccuracy).toBe(trained.finalAccuracy);
    const ck = readCheckpoint(join(frozen, 'last.safetensors'));
    expect(ck.metadata.step).toBe('2');
    expect(JSON.parse(ck.metadata.config!).depth).toBe(2);
    const src = readCheckpoint(init);
    for (const name of ['blocks.1.mlp.fc2.weight', 'cls_token', 'head.bias']) expect(ck.tensors.get(name)!.data, name).toEqual(src.tensors.get(name)!.data);
    // The optimizer starts afresh: after two steps its second moments are not the source's 15 steps'.
    const moment = 'optim.head.weight.exp_avg_sq';
    expect(ck.tensors.get(moment)!.data).not.toEqual(src.tensors.get(moment)!.data);
    // With a learning rate the run learns on from the checkpoint's accuracy (54% after its one epoch).
    const tuned = await train({ ...base, dataDir, epochs: 1, init, out: mkdtempSync(join(tmpdir(), 'tessera-init-b-')) });
    expect(tuned.finalAccuracy).toBeGreaterThan(trained.finalAccuracy + 0.2);
    expect(readFileSync(join(frozen, 'report.md'), 'utf8')).toContain(`fine-tuned from ${init}`);
  });

  it('DeiT hard distillation from a teacher checkpoint, then `tessera eval` with --logits', async () => {
    const teacherRun = mkdtempSync(join(tmpdir(), 'tessera-teacher-'));
    await train({ ...base, dataDir, epochs: 1, maxSteps: 4, out: teacherRun });
    const teacher = join(teacherRun, 'last.safetensors');
    const student = mkdtempSync(join(tmpdir(), 'tessera-student-'));
    const r = await train({ ...base, preset: 'deit-fmnist-tiny-distilled', dataDir, epochs: 1, maxSteps: 4, teacher, out: student });
    expect(r.losses.every(Number.isFinite)).toBe(true);
    expect(readCheckpoint(join(student, 'last.safetensors')).tensors.has('head_dist.weight')).toBe(true);
    await expect(train({ ...base, dataDir, epochs: 1, maxSteps: 1, teacher, out: mkdtempSync(join(tmpdir(), 'tessera-x-')) })).rejects.toThrow(/--teacher needs a distilled preset/);

    const logits = join(student, 'logits.safetensors');
    const cli = spawnSync(process.execPath, ['bin/tessera.js', 'eval', '--checkpoint', join(student, 'last.safetensors'), '--limit', '50', '--logits', logits], {
      env: { ...process.env, TESSERA_DATA: dataDir },
      encoding: 'utf8',
    });
    expect(cli.status, cli.stderr).toBe(0);
    expect(cli.stdout).toMatch(/top-1 accuracy \d+\.\d+%\s+NLL \d+\.\d+\s+ECE \d+\.\d+/);
    expect(cli.stdout).toContain('confusion matrix');
    const saved = loadSafetensors(logits);
    expect(saved.tensors.get('logits')!.shape).toEqual([50, 10]);
    expect(saved.tensors.get('labels')!.dtype).toBe('I32');

    const bad = spawnSync(process.execPath, ['bin/tessera.js', 'eval', '--checkpoint', join(student, 'missing.safetensors')], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/missing\.safetensors: no such checkpoint/);
  });

  it('a non-finite loss stops the run and names the step', async () => {
    const out = mkdtempSync(join(tmpdir(), 'tessera-nan-'));
    await expect(train({ ...base, dataDir, epochs: 1, lr: 1e30, warmupSteps: 1, clipGrad: 0, out })).rejects.toThrow(/the loss is (NaN|Infinity|-Infinity) at step \d+/);
  });

  it('learns real Fashion-MNIST: a 2-block ViT on a 4,096-image subset, 2 epochs', async () => {
    // The Debian package `dataset-fashion-mnist` (installed by `npm run setup`) is the data.
    // Chance is 10%; this seeded run measured 56.7% then 65.8% test accuracy on the first 1,000
    // test images (≈ 20 s). 60% leaves room for rounding differences across adapters, and a
    // model that does not learn cannot reach it.
    const out = mkdtempSync(join(tmpdir(), 'tessera-fmnist-'));
    const r = await train({ ...base, warmupSteps: 20, trainLimit: 4096, evalLimit: 1000, epochs: 2, out });
    expect(r.metrics).toHaveLength(2);
    expect(r.metrics[1]!.test_accuracy).toBeGreaterThan(r.metrics[0]!.test_accuracy);
    expect(r.finalAccuracy).toBeGreaterThan(0.6);
  });

  it('GPU augmentation in training: every pipeline trains, and a resumed augmented run repeats the uninterrupted one', async () => {
    const runs: [string, Record<string, unknown>][] = [
      ['basic + soft', { aug: 'basic', softAug: true }],
      ['trivialaugment + erasing', { aug: 'trivialaugment', randomErasing: 0.25 }],
      ['augmix + JSD', { aug: 'augmix' }],
      ['randaugment + mixup/cutmix + smoothing', { aug: 'randaugment', mixup: 0.8, cutmix: 1, labelSmoothing: 0.1 }],
    ];
    for (const [name, aug] of runs) {
      const r = await train({ ...base, ...aug, dataDir, epochs: 1, maxSteps: 3, out: mkdtempSync(join(tmpdir(), 'tessera-aug-')) });
      expect(r.losses.every(Number.isFinite), name).toBe(true);
    }
    const opts = { ...base, dataDir, epochs: 1, aug: 'randaugment' as const, mixup: 0.8, cutmix: 1, randomErasing: 0.25 };
    const a = mkdtempSync(join(tmpdir(), 'tessera-aug-a-'));
    const b = mkdtempSync(join(tmpdir(), 'tessera-aug-b-'));
    const full = await train({ ...opts, maxSteps: 8, out: a });
    await train({ ...opts, maxSteps: 4, out: b });
    const resumed = await train({ ...opts, maxSteps: 8, out: b, resume: true });
    expect(resumed.losses).toEqual(full.losses);
  });

  it('`tessera augment` writes a labelled PNG grid; `tessera eval --corruptions` reports accuracy per corruption and mCE', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-cli-aug-'));
    const env = { ...process.env, TESSERA_DATA: dataDir };
    const png = join(dir, 'ops.png');
    const grid = spawnSync(process.execPath, ['bin/tessera.js', 'augment', '--aug', 'ops', '--rows', '3', '--out', png], { env, encoding: 'utf8' });
    expect(grid.status, grid.stderr).toBe(0);
    expect(grid.stdout).toContain('17 rows × 3 columns');
    expect(readFileSync(png).subarray(1, 4).toString('ascii')).toBe('PNG');
    const badKind = spawnSync(process.execPath, ['bin/tessera.js', 'augment', '--aug', 'fog'], { env, encoding: 'utf8' });
    expect(badKind.status).toBe(2);
    expect(badKind.stderr).toMatch(/--aug: unknown kind 'fog'/);

    const run = mkdtempSync(join(tmpdir(), 'tessera-cli-run-'));
    await train({ ...base, dataDir, epochs: 1, maxSteps: 3, out: run });
    const ckpt = join(run, 'last.safetensors');
    const report = join(dir, 'robustness.md');
    const ev = spawnSync(process.execPath, ['bin/tessera.js', 'eval', '--checkpoint', ckpt, '--corruptions', '--baseline', ckpt, '--limit', '50', '--batch-size', '50', '--report', report], { env, encoding: 'utf8' });
    expect(ev.status, ev.stderr).toBe(0);
    const md = readFileSync(report, 'utf8');
    for (const c of T.CORRUPTIONS) expect(md).toContain(`| ${c} |`);
    // The model is its own baseline: every corruption error is 100% of the baseline's.
    expect(md).toMatch(/mCE 100\.0% of the baseline/);
  });
});

describe('evaluation', () => {
  it('flip test-time augmentation averages the probabilities of each image and its mirror image', async () => {
    const model = new VisionTransformer({ ...presetConfig('vit-fmnist-tiny'), depth: 1 }, 3);
    const count = 7; // batches of 4 and a remainder of 3
    const images = Float32Array.from({ length: count * 784 }, (_, i) => Math.sin(i * 0.37) * ((i % 28) / 28));
    const ds: Dataset = { name: 'synthetic', images, labels: Int32Array.from({ length: count }, (_, i) => i % 10), count, channels: 1, height: 28, width: 28, classes: 10, classNames: [...Array(10).keys()].map(String) };
    const mirrored = new Float32Array(images.length);
    for (let n = 0; n < count; n++) for (let y = 0; y < 28; y++) for (let x = 0; x < 28; x++) mirrored[n * 784 + y * 28 + x] = images[n * 784 + y * 28 + 27 - x]!;
    const before = T.liveBuffers();
    const plain = await evaluate(model, ds, 4);
    const flipped = await evaluate(model, { ...ds, images: mirrored }, 4);
    const tta = await evaluate(model, ds, 4, { tta: 'flip' });
    expect(T.liveBuffers()).toBe(before);
    const probs = (l: Float32Array, n: number) => {
      const row = [...l.subarray(n * 10, n * 10 + 10)];
      const m = Math.max(...row);
      const e = row.map((v) => Math.exp(v - m));
      const z = e.reduce((a, b) => a + b, 0);
      return e.map((v) => v / z);
    };
    let maxDiff = 0;
    let differs = 0;
    for (let n = 0; n < count; n++) {
      const p = probs(plain.logits, n);
      const q = probs(flipped.logits, n);
      for (let c = 0; c < 10; c++) {
        // f32 softmax, mean and log against float64: a few ulps of log-probabilities near -2.3.
        maxDiff = Math.max(maxDiff, Math.abs(tta.logits[n * 10 + c]! - Math.log((p[c]! + q[c]!) / 2)));
        differs = Math.max(differs, Math.abs(tta.logits[n * 10 + c]! - Math.log(p[c]!)));
      }
    }
    expect(maxDiff).toBeLessThan(1e-5);
    expect(differs).toBeGreaterThan(1e-3); // the mirror images do change the prediction
    model.dispose();
  });
  it('flip-shift test-time augmentation averages the probabilities of ten views', async () => {
    const model = new VisionTransformer({ ...presetConfig('vit-fmnist-tiny'), depth: 1 }, 5);
    const count = 5; // batches of 2 and a remainder of 1
    const images = Float32Array.from({ length: count * 784 }, (_, i) => Math.cos(i * 0.23) * ((i % 28) / 28) + ((i >> 5) % 3) * 0.2);
    const ds: Dataset = { name: 'synthetic', images, labels: Int32Array.from({ length: count }, (_, i) => i % 10), count, channels: 1, height: 28, width: 28, classes: 10, classNames: [...Array(10).keys()].map(String) };
    // The views, built on the CPU: source pixel (sy, sx) for output pixel (y, x).
    const clamp = (v: number) => Math.min(27, Math.max(0, v));
    const view = (src: (y: number, x: number) => [number, number]) => {
      const out = new Float32Array(images.length);
      for (let n = 0; n < count; n++) for (let y = 0; y < 28; y++) for (let x = 0; x < 28; x++) {
        const [sy, sx] = src(y, x);
        out[n * 784 + y * 28 + x] = images[n * 784 + sy * 28 + sx]!;
      }
      return out;
    };
    const maps: ((y: number, x: number) => [number, number])[] = [];
    for (const flip of [false, true]) {
      const fx = (x: number) => (flip ? 27 - x : x);
      maps.push((y, x) => [y, fx(x)]);
      for (const [dy, dx] of [[0, 1], [0, -1], [1, 0], [-1, 0]] as const) maps.push((y, x) => [clamp(y - dy), fx(clamp(x - dx))]);
    }
    const before = T.liveBuffers();
    const perView = [];
    for (const m of maps) perView.push((await evaluate(model, { ...ds, images: view(m) }, 2)).logits);
    const tta = await evaluate(model, ds, 2, { tta: 'flip-shift' });
    expect(T.liveBuffers()).toBe(before);
    let maxDiff = 0;
    let fromFlipOnly = 0;
    const flipOnly = await evaluate(model, ds, 2, { tta: 'flip' });
    for (let n = 0; n < count; n++) {
      const avg = new Float64Array(10);
      for (const l of perView) {
        const row = [...l.subarray(n * 10, n * 10 + 10)];
        const mx = Math.max(...row);
        const e = row.map((v) => Math.exp(v - mx));
        const z = e.reduce((a, b) => a + b, 0);
        e.forEach((v, c) => (avg[c] = avg[c]! + v / z / perView.length));
      }
      for (let c = 0; c < 10; c++) {
        // As the flip test: f32 softmax, mean and log against float64 — a few ulps near -2.3.
        maxDiff = Math.max(maxDiff, Math.abs(tta.logits[n * 10 + c]! - Math.log(avg[c]!)));
        fromFlipOnly = Math.max(fromFlipOnly, Math.abs(tta.logits[n * 10 + c]! - flipOnly.logits[n * 10 + c]!));
      }
    }
    expect(maxDiff).toBeLessThan(1e-5);
    expect(fromFlipOnly).toBeGreaterThan(1e-4); // the shifted views do change the prediction
    model.dispose();
  });
});

describe('time budget planning', () => {
  it('stepsWithinBudget is the largest step count whose training and evaluations fit', () => {
    const m = { budgetSeconds: 100, elapsedSeconds: 10, stepsDone: 5, secondsPerStep: 0.5, secondsPerEval: 7, stepsPerEpoch: 30, margin: 0 };
    const cost = (n: number) => (n - m.stepsDone) * m.secondsPerStep + Math.ceil(n / m.stepsPerEpoch) * m.secondsPerEval;
    let brute = m.stepsDone;
    for (let n = m.stepsDone; n < 1000; n++) if (cost(n) <= 90) brute = n;
    expect(stepsWithinBudget(m)).toBe(brute);
    // 120 steps (4 epochs) cost 57.5 s + 4 evaluations = 85.5 s; a 121st would need a fifth evaluation.
    expect(brute).toBe(120);
    expect(stepsWithinBudget({ ...m, margin: 0.5 })).toBeLessThan(brute);
    // Nothing left: the run ends where it is.
    expect(stepsWithinBudget({ ...m, elapsedSeconds: 200 })).toBe(5);
  });
});

describe('a warmup as long as the run', () => {
  it('is warned of, with how far the learning rate gets and a usual length', () => {
    // 62 steps under a 100-step warmup: the rate ends at 62% of its peak (warmupCosine's last value).
    const warning = longWarmupWarning(100, 62, '--warmup-steps 100');
    expect(warning).toBe('warning: the warmup (--warmup-steps 100) is not shorter than the 62-step schedule: the learning rate only rises, to 62% of its peak, and never decays; a warmup of about a tenth of the schedule (6 steps) is usual');
    expect(warmupCosine(61, 62, 1, 100)).toBeCloseTo(0.62, 12);
    expect(longWarmupWarning(468, 468, '--warmup-epochs 1, 468 steps')).toMatch(/to 100% of its peak/);
    expect(longWarmupWarning(470, 8, '--warmup-steps 470')).toMatch(/to 2% of its peak, .* \(1 step\) is usual$/);
    expect(longWarmupWarning(100, 101, '--warmup-steps 100')).toBeNull();
  });
});
