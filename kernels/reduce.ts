// Row reductions over a contiguous [M, R] view (the op permutes reduced axes last first).
// One row per invocation: on lavapipe a workgroup runs on one CPU thread, and a serial loop per
// invocation beats a shared-memory tree (measured ~5-10x for softmax rows). Rows long enough to
// leave the machine idle that way (a whole tensor's sum is one row) go in two passes instead:
// chunks of every row reduced in parallel, then each row's partials combined (at the end).
import { type BufferDecl, memo, kernel, type KernelSource, MAIN_1D, MAIN_SUBGROUP, type UniformField } from './common.js';

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
  return perRowKernel(`reduce_${kind}`, ROW_UNIFORMS, buffers, 'let base = row * P.cols;', bodies[kind]);
});

/** A kernel of one invocation per row (`P.rows` of them): `start` then `body` with `row` set. */
function perRowKernel(name: string, uniforms: UniformField[], buffers: BufferDecl[], start: string, body: string): KernelSource {
  return kernel({
    name,
    uniforms,
    buffers,
    workgroupSize: REDUCE_WG,
    body: `${MAIN_1D} {
  let row = global_index(wid, lid, nwg);
  if (row >= P.rows) { return; }
  ${start}
  ${body}
}`,
  });
}

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

// ---- long rows in two passes ---------------------------------------------------------------------
// Pass one reduces every chunk of REDUCE_CHUNK elements of every row to a partial, pass two
// combines each row's partials in order. With subgroups of 8 (`subgroup`), a workgroup is one
// subgroup per (row, chunk): lane l reads elements l, l + 8, … of the chunk (vec4s l, l + 8, …
// where `vec`: rows a multiple of 4 long), and the lanes' results meet by butterfly exchanges
// (subgroupShuffleXor 4, 2, 1; gallivm builds subgroupAdd as a loop over the lanes). Without, an
// invocation reduces a chunk alone. Partials: sum Σx; max (value, first index); var the chunk's
// (mean, Σ(x − mean)²), merged as Chan et al. do, so no row is summed in one long serial chain.
// A maximum takes each lane's first element, then strictly larger ones, as the one-row kernel
// does; with NaN in a row the two may differ (which NaN-free stretch wins depends on the lanes).
export const REDUCE_CHUNK = 2048;

const SPLIT_UNIFORMS = [
  { name: 'rows', type: 'u32' as const },
  { name: 'cols', type: 'u32' as const },
  { name: 'chunks', type: 'u32' as const },
  { name: 'scale', type: 'f32' as const },
  { name: 'correction', type: 'f32' as const },
];

/** Pass one: `part` holds 2 floats per (row, chunk) (the sum in the first for `sum`), `pidx` the
 * max's index. Grid: rows × chunks workgroups of 8 (subgroup) or rows × chunks invocations. */
