import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../engine/index.js';
import { type MAEConfig, maeConfigFor, MaskedAutoencoderViT, sincosPosEmbed } from '../../models/mae.js';
import { presetConfig } from '../../models/vit.js';
import { rng } from '../helpers.js';

beforeAll(async () => {
  await T.init();
});

// A model small enough for finite differences: 8×8 images, patches of 4 (L = 4), width 8.
const TINY: MAEConfig = {
  img_size: 8, patch_size: 4, in_chans: 2, embed_dim: 8, depth: 1, num_heads: 2,
  decoder_embed_dim: 8, decoder_depth: 1, decoder_num_heads: 2, mlp_ratio: 2,
  norm_pix_loss: true, mask_ratio: 0.5, norm_eps: 1e-6, mean: [0, 0], std: [1, 1],
};

/** The noise row that keeps the patches in `kept` (in that order) and masks the rest. */
function noiseKeeping(L: number, rows: number[][]): T.Tensor {
  const v = new Float32Array(rows.length * L);
  rows.forEach((kept, b) => {
    for (let l = 0; l < L; l++) v[b * L + l] = 0.5 + l / (2 * L);
    kept.forEach((l, k) => (v[b * L + l] = k / (2 * L)));
  });
  return T.tensor(v, [rows.length, L]);
}

