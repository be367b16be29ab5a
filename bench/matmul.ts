// Matmul: tessera vs TensorFlow.js WebGPU and jax-js (webgpu, wasm) on the same adapter, and a
// plain-TypeScript CPU matmul as the floor. Each shape is timed twice: one product read back whole
// each repeat (readback included), and ten products back to back with only the last read back.
import * as T from '../engine/index.js';
import { useMatmulKernel } from '../engine/ops/matmul.js';
import { runInterleaved, runSuite, type BenchCase, type SuiteRow } from './harness.js';
import { loadJax, loadTf } from './peers/env.js';

/** lavapipe's f32 FMA lanes on 2 cores at ~3.7 GHz (AVX2): the machine's ceiling. */
export const LAVAPIPE_PEAK_GFLOPS = 237;

/** Products per repeat in the back-to-back suites. */
const CHAIN = 10;

export const MATMUL_SHAPES: [string, number, number, number][] = [
  ['square 256', 256, 256, 256],
  ['square 512', 512, 512, 512],
  ['square 1024', 1024, 1024, 1024],
  ['ViT qkv 6400x192·192x576', 6400, 576, 192],
  ['ViT proj 6400x192·192x192', 6400, 192, 192],
  ['ViT fc2 6400x768·768x192', 6400, 192, 768],
  ['fmnist-tiny qkv 2176x64·64x192', 2176, 192, 64],
  ['fmnist-tiny fc1 2176x64·64x128', 2176, 128, 64],
  ['fmnist-p4 qkv 6400x64·64x192', 6400, 192, 64],
];

function cpuMatmul(a: Float32Array, b: Float32Array, M: number, N: number, K: number): Float32Array {
  const c = new Float32Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let k = 0; k < K; k++) {
      const av = a[i * K + k]!;
      const row = k * N;
      for (let j = 0; j < N; j++) c[i * N + j]! += av * b[row + j]!;
    }
  }
  return c;
}

