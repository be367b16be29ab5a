// Row reductions over a contiguous [M, R] view (the op permutes reduced axes last first).
// One row per invocation: on lavapipe a workgroup runs on one CPU thread, and a serial loop per
// invocation beats a shared-memory tree (measured ~5-10x for softmax rows).
import { memo, kernel, type KernelSource, MAIN_1D } from './common.js';

export const REDUCE_WG = 64;
export type RowReduction = 'sum' | 'max' | 'var';

const ROW_UNIFORMS = [
  { name: 'rows', type: 'u32' as const },
  { name: 'cols', type: 'u32' as const },
  { name: 'scale', type: 'f32' as const },
  { name: 'correction', type: 'f32' as const },
];

/** sum: out = scale * Σ x (mean uses scale = 1/R); max: out = max x, idx = argmax (first);
 * var: out = Σ (x - mean)^2 / (R - correction), two-pass within the row for accuracy. */
export const rowReduceKernel = memo(function rowReduceKernel(kind: RowReduction): KernelSource {
  const buffers = [
    { name: 'x', access: 'read' as const, type: 'f32' as const },
    { name: 'out', access: 'read_write' as const, type: 'f32' as const },
    ...(kind === 'max' ? [{ name: 'idx', access: 'read_write' as const, type: 'i32' as const }] : []),
  ];
  const bodies: Record<RowReduction, string> = {
    sum: `var acc = 0.0;
  for (var r = 0u; r < P.cols; r++) { acc += x[base + r]; }
  out[row] = acc * P.scale;`,
    max: `var best = x[base];
  var at = 0u;
  for (var r = 1u; r < P.cols; r++) {
    let v = x[base + r];
    if (v > best) { best = v; at = r; }
  }
  out[row] = best;
  idx[row] = i32(at);`,
    var: `var s = 0.0;
  for (var r = 0u; r < P.cols; r++) { s += x[base + r]; }
  let mean = s / f32(P.cols);
  var ss = 0.0;
  for (var r = 0u; r < P.cols; r++) { let d = x[base + r] - mean; ss += d * d; }
  out[row] = ss / (f32(P.cols) - P.correction);`,
  };
  return kernel({
    name: `reduce_${kind}`,
    uniforms: ROW_UNIFORMS,
    buffers,
    workgroupSize: REDUCE_WG,
    body: `${MAIN_1D} {
  let row = global_index(wid, lid, nwg);
  if (row >= P.rows) { return; }
  let base = row * P.cols;
  ${bodies[kind]}
}`,
  });
});

/** Backward of max over rows: the gradient goes to the argmax position only (as PyTorch). */
export const argmaxScatterKernel = memo(function argmaxScatterKernel(): KernelSource {
  return kernel({
    name: 'reduce_max_grad',
    uniforms: [
      { name: 'n', type: 'u32' },
      { name: 'cols', type: 'u32' },
    ],
    buffers: [
      { name: 'g', access: 'read', type: 'f32' },
      { name: 'idx', access: 'read', type: 'i32' },
      { name: 'out', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: REDUCE_WG,
    body: `${MAIN_1D} {
  let i = global_index(wid, lid, nwg);
  if (i >= P.n) { return; }
  let row = i / P.cols;
  let col = i % P.cols;
  out[i] = select(0.0, g[row], i32(col) == idx[row]);
}`,
  });
});

/** Sum over the leading axis of a contiguous [R, C] view, one column per invocation (the bias
 * gradient of a linear layer): consecutive invocations read consecutive addresses, and no
 * permute copy is needed as it would be for the row kernel. */
export const colSumKernel = memo(function colSumKernel(): KernelSource {
  return kernel({
    name: 'reduce_sum_cols',
    uniforms: [
      { name: 'rows', type: 'u32' },
      { name: 'cols', type: 'u32' },
      { name: 'scale', type: 'f32' },
    ],
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'out', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: REDUCE_WG,
    body: `${MAIN_1D} {
  let c = global_index(wid, lid, nwg);
  if (c >= P.cols) { return; }
  var acc = 0.0;
  for (var r = 0u; r < P.rows; r++) { acc += x[r * P.cols + c]; }
  out[c] = acc * P.scale;
}`,
  });
});
