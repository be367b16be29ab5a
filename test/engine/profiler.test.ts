import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../engine/index.js';

beforeAll(async () => {
  await T.init();
});

describe('profiler', () => {
  it('records every dispatch with GPU times that fit in the wall time of the region', async () => {
    const a = T.randn([256, 64], { seed: 1 });
    const b = T.randn([64, 96], { seed: 2 });
    const warm = T.matmul(a, b);
    await warm.data();
    const before = T.liveBuffers();
    const t0 = performance.now();
    // The texture path, whatever `tuneMatmul` chose earlier in this process.
    if (T.subgroupsOf8()) T.useMatmulKernel('texture');
    T.startProfile();
    const out = T.scope(() => T.sum(T.gelu(T.matmul(a, b))));
    await out.data();
    const { records, profiler } = await T.stopProfile();
    T.useMatmulKernel('auto');
    const wall = performance.now() - t0;
    out.dispose();
    expect(profiler.timestamps).toBe(T.currentDevice().features.has('timestamp-query'));
    // With subgroups, B (96 wide, not a multiple of 64) is first repacked into a texture.
    // A CPU adapter's contiguous elementwise kernels take 4 vec4s a lane (kernels/elementwise.ts).
    const gelu = T.cpuAdapter() ? 'gelu_x4' : 'gelu';
    expect(records.map((r) => r.kernel)).toEqual(T.subgroupsOf8() ? ['matmul_pack_b_n_v', 'matmul_sg_nx_av_cv_16x8', gelu, 'reduce_sum'] : ['matmul_fast_nn', gelu, 'reduce_sum']);
    const mm = records[T.subgroupsOf8() ? 1 : 0]!;
    expect(mm.flops).toBe(2 * 256 * 96 * 64);
    expect(mm.label).toBe('matmul 256x96x64 nn');
    if (profiler.timestamps) {
      let last = -1;
      for (const r of records) {
        expect(r.ns).toBeGreaterThanOrEqual(0);
        expect(r.gpuStart).toBeGreaterThanOrEqual(last);
        last = r.gpuStart;
      }
      const gpu = records.reduce((s, r) => s + r.ns, 0) / 1e6;
      // Kernels run inside the region: their sum cannot exceed its wall time (1 ms of slack
      // for timestamp quantisation).
      expect(gpu).toBeLessThanOrEqual(wall + 1);
      expect(gpu).toBeGreaterThan(0);
    }
    expect(T.liveBuffers()).toBe(before);
  });

  it('writes a Chrome trace with GPU and CPU tracks', async () => {
    T.startProfile();
    const y = T.scope(() => T.softmax(T.randn([64, 33], { seed: 3 })));
    await y.data();
    const { records, profiler } = await T.stopProfile();
    const trace = JSON.parse(JSON.stringify(T.chromeTrace(records, profiler.flushes))) as { traceEvents: { ph: string; name: string; tid: number; dur?: number; args?: Record<string, unknown> }[] };
    const kernels = trace.traceEvents.filter((e) => e.ph === 'X' && e.tid === 1);
    expect(kernels.map((e) => e.name)).toEqual(['random_normal [64, 33]', 'softmax 64x33']);
    expect(kernels.every((e) => typeof e.dur === 'number' && e.args && 'kernel' in e.args)).toBe(true);
    expect(trace.traceEvents.some((e) => e.tid === 2 && e.name === 'submit')).toBe(true);
  });

  it('costs nothing when off: no query sets, one compute pass for many dispatches', async () => {
    const sets = T.Profiler.querySetsCreated;
    const y = T.scope(() => {
      let h = T.ones([100]);
      for (let i = 0; i < 20; i++) h = T.addScalar(h, 1);
      return h;
    });
    expect((await y.data())[0]).toBe(21);
    expect(T.Profiler.querySetsCreated).toBe(sets);
    expect(T.rt().profiler).toBeNull();
  });
});