export async function matmulSuite(filter?: RegExp): Promise<SuiteRow[][]> {
  await T.init();
  // The library's choice on this machine, as `tessera train` makes it: B from a texture, from
  // storage or (B of at most 192 KiB) from uniform arrays for unbatched products; then each shape
  // tuned on its own below.
  const tuning = await T.tuneMatmul();
  const tuned = tuning
    ? ` tessera runs as tuned by \`T.tuneMatmul()\`: B from ${tuning.choice === 'subgroup' ? 'storage' : 'a texture'} (texture ${tuning.textureMs.toFixed(1)} ms, storage ${tuning.storageMs.toFixed(1)} ms a tuning round)` +
      `${tuning.smallB.uniform ? ', B of at most 192 KiB from uniform arrays' : ''} (uniform arrays ${tuning.smallB.uniformMs.toFixed(1)} ms, otherwise ${tuning.smallB.otherMs.toFixed(1)} ms a round).`
    : '';
  const FORM_NAME = { texture: 'a texture', subgroup: 'storage', uniform: 'uniform arrays' } as const;
  const tf = await loadTf();
  const { jax, devices } = await loadJax();
  const np = jax.numpy;
  const all: SuiteRow[][] = [];
  for (const [name, M, N, K] of MATMUL_SHAPES) {
    if (filter && !filter.test(name)) continue;
    const flops = 2 * M * N * K;
    const ha = Float32Array.from({ length: M * K }, (_, i) => ((i * 7) % 13) / 13 - 0.5);
    const hb = Float32Array.from({ length: K * N }, (_, i) => ((i * 5) % 11) / 11 - 0.5);
    const readInto = new Float32Array(M * N);
    const a = T.keep(T.tensor(ha, [M, K]));
    const b = T.keep(T.tensor(hb, [K, N]));
    const ta = tf.tensor2d(ha, [M, K]);
    const tb = tf.tensor2d(hb, [K, N]);
    const jit = jax.jit((x: InstanceType<typeof np.Array>, y: InstanceType<typeof np.Array>) => np.matmul(x, y));
    const jaxArrays: Record<string, [InstanceType<typeof np.Array>, InstanceType<typeof np.Array>]> = {};
    for (const dev of ['webgpu', 'wasm'].filter((d) => devices.includes(d))) {
      jaxArrays[dev] = [np.array(ha, { device: dev } as never).reshape([M, K]), np.array(hb, { device: dev } as never).reshape([K, N])];
    }
    // This shape's own form, as a program that tunes its shapes gets it: every form raced on this
    // product (`T.tuneMatmulShapes`). The forms not chosen are measured too.
    const [shapeTuning] = await T.tuneMatmulShapes([{ M, N, K, transA: false, transB: false }]);
    const formName = (f: T.MatmulForm) => `B from ${FORM_NAME[f.kind]}${f.kind === 'subgroup' ? '' : ` at ${f.rows ?? 16} rows`}`;
    const shapeNote = shapeTuning
      ? ` This shape tuned by \`T.tuneMatmulShapes\`: ${formName(shapeTuning.choice)} (${shapeTuning.forms.map((f) => `${formName(f.form)} ${f.ms.toFixed(2)} ms`).join(', ')}).`
      : '';
    const chosen = shapeTuning?.choice.kind ?? null;
    const otherForms = chosen ? (['texture', 'subgroup', 'uniform'] as const).filter((f) => f !== chosen && (f === 'subgroup' || shapeTuning!.forms.some((g) => g.form.kind === f))) : [];
    const cases: BenchCase[] = [
      {
        name: 'tessera',
        work: flops,
        run: async () => {
          const c = T.matmul(a, b);
          await c.data();
          c.dispose();
        },
      },
      {
        // The same product read into one array kept across repeats (`data(into)`): no fresh
        // M×N allocation a repeat for V8 to collect (README, "Reading a product back").
        name: 'tessera, read into a reused array',
        work: flops,
        run: async () => {
          const c = T.matmul(a, b);
          await c.data(readInto);
          c.dispose();
        },
      },
      ...otherForms.map((form) => ({
        name: `tessera, B from ${FORM_NAME[form]}`,
        work: flops,
        run: async () => {
          useMatmulKernel(form);
          const c = T.matmul(a, b);
          useMatmulKernel('auto');
          await c.data();
          c.dispose();
        },
      })),
      {
        name: 'tessera general kernel',
        work: flops,
        run: async () => {
          useMatmulKernel('general');
          const c = T.matmul(a, b);
          useMatmulKernel('auto');
          await c.data();
          c.dispose();
        },
      },
      {
        name: 'tfjs-webgpu',
        work: flops,
        run: async () => {
          const c = tf.matMul(ta, tb);
          await c.data();
          c.dispose();
        },
      },
      ...Object.entries(jaxArrays).map(([dev, [x, y]]) => ({
        name: `jax-js ${dev}`,
        work: flops,
        run: async () => {
          // jax-js: data() consumes the array (reference-counted ownership).
          await jit(x.ref, y.ref).data();
        },
      })),
    ];
    if (flops <= 2 * 512 ** 3) cases.push({ name: 'plain TypeScript CPU', work: flops, run: () => void cpuMatmul(ha, hb, M, N, K) });
    const rows = await runSuite(`matmul ${name}`.replace(/[^a-z0-9]+/gi, '-').toLowerCase(), cases, {
      baseline: 'tfjs-webgpu',
      rateUnit: 'GFLOP/s',
      rateScale: 1e-9,
      note: `C[${M}x${N}] = A[${M}x${K}] · B[${K}x${N}], full product read back each repeat. Machine ceiling: ~${LAVAPIPE_PEAK_GFLOPS} GFLOP/s (lavapipe AVX2 FMA lanes, 2 cores).${tuned}${shapeNote}`,
    });
    all.push(rows);
    // The readback cases against tfjs in interleaved rounds: the host's drift lands on both alike.
    all.push(await runInterleaved(`matmul ${name} interleaved`.replace(/[^a-z0-9]+/gi, '-').toLowerCase(), cases.filter((c) => c.name === 'tessera' || c.name === 'tessera, read into a reused array' || c.name === 'tfjs-webgpu'), {
      baseline: 'tfjs-webgpu',
      rounds: Number(process.env.BENCH_INTERLEAVED ?? 21),
      rateUnit: 'GFLOP/s',
      rateScale: 1e-9,
      note: `C[${M}x${N}] = A[${M}x${K}] · B[${K}x${N}], full product read back each repeat, as in the benny table of this shape; timed in interleaved rounds.`,
    }));
    // The same products as a model issues them: CHAIN of them recorded back to back and only the
    // last read back, so the rate is the products', with one readback spread over CHAIN.
    const chainCases: BenchCase[] = [
      {
        name: 'tessera',
        work: CHAIN * flops,
        run: async () => {
          const cs = Array.from({ length: CHAIN }, () => T.matmul(a, b));
          await cs[CHAIN - 1]!.data();
          for (const c of cs) c.dispose();
        },
      },
      {
        name: 'tfjs-webgpu',
        work: CHAIN * flops,
        run: async () => {
          const cs = Array.from({ length: CHAIN }, () => tf.matMul(ta, tb));
          await cs[CHAIN - 1]!.data();
          for (const c of cs) c.dispose();
        },
      },
      ...Object.entries(jaxArrays).map(([dev, [x, y]]) => ({
        name: `jax-js ${dev}`,
        work: CHAIN * flops,
        run: async () => {
          const cs = Array.from({ length: CHAIN }, () => jit(x.ref, y.ref));
          // blockUntilReady dispatches and awaits every pending product; data() consumes the last.
          await jax.blockUntilReady(cs);
          await cs.pop()!.data();
          for (const c of cs) c.dispose();
        },
      })),
    ];
    all.push(await runSuite(`matmul ${name} x${CHAIN}`.replace(/[^a-z0-9]+/gi, '-').toLowerCase(), chainCases, {
      baseline: 'tfjs-webgpu',
      rateUnit: 'GFLOP/s',
      rateScale: 1e-9,
      note: `${CHAIN} products C[${M}x${N}] = A[${M}x${K}] · B[${K}x${N}] recorded back to back, the last read back (its readback spread over ${CHAIN}). Machine ceiling: ~${LAVAPIPE_PEAK_GFLOPS} GFLOP/s (lavapipe AVX2 FMA lanes, 2 cores).${tuned}${shapeNote}`,
    }));
    a.dispose();
    b.dispose();
    ta.dispose();
    tb.dispose();
    for (const [x, y] of Object.values(jaxArrays)) (x.dispose(), y.dispose());
  }
  return all;
}
