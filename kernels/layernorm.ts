// LayerNorm over the last axis (Ba, Kiros, Hinton 2016), fused forward and backward.
// Forward saves mean and rstd per row; backward recomputes x̂ from them:
//   dx = rstd · (ĝ - mean(ĝ) - x̂ · mean(ĝ · x̂)),  ĝ = g · γ
//   dγ = Σ_rows g · x̂,  dβ = Σ_rows g   (partial sums over blocks of rows, then one column —
//   or vec4 of columns — per invocation adds the blocks)
import { kernel, type KernelSource, MAIN_1D, MAIN_SUBGROUP, memo } from './common.js';

export const LAYERNORM_WG = 64;
const ROWS = [
  { name: 'rows', type: 'u32' as const },
  { name: 'cols', type: 'u32' as const },
  { name: 'eps', type: 'f32' as const },
];

export const layerNormKernel = memo(function layerNormKernel(affine: boolean): KernelSource {
  return kernel({
    name: `layernorm${affine ? '' : '_plain'}`,
    uniforms: ROWS,
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      ...(affine ? [{ name: 'gamma', access: 'read' as const, type: 'f32' as const }, { name: 'beta', access: 'read' as const, type: 'f32' as const }] : []),
      { name: 'y', access: 'read_write', type: 'f32' },
      { name: 'stats', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: LAYERNORM_WG,
    body: `${MAIN_1D} {
  let row = global_index(wid, lid, nwg);
  if (row >= P.rows) { return; }
  let base = row * P.cols;
  var s = 0.0;
  for (var c = 0u; c < P.cols; c++) { s += x[base + c]; }
  let mean = s / f32(P.cols);
  var ss = 0.0;
  for (var c = 0u; c < P.cols; c++) { let d = x[base + c] - mean; ss += d * d; }
  let rstd = inverseSqrt(ss / f32(P.cols) + P.eps);
  for (var c = 0u; c < P.cols; c++) {
    let xh = (x[base + c] - mean) * rstd;
    y[base + c] = ${affine ? 'xh * gamma[c] + beta[c]' : 'xh'};
  }
  stats[2u * row] = mean;
  stats[2u * row + 1u] = rstd;
}`,
  });
});

export const layerNormGradKernel = memo(function layerNormGradKernel(affine: boolean): KernelSource {
  const gh = affine ? 'g[base + c] * gamma[c]' : 'g[base + c]';
  return kernel({
    name: `layernorm${affine ? '' : '_plain'}_grad`,
    uniforms: ROWS,
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      ...(affine ? [{ name: 'gamma', access: 'read' as const, type: 'f32' as const }] : []),
      { name: 'stats', access: 'read', type: 'f32' },
      { name: 'g', access: 'read', type: 'f32' },
      { name: 'dx', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: LAYERNORM_WG,
    body: `${MAIN_1D} {
  let row = global_index(wid, lid, nwg);
  if (row >= P.rows) { return; }
  let base = row * P.cols;
  let mean = stats[2u * row];
  let rstd = stats[2u * row + 1u];
  var m1 = 0.0;
  var m2 = 0.0;
  for (var c = 0u; c < P.cols; c++) {
    let gh = ${gh};
    m1 += gh;
    m2 += gh * (x[base + c] - mean) * rstd;
  }
  m1 = m1 / f32(P.cols);
  m2 = m2 / f32(P.cols);
  for (var c = 0u; c < P.cols; c++) {
    let xh = (x[base + c] - mean) * rstd;
    dx[base + c] = rstd * (${gh} - m1 - xh * m2);
  }
}`,
  });
});

/** dγ and dβ in two passes. One column per invocation over all rows left a [6400, 64] gradient to
 * 64 invocations — one workgroup, so one CPU thread on lavapipe (3 ms per call, 3.4% of the
 * patch-4 step). Pass 1: invocation (chunk, column) sums `chunk_rows` rows into `partial`
 * ([2, chunks, cols]: dγ terms, then dβ terms). Pass 2 (`layerNormParamGradFinishKernel`): one
 * invocation per column adds its chunks. */
/** `vec`: columns a multiple of 4, each invocation takes 4 adjacent columns through vec4 loads (a
 * quarter of the per-lane load loops lavapipe runs for scalar loads). */
export const layerNormParamGradKernel = memo(function layerNormParamGradKernel(vec = false): KernelSource {
  const T = vec ? 'vec4<f32>' : 'f32';
  const width = vec ? 'P.cols / 4u' : 'P.cols';
  return kernel({
    name: `layernorm_param_grad${vec ? '_v' : ''}`,
    uniforms: [...ROWS, { name: 'chunk_rows', type: 'u32' }, { name: 'chunks', type: 'u32' }],
    buffers: [
      { name: 'x', access: 'read', type: T },
      { name: 'stats', access: 'read', type: 'f32' },
      { name: 'g', access: 'read', type: T },
      { name: 'partial', access: 'read_write', type: T },
    ],
    workgroupSize: LAYERNORM_WG,
    body: `${MAIN_1D} {
  let w = ${width};
  let t = global_index(wid, lid, nwg);
  if (t >= w * P.chunks) { return; }
  let c = t % w;
  let chunk = t / w;
  let r0 = chunk * P.chunk_rows;
  let r1 = min(r0 + P.chunk_rows, P.rows);
  var dg = ${T}(0.0);
  var db = ${T}(0.0);
  for (var r = r0; r < r1; r++) {
    let gv = g[r * w + c];
    dg += gv * (x[r * w + c] - stats[2u * r]) * stats[2u * r + 1u];
    db += gv;
  }
  partial[t] = dg;
  partial[P.chunks * w + t] = db;
}`,
  });
});

/** `vec`: columns a multiple of 4, each invocation sums 4 adjacent columns through vec4 loads. */
export const layerNormParamGradFinishKernel = memo(function layerNormParamGradFinishKernel(vec = false): KernelSource {
  const T = vec ? 'vec4<f32>' : 'f32';
  const width = vec ? 'P.cols / 4u' : 'P.cols';
  return kernel({
    name: `layernorm_param_grad_finish${vec ? '_v' : ''}`,
    uniforms: [...ROWS, { name: 'chunk_rows', type: 'u32' }, { name: 'chunks', type: 'u32' }],
    buffers: [
      { name: 'partial', access: 'read', type: T },
      { name: 'dgamma', access: 'read_write', type: T },
      { name: 'dbeta', access: 'read_write', type: T },
    ],
    workgroupSize: LAYERNORM_WG,
    body: `${MAIN_1D} {
  let w = ${width};
  let c = global_index(wid, lid, nwg);
  if (c >= w) { return; }
  var dg = ${T}(0.0);
  var db = ${T}(0.0);
  for (var k = 0u; k < P.chunks; k++) {
    dg += partial[k * w + c];
    db += partial[(P.chunks + k) * w + c];
  }
  dgamma[c] = dg;
  dbeta[c] = db;
}`,
  });
});

// ---- subgroup variants (row width up to 256, subgroups of 8 or more) ------------------------------
// A workgroup is one subgroup of 8 lanes walking a block of rows; lane l owns columns l, l + 8, …
// of every row, keeps them and its γ, β in registers, and the row sums go over the subgroup. Per
// element that is one load and one store forward (the kernels above load x three times and γ, β
// once per element) and two loads and a store backward. The width is compiled in (one kernel
// per model width).
export const LAYERNORM_SG_ROWS = 16;

// Row sums over the 8 lanes by three butterfly exchanges, not subgroupAdd, which gallivm builds as
// a loop over the lanes (kernels/attention.ts, reduceScatter8): forward and backward kernels
// 10–26% faster at width 64 and 128, 3–4% at 192 (profiler, 6400 or 1576 rows, medians of 15
// interleaved rounds of 8, both orders). Every lane ends with the same sum, bit for bit.
const SUM8 = `fn sum8_(v: f32) -> f32 {
  var s = v;
  s += subgroupShuffleXor(s, 4u);
  s += subgroupShuffleXor(s, 2u);
  s += subgroupShuffleXor(s, 1u);
  return s;
}`;
export const LAYERNORM_SG_MAX_COLS = 256;

function laneColumns(cols: number): number[] {
  return [...Array(Math.ceil(cols / 8)).keys()];
}


/** The workgroup's rows r0..r1 and this lane's units c{j} (columns, or vec4s of columns when
 * `vec`), clamped in loads and guarded by ok{j} in stores where the lanes do not divide them. */
function rowBlockPrologue(units: number): string {
  return `let w = wid.y * nwg.x + wid.x;
  let r0 = w * ${LAYERNORM_SG_ROWS}u;
  if (r0 >= P.rows) { return; }
  let r1 = min(r0 + ${LAYERNORM_SG_ROWS}u, P.rows);
  ${laneColumns(units).map((j) => `let c${j} = min(lane + ${8 * j}u, ${units - 1}u); let ok${j} = lane + ${8 * j}u < ${units}u;`).join('\n  ')}`;
}

// Widths that are a multiple of 4 move as vec4: lane l owns vec4 columns l, l + 8, … of each row,
// so a row of 64 is two loads and two stores a lane instead of eight of each. Lavapipe runs every
// non-uniform storage access as a loop over the lanes with a per-lane exec-mask test and buffer
// lookup (kernels/attention.ts), so fewer, wider accesses pay it less often; engine/ops/layernorm.ts
// has the measured times.
function unitOps(cols: number) {
  const vec = cols % 4 === 0;
  return {
    vec,
    units: vec ? cols / 4 : cols,
    T: vec ? 'vec4<f32>' as const : 'f32' as const,
    zero: vec ? 'vec4<f32>(0.0)' : '0.0',
    sum: (v: string) => (vec ? `((${v}.x + ${v}.y) + (${v}.z + ${v}.w))` : v),
    dot: (a: string, b: string) => (vec ? `dot(${a}, ${b})` : `${a} * ${b}`),
    tag: vec ? 'sgv' : 'sg',
  };
}

export const layerNormSubgroupKernel = memo(function layerNormSubgroupKernel(affine: boolean, cols: number): KernelSource {
  const u = unitOps(cols);
  const J = laneColumns(u.units);
  return kernel({
    name: `layernorm_${u.tag}${affine ? '' : '_plain'}_${cols}`,
    header: 'enable subgroups;',
    uniforms: ROWS,
    buffers: [
      { name: 'x', access: 'read', type: u.T },
      ...(affine ? [{ name: 'gamma', access: 'read' as const, type: u.T }, { name: 'beta', access: 'read' as const, type: u.T }] : []),
      { name: 'y', access: 'read_write', type: u.T },
      { name: 'stats', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: 8,
    body: `${SUM8}
${MAIN_SUBGROUP} {
  ${rowBlockPrologue(u.units)}
  ${affine ? J.map((j) => `let ga${j} = gamma[c${j}]; let be${j} = beta[c${j}];`).join('\n  ') : ''}
  for (var row = r0; row < r1; row++) {
    let base = row * ${u.units}u;
    ${J.map((j) => `let x${j} = select(${u.zero}, x[base + c${j}], ok${j});`).join(' ')}
    let mean = sum8_(${J.map((j) => u.sum(`x${j}`)).join(' + ')}) / ${cols}.0;
    ${J.map((j) => `let d${j} = select(${u.zero}, x${j} - mean, ok${j});`).join(' ')}
    let rstd = inverseSqrt(sum8_(${J.map((j) => u.dot(`d${j}`, `d${j}`)).join(' + ')}) / ${cols}.0 + P.eps);
    ${J.map((j) => `if (ok${j}) { y[base + c${j}] = ${affine ? `fma(d${j} * rstd, ga${j}, be${j})` : `d${j} * rstd`}; }`).join('\n    ')}
    if (lane == 0u) {
      stats[2u * row] = mean;
      stats[2u * row + 1u] = rstd;
    }
  }
}`,
  });
});

/** `params`: also the parameter gradients' partial sums over this workgroup's rows, dγ = Σ g · x̂
 * and dβ = Σ g for the lane's columns, written to `partial` ([2][row blocks][cols], as
 * layerNormParamGradKernel writes it, with blocks of LAYERNORM_SG_ROWS rows) for
 * layerNormParamGradFinishKernel: the backward reads x and g once instead of twice. */
/** `accumulate`: dx is written as its own value plus `prev`, the gradient x has already received
 * (the residual branch's, in a transformer block), instead of a separate add. */
export const layerNormGradSubgroupKernel = memo(function layerNormGradSubgroupKernel(affine: boolean, cols: number, params = false, accumulate = false): KernelSource {
  if (params && !affine) throw new Error('layerNormGradSubgroupKernel: parameter gradients need the affine form');
  const u = unitOps(cols);
  const J = laneColumns(u.units);
  return kernel({
    name: `layernorm_${u.tag}${affine ? '' : '_plain'}_grad${params ? '_params' : ''}${accumulate ? '_acc' : ''}_${cols}`,
    header: 'enable subgroups;',
    uniforms: ROWS,
    buffers: [
      { name: 'x', access: 'read', type: u.T },
      ...(affine ? [{ name: 'gamma', access: 'read' as const, type: u.T }] : []),
      { name: 'stats', access: 'read', type: 'f32' },
      { name: 'g', access: 'read', type: u.T },
      { name: 'dx', access: 'read_write', type: u.T },
      ...(params ? [{ name: 'partial', access: 'read_write' as const, type: u.T }] : []),
      ...(accumulate ? [{ name: 'prev', access: 'read' as const, type: u.T }] : []),
    ],
    workgroupSize: 8,
    body: `${SUM8}
${MAIN_SUBGROUP} {
  ${rowBlockPrologue(u.units)}
  ${affine ? J.map((j) => `let ga${j} = gamma[c${j}];`).join(' ') : ''}
  ${params ? J.map((j) => `var dg${j} = ${u.zero}; var db${j} = ${u.zero};`).join(' ') : ''}
  for (var row = r0; row < r1; row++) {
    let base = row * ${u.units}u;
    let mean = stats[2u * row];
    let rstd = stats[2u * row + 1u];
    ${J.map((j) => params
      ? `let xh${j} = (x[base + c${j}] - mean) * rstd; let gr${j} = select(${u.zero}, g[base + c${j}], ok${j}); let gh${j} = gr${j} * ga${j}; dg${j} = fma(gr${j}, xh${j}, dg${j}); db${j} += gr${j};`
      : `let xh${j} = (x[base + c${j}] - mean) * rstd; let gh${j} = select(${u.zero}, g[base + c${j}]${affine ? ` * ga${j}` : ''}, ok${j});`).join('\n    ')}
    let m1 = sum8_(${J.map((j) => u.sum(`gh${j}`)).join(' + ')}) / ${cols}.0;
    let m2 = sum8_(${J.map((j) => u.dot(`gh${j}`, `xh${j}`)).join(' + ')}) / ${cols}.0;
    ${J.map((j) => `if (ok${j}) { dx[base + c${j}] = rstd * (gh${j} - m1 - xh${j} * m2)${accumulate ? ` + prev[base + c${j}]` : ''}; }`).join('\n    ')}
  }
  ${params ? `let blocks = (P.rows + ${LAYERNORM_SG_ROWS - 1}u) / ${LAYERNORM_SG_ROWS}u;
  ${J.map((j) => `if (ok${j}) { partial[w * ${u.units}u + c${j}] = dg${j}; partial[(blocks + w) * ${u.units}u + c${j}] = db${j}; }`).join('\n  ')}` : ''}
}`,
  });
});
