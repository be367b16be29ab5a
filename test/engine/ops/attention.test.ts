import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../../engine/index.js';
import * as R from '../../../engine/reference/attention.js';
import { forwardOnePassKeys, onePassKeys, onePassKeysPerLane, useFlashForwardOnePass, useFlashOnePass } from '../../../engine/ops/attention.js';
import { checkOp } from '../../helpers.js';

beforeAll(async () => {
  await T.init();
});

// Two matmuls of K ≤ 65 and a softmax: like matmul, 5e-4 absolute on values of size ~1.
const TOL = { atol: 5e-4, rtol: 1e-4 };

describe('attention from packed qkv: flash and unfused paths against the reference', () => {
  // 'flash subgroup' takes the adapter's choices (on lavapipe: 2–7 rows per lane, and the one-pass
  // backward, in key blocks where the head is long); 'two passes' the R-row backward kernels;
  // 'key blocks' the one-pass backward with 2 keys a lane, so in blocks of 16 keys (N = 257: 17
  // dispatches adding to dQ in turn); '1 row' the subgroup kernels with one row a lane (their shape on a GPU);
  // 'workgroup' the kernels with K/V (Q/dO) tiles in workgroup memory, whose 64-row tiles N = 65,
  // 197 and 257 cross with a partial last tile (and hd 64's 32-key tiles also at N = 50).
  for (const variant of ['flash subgroup', 'flash subgroup, two passes', 'flash subgroup, key blocks', 'flash subgroup, 1 row', 'flash workgroup', 'flash vec4', 'flash scalar', 'unfused'] as const) {
    const impl = variant === 'unfused' ? 'unfused' : 'flash';
    const family = variant === 'unfused' ? 'auto' : (variant.split(' ')[1]!.replace(',', '') as T.FlashKernelFamily);
    const rows = variant === 'flash subgroup, 1 row' ? 1 : 'auto';
    const onePass = variant === 'flash subgroup' ? 'auto' : variant === 'flash subgroup, key blocks' ? 2 : false;
    // The forward in the one-pass layout where it fits (CPU adapters), except for the row kernels' variants.
    const forwardOnePass = variant === 'flash subgroup' || variant === 'flash subgroup, key blocks' ? 'auto' : false;
    for (const [B, N, nh, hd] of [
      [1, 1, 1, 4],
      [2, 17, 4, 16],
      [3, 13, 2, 8],
      [1, 65, 3, 16],
      [2, 19, 2, 24],
      [2, 50, 2, 32],
      [1, 197, 1, 64],
      // 257 = 16² + 1 tokens (patch 16 at 256 px): past every key tile and the one-pass backward's limit.
      [1, 257, 2, 16],
    ] as [number, number, number, number][]) {
      it(`${variant}: B ${B} N ${N} heads ${nh} hd ${hd}`, async () => {
        T.useFlashKernels(family);
        T.useFlashRowsPerLane(rows);
        useFlashOnePass(onePass);
        useFlashForwardOnePass(forwardOnePass);
        const forwardKeys = forwardOnePassKeys(N, hd);
        try {
          await checkOp({
          name: `attention ${variant}`,
          inputs: [{ shape: [B, N, 3 * nh * hd] }],
          fwd: TOL,
          bwd: TOL,
          fdSamples: N > 100 ? 4 : 20,
          gpu: (qkv) => T.attention(qkv!, nh, { impl }),
          ref: (qkv) => R.attention(qkv!, nh),
          vjp: ([qkv], g) => [R.attentionVjp(qkv!, nh, g)],
        });
        } finally {
          T.useFlashKernels('auto');
          T.useFlashRowsPerLane('auto');
          useFlashOnePass('auto');
          useFlashForwardOnePass('auto');
        }
        // The family ran where it can take the head dim (subgroup: multiples of 8 with subgroups of 8+).
        const ran = (name: string) => T.compiledKernels().some((k) => k.name.startsWith(name));
        const cpu = /llvmpipe|lavapipe|swiftshader/i.test(T.currentDevice().adapterName);
        const subgroupOk = family === 'subgroup' && hd % 8 === 0 && T.subgroupsOf8();
        const v = hd % 16 === 0 ? 'v' : '';
        if (subgroupOk) expect(ran(forwardKeys > 0 ? `flash_attn_fwd_onepass_sg${v}_d${hd}_k${forwardKeys}` : `flash_attn_fwd_sg${v}_d${hd}`)).toBe(true);
        // On a CPU adapter the one-pass forward takes every head whose keys fit one block.
        if (subgroupOk && cpu && forwardOnePass === 'auto') expect(forwardKeys > 0).toBe(N <= 8 * onePassKeysPerLane(N, hd));
        const onePassName = (keys: number) => `flash_attn_bwd_onepass_sg${hd % 16 === 0 ? 'v' : ''}_d${hd}_k${keys}`;
        if (subgroupOk && cpu && onePass === 'auto' && onePassKeys(N, hd) > 0) expect(ran(onePassName(onePassKeys(N, hd)))).toBe(true);
        if (subgroupOk && onePass === 2) expect(ran(onePassName(2))).toBe(true);
        if (subgroupOk && cpu && rows === 'auto' && onePass === false) expect(ran(`flash_attn_bwd_q_sg_d${hd}_r`)).toBe(true);
        if (rows === 1 && hd % 8 === 0 && T.subgroupsOf8()) expect(T.compiledKernels().some((k) => k.name === `flash_attn_bwd_kv_sg_d${hd}`)).toBe(true);
        if (family === 'workgroup') for (const k of ['fwd', 'bwd_q', 'bwd_kv']) expect(ran(`flash_attn_${k}_wg_d${hd}_t`)).toBe(true);
        if (family === 'vec4' && hd % 4 === 0) expect(ran(`flash_attn_fwd_v4_d${hd}`)).toBe(true);
        if (family === 'scalar') expect(ran(`flash_attn_fwd_d${hd}`)).toBe(true);
        // Head dim 64 on a machine with a cold shader cache: lavapipe compiles the d64 backward
        // kernels for 40–65 s (Zen 5), longer on slower hosts.
      }, hd >= 64 ? 300_000 : undefined);
    }
  }

  // Head dim 8 takes the subgroup kernels' scalar loads, 16 their vec4 loads.
  for (const hd of [8, 16]) it(`flash and unfused agree with dropout on the probabilities (same Philox mask), forward and backward, hd ${hd}`, async () => {
    const data = T.randn([2, 21, 6 * hd], { seed: 4 });
    const run = async (impl: 'flash' | 'unfused') => {
      const qkv = T.copy(data);
      qkv.requiresGrad = true;
      const g = T.randn([2, 21, 2 * hd], { seed: 5 });
      const y = T.scope(() => {
        const o = T.attention(qkv, 2, { impl, dropout: 0.3, training: true, seed: 77 });
        o.backward(g);
        return o;
      });
      return { y: await y.data(), dx: await qkv.grad!.data() };
    };
    const f = await run('flash');
    const u = await run('unfused');
    // The one-pass backward in blocks of 8 keys (21 keys: 3 dispatches) draws the same mask, and
    // so do the row kernels' forward where the one-pass forward would run (on a CPU adapter).
    useFlashOnePass(1);
    useFlashForwardOnePass(false);
    const blocked = await run('flash').finally(() => { useFlashOnePass('auto'); useFlashForwardOnePass('auto'); });
    // The workgroup-memory kernels (21 rows: one partial tile) draw it by the same indices.
    T.useFlashKernels('workgroup');
    const tiled = await run('flash').finally(() => T.useFlashKernels('auto'));
    const { expectClose } = await import('../../helpers.js');
    expectClose(f.y, u.y, TOL, 'dropout forward');
    expectClose(f.dx, u.dx, TOL, 'dropout backward');
    expectClose(blocked.y, u.y, TOL, 'dropout forward, row kernels');
    expectClose(blocked.dx, u.dx, TOL, 'dropout backward, one pass in key blocks');
    expectClose(tiled.y, u.y, TOL, 'dropout forward, workgroup tiles');
    expectClose(tiled.dx, u.dx, TOL, 'dropout backward, workgroup tiles');
    expect(f.y.some((v, i) => v !== 0 && Math.abs(v - u.y[i]!) < 1e-3)).toBe(true);
    const compiled = (name: string) => T.compiledKernels().some((k) => k.name === name);
    if (T.subgroupsOf8()) expect(compiled(`flash_attn_fwd_sg${hd % 16 === 0 ? 'v' : ''}_d${hd}_dropout_r3`)).toBe(true);
    if (T.subgroupsOf8() && forwardOnePassKeys(21, hd) > 0) expect(compiled(`flash_attn_fwd_onepass_sg${hd % 16 === 0 ? 'v' : ''}_d${hd}_k3_dropout`)).toBe(true);
  });

  // Head dim 48: dQ's 12 vec4s go to lanes 0–7 and again 0–3, so the one-pass backward's
  // reduce-scatter over the subgroup carries values that only half the lanes keep.
  it('flash one-pass backward at head dim 48 against the reference, in one pass and in key blocks', async () => {
    for (const onePass of ['auto', 1] as const) {
      useFlashOnePass(onePass);
      try {
        await checkOp({
          name: `attention hd 48, one pass ${onePass}`,
          inputs: [{ shape: [2, 23, 3 * 48] }],
          fwd: TOL,
          bwd: TOL,
          fdSamples: 12,
          gpu: (qkv) => T.attention(qkv!, 1, { impl: 'flash' }),
          ref: (qkv) => R.attention(qkv!, 1),
          vjp: ([qkv], g) => [R.attentionVjp(qkv!, 1, g)],
        });
      } finally {
        useFlashOnePass('auto');
      }
    }
    const cpu = /llvmpipe|lavapipe|swiftshader/i.test(T.currentDevice().adapterName);
    if (cpu && T.subgroupsOf8()) for (const keys of [onePassKeys(23, 48), 1]) expect(T.compiledKernels().some((k) => k.name.startsWith(`flash_attn_bwd_onepass_sgv_d48_k${keys}`))).toBe(true);
  }, 300_000);

  // Scores with a spread of tens (inputs ×4: q·k·scale has std ~16 at hd 16), so a later key often
  // beats the running reference max by more than the forward's lazy-rescale threshold.
  for (const [N, hd] of [[50, 16], [65, 32]] as const) {
    it(`flash forward and backward with widely spread scores (rescaling mid-row), N ${N} hd ${hd}`, async () => {
      const nh = 2;
      const host = Float32Array.from(await T.randn([2, N, 3 * nh * hd], { seed: 9 }).data(), (v) => 4 * v);
      const g = T.randn([2, N, nh * hd], { seed: 10 });
      const run = async (impl: 'flash' | 'unfused') => {
        const qkv = T.tensor(host, [2, N, 3 * nh * hd]);
        qkv.requiresGrad = true;
        const y = T.scope(() => {
          const o = T.attention(qkv, nh, { impl });
          o.backward(g);
          return o;
        });
        return { y: await y.data(), dx: await qkv.grad!.data() };
      };
      const u = await run('unfused');
      const ref = R.attention({ data: Float64Array.from(host), shape: [2, N, 3 * nh * hd] }, nh);
      const { expectClose } = await import('../../helpers.js');
      // The row kernels' lazily rescaled forward, and (CPU adapters) the one-pass forward's exact max.
      for (const forwardOnePass of [false, 'auto'] as const) {
        useFlashForwardOnePass(forwardOnePass);
        const f = await run('flash').finally(() => useFlashForwardOnePass('auto'));
        // Outputs are convex combinations of V rows of size ~4–12: 5e-4 absolute is ~1e-5 relative.
        expectClose(f.y, Float32Array.from(ref.data), TOL, `forward against the reference (one-pass forward ${forwardOnePass})`);
        expectClose(f.dx, u.dx, TOL, `backward against the unfused path (one-pass forward ${forwardOnePass})`);
      }
      // Cold shader cache: 72 s at hd 32 on the Zen 5 host (the d32 one-pass backward with 9 keys a
      // lane alone takes ~60 s to compile).
    }, 300_000);
  }

  it('dropout on the probabilities is the identity outside training and changes values inside', async () => {
    const qkv = T.randn([2, 9, 24], { seed: 2 });
    const a = await T.attention(qkv, 2).data();
    const b = await T.attention(qkv, 2, { dropout: 0.5, training: false }).data();
    const c = await T.attention(qkv, 2, { dropout: 0.5, training: true, seed: 1 }).data();
    expect([...b]).toEqual([...a]);
    expect([...c]).not.toEqual([...a]);
  });

  it("'auto' takes flash wherever the adapter has subgroups of 8, and unfused past head dim 16 on a CPU adapter without them (measured there: the one-row flash kernels are slower)", async () => {
    const cpu = /llvmpipe|lavapipe|swiftshader/i.test(T.currentDevice().adapterName);
    const subgroups = T.subgroupsOf8();
    const forwardDispatches = (hd: number, grad: boolean) =>
      T.scope(() => {
        const qkv = T.randn([2, 9, 3 * 2 * hd], { seed: 1 });
        qkv.requiresGrad = grad;
        const before = T.rt().stats.dispatches;
        T.attention(qkv, 2);
        return T.rt().stats.dispatches - before; // flash: 1; unfused: matmul, softmax, matmul
      });
    const flash = 1;
    const unfused = 3;
    for (const grad of [false, true]) {
      expect(forwardDispatches(64, grad)).toBe(!cpu || subgroups ? flash : unfused);
      expect(forwardDispatches(16, grad)).toBe(flash);
    }
    await T.sync();
  });

  it('refuses a qkv width that does not split into heads', () => {
    expect(() => T.attention(T.zeros([1, 4, 10]), 2)).toThrow(/\(B, N, 3·D\) with D divisible by 2 heads/);
  });
});
