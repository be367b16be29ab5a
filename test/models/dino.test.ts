import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../engine/index.js';
import { DINO, type DINOConfig, dinoConfigFor, DINOHead } from '../../models/dino.js';
import { Params } from '../../models/layers.js';
import { bicubicResampleMatrix, presetConfig, VisionTransformer } from '../../models/vit.js';
import { expectClose, rng } from '../helpers.js';

beforeAll(async () => {
  await T.init();
});

// A model small enough for finite differences: 8×8 images, patches of 4, width 8, a 4-wide
// local crop (one patch), a head 8 → 6 → 5 → 7 prototypes.
function tinyConfig(o: Partial<DINOConfig> = {}): DINOConfig {
  const vit = { ...presetConfig('vit-fmnist-p4'), img_size: 8, patch_size: 4, in_chans: 1, embed_dim: 8, depth: 1, num_heads: 2, mlp_ratio: 2 };
  return dinoConfigFor(vit, { out_dim: 7, hidden_dim: 6, bottleneck_dim: 5, local_crop_size: 4, local_crops_number: 2, ...o });
}

const random = (n: number, seed: number, scale = 1) => {
  const r = rng(seed);
  return Float64Array.from({ length: n }, () => (r() * 2 - 1) * scale);
};

function softmax64(row: ArrayLike<number>, temp: number): number[] {
  const z = Array.from(row, (v) => v / temp);
  const m = Math.max(...z);
  const e = z.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

/** main_dino.py's DINOLoss, pair by pair, in float64. */
function dinoLoss64(s: Float64Array, t: Float64Array, center: Float64Array, B: number, K: number, views: number, studentTemp: number, teacherTemp: number): number {
  const row = (a: Float64Array, i: number) => a.subarray(i * K, (i + 1) * K);
  let [total, pairs] = [0, 0];
  for (let g = 0; g < 2; g++) {
    for (let v = 0; v < views; v++) {
      if (v === g) continue;
      let sum = 0;
      for (let b = 0; b < B; b++) {
        const q = softmax64(Array.from(row(t, g * B + b), (x, k) => x - center[k]!), teacherTemp);
        const p = softmax64(row(s, v * B + b), studentTemp);
        sum += q.reduce((acc, qk, k) => acc - qk * Math.log(p[k]!), 0);
      }
      total += sum / B;
      pairs++;
    }
  }
  return total / pairs;
}

describe('DINO (facebookresearch/dino)', () => {
  it("names: the teacher under timm's names, the student under student.*, the centre; the teacher starts as the student", async () => {
    const m = new DINO(dinoConfigFor(presetConfig('vit-fmnist-p4')), 3);
    const shapes = Object.fromEntries([...m.state()].map(([k, t]) => [k, t.shape]));
    expect(shapes['cls_token']).toEqual([1, 1, 64]);
    expect(shapes['blocks.5.attn.qkv.weight']).toEqual([192, 64]);
    expect(shapes['head.mlp.0.weight']).toEqual([1024, 64]);
    expect(shapes['head.mlp.2.weight']).toEqual([1024, 1024]);
    expect(shapes['head.mlp.4.weight']).toEqual([128, 1024]);
    expect(shapes['head.last_layer.weight_v']).toEqual([4096, 128]);
    expect(shapes['head.last_layer.weight_g']).toEqual([4096, 1]);
    expect(shapes['student.blocks.5.mlp.fc2.weight']).toEqual([64, 128]);
    expect(shapes['center']).toEqual([1, 4096]);
    expect(shapes['head.weight']).toBeUndefined();
    // Trained: the student only, without weight_g (norm_last_layer).
    expect([...m.params.keys()].every((k) => k.startsWith('student.'))).toBe(true);
    expect(m.params.has('student.head.last_layer.weight_g')).toBe(false);
    for (const name of ['blocks.0.attn.qkv.weight', 'pos_embed', 'head.last_layer.weight_v']) {
      expect(Array.from(await m.buffers.get(name)!.data())).toEqual(Array.from(await m.params.get(`student.${name}`)!.tensor.data()));
    }
    expect(dinoConfigFor(presetConfig('vit-fmnist-p4')).local_crop_size).toBe(12);
    expect(() => dinoConfigFor(presetConfig('vit-fmnist-convstem'))).toThrow(/must patchify/);
    expect(() => dinoConfigFor(presetConfig('vit-fmnist-p4'), { local_crop_size: 10 })).toThrow(/multiple of the patch size 4/);
    m.dispose();
  });

  it('bicubic resampling of the position grid: identity at the same size, PyTorch weights halving, rows summing to 1', () => {
    const same = bicubicResampleMatrix([3, 4], [3, 4]);
    for (let i = 0; i < 12; i++) for (let j = 0; j < 12; j++) expect(same[i * 12 + j]).toBeCloseTo(i === j ? 1 : 0, 6);
    // 4 → 2: output 0 reads source 0.5; the cubic taps at t = 0.5 are (−3/32, 19/32, 19/32, −3/32),
    // the first clamped onto index 0.
    const half = bicubicResampleMatrix([1, 4], [1, 2]);
    expectClose(half, [0.5, 19 / 32, -3 / 32, 0, 0, -3 / 32, 19 / 32, 0.5], { atol: 1e-7, rtol: 0 }, '4 → 2');
    const m = bicubicResampleMatrix([7, 7], [3, 3]);
    for (let i = 0; i < 9; i++) expect(m.subarray(i * 49, (i + 1) * 49).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 6);
  });

  it('a ViT takes smaller crops through resampled position embeddings, and their gradient reaches pos_embed', async () => {
    const cfg = { ...presetConfig('vit-fmnist-p4'), depth: 1 };
    const vit = new VisionTransformer(cfg, 1);
    const x = T.tensor(Float32Array.from(random(2 * 144, 4)), [2, 1, 12, 12]);
    const h = vit.forwardFeatures(x, { training: false });
    expect(h.shape).toEqual([2, 10, 64]);
    T.sum(h).backward();
    const g = await vit.posEmbed.grad!.data();
    expect(Array.from(g).some((v) => v !== 0)).toBe(true);
    expect(() => vit.forwardFeatures(T.zeros([1, 1, 10, 10]), { training: false })).toThrow(/divisible by the patch 4/);
    vit.dispose();
    // num_classes 0 is a backbone (timm's Identity head): forward gives the class token.
    const backbone = new VisionTransformer({ ...cfg, num_classes: 0 }, 1);
    expect(backbone.head).toBeNull();
    expect([...backbone.params.keys()].some((k) => k.startsWith('head'))).toBe(false);
    expect(backbone.forward(x, { training: false }).logits.shape).toEqual([2, 64]);
    backbone.dispose();
  });

  it('DINOHead matches a float64 CPU head (GELU MLP, L2-normalise, weight-normalised prototypes); its weight gradients match finite differences', async () => {
    const cfg = tinyConfig({ norm_last_layer: false });
    const p = Params.root(5);
    const head = new DINOHead(p, 8, cfg);
    const N = 3;
    const x64 = random(N * 8, 6);
    const x = T.tensor(Float32Array.from(x64), [N, 8]);
    const weights = [...p.store.values()].map((i) => i.tensor);
    // Weights of order 1 (trunc_normal(.02) makes the bottleneck tiny, and normalising a tiny
    // vector amplifies f32 rounding far beyond what the check is about).
    const w64 = weights.map((t, i) => random(t.size, 20 + i, 0.8));
    weights.forEach((t, i) => T.upload(t, Float32Array.from(w64[i]!)));
    const probe = random(N * 7, 7);
    const cpuHead = (w: Float64Array[]): number => {
      // Order of registration: mlp.0 w, b, mlp.2 w, b, mlp.4 w, b, weight_v, weight_g.
      const erfGelu = (v: number) => 0.5 * v * (1 + erf(v / Math.SQRT2));
      const lin = (h: number[], W: Float64Array, b: Float64Array | null, out: number) => Array.from({ length: out }, (_, o) => h.reduce((s, v, i) => s + v * W[o * h.length + i]!, b ? b[o]! : 0));
      let total = 0;
      for (let n = 0; n < N; n++) {
        let h = Array.from(x64.subarray(n * 8, (n + 1) * 8));
        h = lin(h, w[0]!, w[1]!, 6).map(erfGelu);
        h = lin(h, w[2]!, w[3]!, 6).map(erfGelu);
        h = lin(h, w[4]!, w[5]!, 5);
        const hn = Math.max(Math.hypot(...h), 1e-12);
        h = h.map((v) => v / hn);
        for (let k = 0; k < 7; k++) {
          const row = w[6]!.subarray(k * 5, (k + 1) * 5);
          const rn = Math.hypot(...row);
          const out = (w[7]![k]! / rn) * row.reduce((s, v, i) => s + v * h[i]!, 0);
          total += out * probe[n * 7 + k]!;
        }
      }
      return total;
    };
    const out = head.forward(x);
    const loss = T.sum(T.mul(out, T.tensor(Float32Array.from(probe), [N, 7])));
    expect(await loss.item()).toBeCloseTo(cpuHead(w64), 5);
    loss.backward();
    // Central differences in float64 (step 1e-6: truncation ~1e-12 relative); f32 gradients of
    // terms of size ≤ 1 carry ~1e-6 relative error: 2e-5 absolute covers them.
    for (const [i, t] of weights.entries()) {
      const g = await t.grad!.data();
      const numeric = Array.from({ length: t.size }, (_, j) => {
        const plus = w64.map((w) => w.slice());
        const minus = w64.map((w) => w.slice());
        plus[i]![j]! += 1e-6;
        minus[i]![j]! -= 1e-6;
        return (cpuHead(plus) - cpuHead(minus)) / 2e-6;
      });
      expectClose(g, numeric, { atol: 2e-5, rtol: 1e-4 }, `d/d ${t.name}`);
    }
  });

  it('the loss is the mean over pairs (teacher global view, every other student view), with its gradient', async () => {
    const [B, K, views] = [3, 7, 4];
    const model = new DINO(tinyConfig(), 1);
    const s64 = random(views * B * K, 11, 2);
    const t64 = random(2 * B * K, 12, 0.2);
    const c64 = random(K, 13, 0.05);
    T.upload(model.center, Float32Array.from(c64));
    const s = T.parameter(Float32Array.from(s64), [views * B, K]);
    const loss = model.loss(s, T.tensor(Float32Array.from(t64), [2 * B, K]), 0.04);
    const ref = dinoLoss64(s64, t64, c64, B, K, views, 0.1, 0.04);
    // f32 logits divided by 0.1 and the teacher's by 0.04: a few 1e-6 relative on a loss ~1.
    expect(Math.abs((await loss.item()) - ref)).toBeLessThan(2e-5 * Math.max(1, Math.abs(ref)));
    loss.backward();
    const g = await s.grad!.data();
    const numeric = Array.from({ length: s64.length }, (_, j) => {
      const plus = s64.slice();
      const minus = s64.slice();
      plus[j]! += 1e-6;
      minus[j]! -= 1e-6;
      return (dinoLoss64(plus, t64, c64, B, K, views, 0.1, 0.04) - dinoLoss64(minus, t64, c64, B, K, views, 0.1, 0.04)) / 2e-6;
    });
    // d loss / d s = (p − q)/(0.1 · pairs · B) per row: magnitudes ≤ 1; f32 softmax: 1e-6 relative.
    expectClose(g, numeric, { atol: 1e-5, rtol: 1e-4 }, 'd loss / d student');
    // Without local crops the loss is the two global pairs only.
    const s2 = T.tensor(Float32Array.from(s64.subarray(0, 2 * B * K)), [2 * B, K]);
    const noLocal = await model.loss(s2, T.tensor(Float32Array.from(t64), [2 * B, K]), 0.04).item();
    expect(Math.abs(noLocal - dinoLoss64(s64.subarray(0, 2 * B * K), t64, c64, B, K, 2, 0.1, 0.04))).toBeLessThan(2e-5);
    expect(() => model.loss(T.zeros([5, K]), T.zeros([2 * B, K]), 0.04)).toThrow(/\(2 \+ n\)·B and 2·B rows/);
    model.dispose();
  });

  it("the teacher's target entropy: float64 reference, log K for a flat teacher, near 0 for a sharp one", async () => {
    const [rows, K] = [6, 7];
    const model = new DINO(tinyConfig(), 3);
    const t64 = random(rows * K, 15, 0.2);
    const c64 = random(K, 16, 0.05);
    T.upload(model.center, Float32Array.from(c64));
    const ref = Array.from({ length: rows }, (_, r) => {
      const q = softmax64(Array.from({ length: K }, (_, k) => t64[r * K + k]! - c64[k]!), 0.04);
      return -q.reduce((a, v) => a + (v > 0 ? v * Math.log(v) : 0), 0);
    }).reduce((a, b) => a + b, 0) / rows;
    // logits up to ~6 after the temperature: f32 log-softmax to a few 1e-6 on an entropy ≤ log 7.
    expect(Math.abs((await model.teacherEntropy(T.tensor(Float32Array.from(t64), [rows, K]), 0.04).item()) - ref)).toBeLessThan(1e-5);
    T.upload(model.center, new Float32Array(K));
    expect(await model.teacherEntropy(T.zeros([rows, K]), 0.04).item()).toBeCloseTo(Math.log(K), 5);
    const sharp = Float32Array.from({ length: rows * K }, (_, i) => (i % K === Math.floor(i / K) % 3 ? 1 : 0));
    expect(await model.teacherEntropy(T.tensor(sharp, [rows, K]), 0.04).item()).toBeLessThan(1e-6);
    model.dispose();
  });

  it('the centre moves 10% towards the batch mean; the teacher is the EMA of the student', async () => {
    const model = new DINO(tinyConfig(), 2);
    const t64 = random(4 * 7, 14);
    model.updateCenter(T.tensor(Float32Array.from(t64), [4, 7]));
    const mean = Array.from({ length: 7 }, (_, k) => (t64[k]! + t64[7 + k]! + t64[14 + k]! + t64[21 + k]!) / 4);
    expectClose(await model.center.data(), mean.map((v) => 0.1 * v), { atol: 1e-7, rtol: 0 }, 'centre');
    const [name, p] = [...model.params].find(([n]) => n === 'student.blocks.0.attn.qkv.weight')!;
    const before = await p.tensor.data();
    T.upload(p.tensor, before.map((v) => v + 1));
    model.teacherEma.update(0.75);
    expectClose(await model.buffers.get(name.slice(8))!.data(), before.map((v) => v + 0.25), { atol: 1e-6, rtol: 0 }, 'teacher');
    model.dispose();
  });

  it('training steps leave no buffers behind', async () => {
    const model = new DINO(tinyConfig(), 4);
    const opt = new T.AdamW(model.paramGroups(0.04), { lr: 1e-3 });
    const step = async () => {
      const l = T.scope(() => {
        const globals = T.rand([4, 1, 8, 8]);
        const locals = T.rand([4, 1, 4, 4]);
        const t = model.teacherForward(globals);
        const loss = model.loss(model.studentForward(globals, locals, { training: true }), t, 0.04);
        loss.backward();
        opt.step();
        opt.zeroGrad();
        model.updateCenter(t);
        model.teacherEma.update(0.99);
        return loss;
      });
      await l.item();
      l.dispose();
    };
    await step();
    const live = T.liveBuffers();
    for (let i = 0; i < 5; i++) await step();
    expect(T.liveBuffers()).toBe(live);
    opt.dispose();
    model.dispose();
  });
});

/** erf to ~1e-15 (Abramowitz-Stegun 7.1.26 is too coarse for gradient checks): its Taylor series
 * below 3, 1 beyond. */
function erf(x: number): number {
  if (Math.abs(x) > 5) return Math.sign(x);
  let [term, sum] = [x, x];
  for (let n = 1; n < 200; n++) {
    term *= (-x * x) / n;
    sum += term / (2 * n + 1);
    if (Math.abs(term) < 1e-17) break;
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}
