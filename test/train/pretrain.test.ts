import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../engine/index.js';
import { readCheckpoint } from '../../train/checkpoint.js';
import { loadDataset } from '../../train/data.js';
import { pretrainMae } from '../../train/pretrain.js';
import { train } from '../../train/trainer.js';
import { writeBlobDataset, writeSynthDataset } from './fixtures.js';

beforeAll(async () => {
  await T.init();
});

const base = { preset: 'vit-fmnist-tiny', progress: false, batchSize: 64, warmupSteps: 5, lr: 2e-3, evalImages: 100, modelOverrides: { depth: 2 }, decoderDepth: 1 };

describe('MAE pre-training runs', () => {
  // Blobs for pre-training (masked patches predictable from the rest), the pattern task of the
  // training tests for fine-tuning.
  const blobDir = writeBlobDataset(mkdtempSync(join(tmpdir(), 'tessera-blobs-')), 640, 200);
  const dataDir = writeSynthDataset(mkdtempSync(join(tmpdir(), 'tessera-synth-mae-')), 640, 200);

  it('lowers the masked-patch loss, writes the run folder and frees what it allocated', async () => {
    const out = mkdtempSync(join(tmpdir(), 'tessera-mae-'));
    const before = T.liveBuffers();
    const r = await pretrainMae({ ...base, batchSize: 32, lr: 3e-3, dataDir: blobDir, epochs: 6, out });
    for (const f of ['config.json', 'metrics.jsonl', 'loss.jsonl', 'last.safetensors', 'curves.png', 'reconstructions.png', 'report.md']) expect(existsSync(join(out, f)), f).toBe(true);
    expect(r.metrics).toHaveLength(6);
    // Against predicting every normalised patch flat, whose loss is the mean over the 16 patches
    // of 7×7 of (E − 1)/E · var / (var + 1e-6): ~0.98 for patches with any structure, 0 for blank
    // ones. Measured: flat 0.62; the model 0.65, 0.58, 0.52, 0.48, 0.45, 0.43 after epochs 1–6.
    const test = loadDataset('mnist', 'test', blobDir);
    let flat = 0;
    for (let n = 0; n < 100; n++) for (let py = 0; py < 4; py++) for (let px = 0; px < 4; px++) {
      const t: number[] = [];
      for (let y = 0; y < 7; y++) for (let x = 0; x < 7; x++) t.push(test.images[n * 784 + (py * 7 + y) * 28 + px * 7 + x]!);
      const mean = t.reduce((a, v) => a + v, 0) / 49;
      const variance = t.reduce((a, v) => a + (v - mean) ** 2, 0) / 48;
      flat += ((48 / 49) * variance) / (variance + 1e-6 * 0.353 ** 2) / 1600;
    }
    expect(r.metrics.at(-1)!.test_loss).toBeLessThan(0.8 * flat);
    expect(r.metrics.at(-1)!.test_loss).toBeLessThan(0.8 * r.metrics[0]!.test_loss);
    const ck = readCheckpoint(join(out, 'last.safetensors'));
    expect(ck.metadata.arch).toBe('mae');
    expect(ck.metadata.step).toBe('120');
    expect(ck.tensors.has('decoder_pred.weight')).toBe(true);
    expect(ck.tensors.has('optim.mask_token.exp_avg')).toBe(true);
    expect(readFileSync(join(out, 'reconstructions.png')).subarray(1, 4).toString('ascii')).toBe('PNG');
    expect(readFileSync(join(out, 'report.md'), 'utf8')).toContain('tessera train --init');
    expect(T.liveBuffers()).toBe(before);
  });

  it('resume from a mid-epoch checkpoint reproduces the uninterrupted run exactly (crops, flips and masks included)', async () => {
    const a = mkdtempSync(join(tmpdir(), 'tessera-mae-a-'));
    const b = mkdtempSync(join(tmpdir(), 'tessera-mae-b-'));
    const full = await pretrainMae({ ...base, dataDir: blobDir, epochs: 2, out: a });
    const first = await pretrainMae({ ...base, dataDir: blobDir, epochs: 2, out: b, maxSteps: 7 });
    expect(first.losses).toHaveLength(7);
    appendFileSync(join(b, 'loss.jsonl'), '{"step":7,"loss":9,"lr":0}\n');
    const resumed = await pretrainMae({ ...base, dataDir: blobDir, epochs: 2, out: b, resume: true });
    expect(resumed.losses).toEqual(full.losses);
    expect(resumed.metrics.at(-1)!.test_loss).toBe(full.metrics.at(-1)!.test_loss);
  });

  it('a SIGINT mid-epoch stops after the step under way with a checkpoint there and no report; --resume finishes as the uninterrupted run', async () => {
    const a = mkdtempSync(join(tmpdir(), 'tessera-mae-int-a-'));
    const b = mkdtempSync(join(tmpdir(), 'tessera-mae-int-b-'));
    const cfg = { ...base, dataDir: blobDir, epochs: 2 };
    const full = await pretrainMae({ ...cfg, out: a });
    const lossLines = () => (existsSync(join(b, 'loss.jsonl')) ? readFileSync(join(b, 'loss.jsonl'), 'utf8').trim().split('\n').filter(Boolean).length : 0);
    // The loop waits for the GPU after every step, so the timer runs between steps.
    const poll = setInterval(() => {
      if (lossLines() >= 3) {
        clearInterval(poll);
        process.emit('SIGINT');
      }
    }, 2);
    const listeners = process.listenerCount('SIGINT');
    const first = await pretrainMae({ ...cfg, out: b }).finally(() => clearInterval(poll));
    expect(process.listenerCount('SIGINT')).toBe(listeners);
    expect(first.interrupted).toBe('SIGINT');
    const stopped = first.losses.length;
    // 20 steps in all (640 images, batch 64, 2 epochs).
    expect(stopped).toBeGreaterThanOrEqual(3);
    expect(stopped).toBeLessThan(20);
    expect(readCheckpoint(join(b, 'last.safetensors')).metadata.step).toBe(String(stopped));
    expect(existsSync(join(b, 'report.md'))).toBe(false);
    const resumed = await pretrainMae({ ...cfg, out: b, resume: true });
    expect(resumed.interrupted).toBeNull();
    expect(resumed.losses).toEqual(full.losses);
    expect(resumed.metrics.map((m) => [m.train_loss, m.test_loss])).toEqual(full.metrics.map((m) => [m.train_loss, m.test_loss]));
  });

  it('its encoder initialises a ViT for fine-tuning (`train --init`), with a fresh head', async () => {
    const mae = mkdtempSync(join(tmpdir(), 'tessera-mae-init-'));
    await pretrainMae({ ...base, dataDir, epochs: 1, out: mae });
    const ckpt = join(mae, 'last.safetensors');
    const out = mkdtempSync(join(tmpdir(), 'tessera-ft-'));
    const r = await train({ progress: false, batchSize: 64, warmupSteps: 5, lr: 2e-3, evalBatchSize: 100, dataDir, epochs: 2, init: ckpt, out });
    // Ten patterns, each in one random patch: chance is 10%.
    expect(r.finalAccuracy).toBeGreaterThan(0.5);
    const ft = readCheckpoint(join(out, 'last.safetensors'));
    const cfg = JSON.parse(ft.metadata.config!) as { depth: number; embed_dim: number; num_classes: number };
    expect([cfg.depth, cfg.embed_dim, cfg.num_classes]).toEqual([2, 64, 10]);
    expect(ft.tensors.has('decoder_pred.weight')).toBe(false);
    // Before any step the fine-tuned model is the MAE's encoder: one step with lr 0 keeps it.
    const zero = mkdtempSync(join(tmpdir(), 'tessera-ft0-'));
    await train({ progress: false, batchSize: 64, warmupSteps: 0, lr: 0, minLr: 0, weightDecay: 0, clipGrad: 0, evalBatchSize: 100, dataDir, epochs: 1, maxSteps: 1, init: ckpt, out: zero });
    const [m, z] = [readCheckpoint(ckpt), readCheckpoint(join(zero, 'last.safetensors'))];
    for (const name of ['patch_embed.proj.weight', 'pos_embed', 'cls_token', 'blocks.1.attn.qkv.weight', 'norm.bias']) {
      expect(Array.from(z.tensors.get(name)!.data), name).toEqual(Array.from(m.tensors.get(name)!.data));
    }
  });

  it('the CLI runs `pretrain mae`, explains bad input, and `eval` refuses an MAE checkpoint by name', () => {
    const env = { ...process.env, TESSERA_DATA: dataDir };
    const out = mkdtempSync(join(tmpdir(), 'tessera-mae-cli-'));
    const run = spawnSync(process.execPath, ['bin/tessera.js', 'pretrain', 'mae', '--preset', 'vit-fmnist-tiny', '--epochs', '1', '--max-steps', '2', '--batch-size', '32', '--decoder-depth', '1', '--out', out], { env, encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/done: test loss \d/);
    const bad = (args: string[]) => spawnSync(process.execPath, ['bin/tessera.js', 'pretrain', ...args], { env, encoding: 'utf8' });
    expect(bad(['byol']).stderr).toMatch(/give the method first, 'mae' or 'dino'/);
    expect(bad(['mae', '--crop-scale', '0.2']).stderr).toMatch(/--crop-scale expects two numbers/);
    expect(bad(['mae', '--crop-scale', '0.5,0.2']).stderr).toMatch(/--crop-scale 0.5,0.2: need 0 < min ≤ max ≤ 1/);
    expect(bad(['mae', '--mask-ratio', '1']).stderr).toMatch(/^tessera pretrain: --mask-ratio must be in \[0, 1\), got 1\n$/);
    expect(bad(['mae', '--flip', '2']).stderr).toMatch(/--flip is a probability, got 2/);
    // A missing dataset is reported before the run folder is made.
    const nowhere = join(out, 'never-made');
    const missing = spawnSync(process.execPath, ['bin/tessera.js', 'pretrain', 'mae', '--data-dir', join(out, 'no-data'), '--out', nowhere], { env: { ...process.env, TESSERA_DATA: '' }, encoding: 'utf8' });
    expect(missing.status).toBe(2);
    expect(missing.stderr).toMatch(/train-images-idx3-ubyte\[\.gz\] not found/);
    expect(existsSync(nowhere)).toBe(false);
    const unknown = bad(['mae', '--limit', '64']);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toMatch(/^tessera pretrain: Unknown option '--limit' \(did you mean --train-limit\?\); `tessera pretrain --help` lists the options\n$/);
    // The option most likely meant: train's name for eval's --limit, words swapped, a letter missing; none for a stranger.
    const guess = (args: string[]) => spawnSync(process.execPath, ['bin/tessera.js', ...args], { env, encoding: 'utf8' }).stderr;
    expect(guess(['eval', '--eval-limit', '5'])).toMatch(/Unknown option '--eval-limit' \(did you mean --limit\?\)/);
    expect(guess(['train', '--lr-min', '1e-5'])).toMatch(/Unknown option '--lr-min' \(did you mean --min-lr\?\)/);
    expect(guess(['train', '--epoch', '2'])).toMatch(/Unknown option '--epoch' \(did you mean --epochs\?\)/);
    expect(guess(['train', '--bogus', '1'])).toMatch(/^tessera train: Unknown option '--bogus'; `tessera train --help`/);
    expect(bad(['mae', '--preset', 'vit-fmnist-convstem', '--out', join(out, 'x')]).stderr).toMatch(/must patchify/);
    const ev = spawnSync(process.execPath, ['bin/tessera.js', 'eval', '--checkpoint', join(out, 'last.safetensors')], { env, encoding: 'utf8' });
    expect(ev.status).not.toBe(0);
    expect(ev.stderr).toMatch(/is an MAE pre-training checkpoint, not a classifier: fine-tune its encoder first \(tessera train --init/);
  });
});
