// Fused attention from packed qkv (B, N, 3D), after FlashAttention-2 (Dao 2023): the N×N
// matrix is never stored. One invocation per query row streams K and V straight from storage
// into registers with an online softmax (running max m, running sum l) and saves the row's
// logsumexp for backward; backward recomputes P = exp(q·k·scale − lse) row by row:
//   per query i:  D_i = dO_i · O_i ;  dQ_i = scale · Σ_j P_ij (dP_ij − D_i) k_j
//   per key j:    dV_j = Σ_i P̃_ij dO_i ;  dK_j = scale · Σ_i P_ij (dP_ij − D_i) q_i
// with dP_ij = M_ij (dO_i · v_j), P̃ = P ⊙ M and M the inverted-dropout mask (1 without dropout).
// On lavapipe a workgroup is one CPU thread, so K/V tiles in workgroup memory and barriers would
// cost more than they save; streaming from storage keeps every invocation independent.
import { kernel, type KernelSource, MAIN_1D, memo } from './common.js';
import { WGSL_PHILOX } from './random.js';

export const FLASH_WG = 64;

const UNIFORMS = [
  { name: 'B', type: 'u32' as const },
  { name: 'N', type: 'u32' as const },
  { name: 'nh', type: 'u32' as const },
  { name: 'scale', type: 'f32' as const },
  { name: 'p', type: 'f32' as const },
  { name: 'seed', type: 'u32' as const },
  { name: 'stream', type: 'u32' as const },
];

/** WGSL helpers shared by the three kernels: row addressing and the dropout mask of (bh, i, j). */
function helpers(hd: number, dropout: boolean): string {
  return `const HD = ${hd}u;
// Element (b, n, which, h, d) of qkv (B, N, 3, nh, hd): which = 0 q, 1 k, 2 v.
fn qkv_at(b: u32, n: u32, which: u32, h: u32) -> u32 {
  let D = P.nh * HD;
  return (b * P.N + n) * 3u * D + which * D + h * HD;
}
fn out_at(b: u32, n: u32, h: u32) -> u32 { return (b * P.N + n) * P.nh * HD + h * HD; }
${dropout ? `${WGSL_PHILOX}
// Inverted-dropout factor of P[bh, i, j]: 0 or 1 / (1 - p), from Philox of its linear index.
fn keep_(bh: u32, i: u32, j: u32) -> f32 {
  let e = (bh * P.N + i) * P.N + j;
  let r = philox_(vec4<u32>(e / 4u, 0u, 0u, 0u), vec2<u32>(P.seed, P.stream));
  return select(0.0, 1.0 / (1.0 - P.p), to_unit_(r[e % 4u]) >= P.p);
}` : 'fn keep_(bh: u32, i: u32, j: u32) -> f32 { return 1.0; }'}`;
}

