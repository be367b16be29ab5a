import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../engine/index.js';
import { readCheckpoint } from '../../train/checkpoint.js';
import { cosineValue, type DinoPretrainConfig, pretrainDino, teacherTempAt } from '../../train/pretrain-dino.js';
import { encoderFromCheckpoint } from '../../train/probe.js';
import { train } from '../../train/trainer.js';
import { writeSynthDataset } from './fixtures.js';

beforeAll(async () => {
  await T.init();
});

// vit-fmnist-tiny at depth 2 (patch 7: 16 patches, local crops of 14 px = 4 patches), a small head.
const base: Partial<DinoPretrainConfig> = {
  preset: 'vit-fmnist-tiny', modelOverrides: { depth: 2 }, progress: false, batchSize: 32, lr: 2e-3, warmupEpochs: 1,
  outDim: 256, hiddenDim: 128, bottleneckDim: 32, localCrops: 2, knnTrain: 640, evalImages: 200,
};

describe('schedules', () => {
  it("cosine from base to final (utils.cosine_scheduler), teacher temperature warmup as main_dino.py's linspace", () => {
    expect(cosineValue(0, 100, 0.996, 1)).toBeCloseTo(0.996, 12);
    expect(cosineValue(50, 100, 0.996, 1)).toBeCloseTo(0.998, 12);
    expect(cosineValue(100, 100, 0.04, 0.4)).toBeCloseTo(0.4, 12);
    const cfg = { teacherTemp: 0.07, warmupTeacherTemp: 0.04, warmupTeacherTempEpochs: 4 };
    expect([0, 1, 2, 3, 4, 9].map((e) => teacherTempAt(e, cfg))).toEqual([0.04, 0.05, 0.06, 0.07, 0.07, 0.07].map((v, i) => (i === 1 || i === 2 ? expect.closeTo(v, 12) : v)));
  });
});

