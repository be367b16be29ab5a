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
