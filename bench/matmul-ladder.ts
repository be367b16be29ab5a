// The matmul ladder (after llm.c's dev/cuda): every version of the kernel, each checked against
// a CPU reference and timed at the same shapes. The library uses v8 or v9 (subgroups of 8 or
// more; v6 where B is too tall for a texture), else v4 (aligned shapes) or v3 (any shape) from
// kernels/matmul.ts; v1, v2 and v5 live only here, to read and to race.
//
// Napkin math for lavapipe (2 cores × 8 AVX2 lanes × 2 FMA units × 2 flops × ~3.7 GHz ≈ 237
// GFLOP/s): a workgroup runs on one CPU thread, its invocations across the 8 SIMD lanes, so
// per-lane loads with different addresses are gathers, and workgroup memory plus barriers
// serialise the lanes. Register tiles are per lane, and each register holds one value per lane:
// 16 ymm registers fit ~16 scalars per invocation before spilling.
import * as T from '../engine/index.js';
import { fieldList, grid1d, kernel, type KernelSource, MAIN_1D, memo, putList, stridedOffsets } from '../kernels/common.js';
import { FAST_TM, FAST_TN, FAST_WG, MATMUL_BATCH_RANK, MATMUL_TM, MATMUL_TN, MATMUL_UNIFORMS, matmulFastKernel, matmulKernel, matmulSubgroupKernel, SUBGROUP_LANES, SUBGROUP_TN } from '../kernels/matmul.js';
import { launchMatmul, useMatmulKernel } from '../engine/ops/matmul.js';
import { runSuite, type SuiteRow } from './harness.js';

// v1: one output per invocation, K-loop of scalar loads. 2 loads per FMA: bandwidth-bound.
export const naiveKernel = memo((): KernelSource =>
  kernel({
    name: 'matmul_v1_naive',
    uniforms: [{ name: 'M', type: 'u32' }, { name: 'N', type: 'u32' }, { name: 'K', type: 'u32' }],
    buffers: [{ name: 'A', access: 'read', type: 'f32' }, { name: 'B', access: 'read', type: 'f32' }, { name: 'C', access: 'read_write', type: 'f32' }],
    workgroupSize: 64,
    body: `${MAIN_1D} {
  let t = global_index(wid, lid, nwg);
  if (t >= P.M * P.N) { return; }
  let m = t / P.N;
  let n = t % P.N;
  var acc = 0.0;
  for (var k = 0u; k < P.K; k++) { acc += A[m * P.K + k] * B[k * P.N + n]; }
  C[t] = acc;
}`,
  }));

// v2: 16×16 tiles staged through workgroup memory (the classic GPU kernel). On a GPU each tile
// element is loaded once per workgroup instead of 16 times; on lavapipe the two barriers per
// k-tile serialise the 256 invocations of the one CPU thread that runs the workgroup.
export const tiledKernel = memo((): KernelSource =>
  kernel({
    name: 'matmul_v2_tiled16',
    uniforms: [{ name: 'M', type: 'u32' }, { name: 'N', type: 'u32' }, { name: 'K', type: 'u32' }],
    buffers: [{ name: 'A', access: 'read', type: 'f32' }, { name: 'B', access: 'read', type: 'f32' }, { name: 'C', access: 'read_write', type: 'f32' }],
    workgroupSize: 256,
    body: `var<workgroup> As: array<f32, 256>;
var<workgroup> Bs: array<f32, 256>;
${MAIN_1D} {
  let tiles_n = (P.N + 15u) / 16u;
  let w = wid.y * nwg.x + wid.x;
  let m0 = (w / tiles_n) * 16u;
  let n0 = (w % tiles_n) * 16u;
  let r = lid.x / 16u;
  let c = lid.x % 16u;
  var acc = 0.0;
  for (var k0 = 0u; k0 < P.K; k0 += 16u) {
    let am = m0 + r; let ak = k0 + c;
    As[lid.x] = select(0.0, A[min(am, P.M - 1u) * P.K + min(ak, P.K - 1u)], am < P.M && ak < P.K);
    let bk = k0 + r; let bn = n0 + c;
    Bs[lid.x] = select(0.0, B[min(bk, P.K - 1u) * P.N + min(bn, P.N - 1u)], bk < P.K && bn < P.N);
    workgroupBarrier();
    for (var kk = 0u; kk < 16u; kk++) { acc += As[r * 16u + kk] * Bs[kk * 16u + c]; }
    workgroupBarrier();
  }
  if (m0 + r < P.M && n0 + c < P.N) { C[(m0 + r) * P.N + n0 + c] = acc; }
}`,
  }));