export const flashForwardKernel = memo(function flashForwardKernel(hd: number, dropout: boolean): KernelSource {
  return kernel({
    name: `flash_attn_fwd_d${hd}${dropout ? '_dropout' : ''}`,
    uniforms: UNIFORMS,
    buffers: [
      { name: 'qkv', access: 'read', type: 'f32' },
      { name: 'out', access: 'read_write', type: 'f32' },
      { name: 'lse', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: FLASH_WG,
    body: `${helpers(hd, dropout)}
${MAIN_1D} {
  let t = global_index(wid, lid, nwg);
  if (t >= P.B * P.nh * P.N) { return; }
  let i = t % P.N;
  let bh = t / P.N;
  let h = bh % P.nh;
  let b = bh / P.nh;
  var q: array<f32, ${hd}>;
  var acc: array<f32, ${hd}>;
  let qo = qkv_at(b, i, 0u, h);
  for (var d = 0u; d < HD; d++) { q[d] = qkv[qo + d] * P.scale; acc[d] = 0.0; }
  var m = -3.0e38;
  var l = 0.0;
  for (var j = 0u; j < P.N; j++) {
    let ko = qkv_at(b, j, 1u, h);
    var s = 0.0;
    for (var d = 0u; d < HD; d++) { s += q[d] * qkv[ko + d]; }
    let m_new = max(m, s);
    let corr = exp(m - m_new);
    let pj = exp(s - m_new);
    l = l * corr + pj;
    let w = pj * keep_(bh, i, j);
    let vo = ko + P.nh * HD;
    for (var d = 0u; d < HD; d++) { acc[d] = acc[d] * corr + w * qkv[vo + d]; }
    m = m_new;
  }
  let oo = out_at(b, i, h);
  let inv = 1.0 / l;
  for (var d = 0u; d < HD; d++) { out[oo + d] = acc[d] * inv; }
  lse[t] = m + log(l);
}`,
  });
});

/** Per query row: D_i = dO_i · O_i (saved for the key kernel) and dQ_i. */
export const flashBackwardQKernel = memo(function flashBackwardQKernel(hd: number, dropout: boolean): KernelSource {
  return kernel({
    name: `flash_attn_bwd_q_d${hd}${dropout ? '_dropout' : ''}`,
    uniforms: UNIFORMS,
    buffers: [
      { name: 'qkv', access: 'read', type: 'f32' },
      { name: 'out', access: 'read', type: 'f32' },
      { name: 'dout', access: 'read', type: 'f32' },
      { name: 'lse', access: 'read', type: 'f32' },
      { name: 'delta', access: 'read_write', type: 'f32' },
      { name: 'dqkv', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: FLASH_WG,
    body: `${helpers(hd, dropout)}
${MAIN_1D} {
  let t = global_index(wid, lid, nwg);
  if (t >= P.B * P.nh * P.N) { return; }
  let i = t % P.N;
  let bh = t / P.N;
  let h = bh % P.nh;
  let b = bh / P.nh;
  var q: array<f32, ${hd}>;
  var g: array<f32, ${hd}>;
  var dq: array<f32, ${hd}>;
  let qo = qkv_at(b, i, 0u, h);
  let oo = out_at(b, i, h);
  var D = 0.0;
  for (var d = 0u; d < HD; d++) {
    q[d] = qkv[qo + d] * P.scale;
    g[d] = dout[oo + d];
    D += g[d] * out[oo + d];
    dq[d] = 0.0;
  }
  delta[t] = D;
  let L = lse[t];
  for (var j = 0u; j < P.N; j++) {
    let ko = qkv_at(b, j, 1u, h);
    let vo = ko + P.nh * HD;
    var s = 0.0;
    var dp = 0.0;
    for (var d = 0u; d < HD; d++) { s += q[d] * qkv[ko + d]; dp += g[d] * qkv[vo + d]; }
    let pij = exp(s - L);
    let ds = pij * (dp * keep_(bh, i, j) - D);
    for (var d = 0u; d < HD; d++) { dq[d] += ds * qkv[ko + d]; }
  }
  for (var d = 0u; d < HD; d++) { dqkv[qo + d] = dq[d] * P.scale; }
}`,
  });
});

/** Per key row: dK_j and dV_j (needs D from the query kernel). */
export const flashBackwardKVKernel = memo(function flashBackwardKVKernel(hd: number, dropout: boolean): KernelSource {
  return kernel({
    name: `flash_attn_bwd_kv_d${hd}${dropout ? '_dropout' : ''}`,
    uniforms: UNIFORMS,
    buffers: [
      { name: 'qkv', access: 'read', type: 'f32' },
      { name: 'dout', access: 'read', type: 'f32' },
      { name: 'lse', access: 'read', type: 'f32' },
      { name: 'delta', access: 'read', type: 'f32' },
      { name: 'dqkv', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: FLASH_WG,
    body: `${helpers(hd, dropout)}
${MAIN_1D} {
  let t = global_index(wid, lid, nwg);
  if (t >= P.B * P.nh * P.N) { return; }
  let j = t % P.N;
  let bh = t / P.N;
  let h = bh % P.nh;
  let b = bh / P.nh;
  var k: array<f32, ${hd}>;
  var v: array<f32, ${hd}>;
  var dk: array<f32, ${hd}>;
  var dv: array<f32, ${hd}>;
  let ko = qkv_at(b, j, 1u, h);
  let vo = ko + P.nh * HD;
  for (var d = 0u; d < HD; d++) { k[d] = qkv[ko + d]; v[d] = qkv[vo + d]; dk[d] = 0.0; dv[d] = 0.0; }
  for (var i = 0u; i < P.N; i++) {
    let qo = qkv_at(b, i, 0u, h);
    let oo = out_at(b, i, h);
    var s = 0.0;
    var dp = 0.0;
    for (var d = 0u; d < HD; d++) { s += qkv[qo + d] * k[d]; dp += dout[oo + d] * v[d]; }
    let r = bh * P.N + i;
    let pij = exp(s * P.scale - lse[r]);
    let keep = keep_(bh, i, j);
    let ds = pij * (dp * keep - delta[r]);
    let pd = pij * keep;
    for (var d = 0u; d < HD; d++) {
      dv[d] += pd * dout[oo + d];
      dk[d] += ds * qkv[qo + d];
    }
  }
  for (var d = 0u; d < HD; d++) { dqkv[ko + d] = dk[d] * P.scale; dqkv[vo + d] = dv[d]; }
}`,
  });
});

// ---- vec4 register variants (head dim a multiple of 4) ------------------------------------------
// The same three kernels with every per-row vector held in named vec4 registers (q0, q1, …) and
// K/V rows read as vec4: private arrays indexed in loops live in memory on lavapipe, named
// registers do not. Rows of qkv start at multiples of hd, so vec4 indexing is exact.

function vecHelpers(hd: number, dropout: boolean): string {
  return `${helpers(hd, dropout)}
fn row4(b: u32, n: u32, which: u32, h: u32) -> u32 { return qkv_at(b, n, which, h) / 4u; }
fn out4(b: u32, n: u32, h: u32) -> u32 { return out_at(b, n, h) / 4u; }`;
}

const range = (n: number) => [...Array(n).keys()];

export const flashForwardVec4Kernel = memo(function flashForwardVec4Kernel(hd: number, dropout: boolean): KernelSource {
  const V = hd / 4;
  const dot = (reg: string, base: string) => range(V).map((c) => `dot(${reg}${c}, qkv4[${base} + ${c}u])`).join(' + ');
  return kernel({
    name: `flash_attn_fwd_v4_d${hd}${dropout ? '_dropout' : ''}`,
    uniforms: UNIFORMS,
    buffers: [
      { name: 'qkv4', access: 'read', type: 'vec4<f32>' },
      { name: 'out4_', access: 'read_write', type: 'vec4<f32>' },
      { name: 'lse', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: FLASH_WG,
    body: `${vecHelpers(hd, dropout)}
${MAIN_1D} {
  let t = global_index(wid, lid, nwg);
  if (t >= P.B * P.nh * P.N) { return; }
  let i = t % P.N;
  let bh = t / P.N;
  let h = bh % P.nh;
  let b = bh / P.nh;
  let qo = row4(b, i, 0u, h);
  ${range(V).map((c) => `let q${c} = qkv4[qo + ${c}u] * P.scale;\n  var a${c} = vec4<f32>(0.0);`).join('\n  ')}
  var m = -3.0e38;
  var l = 0.0;
  for (var j = 0u; j < P.N; j++) {
    let ko = row4(b, j, 1u, h);
    let s = ${dot('q', 'ko')};
    let m_new = max(m, s);
    let corr = exp(m - m_new);
    let pj = exp(s - m_new);
    l = l * corr + pj;
    let w = pj * keep_(bh, i, j);
    let vo = row4(b, j, 2u, h);
    ${range(V).map((c) => `a${c} = a${c} * corr + w * qkv4[vo + ${c}u];`).join('\n    ')}
    m = m_new;
  }
  let oo = out4(b, i, h);
  let inv = 1.0 / l;
  ${range(V).map((c) => `out4_[oo + ${c}u] = a${c} * inv;`).join('\n  ')}
  lse[t] = m + log(l);
}`,
  });
});

export const flashBackwardQVec4Kernel = memo(function flashBackwardQVec4Kernel(hd: number, dropout: boolean): KernelSource {
  const V = hd / 4;
  return kernel({
    name: `flash_attn_bwd_q_v4_d${hd}${dropout ? '_dropout' : ''}`,
    uniforms: UNIFORMS,
    buffers: [
      { name: 'qkv4', access: 'read', type: 'vec4<f32>' },
      { name: 'o4', access: 'read', type: 'vec4<f32>' },
      { name: 'do4', access: 'read', type: 'vec4<f32>' },
      { name: 'lse', access: 'read', type: 'f32' },
      { name: 'delta', access: 'read_write', type: 'f32' },
      { name: 'dqkv4', access: 'read_write', type: 'vec4<f32>' },
    ],
    workgroupSize: FLASH_WG,
    body: `${vecHelpers(hd, dropout)}
${MAIN_1D} {
  let t = global_index(wid, lid, nwg);
  if (t >= P.B * P.nh * P.N) { return; }
  let i = t % P.N;
  let bh = t / P.N;
  let h = bh % P.nh;
  let b = bh / P.nh;
  let qo = row4(b, i, 0u, h);
  let oo = out4(b, i, h);
  ${range(V).map((c) => `let q${c} = qkv4[qo + ${c}u] * P.scale;\n  let g${c} = do4[oo + ${c}u];\n  var dq${c} = vec4<f32>(0.0);`).join('\n  ')}
  let D = ${range(V).map((c) => `dot(g${c}, o4[oo + ${c}u])`).join(' + ')};
  delta[t] = D;
  let L = lse[t];
  for (var j = 0u; j < P.N; j++) {
    let ko = row4(b, j, 1u, h);
    let vo = row4(b, j, 2u, h);
    let s = ${range(V).map((c) => `dot(q${c}, qkv4[ko + ${c}u])`).join(' + ')};
    let dp = ${range(V).map((c) => `dot(g${c}, qkv4[vo + ${c}u])`).join(' + ')};
    let ds = exp(s - L) * (dp * keep_(bh, i, j) - D);
    ${range(V).map((c) => `dq${c} += ds * qkv4[ko + ${c}u];`).join('\n    ')}
  }
  ${range(V).map((c) => `dqkv4[qo + ${c}u] = dq${c} * P.scale;`).join('\n  ')}
}`,
  });
});

export const flashBackwardKVVec4Kernel = memo(function flashBackwardKVVec4Kernel(hd: number, dropout: boolean): KernelSource {
  const V = hd / 4;
  return kernel({
    name: `flash_attn_bwd_kv_v4_d${hd}${dropout ? '_dropout' : ''}`,
    uniforms: UNIFORMS,
    buffers: [
      { name: 'qkv4', access: 'read', type: 'vec4<f32>' },
      { name: 'do4', access: 'read', type: 'vec4<f32>' },
      { name: 'lse', access: 'read', type: 'f32' },
      { name: 'delta', access: 'read', type: 'f32' },
      { name: 'dqkv4', access: 'read_write', type: 'vec4<f32>' },
    ],
    workgroupSize: FLASH_WG,
    body: `${vecHelpers(hd, dropout)}
${MAIN_1D} {
  let t = global_index(wid, lid, nwg);
  if (t >= P.B * P.nh * P.N) { return; }
  let j = t % P.N;
  let bh = t / P.N;
  let h = bh % P.nh;
  let b = bh / P.nh;
  let ko = row4(b, j, 1u, h);
  let vo = row4(b, j, 2u, h);
  ${range(V).map((c) => `let k${c} = qkv4[ko + ${c}u];\n  let v${c} = qkv4[vo + ${c}u];\n  var dk${c} = vec4<f32>(0.0);\n  var dv${c} = vec4<f32>(0.0);`).join('\n  ')}
  for (var i = 0u; i < P.N; i++) {
    let qo = row4(b, i, 0u, h);
    let oo = out4(b, i, h);
    let s = ${range(V).map((c) => `dot(qkv4[qo + ${c}u], k${c})`).join(' + ')};
    let dp = ${range(V).map((c) => `dot(do4[oo + ${c}u], v${c})`).join(' + ')};
    let r = bh * P.N + i;
    let pij = exp(s * P.scale - lse[r]);
    let keep = keep_(bh, i, j);
    let ds = pij * (dp * keep - delta[r]);
    let pd = pij * keep;
    ${range(V).map((c) => `dv${c} += pd * do4[oo + ${c}u];\n    dk${c} += ds * qkv4[qo + ${c}u];`).join('\n    ')}
  }
  ${range(V).map((c) => `dqkv4[ko + ${c}u] = dk${c} * P.scale;\n  dqkv4[vo + ${c}u] = dv${c};`).join('\n  ')}
}`,
  });
});
