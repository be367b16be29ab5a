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

  it('AdamW: a group that starts training late counts its bias corrections from its first update (torch keeps a step per parameter)', async () => {
    const r = rng(5);
    const p0 = makeData([11], 'normal', r);
    const q0 = makeData([6], 'normal', r);
    const p = T.tensor(Float32Array.from(p0), [11], { requiresGrad: true });
    const q = T.tensor(Float32Array.from(q0), [6], { requiresGrad: true });
    const opt = new T.AdamW([{ params: [p] }, { params: [q] }], { lr: 1e-2, weightDecay: 0.05 });
    const ref = { p: Float64Array.from(p0), q: Float64Array.from(q0), mp: new Float64Array(11), vp: new Float64Array(11), mq: new Float64Array(6), vq: new Float64Array(6) };
    const hyper = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 };
    let qSteps = 0;
    for (let t = 1; t <= 6; t++) {
      const gp = makeData([11], 'normal', r);
      const gq = makeData([6], 'normal', r);
      p.grad = T.keep(T.tensor(Float32Array.from(gp), [11]));
      // q is frozen for the first four steps: no gradient, no update, no step counted.
      if (t > 4) q.grad = T.keep(T.tensor(Float32Array.from(gq), [6]));
      opt.step();
      opt.zeroGrad();
      R.adamw(ref.p, gp, ref.mp, ref.vp, t, hyper);
      if (t > 4) R.adamw(ref.q, gq, ref.mq, ref.vq, ++qSteps, hyper);
      if (t === 4) expectClose(await q.data(), q0, { atol: 0, rtol: 0 }, 'frozen q');
    }
    expect(opt.stepCount).toBe(6);
    expect(opt.groupStepCounts).toEqual([6, 2]);
    expectClose(await p.data(), ref.p, TOL, 'AdamW p');
    expectClose(await q.data(), ref.q, TOL, 'AdamW q, bias-corrected from its own first step');
    opt.groupStepCounts = [1, 1];
    expect(opt.stepsOf(opt.groups[1]!)).toBe(1);
    expect(() => (opt.groupStepCounts = [1])).toThrow(/1 group step counts for 2 groups/);
    opt.dispose();
  });

  it.each([false, true])('AdamW over many parameters (packed: %s; ragged chunks, one without a gradient) and clipping by global norm over more tensors than one dispatch takes', async (packed) => {
    const r = rng(9);
    const sizes = [37, 5, 1, 64, 13, 7, 129, 3];
    const init = sizes.map((n) => makeData([n], 'normal', r));
    const ps = init.map((d, i) => T.tensor(Float32Array.from(d), [sizes[i]!], { requiresGrad: true }));
    const opt = new T.AdamW([{ params: ps.slice(0, 5) }, { params: ps.slice(5), weightDecay: 0 }], { lr: 1e-2, weightDecay: 0.05, packed });
    expect(opt.isPacked).toBe(packed);
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
    // A parameter without a gradient is left alone (torch skips it); packed moments stay zero.
    if (packed) expectClose(await opt.stateOf(ps[2]!)![0]!.data(), new Float64Array(1), TOL, 'untouched moment');
    else expect(opt.stateOf(ps[2]!)).toBeUndefined();
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

  it('packed AdamW: one update dispatch and a two-dispatch global norm per step, clipping and three weight-decay groups equal to float64, parameters still ordinary tensors', async () => {
    const r = rng(21);
    const shapes = [[7, 3], [5], [1], [129], [4, 4, 2], [66]];
    const decay = [0.05, 0.05, 0, 0, 0.1, 0.1];
    const init = shapes.map((s) => makeData(s, 'normal', r));
    const ps = init.map((d, i) => T.tensor(Float32Array.from(d), shapes[i]!, { requiresGrad: true, name: `p${i}` }));
    const groups = [{ params: ps.slice(0, 2) }, { params: ps.slice(2, 4), weightDecay: 0 }, { params: ps.slice(4), weightDecay: 0.1 }];
    const opt = new T.AdamW(groups, { lr: 3e-2, betas: [0.9, 0.95], weightDecay: 0.05, packed: true });
    expect(opt.isPacked).toBe(true);
    const ref = init.map((d) => ({ p: Float64Array.from(d), m: new Float64Array(d.length), v: new Float64Array(d.length) }));
    const maxNorm = 2;
    for (let t = 1; t <= 6; t++) {
      const grads = init.map((d) => makeData([d.length], 'normal', r));
      ps.forEach((p, i) => (p.grad = T.keep(T.tensor(Float32Array.from(grads[i]!), shapes[i]!))));
      opt.lr = 3e-2 / t;
      const before = T.rt().stats.dispatches;
      const clip = opt.clipGradNorm(maxNorm);
      opt.step({ clip });
      expect(T.rt().stats.dispatches - before).toBe(3);
      const [norm, factor] = await clip.data();
      clip.dispose();
      opt.zeroGrad();
      const refNorm = Math.sqrt(grads.reduce((a, g) => a + g.reduce((b, x) => b + x * x, 0), 0));
      expect(norm).toBeCloseTo(refNorm, 4);
      const f = Math.min(1, maxNorm / (refNorm + 1e-6));
      expect(factor).toBeCloseTo(f, 6);
      ref.forEach((x, i) => R.adamw(x.p, grads[i]!.map((g) => g * f), x.m, x.v, t, { lr: 3e-2 / t, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: decay[i]! }));
    }
    for (let i = 0; i < ps.length; i++) {
      expectClose(await ps[i]!.data(), ref[i]!.p, TOL, `packed AdamW parameter ${i}`);
      expectClose(await opt.stateOf(ps[i]!)![1]!.data(), ref[i]!.v, TOL, `packed AdamW second moment ${i}`);
    }
    // Parameters are slices of the packed buffer: ops, reshaped views and uploads see their values.
    const sum = T.scope(() => T.add(ps[3]!, T.reshape(ps[3]!, [129])));
    expectClose(await sum.data(), ref[3]!.p.map((x) => 2 * x), TOL, 'op on a packed parameter');
    sum.dispose();
    // A slice whose size is not a multiple of 4 floats, read by a kernel that declares vec4
    // arrays (the matmul): its binding covers whole vec4s, or a GPU's bounds clamping would cut
    // the last elements off (lavapipe reads them anyway, so the size is checked as well).
    for (const p of ps) expect(p.buffer.bytes % 16, `${p.describe()} binding size`).toBe(0);
    const x = T.tensor(Float32Array.from({ length: 5 * 7 }, (_, i) => Math.sin(i)), [5, 7]);
    const xw = T.matmul(x, ps[0]!);
    const want = new Float64Array(15);
    for (let r = 0; r < 5; r++) for (let c = 0; c < 3; c++) for (let k = 0; k < 7; k++) want[r * 3 + c]! += Math.sin(r * 7 + k) * ref[0]!.p[k * 3 + c]!;
    expectClose(await xw.data(), want, { atol: 1e-5, rtol: 1e-5 }, 'matmul with a packed [7, 3] weight');
    x.dispose();
    xw.dispose();
    T.upload(ps[1]!, Float32Array.from([1, 2, 3, 4, 5]));
    expectClose(await ps[1]!.data(), [1, 2, 3, 4, 5], TOL, 'upload into a packed parameter');
    expectClose(await ps[2]!.data(), ref[2]!.p, TOL, 'its neighbour untouched');
    opt.setState(ps[0]!, [new Float32Array(21).fill(0.5), new Float32Array(21).fill(0.25)]);
    expectClose(await opt.stateOf(ps[0]!)![0]!.data(), new Float64Array(21).fill(0.5), TOL, 'restored moment');

    // The packed buffer outlives the optimizer while parameters use it, and goes with the last one.
    const live = T.liveBuffers();
    opt.dispose();
    expect(T.liveBuffers()).toBe(live - 4); // gradients, both moments, hyperparameters
    expectClose(await ps[5]!.data(), ref[5]!.p, TOL, 'parameter after the optimizer is disposed');
    for (const p of ps) p.dispose();
    expect(T.liveBuffers()).toBe(live - 5);
  });

  it('packed AdamW does not grow the live-buffer count over 40 steps; a parameter with a live view is refused', async () => {
    const ps = [T.parameter(new Float32Array(300).fill(1), [300]), T.parameter(new Float32Array(17).fill(-1), [17])];
    const opt = new T.AdamW(ps, { lr: 1e-3, packed: true });
    const step = () =>
      T.scope(() => {
        for (const p of ps) p.grad = T.mulScalar(p, 0.5);
        opt.step({ clip: opt.clipGradNorm(1) });
        opt.zeroGrad();
      });
    step();
    await T.sync();
    const before = T.liveBuffers();
    for (let i = 0; i < 40; i++) step();
    await T.sync();
    expect(T.liveBuffers()).toBe(before);
    opt.dispose();
    for (const p of ps) p.dispose();

    const q = T.parameter(new Float32Array(8), [8], 'q');
    const view = T.reshape(q, [2, 4]);
    expect(new T.AdamW([q]).isPacked).toBe(false); // the default
    expect(() => new T.AdamW([q], { packed: true })).toThrow(/'q' \[8\] has live views/);
    view.dispose();
    q.dispose();
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

  it('weight EMA: decay ramped as min(m, (1 + n) / (10 + n)) with warmup, constant without, equal to float64; reset restarts it', async () => {
    const r = rng(5);
    const t = T.tensor(Float32Array.from(makeData([11], 'normal', r)), [11]);
    const warm = new T.WeightEma([t], 0.9, { warmup: true });
    const plain = new T.WeightEma([t], 0.9);
    const refWarm = Float64Array.from(await t.data());
    const refPlain = Float64Array.from(refWarm);
    for (let n = 0; n < 6; n++) {
      const v = makeData([11], 'normal', r);
      T.upload(t, Float32Array.from(v));
      const m = Math.min(0.9, (1 + n) / (10 + n));
      expect(warm.currentDecay()).toBeCloseTo(m, 12);
      warm.update();
      plain.update();
      for (let i = 0; i < 11; i++) {
        refWarm[i] = m * refWarm[i]! + (1 - m) * v[i]!;
        refPlain[i] = 0.9 * refPlain[i]! + 0.1 * v[i]!;
      }
    }
    expect(warm.updates).toBe(6);
    // Six blends of O(1) values: a few f32 ulps.
    expectClose(await warm.shadowOf(t)!.data(), refWarm, TOL, 'EMA with warmup');
    expectClose(await plain.shadowOf(t)!.data(), refPlain, TOL, 'EMA');
    plain.reset();
    expect([...(await plain.shadowOf(t)!.data())]).toEqual([...(await t.data())]);
    expect(() => plain.reset([T.zeros([2])])).toThrow(/not tracked/);
    warm.dispose();
    plain.dispose();
    t.dispose();
  });

  it('refuses parameters that do not require grad', () => {
    expect(() => new T.AdamW([T.zeros([2])])).toThrow(/does not require grad/);
  });
});