// v5: lane-interleaved (measured no faster than v4 on lavapipe; kept to read and to race).
// A workgroup of 8 invocations (one SIMD row on lavapipe) owns TM rows of C and 8·TN columns;
// lane l computes columns n0 + l + 8j. Row indices come from the workgroup id only, so A's
// addresses are the same in every lane, and for row-major B the 8 lanes of column group j read
// 8 consecutive floats. The hope was a scalar load plus broadcast for A and a vector load for
// B; Mesa 25.0's lavapipe does neither (every storage load is a per-lane loop, ~25–35 cycles
// per component for 8 lanes), which is what v6 answers: each A value is loaded by one lane
// and broadcast to the others through subgroup operations. (Why: gallivm takes its scalar
// path only for addresses NIR proves "always uniform" — built from constants alone; an address
// from the loop counter, a uniform-buffer field or the workgroup id never qualifies, and
// subgroupBroadcastFirst on the tile index does not change that. A kernel with lanes over rows
// and every B address workgroup-uniform measured 2–3.5 GFLOP/s at 6400×576×192.)
const LANES = 8;

export const matmulLanesKernel = memo(function matmulLanesKernel(transA: boolean, transB: boolean, bias: boolean, TM: number = 4, TN: number = 4): KernelSource {
  const range = (n: number) => [...Array(n).keys()];
  const aAt = (i: number) => (transA ? `A[ao + k * P.lda + min(m0 + ${i}u, mlast)]` : `A[ao + min(m0 + ${i}u, mlast) * P.lda + k]`);
  const bAt = (j: number) => (transB ? `B[bo + n${j} * P.ldb + k]` : `B[bo + k * P.ldb + n${j}]`);
  return kernel({
    name: `matmul_lanes_${transA ? 't' : 'n'}${transB ? 't' : 'n'}${bias ? '_bias' : ''}_${TM}x${TN}`,
    uniforms: MATMUL_UNIFORMS,
    buffers: [
      { name: 'A', access: 'read', type: 'f32' },
      { name: 'B', access: 'read', type: 'f32' },
      ...(bias ? [{ name: 'bias', access: 'read' as const, type: 'f32' as const }] : []),
      { name: 'C', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: LANES,
    body: `${MAIN_1D} {
  // Workgroup-uniform: which batch, row block and column block.
  let w = wid.y * nwg.x + wid.x;
  let tiles_n = (P.N + ${LANES * TN}u - 1u) / ${LANES * TN}u;
  let tiles_m = (P.M + ${TM}u - 1u) / ${TM}u;
  let per_batch = tiles_m * tiles_n;
  if (w >= per_batch * P.batch) { return; }
  let bi = w / per_batch;
  let r = w % per_batch;
  let m0 = (r / tiles_n) * ${TM}u;
  let nb = (r % tiles_n) * ${LANES * TN}u + lid.x;
  let mlast = P.M - 1u;
  ${stridedOffsets(MATMUL_BATCH_RANK, 'bi', 'bshape', ['ast', 'bst', 'cst'], ['ao_', 'bo_', 'co_'])}
  let ao = P.a_off + ao_;
  let bo = P.b_off + bo_;
  ${range(TN).map((j) => `let n${j} = min(nb + ${j * LANES}u, P.N - 1u);`).join('\n  ')}
  ${range(TM).flatMap((i) => range(TN).map((j) => `var c${i}_${j} = 0.0;`)).join('\n  ')}
  for (var k = 0u; k < P.K; k++) {
    ${range(TM).map((i) => `let a${i} = ${aAt(i)};`).join('\n    ')}
    ${range(TN).map((j) => `let b${j} = ${bAt(j)};`).join('\n    ')}
    ${range(TM).flatMap((i) => range(TN).map((j) => `c${i}_${j} = fma(a${i}, b${j}, c${i}_${j});`)).join('\n    ')}
  }
  let co = P.c_off + co_;
  ${range(TM).map((i) => `if (m0 + ${i}u < P.M) {
    let row = co + (m0 + ${i}u) * P.ldc;
    ${range(TN).map((j) => `if (nb + ${j * LANES}u < P.N) { C[row + nb + ${j * LANES}u] = c${i}_${j}${bias ? ` + bias[nb + ${j * LANES}u]` : ''}; }`).join('\n    ')}
  }`).join('\n  ')}
}`,
  });
});

const LADDER_SHAPES: [number, number, number][] = [
  [2176, 192, 64],
  [1024, 1024, 1024],
  [6400, 576, 192],
];

interface Rung {
  name: string;
  source?: () => KernelSource;
  grid?: (M: number, N: number) => [number, number, number];
  /** Rungs that are more than one dispatch record themselves. */
  launch?: (a: T.Tensor, b: T.Tensor, c: T.Tensor, M: number, N: number, K: number) => void;
}

// v7: v6 with B read through textureLoad from an rgba32f texture (one extra dispatch or copy,
// timed with the matmul): on lavapipe a texel fetch is a vector gather, where a storage load is a
// per-lane loop. The ladder's shapes have row-major B of 64-multiple width, so B is copied.
function textureRung(a: T.Tensor, b: T.Tensor, c: T.Tensor, M: number, N: number, K: number): void {
  const width = N / 4;
  const texture = T.rt().scratchTexture(width, K, 1);
  T.rt().copyToTexture(b.buffer, 0, 4 * N, texture, width, K, 1);
  const uniforms: Record<string, number> = { M, N, K, batch: 1, a_off: 0, b_off: 0, c_off: 0, lda: K, ldb: N, ldc: N };
  putList(uniforms, 'bshape', [1, 1, 1, 1]);
  for (const s of ['ast', 'bst', 'cst']) putList(uniforms, s, [0, 0, 0, 0]);
  const source = matmulSubgroupKernel(false, false, false, true, false, 16, false, true, false, true);
  T.rt().run({ source, uniforms, buffers: [a.buffer, c.buffer], textures: [texture], grid: grid1d(Math.ceil(M / 16) * Math.ceil(N / SUBGROUP_TN) * SUBGROUP_LANES, SUBGROUP_LANES), label: 'v7' });
}

// v8 (the library): v7 with each accumulator's 4 FMAs of a k-step taken together (the
// accumulators live in memory, so this loads and stores each once per step instead of once per
// FMA), 8 columns a lane (16×64 a subgroup: each broadcast A element feeds two FMAs) and vec4
// stores. v9: v8 at 24 rows (24×64), a form `tuneMatmulShapes` races for tall matrices.
function libraryRung(a: T.Tensor, b: T.Tensor, c: T.Tensor, M: number, N: number, K: number, rows: 16 | 24 = 16): void {
  useMatmulKernel('texture', { rows });
  try {
    launchMatmul({
      a: { t: a, offset: 0, ld: K, batchStrides: [] }, b: { t: b, offset: 0, ld: N, batchStrides: [] }, c: { t: c, offset: 0, ld: N, batchStrides: [] },
      M, N, K, batchShape: [], transA: false, transB: false, label: 'v8',
    });
  } finally {
    useMatmulKernel('auto');
  }
}

export async function ladderSuite(): Promise<SuiteRow[][]> {
  await T.init();
  const rungs: Rung[] = [
    { name: 'v1 naive', source: naiveKernel, grid: (M, N) => grid1d(M * N, 64) },
    { name: 'v2 tiled 16x16 workgroup memory', source: tiledKernel, grid: (M, N) => grid1d(Math.ceil(M / 16) * Math.ceil(N / 16) * 256, 256) },
    { name: 'v3 register 4x4 (library, any shape)', source: () => matmulKernel(false, false, false), grid: (M, N) => grid1d(Math.ceil(M / MATMUL_TM) * Math.ceil(N / MATMUL_TN), 64) },
    { name: 'v4 vec4 4x8, groups of 8 (library)', source: () => matmulFastKernel(false, false, false), grid: (M, N) => grid1d(Math.ceil(M / FAST_TM) * Math.ceil(N / FAST_TN), FAST_WG) },
    { name: 'v5 lane-interleaved 4x4', source: () => matmulLanesKernel(false, false, false, 4, 4), grid: (M, N) => grid1d(Math.ceil(M / 4) * Math.ceil(N / 32) * LANES, LANES) },
    ...(T.subgroupsOf8()
      ? [
          ...[16, 24].map((TM) => ({ name: `v6 subgroup broadcast ${TM}x32`, source: () => matmulSubgroupKernel(false, false, false, true, true, TM, false, false, false, true), grid: (M: number, N: number) => grid1d(Math.ceil(M / TM) * Math.ceil(N / SUBGROUP_TN) * SUBGROUP_LANES, SUBGROUP_LANES) })),
          { name: 'v7 subgroup broadcast 16x32, B from a texture', launch: textureRung },
          { name: 'v8 v7 with row-by-row FMAs, 16x64 tiles (library)', launch: libraryRung },
          { name: 'v9 v8 at 24x64 tiles (library, tuned per shape)', launch: (a: T.Tensor, b: T.Tensor, c: T.Tensor, M: number, N: number, K: number) => libraryRung(a, b, c, M, N, K, 24) },
        ]
      : []),
  ];
  const all: SuiteRow[][] = [];
  for (const [M, N, K] of LADDER_SHAPES) {
    const ha = Float32Array.from({ length: M * K }, (_, i) => ((i * 7) % 13) / 13 - 0.5);
    const hb = Float32Array.from({ length: K * N }, (_, i) => ((i * 5) % 11) / 11 - 0.5);
    const a = T.keep(T.tensor(ha, [M, K]));
    const b = T.keep(T.tensor(hb, [K, N]));
    const c = T.keep(T.zeros([M, N]));
    const cases = [];
    for (const r of rungs) {
      const uniforms: Record<string, number> = { M, N, K, batch: 1, a_off: 0, b_off: 0, c_off: 0, lda: K, ldb: N, ldc: N };
      putList(uniforms, 'bshape', [1, 1, 1, 1]);
      for (const s of ['ast', 'bst', 'cst']) putList(uniforms, s, [0, 0, 0, 0]);
      const launch = r.launch ? () => r.launch!(a, b, c, M, N, K) : () => T.rt().run({ source: r.source!(), uniforms, buffers: [a.buffer, b.buffer, c.buffer], grid: r.grid!(M, N), label: r.name });
      // Check against the CPU at a few entries before timing.
      launch();
      const got = await c.data();
      for (const [m, n] of [[0, 0], [M - 1, N - 1], [M >> 1, (N * 3) >> 2]] as [number, number][]) {
        let s = 0;
        for (let k = 0; k < K; k++) s += ha[m * K + k]! * hb[k * N + n]!;
        if (Math.abs(s - got[m * N + n]!) > 1e-3 * Math.sqrt(K)) throw new Error(`${r.name} ${M}x${N}x${K}: C[${m},${n}] = ${got[m * N + n]}, expected ${s}`);
      }
      cases.push({ name: r.name, work: 2 * M * N * K, run: async () => (launch(), await T.sync()) });
    }
    all.push(await runSuite(`matmul-ladder-${M}x${N}x${K}`, cases, {
      baseline: 'v1 naive',
      rateUnit: 'GFLOP/s',
      rateScale: 1e-9,
      note: `The matmul ladder at ${M}x${N}x${K} (row-major A and B, no readback: submit + wait per repeat). Ceiling ~237 GFLOP/s.`,
    }));
    a.dispose();
    b.dispose();
    c.dispose();
  }
  return all;
}
