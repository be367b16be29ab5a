import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../engine/index.js';
import * as R from '../../engine/reference/optim.js';
import { expectClose, makeData, rng } from '../helpers.js';

beforeAll(async () => {
  await T.init();
});

// Five steps of f32 updates against float64: each step adds a few ulps of lr-sized updates.
const TOL = { atol: 1e-6, rtol: 1e-5 };

describe('optimizers update parameters in place like torch.optim', () => {
  it('AdamW over 5 steps with changing gradients and learning rate, two weight-decay groups', async () => {
    const r = rng(3);
    const p0 = makeData([37], 'normal', r);
    const q0 = makeData([5], 'normal', r);
    const p = T.tensor(Float32Array.from(p0), [37], { requiresGrad: true });
    const q = T.tensor(Float32Array.from(q0), [5], { requiresGrad: true });
    const opt = new T.AdamW([{ params: [p] }, { params: [q], weightDecay: 0 }], { lr: 1e-2, betas: [0.9, 0.95], weightDecay: 0.05 });
    const ref = { p: Float64Array.from(p0), q: Float64Array.from(q0), mp: new Float64Array(37), vp: new Float64Array(37), mq: new Float64Array(5), vq: new Float64Array(5) };
    for (let t = 1; t <= 5; t++) {
      const gp = makeData([37], 'normal', r);
      const gq = makeData([5], 'normal', r);
      p.grad = T.keep(T.tensor(Float32Array.from(gp), [37]));
      q.grad = T.keep(T.tensor(Float32Array.from(gq), [5]));
      opt.lr = 1e-2 / t;
      opt.step();
      opt.zeroGrad();
      R.adamw(ref.p, gp, ref.mp, ref.vp, t, { lr: 1e-2 / t, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.05 });
      R.adamw(ref.q, gq, ref.mq, ref.vq, t, { lr: 1e-2 / t, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0 });
    }
    expectClose(await p.data(), ref.p, TOL, 'AdamW p');
    expectClose(await q.data(), ref.q, TOL, 'AdamW q (no decay)');
    expectClose(await opt.stateOf(p)![0]!.data(), ref.mp, TOL, 'AdamW first moment');
    opt.dispose();
  });

  it('AdamW over many parameters (several per dispatch, ragged chunks, one without a gradient) and clipping by global norm over more tensors than one dispatch takes', async () => {
    const r = rng(9);
    const sizes = [37, 5, 1, 64, 13, 7, 129, 3];
    const init = sizes.map((n) => makeData([n], 'normal', r));
    const ps = init.map((d, i) => T.tensor(Float32Array.from(d), [sizes[i]!], { requiresGrad: true }));
    const opt = new T.AdamW([{ params: ps.slice(0, 5) }, { params: ps.slice(5), weightDecay: 0 }], { lr: 1e-2, weightDecay: 0.05 });
    const ref = init.map((d) => ({ p: Float64Array.from(d), m: new Float64Array(d.length), v: new Float64Array(d.length) }));
    for (let t = 1; t <= 3; t++) {
      const grads = sizes.map((n) => makeData([n], 'normal', r));
      ps.forEach((p, i) => (p.grad = i === 2 ? null : T.keep(T.tensor(Float32Array.from(grads[i]!), [sizes[i]!]))));
      opt.step();
      opt.zeroGrad();
      ref.forEach((x, i) => {
        if (i !== 2) R.adamw(x.p, grads[i]!, x.m, x.v, t, { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: i < 5 ? 0.05 : 0 });
      });
    }
    for (let i = 0; i < sizes.length; i++) expectClose(await ps[i]!.data(), ref[i]!.p, TOL, `AdamW parameter ${i}`);
    expect(opt.stateOf(ps[2]!)).toBeUndefined();
    opt.dispose();

    // 20 gradients (two sum-of-squares dispatches), one of them over several 1024-element chunks.
    const gsizes = Array.from({ length: 20 }, (_, i) => (i === 7 ? 3000 : 1 + ((i * 37) % 50)));
    const gdata = gsizes.map((n) => makeData([n], 'normal', r));
    const qs = gsizes.map((n, i) => {
      const q = T.tensor(new Float32Array(n), [n], { requiresGrad: true });
      q.grad = T.keep(T.tensor(Float32Array.from(gdata[i]!), [n]));
      return q;
    });
    const norm = Math.sqrt(gdata.reduce((a, d) => a + d.reduce((b, v) => b + v * v, 0), 0));
    const clip = await T.clipGradNorm(qs, 1).data();
    expect(clip[0]).toBeCloseTo(norm, 3);
    expect(clip[1]).toBeCloseTo(1 / (norm + 1e-6), 6);
    for (const q of qs) q.grad!.dispose();
  });

  it('SGD with momentum and weight decay over 4 steps', async () => {
    const r = rng(4);
    const p0 = makeData([13], 'normal', r);
    const p = T.tensor(Float32Array.from(p0), [13], { requiresGrad: true });
    const opt = new T.SGD([p], { lr: 0.1, momentum: 0.9, weightDecay: 1e-2 });
    const ref = Float64Array.from(p0);
    const buf = new Float64Array(13);
    for (let t = 1; t <= 4; t++) {
      const g = makeData([13], 'normal', r);
      p.grad = T.keep(T.tensor(Float32Array.from(g), [13]));
      opt.step();
      opt.zeroGrad();
      R.sgd(ref, g, buf, t === 1, { lr: 0.1, momentum: 0.9, weightDecay: 1e-2 });
    }
    expectClose(await p.data(), ref, TOL, 'SGD');
    opt.dispose();
  });

  it('refuses parameters that do not require grad', () => {
    expect(() => new T.AdamW([T.zeros([2])])).toThrow(/does not require grad/);
  });
});
