import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../engine/index.js';
import { attentionDistanceSums, centredGram, classTokenRollout, linearCka, uniformAttentionDistance } from '../../train/inspect.js';
import { rng } from '../helpers.js';
import { train } from '../../train/trainer.js';
import { writeSynthDataset } from './fixtures.js';

/** Attention (1, 1, N, N) with one class token and a g×g grid, rows from `row(i)` over all N keys. */
function attention(g: number, row: (i: number) => number[]): Float32Array {
  const N = g * g + 1;
  const a = new Float32Array(N * N);
  for (let i = 0; i < N; i++) a.set(row(i), i * N);
  return a;
}

beforeAll(async () => {
  await T.init();
});

describe('attention distance and rollout', () => {
  it('uniform attention over a 14×14 grid averages 0.52 of the side (the reference sanity value)', () => {
    expect(uniformAttentionDistance(14, 16) / 224).toBeCloseTo(0.52, 2);
  });

  it('identity attention is 0 px, the right-hand neighbour one patch, uniform the uniform mean; class-token mass is left out', () => {
    const [g, p] = [5, 4];
    const N = g * g + 1;
    const onehot = (j: number) => Array.from({ length: N }, (_, k) => (k === j ? 1 : 0));
    const distance = (a: Float32Array) => {
      const r = attentionDistanceSums(a, 1, 1, N, 1, g, p);
      return r.sums[0]! / r.rows;
    };
    expect(distance(attention(g, (i) => onehot(i)))).toBe(0);
    // Query at column c attends to column c + 1 (or c − 1 at the right edge): one patch away.
    expect(distance(attention(g, (i) => (i === 0 ? onehot(0) : onehot(((i - 1) % g) === g - 1 ? i - 1 : i + 1))))).toBeCloseTo(p, 10);
    const uniform = (i: number) => (i === 0 ? onehot(0) : Array.from({ length: N }, (_, k) => (k === 0 ? 0.5 : 0.5 / (N - 1))));
    expect(distance(attention(g, uniform))).toBeCloseTo(uniformAttentionDistance(g, p), 6);
  });

  it('rollout is the class row of Π (0.5·mean over heads + 0.5·I), patches scaled to a maximum of 1', () => {
    const N = 5;
    const r = (seed: number) => {
      const a = new Float32Array(2 * N * N);
      for (let i = 0; i < 2 * N; i++) {
        let s = 0;
        for (let j = 0; j < N; j++) s += a[i * N + j] = ((seed * 7 + i * 13 + j * 5) % 11) + 1;
        for (let j = 0; j < N; j++) a[i * N + j]! /= s;
      }
      return a;
    };
    const layers = [r(1), r(2)];
    const mixed = layers.map((a) => Array.from({ length: N }, (_, i) => Array.from({ length: N }, (_, j) => 0.5 * (a[i * N + j]! + a[N * N + i * N + j]!) / 2 + (i === j ? 0.5 : 0))));
    const product = mixed[1]!.map((row) => Array.from({ length: N }, (_, j) => row.reduce((s, v, k) => s + v * mixed[0]![k]![j]!, 0)));
    const want = product[0]!.slice(1);
    const max = Math.max(...want);
    const got = classTokenRollout(layers, 2, N, 1);
    // The function renormalises rows, which sum to 1 only within float32's 1e-7 here.
    want.forEach((v, j) => expect(got[j]).toBeCloseTo(v / max, 6));
  });

  it('linear CKA: 1 against itself, invariant to orthogonal maps and scale, not to other linear maps; the Gram form equals the feature form', async () => {
    const [m, p] = [40, 6];
    const r = rng(8);
    const X = Array.from({ length: m }, () => Array.from({ length: p }, () => r() - 0.5));
    const centred = (A: number[][]) => {
      const mean = A[0]!.map((_, j) => A.reduce((s, row) => s + row[j]!, 0) / A.length);
      return A.map((row) => row.map((v, j) => v - mean[j]!));
    };
    const gram = (A: number[][]) => {
      const c = centred(A);
      return Float64Array.from(c.flatMap((a) => c.map((b) => a.reduce((s, v, k) => s + v * b[k]!, 0))));
    };
    // A signed permutation is orthogonal; with a scale of 3.
    const Q = (A: number[][]) => A.map((row) => row.map((_, j) => (j % 2 ? -3 : 3) * row[(j + 2) % p]!));
    const stretch = (A: number[][]) => A.map((row) => row.map((v, j) => (j === 0 ? 10 * v : v)));
    expect(linearCka(gram(X), gram(X))).toBeCloseTo(1, 12);
    expect(linearCka(gram(X), gram(Q(X)))).toBeCloseTo(1, 12);
    expect(linearCka(gram(X), gram(stretch(X)))).toBeLessThan(0.9);
    // ‖ỸᵀX̃‖²_F / (‖X̃ᵀX̃‖_F ‖ỸᵀỸ‖_F) with Y a noisy copy of X.
    const Y = X.map((row) => row.map((v) => v + 0.3 * (r() - 0.5)));
    const [cx, cy] = [centred(X), centred(Y)];
    const cross = (A: number[][], B: number[][]) => A[0]!.map((_, i) => B[0]!.map((_, j) => A.reduce((s, _r, k) => s + A[k]![i]! * B[k]![j]!, 0)));
    const fro2 = (M: number[][]) => M.flat().reduce((s, v) => s + v * v, 0);
    const feature = fro2(cross(cy, cx)) / Math.sqrt(fro2(cross(cx, cx)) * fro2(cross(cy, cy)));
    expect(linearCka(gram(X), gram(Y))).toBeCloseTo(feature, 12);
    // The GPU's centred Gram against the float64 one: sums of 6 products of ~0.25, float32.
    const g = await centredGram(T.tensor(Float32Array.from(X.flat()), [m, p])).data();
    const want = gram(X);
    for (let i = 0; i < want.length; i++) expect(Math.abs(g[i]! - want[i]!)).toBeLessThan(1e-5);
  });

  it('`tessera inspect` writes the distance table, its plot and the rollout grid', async () => {
    const dataDir = writeSynthDataset(mkdtempSync(join(tmpdir(), 'tessera-synth-inspect-')), 640, 200);
    const run = mkdtempSync(join(tmpdir(), 'tessera-inspect-'));
    await train({ preset: 'vit-fmnist-tiny', progress: false, batchSize: 64, warmupSteps: 5, lr: 2e-3, modelOverrides: { depth: 2 }, evalBatchSize: 100, dataDir, epochs: 2, out: run });
    const env = { ...process.env, TESSERA_DATA: dataDir };
    const r = spawnSync(process.execPath, ['bin/tessera.js', 'inspect', '--checkpoint', join(run, 'last.safetensors'), '--images', '128'], { env, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`over 128 images; uniform attention: ${uniformAttentionDistance(4, 7).toFixed(2)}`);
    for (const f of ['inspect.md', 'attention-distance.png', 'rollout.png', 'cka.md', 'cka.png']) expect(existsSync(join(run, f)), f).toBe(true);
    const md = readFileSync(join(run, 'inspect.md'), 'utf8');
    expect(md).toMatch(/\| 0 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \|/);
    expect(md).toMatch(/\| 1 \| /);
    // Distances lie between 0 and the farthest pair of patch centres (3√2 patches of 7 px).
    for (const v of [...md.matchAll(/\| (\d+\.\d\d)/g)].map((m) => Number(m[1]))) expect(v).toBeLessThanOrEqual(29.7);
    // A model against itself: every layer's CKA with itself is 1.
    const c = spawnSync(process.execPath, ['bin/tessera.js', 'inspect', '--checkpoint', join(run, 'last.safetensors'), '--compare', join(run, 'last.safetensors'), '--images', '64', '--out', join(run, 'cmp')], { env, encoding: 'utf8' });
    expect(c.status, c.stderr).toBe(0);
    const diagonal = /layer by layer against .*: ([\d. ]+)/.exec(c.stdout)![1]!.trim().split(/\s+/).map(Number);
    expect(diagonal).toHaveLength(3);
    for (const v of diagonal) expect(v).toBeCloseTo(1, 3);
    for (const f of ['cka.md', 'cka.png']) expect(existsSync(join(run, 'cmp', f)), f).toBe(true);
    const bad = spawnSync(process.execPath, ['bin/tessera.js', 'inspect'], { env, encoding: 'utf8' });
    expect(bad.stderr).toMatch(/needs --checkpoint/);
  });
});
