import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../engine/index.js';
import { accuracyOf, knnPredict, linearProbe } from '../../train/probe.js';
import { pretrainMae } from '../../train/pretrain.js';
import { train } from '../../train/trainer.js';
import { rng } from '../helpers.js';
import { writeSynthDataset } from './fixtures.js';

beforeAll(async () => {
  await T.init();
});

/** Gaussian clusters: class c around 2 on the dimensions d ≡ c (mod classes), 0 elsewhere (centres
 * 2√(2D/classes) apart), spread `sd`. */
function clusters(n: number, D: number, classes: number, sd: number, seed: number): { f: Float32Array; y: Int32Array } {
  const r = rng(seed);
  const centre = Array.from({ length: classes }, (_, c) => Array.from({ length: D }, (_, d) => (d % classes === c ? 2 : 0)));
  const normal = () => Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
  const y = Int32Array.from({ length: n }, () => Math.floor(r() * classes));
  const f = Float32Array.from({ length: n * D }, (_, i) => centre[y[Math.floor(i / D)]!]![i % D]! + sd * normal());
  return { f, y };
}

describe('probes of frozen features', () => {
  it('k-NN equals a brute-force float64 weighted vote over cosine similarities', async () => {
    const D = 16;
    const tr = clusters(3000, D, 5, 1.2, 1);
    const te = clusters(300, D, 5, 1.2, 2);
    const before = T.liveBuffers();
    const got = await knnPredict(tr.f, tr.y, te.f, D, 5, 20, 0.07);
    expect(T.liveBuffers()).toBe(before);
    const norm = (f: Float32Array, i: number) => Math.hypot(...f.subarray(i * D, (i + 1) * D));
    let differ = 0;
    for (let q = 0; q < 300; q++) {
      const sims = Array.from({ length: 3000 }, (_, j) => {
        let s = 0;
        for (let d = 0; d < D; d++) s += te.f[q * D + d]! * tr.f[j * D + d]!;
        return [s / norm(te.f, q) / norm(tr.f, j), j] as const;
      }).sort((a, b) => b[0] - a[0]);
      const votes = new Array(5).fill(0);
      for (const [s, j] of sims.slice(0, 20)) votes[tr.y[j]!] += Math.exp(s / 0.07);
      // Float32 similarities may swap two neighbours within 1e-6 of each other at the 20th place.
      if (votes.indexOf(Math.max(...votes)) !== got[q]) differ++;
    }
    expect(differ).toBeLessThanOrEqual(1);
    // Overlapping clusters: chance is 20%.
    expect(accuracyOf(got, te.y)).toBeGreaterThan(0.45);
  });

  it('a linear probe separates linearly separable features; a bank smaller than k still votes', async () => {
    const D = 8;
    const tr = clusters(2000, D, 4, 0.3, 3);
    const te = clusters(400, D, 4, 0.3, 4);
    const before = T.liveBuffers();
    const acc = accuracyOf(await linearProbe(tr.f, tr.y, te.f, D, 4, { epochs: 30 }), te.y);
    expect(acc).toBeGreaterThan(0.97);
    expect(T.liveBuffers()).toBe(before);
    expect(accuracyOf(await knnPredict(tr.f.subarray(0, 5 * D), tr.y.subarray(0, 5), te.f, D, 4, 20), te.y)).toBeGreaterThan(0);
  });

  it('`tessera probe` reads a classifier and an MAE checkpoint', async () => {
    const dataDir = writeSynthDataset(mkdtempSync(join(tmpdir(), 'tessera-synth-probe-')), 640, 200);
    const common = { preset: 'vit-fmnist-tiny', progress: false, batchSize: 64, warmupSteps: 5, lr: 2e-3, modelOverrides: { depth: 2 }, dataDir };
    const trained = mkdtempSync(join(tmpdir(), 'tessera-probe-a-'));
    await train({ ...common, epochs: 3, evalBatchSize: 100, out: trained });
    const mae = mkdtempSync(join(tmpdir(), 'tessera-probe-mae-'));
    await pretrainMae({ ...common, epochs: 1, evalImages: 100, decoderDepth: 1, out: mae });
    const env = { ...process.env, TESSERA_DATA: dataDir };
    const probe = (ckpt: string) => {
      const r = spawnSync(process.execPath, ['bin/tessera.js', 'probe', '--checkpoint', ckpt, '--linear-epochs', '3'], { env, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      const knn = Number(/k-NN \(k = 20, T = 0\.07\): ([\d.]+)%/.exec(r.stdout)![1]);
      const linear = Number(/linear probe \(3 epochs\): ([\d.]+)%/.exec(r.stdout)![1]);
      return { knn, linear };
    };
    // The pattern task: its classes sit in the content of one patch, easy for any features (a
    // random encoder's k-NN also scores ~100% here); the probes' own accuracy is tested above.
    const a = probe(join(trained, 'last.safetensors'));
    expect(a.knn).toBeGreaterThan(90);
    expect(a.linear).toBeGreaterThan(90);
    const m = probe(join(mae, 'last.safetensors'));
    expect(m.knn).toBeGreaterThan(50);
    const bad = spawnSync(process.execPath, ['bin/tessera.js', 'probe'], { env, encoding: 'utf8' });
    expect(bad.stderr).toMatch(/needs --checkpoint/);
  });
});
