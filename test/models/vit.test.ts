import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../engine/index.js';
import { type ConvStem, type PatchEmbed } from '../../models/layers.js';
import { countParams, PRESETS, presetConfig, VisionTransformer } from '../../models/vit.js';
import { expectClose } from '../helpers.js';

beforeAll(async () => {
  await T.init();
});

describe('VisionTransformer (timm layout)', () => {
  it('parameter counts match a hand count for every preset; names and shapes are timm\'s', () => {
    for (const name of Object.keys(PRESETS).filter((n) => !n.includes('224'))) {
      const m = new VisionTransformer(presetConfig(name), 0);
      expect(m.numParams(), name).toBe(countParams(m.config));
      m.dispose();
    }
    // vit-fmnist-convstem16 by hand: convs 24·1·9 + 48·24·9 + 64·48·9 = 38,232, BatchNorms
    // 2·(24+48+64) = 272, 1×1 projection 64·64+64 = 4,160, cls + pos 64 + 17·64 = 1,152,
    // 6 blocks × 33,472 = 200,832, final norm 128, head 650: 245,426.
    expect(countParams(presetConfig('vit-fmnist-convstem16'))).toBe(245_426);
    // Its 4-block version (the default preset): 245,426 − 2 × 33,472.
    expect(countParams(presetConfig('vit-fmnist-convstem16-d4'))).toBe(178_482);
    // vit-fmnist-convstem16-w128: convs 32·9 + 64·32·9 + 128·64·9 = 92,448, BatchNorms 448,
    // projection 128·128+128 = 16,512, cls + pos 18·128 = 2,304, 4 blocks × 132,480 = 529,920
    // (norms 512, qkv 49,536, proj 16,512, fc1 33,024, fc2 32,896), final norm 256, head 1,290.
    expect(countParams(presetConfig('vit-fmnist-convstem16-w128'))).toBe(643_178);
    // vit-fmnist-tiny-w96: patch embedding 96·49 + 96 = 4,800, cls + pos 18·96 = 1,728, 6 blocks
    // × 74,784 (norms 384, qkv 27,936, proj 9,312, fc1 18,624, fc2 18,528), final norm 192, head
    // 970: 456,394 (the reference table's "456k").
    expect(countParams(presetConfig('vit-fmnist-tiny-w96'))).toBe(456_394);
    const c = presetConfig('vit-fmnist-tiny');
    expect(countParams(c)).toBe(205_962);
    const m = new VisionTransformer(c, 0);
    const shapes = Object.fromEntries([...m.params].map(([k, v]) => [k, v.tensor.shape]));
    expect(shapes['cls_token']).toEqual([1, 1, 64]);
    expect(shapes['pos_embed']).toEqual([1, 17, 64]);
    expect(shapes['patch_embed.proj.weight']).toEqual([64, 1, 7, 7]);
    expect(shapes['blocks.0.attn.qkv.weight']).toEqual([192, 64]);
    expect(shapes['blocks.5.mlp.fc1.weight']).toEqual([128, 64]);
    expect(shapes['head.weight']).toEqual([10, 64]);
    const noDecay = [...m.params].filter(([, p]) => !p.decay).map(([k]) => k);
    expect(noDecay).toContain('pos_embed');
    expect(noDecay).toContain('blocks.0.norm1.weight');
    expect(noDecay).toContain('head.bias');
    expect(noDecay).not.toContain('head.weight');
    m.dispose();
  });

  it('every parameter receives a finite, non-zero gradient (distilled model, drop-path on)', async () => {
    const m = new VisionTransformer({ ...presetConfig('deit-fmnist-tiny-distilled'), depth: 2, drop_path_rate: 0.1, drop_rate: 0.1 }, 0);
    const x = T.randn([4, 1, 28, 28], { seed: 5 });
    const y = T.tensor(Int32Array.from([0, 3, 5, 9]), [4]);
    T.scope(() => {
      const out = m.forward(x, { training: true });
      expect(out.distLogits).toBeDefined();
      T.add(T.crossEntropy(out.logits, y), T.crossEntropy(out.distLogits!, y)).backward();
    });
    for (const [name, p] of m.params) {
      expect(p.tensor.grad, `${name} has a gradient`).toBeTruthy();
      const g = await p.tensor.grad!.data();
      expect(g.every(Number.isFinite), `${name} gradient is finite`).toBe(true);
      expect(g.some((v) => v !== 0), `${name} gradient is not all zero`).toBe(true);
    }
    const evalOut = T.noGrad(() => m.forward(x, { training: false }));
    expect(evalOut.distLogits).toBeUndefined();
    expect(evalOut.logits.shape).toEqual([4, 10]);
    m.dispose();
  });

  it('overfits a tiny batch', async () => {
    const m = new VisionTransformer({ ...presetConfig('vit-fmnist-tiny'), depth: 2 }, 0);
    const opt = new T.AdamW(m.paramGroups(0), { lr: 3e-3, packed: true });
    expect(opt.isPacked).toBe(true); // the model keeps no views of its parameters
    const x = T.randn([8, 1, 28, 28], { seed: 9 });
    const y = T.tensor(Int32Array.from([0, 1, 2, 3, 4, 5, 6, 7]), [8]);
    let last = Infinity;
    for (let i = 0; i < 60; i++) {
      const l = T.scope(() => {
        const loss = T.crossEntropy(m.forward(x, { training: true }).logits, y);
        loss.backward();
        opt.step();
        opt.zeroGrad();
        return loss;
      });
      last = await l.item();
      l.dispose();
    }
    // From ln 10 = 2.30 to near zero: the model can memorise 8 images.
    expect(last).toBeLessThan(0.05);
    opt.dispose();
    m.dispose();
  });

  it('PatchEmbed (im2col + matmul) equals the direct patch-embedding op, forward and weight gradient', async () => {
    const m = new VisionTransformer({ ...presetConfig('vit-fmnist-tiny'), depth: 1 }, 0);
    const pe = m.patchEmbed as PatchEmbed;
    const x = T.randn([3, 1, 28, 28], { seed: 4 });
    const g = T.randn([3, 16, 64], { seed: 5 });
    const viaRows = pe.forward(x);
    T.sum(T.mul(viaRows, g)).backward();
    const dw = await pe.proj.weight.grad!.data();
    pe.proj.weight.grad = null;
    const direct = T.transpose(T.reshape(T.patchEmbed(x, pe.proj.weight, pe.proj.bias), [3, 64, 16]), 1, 2);
    T.sum(T.mul(direct, g)).backward();
    // Sums of 49 products in another order, and dW sums of 48·49: f32 rounding, 1e-5 relative.
    expectClose(await viaRows.data(), await direct.data(), { atol: 1e-5, rtol: 1e-5 }, 'tokens');
    expectClose(dw, await pe.proj.weight.grad!.data(), { atol: 1e-4, rtol: 1e-5 }, 'weight gradient');
    m.dispose();
  });

  it('conv stem (vit-fmnist-convstem): timm HybridEmbed names, 152k parameters, gradients everywhere, BatchNorm running stats move in training only', async () => {
    const c = presetConfig('vit-fmnist-convstem');
    // Stem 24·9 + 48 + 48·24·9 + 96 + 64·48 + 64 = 13,864; tokens 64 + 50·64; 4 blocks of 33,472;
    // final norm 128; head 650.
    expect(countParams(c)).toBe(13_864 + 64 + 50 * 64 + 4 * 33_472 + 128 + 650);
    const m = new VisionTransformer(c, 0);
    expect(m.numParams()).toBe(countParams(c));
    const shapes = Object.fromEntries([...m.state()].map(([k, v]) => [k, v.shape]));
    expect(shapes['patch_embed.backbone.0.conv.weight']).toEqual([24, 1, 3, 3]);
    expect(shapes['patch_embed.backbone.1.bn.running_var']).toEqual([48]);
    expect(shapes['patch_embed.proj.weight']).toEqual([64, 48, 1, 1]);
    expect(shapes['pos_embed']).toEqual([1, 50, 64]);
    expect(m.params.has('patch_embed.backbone.0.bn.running_mean')).toBe(false);
    const x = T.randn([4, 1, 28, 28], { seed: 6 });
    const y = T.tensor(Int32Array.from([0, 3, 5, 9]), [4]);
    T.scope(() => T.crossEntropy(m.forward(x, { training: true }).logits, y).backward());
    for (const [name, p] of m.params) {
      const g = await p.tensor.grad!.data();
      expect(g.every(Number.isFinite) && g.some((v) => v !== 0), `${name} gradient`).toBe(true);
    }
    // The channels-last stem is conv2d (NCHW) → BatchNorm2d → ReLU, twice, then a 1×1 conv.
    const stem = m.patchEmbed as ConvStem;
    const viaNchw = T.noGrad(() => T.scope(() => {
      let h = x;
      for (const s of stem.stages) h = T.relu(T.batchNorm2d(T.conv2d(h, s.conv, null, { stride: 2, padding: 1 }), s.bn.weight, s.bn.bias, s.bn.runningMean, s.bn.runningVar, { training: false }));
      const y = T.conv2d(h, stem.proj.weight, stem.proj.bias);
      return T.transpose(T.reshape(y, [4, 64, 49]), 1, 2);
    }));
    const viaStem = T.noGrad(() => T.scope(() => stem.forward(x, { training: false })));
    expectClose(await viaStem.data(), await viaNchw.data(), { atol: 1e-5, rtol: 1e-4 }, 'conv stem');
    const rm = m.buffers.get('patch_embed.backbone.0.bn.running_mean')!;
    const afterTrain = Array.from(await rm.data());
    expect(afterTrain.some((v) => v !== 0)).toBe(true);
    T.noGrad(() => T.scope(() => m.forward(x, { training: false }).logits));
    expect(Array.from(await rm.data())).toEqual(afterTrain);
    // Training steps (BatchNorm updates its running statistics in place) leak nothing.
    const opt = new T.AdamW(m.paramGroups(0.05), { lr: 1e-3, packed: true });
    expect(opt.isPacked).toBe(true);
    const step = () => {
      const l = T.scope(() => {
        const loss = T.crossEntropy(m.forward(x, { training: true }).logits, y);
        loss.backward();
        opt.step();
        opt.zeroGrad();
        return loss;
      });
      l.dispose();
    };
    step();
    const before = T.liveBuffers();
    for (let i = 0; i < 10; i++) step();
    await T.sync();
    expect(T.liveBuffers()).toBe(before);
    opt.dispose();
    m.dispose();
  });

  it('avg pooling and no class token are supported', async () => {
    const m = new VisionTransformer({ ...presetConfig('vit-fmnist-tiny'), depth: 1, class_token: false, global_pool: 'avg' }, 0);
    expect(m.params.has('cls_token')).toBe(false);
    expect(m.posEmbed.shape).toEqual([1, 16, 64]);
    const out = T.noGrad(() => m.forward(T.randn([3, 1, 28, 28]), { training: false }).logits);
    expect(out.shape).toEqual([3, 10]);
    expect((await out.data()).every(Number.isFinite)).toBe(true);
    m.dispose();
  });

  it('deit-tiny-patch16-224 (ImageNet shape) constructs and runs a training step', async () => {
    const m = new VisionTransformer(presetConfig('deit-tiny-patch16-224'), 0);
    expect(m.numParams()).toBe(5_717_416); // timm's deit_tiny_patch16_224
    const opt = new T.AdamW(m.paramGroups(0.05), { lr: 1e-4 });
    const x = T.randn([1, 3, 224, 224], { seed: 1 });
    const y = T.tensor(Int32Array.from([7]), [1]);
    const l = T.scope(() => {
      const loss = T.crossEntropy(m.forward(x, { training: true }).logits, y);
      loss.backward();
      opt.step();
      opt.zeroGrad();
      return loss;
    });
    const v = await l.item();
    expect(Number.isFinite(v)).toBe(true);
    expect(Math.abs(v - Math.log(1000))).toBeLessThan(0.5);
    opt.dispose();
    m.dispose();
  });

  it('initialisation is timm\'s: Linear and position embedding trunc_normal(.02), the patchify conv and the stem\'s projection PyTorch\'s Conv2d default', async () => {
    const m = new VisionTransformer(presetConfig('vit-fmnist-p4'), 0);
    const values = async (name: string): Promise<number[]> => Array.from(await m.params.get(name)!.tensor.data());
    const stats = (v: number[]): { std: number; maxAbs: number } => {
      const mean = v.reduce((a, b) => a + b, 0) / v.length;
      return { std: Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length), maxAbs: v.reduce((a, b) => Math.max(a, Math.abs(b)), 0) };
    };
    // init_weights_vit_timm initialises nn.Linear only; the patch-4 conv (fan-in 16) keeps
    // kaiming_uniform(a=√5) = U(±1/4) for weight and bias: std 0.25/√3 = 0.144. Sample stds of
    // 1,024 and 64 uniform values are within 1.4% and 5.6% (one σ) of it; 15% and 25% are ≥ 4σ.
    const w = stats(await values('patch_embed.proj.weight'));
    expect(w.maxAbs).toBeLessThanOrEqual(0.25);
    expect(Math.abs(w.std / (0.25 / Math.sqrt(3)) - 1)).toBeLessThan(0.15);
    const b = stats(await values('patch_embed.proj.bias'));
    expect(b.maxAbs).toBeLessThanOrEqual(0.25);
    expect(Math.abs(b.std / (0.25 / Math.sqrt(3)) - 1)).toBeLessThan(0.25);
    // trunc_normal(std .02): 12,288 qkv weights and 3,264 position-embedding values, σ within 2%.
    for (const name of ['blocks.0.attn.qkv.weight', 'pos_embed', 'head.weight']) {
      expect(Math.abs(stats(await values(name)).std / 0.02 - 1), name).toBeLessThan(name === 'head.weight' ? 0.2 : 0.1);
    }
    expect(stats(await values('blocks.0.attn.qkv.bias')).maxAbs).toBe(0);
    expect((await values('blocks.0.norm1.weight')).every((v) => v === 1)).toBe(true);
    m.dispose();
    // The conv stem's 1×1 projection (HybridEmbed.proj, an nn.Conv2d from 48 channels): bias
    // U(±1/√48), 64 values.
    const stem = new VisionTransformer(presetConfig('vit-fmnist-convstem'), 0);
    const sb = stats(Array.from(await stem.params.get('patch_embed.proj.bias')!.tensor.data()));
    expect(sb.maxAbs).toBeLessThanOrEqual(1 / Math.sqrt(48));
    expect(Math.abs(sb.std / (1 / Math.sqrt(48) / Math.sqrt(3)) - 1)).toBeLessThan(0.25);
    stem.dispose();
  });

  it('a wrong input shape is named', () => {
    const m = new VisionTransformer({ ...presetConfig('vit-fmnist-tiny'), depth: 1 }, 0);
    expect(() => m.forward(T.zeros([2, 3, 28, 28]), { training: false })).toThrow(/must be \[B, 1, 28, 28\]/);
    m.dispose();
  });
});