describe('DINO pre-training runs', () => {
  // Ten patterns, each in one random patch of 7×7: views of one image share its pattern.
  const dataDir = writeSynthDataset(mkdtempSync(join(tmpdir(), 'tessera-synth-dino-')), 640, 200);

  it('keeps the teacher\'s features, writes the run folder and frees what it allocated', async () => {
    const out = mkdtempSync(join(tmpdir(), 'tessera-dino-'));
    const before = T.liveBuffers();
    const r = await pretrainDino({ ...base, dataDir, epochs: 4, out });
    for (const f of ['config.json', 'metrics.jsonl', 'loss.jsonl', 'last.safetensors', 'curves.png', 'views.png', 'report.md']) expect(existsSync(join(out, f)), f).toBe(true);
    expect(r.metrics).toHaveLength(4);
    // The patterns are bright on a dim background: even random features find them (k-NN 99%),
    // and 80 steps teach DINO little here (the loss stays near log 256 = 5.55, as at the start
    // of any DINO run once the centre has caught up; its learning is measured on Fashion-MNIST,
    // README). What can break is the backbone: a collapse, a NaN or a broken teacher update
    // would take the k-NN accuracy towards chance (10%).
    for (const m of r.metrics) expect(m.knn_acc).toBeGreaterThan(90);
    expect(r.metrics.at(-1)!.train_loss).toBeLessThan(5.7);
    // Every step logs the entropy of the teacher's targets, between 0 and log 256.
    const logged = readFileSync(join(out, 'loss.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { teacher_entropy: number });
    expect(logged).toHaveLength(80);
    for (const l of logged) expect(l.teacher_entropy >= 0 && l.teacher_entropy <= Math.log(256) + 1e-4, String(l.teacher_entropy)).toBe(true);
    const ck = readCheckpoint(join(out, 'last.safetensors'));
    expect(ck.metadata.arch).toBe('dino');
    expect(ck.metadata.step).toBe('80');
    for (const name of ['blocks.1.attn.qkv.weight', 'head.last_layer.weight_v', 'student.head.mlp.4.weight', 'center', 'optim.student.cls_token.exp_avg']) expect(ck.tensors.has(name), name).toBe(true);
    // The teacher trails the student: equal at the start, apart after training.
    const [t, s] = [ck.tensors.get('blocks.1.attn.qkv.weight')!.data, ck.tensors.get('student.blocks.1.attn.qkv.weight')!.data];
    expect(Array.from(t)).not.toEqual(Array.from(s));
    expect(readFileSync(join(out, 'views.png')).subarray(1, 4).toString('ascii')).toBe('PNG');
    expect(readFileSync(join(out, 'report.md'), 'utf8')).toContain('tessera probe --checkpoint');
    expect(T.liveBuffers()).toBe(before);
  });

  it('resume from a mid-epoch checkpoint reproduces the uninterrupted run exactly (crops, colours, centre and teacher included)', async () => {
    const a = mkdtempSync(join(tmpdir(), 'tessera-dino-a-'));
    const b = mkdtempSync(join(tmpdir(), 'tessera-dino-b-'));
    const cfg = { ...base, dataDir, epochs: 2, evalImages: 50, knnTrain: 200 };
    const full = await pretrainDino({ ...cfg, out: a });
    const first = await pretrainDino({ ...cfg, out: b, maxSteps: 7 });
    expect(first.losses).toHaveLength(7);
    // A line written after the checkpoint (a crash between the two) is dropped on resume.
    appendFileSync(join(b, 'loss.jsonl'), '{"step":7,"loss":9,"lr":0}\n');
    const resumed = await pretrainDino({ ...cfg, out: b, resume: true });
    expect(resumed.losses).toEqual(full.losses);
    expect(resumed.metrics.at(-1)!.knn_acc).toBe(full.metrics.at(-1)!.knn_acc);
  });

  it('its teacher is the encoder `probe` reads and `train --init` starts from, with a fresh head', async () => {
    const dino = mkdtempSync(join(tmpdir(), 'tessera-dino-init-'));
    await pretrainDino({ ...base, dataDir, epochs: 1, maxSteps: 3, out: dino });
    const ckpt = join(dino, 'last.safetensors');
    const info = readCheckpoint(ckpt);
    const enc = encoderFromCheckpoint(ckpt);
    expect(enc.config.num_classes).toBe(10);
    expect(Array.from(await enc.blocks[1]!.attn.qkv.weight.data())).toEqual(Array.from(info.tensors.get('blocks.1.attn.qkv.weight')!.data));
    enc.dispose();
    const zero = mkdtempSync(join(tmpdir(), 'tessera-dino-ft0-'));
    await train({ progress: false, batchSize: 64, warmupSteps: 0, lr: 0, minLr: 0, weightDecay: 0, clipGrad: 0, evalBatchSize: 100, dataDir, epochs: 1, maxSteps: 1, init: ckpt, out: zero });
    const z = readCheckpoint(join(zero, 'last.safetensors'));
    for (const name of ['patch_embed.proj.weight', 'pos_embed', 'cls_token', 'blocks.1.attn.qkv.weight', 'norm.bias']) {
      expect(Array.from(z.tensors.get(name)!.data), name).toEqual(Array.from(info.tensors.get(name)!.data));
    }
    expect(z.tensors.has('head.weight')).toBe(true);
    expect(z.tensors.has('head.mlp.0.weight')).toBe(false);
  });

  it('the CLI runs `pretrain dino`, explains bad input, and `eval` refuses a DINO checkpoint by name', () => {
    const env = { ...process.env, TESSERA_DATA: dataDir };
    const out = mkdtempSync(join(tmpdir(), 'tessera-dino-cli-'));
    const run = spawnSync(process.execPath, ['bin/tessera.js', 'pretrain', 'dino', '--preset', 'vit-fmnist-tiny', '--epochs', '1', '--max-steps', '2', '--batch-size', '32',
      '--local-crops', '2', '--out-dim', '128', '--hidden-dim', '64', '--bottleneck-dim', '16', '--knn-train', '100', '--eval-images', '50', '--out', out], { env, encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/done: teacher k-NN accuracy \d+\.\d+%/);
    const bad = (args: string[]) => spawnSync(process.execPath, ['bin/tessera.js', 'pretrain', 'dino', ...args], { env, encoding: 'utf8' });
    expect(bad(['--warmup-steps', '5']).stderr).toMatch(/the warmup is in epochs, as DINO's: use --warmup-epochs/);
    expect(bad(['--local-crop-scale', '0.5,0.2']).stderr).toMatch(/--local-crop-scale 0.5,0.2: need 0 < min ≤ max ≤ 1/);
    expect(bad(['--momentum-teacher', '2']).stderr).toMatch(/--momentum-teacher must be in \[0, 1\], got 2/);
    expect(bad(['--teacher-temp', '0']).stderr).toMatch(/--teacher-temp must be positive/);
    expect(bad(['--local-crop-size', '10', '--out', join(out, 'x')]).stderr).toMatch(/crop size 10 must be a positive multiple of the patch size 4/);
    expect(bad(['--preset', 'vit-fmnist-convstem', '--out', join(out, 'y')]).stderr).toMatch(/must patchify/);
    expect(bad(['extra']).stderr).toMatch(/unexpected 'extra'/);
    // `augment --aug dino` shows the three kinds of view.
    const png = join(out, 'dino-views.png');
    const grid = spawnSync(process.execPath, ['bin/tessera.js', 'augment', '--aug', 'dino', '--rows', '2', '--cols', '3', '--out', png], { env, encoding: 'utf8' });
    expect(grid.status, grid.stderr).toBe(0);
    expect(grid.stdout).toContain('2 rows × 4 columns');
    expect(readFileSync(png).subarray(1, 4).toString('ascii')).toBe('PNG');
    const ev = spawnSync(process.execPath, ['bin/tessera.js', 'eval', '--checkpoint', join(out, 'last.safetensors')], { env, encoding: 'utf8' });
    expect(ev.status).not.toBe(0);
    expect(ev.stderr).toMatch(/is a DINO pre-training checkpoint, not a classifier: fine-tune its encoder first \(tessera train --init/);
  });
});
