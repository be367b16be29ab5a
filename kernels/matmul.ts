// Batched matmul C[b] = op(A[b]) · op(B[b]), op = optional transpose (baked into the source).
// Each invocation computes a TM x TN block of C in registers, with no workgroup memory: on
// lavapipe one workgroup runs on one CPU thread and barriers cost more than they save (see
// "What is measured about the machines" in DESIGN.md). Edge blocks clamp their loads and skip
// out-of-range stores, so any M, N, K works.
import { memo, fieldList, kernel, type KernelSource, MAIN_1D, stridedOffsets } from './common.js';

export const MATMUL_WG = 64;
export const MATMUL_TM = 4;
export const MATMUL_TN = 4;
/** Batch dimensions the kernel indexes (more are folded by the op when contiguous). */
export const MATMUL_BATCH_RANK = 4;

export const matmulKernel = memo(function matmulKernel(transA: boolean, transB: boolean): KernelSource {
  const aAt = transA ? 'ao + k * P.M + m' : 'ao + m * P.K + k';
  const bAt = transB ? 'bo + n * P.K + k' : 'bo + k * P.N + n';
  return kernel({
    name: `matmul_${transA ? 't' : 'n'}${transB ? 't' : 'n'}`,
    uniforms: [
      { name: 'M', type: 'u32' },
      { name: 'N', type: 'u32' },
      { name: 'K', type: 'u32' },
      { name: 'batch', type: 'u32' },
      ...fieldList('bshape', MATMUL_BATCH_RANK),
      ...fieldList('ast', MATMUL_BATCH_RANK),
      ...fieldList('bst', MATMUL_BATCH_RANK),
    ],
    buffers: [
      { name: 'A', access: 'read', type: 'f32' },
      { name: 'B', access: 'read', type: 'f32' },
      { name: 'C', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: MATMUL_WG,
    body: `const TM = ${MATMUL_TM}u;
const TN = ${MATMUL_TN}u;
${MAIN_1D} {
  let t = global_index(wid, lid, nwg);
  let tiles_n = (P.N + TN - 1u) / TN;
  let tiles_m = (P.M + TM - 1u) / TM;
  let per_batch = tiles_m * tiles_n;
  if (t >= per_batch * P.batch) { return; }
  let bi = t / per_batch;
  let r = t % per_batch;
  let m0 = (r / tiles_n) * TM;
  let n0 = (r % tiles_n) * TN;
  ${stridedOffsets(MATMUL_BATCH_RANK, 'bi', 'bshape', ['ast', 'bst'], ['ao', 'bo'])}
  var acc: array<vec4<f32>, TM>;
  for (var k = 0u; k < P.K; k++) {
    var bv: vec4<f32>;
    for (var j = 0u; j < TN; j++) {
      let n = min(n0 + j, P.N - 1u);
      bv[j] = B[${bAt}];
    }
    for (var i = 0u; i < TM; i++) {
      let m = min(m0 + i, P.M - 1u);
      acc[i] += A[${aAt}] * bv;
    }
  }
  let co = bi * P.M * P.N;
  for (var i = 0u; i < TM; i++) {
    let m = m0 + i;
    if (m >= P.M) { break; }
    for (var j = 0u; j < TN; j++) {
      let n = n0 + j;
      if (n < P.N) { C[co + m * P.N + n] = acc[i][j]; }
    }
  }
}`,
  });
});