export const rowPartialKernel = memo(function rowPartialKernel(kind: RowReduction, subgroup: boolean, vec: boolean): KernelSource {
  const buffers = [
    { name: vec ? 'x4' : 'x', access: 'read' as const, type: vec ? ('vec4<f32>' as const) : ('f32' as const) },
    { name: 'part', access: 'read_write' as const, type: 'f32' as const },
    ...(kind === 'max' ? [{ name: 'pidx', access: 'read_write' as const, type: 'i32' as const }] : []),
  ];
  const lanes = subgroup ? 8 : 1;
  // Elements this lane visits: e = start + step·k, as vec4s where `vec`.
  const width = vec ? 4 : 1;
  const comps = vec ? ['x', 'y', 'z', 'w'] : [''];
  const at = (c: number) => (vec ? `v.${comps[c]}` : 'v');
  const load = vec ? 'let v = x4[(base + e) / 4u];' : 'let v = x[base + e];';
  const loop = (inner: string) => `for (var e = c0 + ${lanes === 1 ? '0u' : `lane * ${width}u`}; e < c1; e += ${lanes * width}u) {
    ${load}
    ${inner}
  }`;
  const xor = (v: string, m: number) => `subgroupShuffleXor(${v}, ${m}u)`;
  const allSum = (v: string) => (subgroup ? [4, 2, 1].map((m) => `${v} += ${xor(v, m)};`).join(' ') : '');
  const first = subgroup ? 'if (lane == 0u) ' : '';
  const bodies: Record<RowReduction, string> = {
    sum: `var acc = 0.0;
  ${loop(range(width).map((c) => `acc += ${at(c)};`).join(' '))}
  ${allSum('acc')}
  ${first}{ part[2u * t] = acc; }`,
    max: `var best = 0.0;
  var bi = -1;
  ${loop(range(width).map((c) => `if (bi < 0 || ${at(c)} > best) { best = ${at(c)}; bi = i32(e + ${c}u); }`).join('\n    '))}
  ${subgroup ? [4, 2, 1].map((m) => `{
    let ov = ${xor('best', m)};
    let oi = ${xor('bi', m)};
    let take = oi >= 0 && (bi < 0 || ov > best || (ov == best && oi < bi));
    best = select(best, ov, take);
    bi = select(bi, oi, take);
  }`).join('\n  ') : ''}
  ${first}{ part[2u * t] = best; pidx[t] = bi; }`,
    var: `var acc = 0.0;
  ${loop(range(width).map((c) => `acc += ${at(c)};`).join(' '))}
  ${allSum('acc')}
  let n = f32(c1 - c0);
  let mean = acc / n;
  var ss = 0.0;
  ${loop(range(width).map((c) => `{ let d = ${at(c)} - mean; ss += d * d; }`).join(' '))}
  ${allSum('ss')}
  ${first}{ part[2u * t] = mean; part[2u * t + 1u] = ss; }`,
  };
  return kernel({
    name: `reduce_${kind}_partial${subgroup ? '_sg' : ''}${vec ? '_vec4' : ''}`,
    header: subgroup ? 'enable subgroups;' : undefined,
    uniforms: SPLIT_UNIFORMS,
    buffers,
    workgroupSize: subgroup ? 8 : REDUCE_WG,
    body: `${subgroup ? MAIN_SUBGROUP : MAIN_1D} {
  let t = ${subgroup ? 'wid.y * nwg.x + wid.x' : 'global_index(wid, lid, nwg)'};
  if (t >= P.rows * P.chunks) { return; }
  let row = t / P.chunks;
  let chunk = t % P.chunks;
  let base = row * P.cols;
  let c0 = chunk * ${REDUCE_CHUNK}u;
  let c1 = min(c0 + ${REDUCE_CHUNK}u, P.cols);
  ${bodies[kind]}
}`,
  });
});

/** Pass two: one invocation per row combines its chunks' partials in order. */
export const rowCombineKernel = memo(function rowCombineKernel(kind: RowReduction): KernelSource {
  const buffers = [
    { name: 'part', access: 'read' as const, type: 'f32' as const },
    ...(kind === 'max' ? [{ name: 'pidx', access: 'read' as const, type: 'i32' as const }] : []),
    { name: 'out', access: 'read_write' as const, type: 'f32' as const },
    ...(kind === 'max' ? [{ name: 'idx', access: 'read_write' as const, type: 'i32' as const }] : []),
  ];
  const bodies: Record<RowReduction, string> = {
    sum: `var acc = 0.0;
  for (var c = 0u; c < P.chunks; c++) { acc += part[2u * (first + c)]; }
  out[row] = acc * P.scale;`,
    max: `var best = part[2u * first];
  var bi = pidx[first];
  for (var c = 1u; c < P.chunks; c++) {
    let v = part[2u * (first + c)];
    let i = pidx[first + c];
    if (i >= 0 && (bi < 0 || v > best)) { best = v; bi = i; }
  }
  out[row] = best;
  idx[row] = max(bi, 0);`,
    var: `var n = 0.0;
  var mean = 0.0;
  var m2 = 0.0;
  for (var c = 0u; c < P.chunks; c++) {
    let nb = f32(min(${REDUCE_CHUNK}u, P.cols - c * ${REDUCE_CHUNK}u));
    let mb = part[2u * (first + c)];
    let n2 = n + nb;
    let d = mb - mean;
    mean += d * nb / n2;
    m2 += part[2u * (first + c) + 1u] + d * d * n * nb / n2;
    n = n2;
  }
  out[row] = m2 / (f32(P.cols) - P.correction);`,
  };
  return perRowKernel(`reduce_${kind}_combine`, SPLIT_UNIFORMS, buffers, 'let first = row * P.chunks;', bodies[kind]);
});

const range = (n: number) => [...Array(n).keys()];
