import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../engine/index.js';
import { elementwiseKernel } from '../../kernels/elementwise.js';
import { matmulKernel } from '../../kernels/matmul.js';

beforeAll(async () => {
  await T.init();
});

describe('dispatch', () => {
  it('pipelines and bind groups are cached: a repeated op stream builds nothing new', async () => {
    const a = T.ones([64, 64]);
    const b = T.ones([64, 64]);
    const run = () => T.scope(() => T.sum(T.gelu(T.matmul(a, b))));
    const warm = run();
    await warm.data();
    warm.dispose();
    const s0 = { ...T.rt().stats };
    for (let i = 0; i < 5; i++) {
      const r = run();
      await r.data();
      r.dispose();
    }
    const s1 = T.rt().stats;
    expect(s1.pipelinesCompiled).toBe(s0.pipelinesCompiled);
    expect(s1.uniformBuffersCreated).toBe(s0.uniformBuffersCreated);
    expect(s1.bindGroupsCreated).toBe(s0.bindGroupsCreated);
    expect(s1.dispatches - s0.dispatches).toBe(15);
    // One submit per readback: the dispatches of a step are batched into one encoder.
    expect(s1.submits - s0.submits).toBe(5);
  });

  it('waiting for the GPU does not busy-poll a CPU core, and setImmediate is restored after', async () => {
    // Dawn's Node binding re-queues a device tick with the global setImmediate for as long as a
    // promise of its own is pending; count those re-queues during a long wait.
    const native = globalThis.setImmediate;
    let immediates = 0;
    const counting = ((cb: () => void) => {
      immediates++;
      return native(cb);
    }) as unknown as typeof setImmediate;
    globalThis.setImmediate = counting;
    try {
      const a = T.keep(T.randn([512, 512], { seed: 3 }));
      await a.data();
      const t0 = performance.now();
      immediates = 0;
      const c = T.scope(() => {
        let x = a;
        for (let i = 0; i < 12; i++) x = T.matmul(x, a);
        return T.keep(x);
      });
      await c.data();
      const waitedMs = performance.now() - t0;
      const during = immediates;
      expect(globalThis.setImmediate).toBe(counting);
      a.dispose();
      c.dispose();
      // 12 matmuls of 512³ take well over 100 ms on any software adapter; a busy loop re-queues
      // every few microseconds (tens of thousands in that time); the quiet wait sleeps a tenth of
      // the time waited before each poll (about 40 polls in its first 10 ms), then polls once a
      // millisecond.
      if (waitedMs > 50) expect(during).toBeLessThan(waitedMs * 2 + 400);
    } finally {
      globalThis.setImmediate = native;
    }
  });

  it('every kernel prints as WGSL text and the compiled list has them', () => {
    const src = matmulKernel(false, true, false);
    expect(src.code).toContain('@compute');
    expect(src.code).toContain('struct Params');
    const names = T.compiledKernels().map((k) => k.name);
    expect(names.some((n) => n.startsWith('matmul'))).toBe(true);
    expect(elementwiseKernel('add', 'a + b', ['same', 'strided'], 2, 1).code).toContain('stb1');
  });

  it('sync surfaces WebGPU validation errors', async () => {
    const bad = { name: 'bad', uniforms: [], buffers: [], textures: [], workgroupSize: 1, code: '@compute @workgroup_size(1) fn main() { let x: f32 = not_defined; }' };
    T.rt().run({ source: bad, buffers: [], grid: [1, 1, 1], label: 'bad' });
    await expect(T.sync()).rejects.toThrow(/WebGPU error/);
  });
});