describe('MAE (models_mae.py)', () => {
  it("names, shapes and the fixed sin-cos position embeddings are models_mae.py's", async () => {
    const m = new MaskedAutoencoderViT(maeConfigFor(presetConfig('vit-fmnist-p4'), { dim: 64, depth: 2 }), 0);
    const shapes = Object.fromEntries([...m.state()].map(([k, t]) => [k, t.shape]));
    expect(shapes['cls_token']).toEqual([1, 1, 64]);
    expect(shapes['pos_embed']).toEqual([1, 50, 64]);
    expect(shapes['patch_embed.proj.weight']).toEqual([64, 1, 4, 4]);
    expect(shapes['blocks.5.attn.qkv.weight']).toEqual([192, 64]);
    expect(shapes['norm.weight']).toEqual([64]);
    expect(shapes['decoder_embed.weight']).toEqual([64, 64]);
    expect(shapes['mask_token']).toEqual([1, 1, 64]);
    expect(shapes['decoder_pos_embed']).toEqual([1, 50, 64]);
    expect(shapes['decoder_blocks.1.mlp.fc2.weight']).toEqual([64, 128]);
    expect(shapes['decoder_pred.weight']).toEqual([16, 64]);
    // Position embeddings are fixed: saved, not trained.
    expect(m.params.has('pos_embed')).toBe(false);
    expect(m.posEmbed.requiresGrad).toBe(false);
    // get_2d_sincos_pos_embed: a zero row for the class token; then for the patch at row i,
    // column j, channel k < D/4: sin(j·ω_k), then cos(j·ω_k), then the same of i, ω_k = 10000^(−4k/D).
    const pe = sincosPosEmbed(16, 3);
    expect(Array.from(pe.subarray(0, 16))).toEqual(new Array(16).fill(0));
    const [i, j] = [2, 1];
    for (let k = 0; k < 4; k++) {
      const w = 10000 ** (-k / 4);
      const row = 1 + i * 3 + j;
      expect(pe[row * 16 + k]).toBeCloseTo(Math.sin(j * w), 6);
      expect(pe[row * 16 + 4 + k]).toBeCloseTo(Math.cos(j * w), 6);
      expect(pe[row * 16 + 8 + k]).toBeCloseTo(Math.sin(i * w), 6);
      expect(pe[row * 16 + 12 + k]).toBeCloseTo(Math.cos(i * w), 6);
    }
    expect(Array.from((await m.posEmbed.data()).subarray(0, 128))).toEqual(Array.from(sincosPosEmbed(64, 7).subarray(0, 128)));
    // xavier_uniform for Linear layers: bound √(6 / (fan_in + fan_out)).
    const w = await m.state().get('blocks.0.mlp.fc1.weight')!.data();
    const bound = Math.sqrt(6 / (64 + 128));
    expect(Math.max(...w.map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...w.map(Math.abs))).toBeGreaterThan(0.95 * bound);
    m.dispose();
  });

  it("patchify is 'nchpwq->nhwpqc' and unpatchify inverts it", async () => {
    const m = new MaskedAutoencoderViT(TINY, 0);
    const [B, C, H, p] = [2, 2, 8, 4];
    const v = Float32Array.from({ length: B * C * H * H }, (_, i) => i);
    const x = T.tensor(v, [B, C, H, H]);
    const patches = await m.patchify(x).data();
    for (let b = 0; b < B; b++) for (let hh = 0; hh < 2; hh++) for (let ww = 0; ww < 2; ww++) for (let pi = 0; pi < p; pi++) for (let qi = 0; qi < p; qi++) for (let c = 0; c < C; c++) {
      const got = patches[((b * 4 + hh * 2 + ww) * p * p + pi * p + qi) * C + c];
      expect(got).toBe(v[((b * C + c) * H + hh * p + pi) * H + ww * p + qi]);
    }
    expect(Array.from(await m.unpatchify(m.patchify(x)).data())).toEqual(Array.from(v));
    m.dispose();
  });

  it('masking keeps the patches with the smallest noise; the mask marks the others', async () => {
    const m = new MaskedAutoencoderViT({ ...TINY, img_size: 16 }, 0); // L = 16, keep 8
    const x = T.randn([2, 16, 8], { seed: 1 });
    const kept = [[3, 0, 15, 7, 9, 2, 12, 5], [1, 2, 3, 4, 5, 6, 7, 8]];
    const { visible, mask, idsRestore } = m.randomMasking(x, 0.5, noiseKeeping(16, kept));
    const [xs, vs, ms] = [await x.data(), await visible.data(), await mask.data()];
    for (let b = 0; b < 2; b++) {
      kept[b]!.forEach((l, k) => expect(Array.from(vs.subarray((b * 8 + k) * 8, (b * 8 + k + 1) * 8))).toEqual(Array.from(xs.subarray((b * 16 + l) * 8, (b * 16 + l + 1) * 8))));
      for (let l = 0; l < 16; l++) expect(ms[b * 16 + l]).toBe(kept[b]!.includes(l) ? 0 : 1);
    }
    expect(idsRestore.dtype).toBe('int32');
    expect(m.keptPatches(0.75)).toBe(4);
    expect(new MaskedAutoencoderViT(maeConfigFor(presetConfig('vit-fmnist-p4')), 0).keptPatches()).toBe(12); // int(49 · 0.25)
  });

  it('the prediction does not depend on the pixels of masked patches; the loss is the masked patches\' normalised MSE', async () => {
    const m = new MaskedAutoencoderViT({ ...TINY, img_size: 16 }, 3);
    const r = rng(4);
    const img = Float32Array.from({ length: 2 * 2 * 16 * 16 }, () => r());
    const kept = [[0, 5, 10, 15, 3, 6, 9, 12], [1, 2, 4, 8, 11, 13, 14, 7]];
    const run = (v: Float32Array) => T.noGrad(() => m.forward(T.tensor(v, [2, 2, 16, 16]), { training: false }, { noise: noiseKeeping(16, kept) }));
    const a = run(img);
    // Change every pixel of the masked patches only.
    const changed = img.slice();
    for (let b = 0; b < 2; b++) for (let c = 0; c < 2; c++) for (let y = 0; y < 16; y++) for (let x = 0; x < 16; x++) {
      const patch = Math.floor(y / 4) * 4 + Math.floor(x / 4);
      if (!kept[b]!.includes(patch)) changed[((b * 2 + c) * 16 + y) * 16 + x] = 1 - changed[((b * 2 + c) * 16 + y) * 16 + x]!;
    }
    const b2 = run(changed);
    expect(Array.from(await b2.pred.data())).toEqual(Array.from(await a.pred.data()));
    // The loss, recomputed on the CPU from the prediction: per patch, target normalised by its
    // mean and unbiased variance; mean squared error; averaged over the masked patches.
    const pred = await a.pred.data();
    const target = await m.patchify(T.tensor(img, [2, 2, 16, 16])).data();
    const mask = await a.mask.data();
    let [num, den] = [0, 0];
    for (let bl = 0; bl < 32; bl++) {
      const t = Array.from(target.subarray(bl * 32, (bl + 1) * 32));
      const mean = t.reduce((s, v) => s + v, 0) / 32;
      const variance = t.reduce((s, v) => s + (v - mean) ** 2, 0) / 31;
      const mse = t.reduce((s, v, k) => s + (pred[bl * 32 + k]! - (v - mean) / Math.sqrt(variance + 1e-6)) ** 2, 0) / 32;
      num += mse * mask[bl]!;
      den += mask[bl]!;
    }
    expect(den).toBe(16);
    // float32 sums of 32 squared errors of order 1: 1e-5 relative.
    expect(await a.loss.item()).toBeCloseTo(num / den, 4);
    m.dispose();
  });

  it('gradients match finite differences (tiny model, fixed mask)', async () => {
    const m = new MaskedAutoencoderViT(TINY, 7);
    const imgs = T.keep(T.rand([2, 2, 8, 8], { seed: 8 }));
    const noise = T.keep(noiseKeeping(4, [[2, 0], [1, 3]]));
    const loss = () => T.noGrad(() => m.forward(imgs, { training: true }, { noise }).loss);
    T.scope(() => m.forward(imgs, { training: true }, { noise }).loss.backward());
    for (const name of ['mask_token', 'decoder_pred.weight', 'blocks.0.attn.qkv.weight', 'patch_embed.proj.weight', 'cls_token', 'decoder_embed.bias']) {
      const p = m.params.get(name)!.tensor;
      const g = await p.grad!.data();
      const v = await p.data();
      // Central differences in float32, Richardson-extrapolated from h = 4e-3 and 2e-3 (the class
      // token is ~0.02 and sits alone in its LayerNorm, so the loss curves fast along it):
      // truncation O(h⁴), rounding ~1e-7·|loss| / h ≈ 1e-4 on gradients of order 0.01–1.
      const r = rng(name.length);
      for (let trial = 0; trial < 3; trial++) {
        const i = Math.floor(r() * v.length);
        const at = async (delta: number) => {
          const w = v.slice();
          w[i] = w[i]! + delta;
          T.upload(p, w);
          return (await loss()).item();
        };
        const central = async (h: number) => ((await at(h)) - (await at(-h))) / (2 * h);
        const fd = (4 * (await central(2e-3)) - (await central(4e-3))) / 3;
        T.upload(p, v);
        expect(Math.abs(fd - g[i]!), `${name}[${i}]: finite difference ${fd}, backward ${g[i]}`).toBeLessThan(2e-3 + 0.03 * Math.abs(fd));
      }
    }
    m.dispose();
  });

  it('every parameter receives a gradient; a pre-training loop learns and leaks no buffer', async () => {
    const m = new MaskedAutoencoderViT({ ...maeConfigFor(presetConfig('vit-fmnist-tiny'), { depth: 1 }), depth: 2 }, 0);
    // Images with structure to predict: smooth blobs whose position varies.
    const r = rng(11);
    const v = new Float32Array(16 * 28 * 28);
    for (let b = 0; b < 16; b++) {
      const [cx, cy] = [6 + r() * 16, 6 + r() * 16];
      for (let y = 0; y < 28; y++) for (let x = 0; x < 28; x++) v[(b * 28 + y) * 28 + x] = Math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 40);
    }
    const x = T.keep(T.tensor(v, [16, 1, 28, 28]));
    const opt = new T.AdamW(m.paramGroups(0.05), { lr: 2e-3, betas: [0.9, 0.95] });
    const losses: number[] = [];
    let before = 0;
    for (let i = 0; i < 40; i++) {
      if (i === 5) { await T.sync(); before = T.liveBuffers(); }
      const l = T.scope(() => {
        const loss = m.forward(x, { training: true }).loss;
        loss.backward();
        if (i === 0) for (const [name, p] of m.params) expect(p.tensor.grad, `${name} has a gradient`).toBeTruthy();
        opt.step();
        opt.zeroGrad();
        return loss;
      });
      losses.push(await l.item());
      l.dispose();
    }
    await T.sync();
    expect(T.liveBuffers()).toBe(before);
    const mean = (a: number[]) => a.reduce((s, q) => s + q, 0) / a.length;
    // From ~1 (normalised pixels against an untrained decoder) down by more than a third.
    expect(mean(losses.slice(-5))).toBeLessThan(0.65 * mean(losses.slice(0, 5)));
    opt.dispose();
    m.dispose();
  });

  it('bad configurations and inputs are named', () => {
    expect(() => maeConfigFor(presetConfig('vit-fmnist-convstem'))).toThrow(/must patchify/);
    expect(() => new MaskedAutoencoderViT({ ...TINY, mask_ratio: 1 })).toThrow(/mask ratio 1 must be in \[0, 1\)/);
    const m = new MaskedAutoencoderViT(TINY, 0);
    expect(() => m.forward(T.zeros([2, 1, 8, 8]), { training: true })).toThrow(/MAE: input .*\[2, 1, 8, 8\].* must be \[B, 2, 8, 8\]/);
    expect(() => m.forward(T.zeros([2, 2, 8, 8]), { training: true }, { noise: T.zeros([2, 5]) })).toThrow(/masking noise .* must be \[2, 4\]/);
    m.dispose();
  });
});
