// Fused attention from packed qkv (B, N, 3D), after FlashAttention-2 (Dao 2023): the N×N
// matrix is never stored. One invocation per query row streams K and V straight from storage
// into registers with an online softmax (running max m, running sum l) and saves the row's
// logsumexp for backward; backward recomputes P = exp(q·k·scale − lse) row by row:
//   per query i:  D_i = dO_i · O_i ;  dQ_i = scale · Σ_j P_ij (dP_ij − D_i) k_j
//   per key j:    dV_j = Σ_i P̃_ij dO_i ;  dK_j = scale · Σ_i P_ij (dP_ij − D_i) q_i
// with dP_ij = M_ij (dO_i · v_j), P̃ = P ⊙ M and M the inverted-dropout mask (1 without dropout).
// Four families: scalar arrays (any head dim), vec4 registers (hd % 4 == 0), subgroup kernels
// (hd % 8 == 0) where 8 rows share every K/V load through broadcasts — the choice on CPU adapters
// with subgroups of 8 or more — and K/V tiles in workgroup memory (hd % 4 == 0, at the end of the
// file), FlashAttention-2's layout and the choice on GPUs. On lavapipe a workgroup is one CPU
// thread, so its tiles and barriers cost more than they save there (measured in
// engine/ops/attention.ts).
import { type BufferDecl, kernel, type KernelSource, MAIN_1D, MAIN_SUBGROUP, memo } from './common.js';
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

/** f32 storage buffers: the `read` ones, then the `read_write` ones. */
function f32Buffers(read: string[], readWrite: string[]): BufferDecl[] {
  return [...read.map((name) => ({ name, access: 'read' as const, type: 'f32' as const })), ...readWrite.map((name) => ({ name, access: 'read_write' as const, type: 'f32' as const }))];
}

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
    buffers: f32Buffers(['qkv'], ['out', 'lse']),
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
    buffers: f32Buffers(['qkv', 'out', 'dout', 'lse'], ['delta', 'dqkv']),
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
    buffers: f32Buffers(['qkv', 'dout', 'lse', 'delta'], ['dqkv']),
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

const vec4Buffer = (name: string, access: 'read' | 'read_write'): BufferDecl => ({ name, access, type: 'vec4<f32>' });
const f32Buffer = (name: string, access: 'read' | 'read_write'): BufferDecl => ({ name, access, type: 'f32' });
/** Bindings of the kernels that hold rows as vec4s (the vec4 and the workgroup-tile families). */
const VEC4_FORWARD_BUFFERS = [vec4Buffer('qkv4', 'read'), vec4Buffer('out4_', 'read_write'), f32Buffer('lse', 'read_write')];
const VEC4_BACKWARD_Q_BUFFERS = [vec4Buffer('qkv4', 'read'), vec4Buffer('o4', 'read'), vec4Buffer('do4', 'read'), f32Buffer('lse', 'read'), f32Buffer('delta', 'read_write'), vec4Buffer('dqkv4', 'read_write')];
const VEC4_BACKWARD_KV_BUFFERS = [vec4Buffer('qkv4', 'read'), vec4Buffer('do4', 'read'), f32Buffer('lse', 'read'), f32Buffer('delta', 'read'), vec4Buffer('dqkv4', 'read_write')];

export const flashForwardVec4Kernel = memo(function flashForwardVec4Kernel(hd: number, dropout: boolean): KernelSource {
  const V = hd / 4;
  const dot = (reg: string, base: string) => range(V).map((c) => `dot(${reg}${c}, qkv4[${base} + ${c}u])`).join(' + ');
  return kernel({
    name: `flash_attn_fwd_v4_d${hd}${dropout ? '_dropout' : ''}`,
    uniforms: UNIFORMS,
    buffers: VEC4_FORWARD_BUFFERS,
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
    buffers: VEC4_BACKWARD_Q_BUFFERS,
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
    buffers: VEC4_BACKWARD_KV_BUFFERS,
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

// ---- subgroup variants (head dim a multiple of 8, subgroups of 8 or more) ------------------------
// A workgroup is one subgroup of 8 lanes working on 8 rows of one (batch, head). Every row a lane
// needs from the other side of the product (K and V rows for a query, Q and dO rows for a key) is
// loaded cooperatively, hd/8 values per lane, and each value is handed to all lanes with
// subgroupBroadcast: per (row, key) pair a lane loads 2·hd/8 values instead of 2·hd. On lavapipe
// a storage load costs ~25–35 CPU cycles per component for 8 lanes and a broadcast ~2 (see
// kernels/matmul.ts), so this is the kernel shape that is not load-bound there; on GPUs it reads
// each K/V row once per 8 query rows, like a tile in shared memory without the barriers.
// Lanes past the last row compute on a clamped row and skip their stores: every lane must take
// part in every broadcast. With R rows per lane (lane l owns rows r0 + l, r0 + 8 + l, …) each
// loaded and broadcast value serves 8·R rows: loads and broadcasts, not FMAs, bound these kernels
// on lavapipe, so R = 2–3 ran 1.1–1.3× faster forward+backward (engine/ops/attention.ts has the
// figures and the choice of R).
// Where hd is a multiple of 16 the forward and the one-pass backward move memory as vec4 (the
// `Vec` kernels at the end of this file): a key's [k ‖ v] is hd/2 vec4s, so lane l loads vec4s l,
// 8 + l, … of it, one load where the scalar kernels issue hd/4. Lavapipe runs a storage access that
// is not uniform as a loop over the lanes that pays an exec-mask test and the buffer's base and
// size per lane, then a bounds check per component (perf on the JIT code: the per-lane loops were
// half of the forward's samples), so one vec4 access costs far less than four scalar ones.
// Forward alone, medians of 21 interleaved, Zen 4 host: B128 h4 N50 d16 8.17 → 7.11 ms, N65 d32
// 15.79 → 13.85, B32 N197 d64 60.9 → 55.8, B128 N17 d16 2.00 → 1.85 (results identical to the
// bit); the one-pass backward 1.00–1.08× on top. On GPUs a vec4 load is the natural width anyway.

/** Workgroup → (batch, head) and its 8·R rows; lane l owns rows r0 + l, r0 + 8 + l, … (R of them). */
function subgroupPrologue(R = 1): string {
  return `let w = wid.y * nwg.x + wid.x;
  let groups = (P.N + ${8 * R - 1}u) / ${8 * R}u;
  if (w >= P.B * P.nh * groups) { return; }
  let bh = w / groups;
  let r0 = (w % groups) * ${8 * R}u;
  let h = bh % P.nh;
  let b = bh / P.nh;
  ${range(R).map((r) => `let mine${r ? r : ''} = r0 + ${8 * r}u + lane;
  let row${r ? r : ''} = min(mine${r ? r : ''}, P.N - 1u);
  let live${r ? r : ''} = mine${r ? r : ''} < P.N;`).join('\n  ')}`;
}

/** Loads this lane's share (E = hd/8 values) of a row starting at `base` into `${name}0..`. */
function shareLoad(name: string, buf: string, base: string, E: number): string {
  return range(E).map((e) => `let ${name}${e} = ${buf}[${base} + lane * ${E}u + ${e}u];`).join(' ');
}

/** Element d of the row whose shares are `${name}0..` in every lane. */
function shared(name: string, d: number, E: number): string {
  return `subgroupBroadcast(${name}${d % E}, ${Math.floor(d / E)}u)`;
}

/** Σ_d x_d·y_d over unrolled terms with 4 partial sums (FMA latency, not throughput, would bind a single chain). */
function dotSum(terms: string[]): string {
  const parts = range(Math.min(4, terms.length)).map((p) => terms.filter((_, d) => d % 4 === p).reduce((acc, t) => (acc ? `fma(${t.split(' * ')[0]}, ${t.split(' * ')[1]}, ${acc})` : t), ''));
  return parts.map((p) => `(${p})`).join(' + ');
}

// The running max is a reference, not the exact max: a row rescales its sum and accumulators only
// when a score exceeds it by more than LAZY_RESCALE (so every exp(s − m) stays below e^8 and the
// sums far from f32's range), not at every larger score, as in FlashAttention-4. The common path
// drops a multiply per accumulator and an exp per (row, key): forward 7–8% faster at B128 N50 d16
// and B32 N65 d32 (medians of 9 interleaved, 12.9 vs 13.9 and 8.1 vs 8.8 ms), no change at N17.
const LAZY_RESCALE = '8.0';

/** One key j for the subgroup forwards' row r (suffix r, 0 → none): score, lazy rescale, running
 * sum and accumulators, from the broadcast k0…, v0… of the key. */
function forwardRowStep(hd: number, r: number): string {
  const x = r ? `${r}` : '';
  return `let s${x} = ${dotSum(range(hd).map((d) => `q${r}_${d} * k${d}`))};
    if (s${x} > m${x} + ${LAZY_RESCALE}) {
      let corr = exp(m${x} - s${x});
      l${x} = l${x} * corr;
      ${range(hd).map((d) => `a${r}_${d} = a${r}_${d} * corr;`).join(' ')}
      m${x} = s${x};
    }
    let pj${x} = exp(s${x} - m${x});
    l${x} = l${x} + pj${x};
    let wj${x} = pj${x} * keep_(bh, row${x}, j);
    ${range(hd).map((d) => `a${r}_${d} = fma(wj${x}, v${d}, a${r}_${d});`).join('\n    ')}`;
}

export const flashForwardSubgroupKernel = memo(function flashForwardSubgroupKernel(hd: number, dropout: boolean, R: number = 1): KernelSource {
  const E = hd / 8;
  const sfx = (r: number) => (r ? `${r}` : '');
  const perRow = (r: number) => forwardRowStep(hd, r);
  return kernel({
    name: `flash_attn_fwd_sg_d${hd}${dropout ? '_dropout' : ''}${R > 1 ? `_r${R}` : ''}`,
    header: 'enable subgroups;',
    uniforms: UNIFORMS,
    buffers: f32Buffers(['qkv'], ['out', 'lse']),
    workgroupSize: 8,
    body: `${helpers(hd, dropout)}
${MAIN_SUBGROUP} {
  ${subgroupPrologue(R)}
  ${range(R).map((r) => `let qo${sfx(r)} = qkv_at(b, row${sfx(r)}, 0u, h);
  ${range(hd).map((d) => `let q${r}_${d} = qkv[qo${sfx(r)} + ${d}u] * P.scale;`).join(' ')}
  ${range(hd).map((d) => `var a${r}_${d} = 0.0;`).join(' ')}
  var m${sfx(r)} = -3.0e38;
  var l${sfx(r)} = 0.0;`).join('\n  ')}
  for (var j = 0u; j < P.N; j++) {
    let ko = qkv_at(b, j, 1u, h);
    ${shareLoad('kp', 'qkv', 'ko', E)}
    ${shareLoad('vp', 'qkv', 'ko + P.nh * HD', E)}
    ${range(hd).map((d) => `let k${d} = ${shared('kp', d, E)};`).join(' ')}
    ${range(hd).map((d) => `let v${d} = ${shared('vp', d, E)};`).join(' ')}
    ${range(R).map(perRow).join('\n    ')}
  }
  ${range(R).map((r) => `if (live${sfx(r)}) {
    let oo = out_at(b, row${sfx(r)}, h);
    let inv = 1.0 / l${sfx(r)};
    ${range(hd).map((d) => `out[oo + ${d}u] = a${r}_${d} * inv;`).join(' ')}
    lse[bh * P.N + row${sfx(r)}] = m${sfx(r)} + log(l${sfx(r)});
  }`).join('\n  ')}
}`,
  });
});

/** The subgroup forward with vec4 memory access (hd % 16 == 0): per key, lane l loads vec4 l of
 * the key's [k ‖ v] row, and the query rows and outputs move as vec4. */
export const flashForwardSubgroupVecKernel = memo(function flashForwardSubgroupVecKernel(hd: number, dropout: boolean, R: number = 1): KernelSource {
  if (hd % 16 !== 0) throw new Error(`flashForwardSubgroupVecKernel: head dim ${hd} is not a multiple of 16`);
  const H4 = hd / 4;
  const T = hd / 16; // vec4s of [k ‖ v] per lane
  const sfx = (r: number) => (r ? `${r}` : '');
  const c = ['x', 'y', 'z', 'w'];
  // Element d of k (or v) as a broadcast of the lane holding its vec4.
  const kElem = (d: number) => { const m = Math.floor(d / 4); return `subgroupBroadcast(kv${Math.floor(m / 8)}.${c[d % 4]}, ${m % 8}u)`; };
  const vElem = (d: number) => { const m = H4 + Math.floor(d / 4); return `subgroupBroadcast(kv${Math.floor(m / 8)}.${c[d % 4]}, ${m % 8}u)`; };
  const perRow = (r: number) => forwardRowStep(hd, r);
  return kernel({
    name: `flash_attn_fwd_sgv_d${hd}${dropout ? '_dropout' : ''}${R > 1 ? `_r${R}` : ''}`,
    header: 'enable subgroups;',
    uniforms: UNIFORMS,
    buffers: [{ name: 'qkv4', access: 'read', type: 'vec4<f32>' }, { name: 'out4', access: 'read_write', type: 'vec4<f32>' }, { name: 'lse', access: 'read_write', type: 'f32' }],
    workgroupSize: 8,
    body: `${helpers(hd, dropout)}
${MAIN_SUBGROUP} {
  ${subgroupPrologue(R)}
  ${range(R).map((r) => `let qo${sfx(r)} = qkv_at(b, row${sfx(r)}, 0u, h) / 4u;
  ${range(H4).map((q) => `let qv${r}_${q} = qkv4[qo${sfx(r)} + ${q}u] * P.scale;`).join(' ')}
  ${range(hd).map((d) => `let q${r}_${d} = qv${r}_${Math.floor(d / 4)}.${c[d % 4]};`).join(' ')}
  ${range(hd).map((d) => `var a${r}_${d} = 0.0;`).join(' ')}
  var m${sfx(r)} = -3.0e38;
  var l${sfx(r)} = 0.0;`).join('\n  ')}
  // Lane l's vec4s of a key's [k ‖ v]: m = l, 8 + l, …; v starts D − hd floats after k ends.
  ${range(T).map((t) => `let kvm${t} = lane + ${8 * t}u;
  let kvo${t} = kvm${t} + select(0u, (P.nh - 1u) * HD / 4u, kvm${t} >= ${H4}u);`).join('\n  ')}
  for (var j = 0u; j < P.N; j++) {
    let ko = qkv_at(b, j, 1u, h) / 4u;
    ${range(T).map((t) => `let kv${t} = qkv4[ko + kvo${t}];`).join(' ')}
    ${range(hd).map((d) => `let k${d} = ${kElem(d)};`).join(' ')}
    ${range(hd).map((d) => `let v${d} = ${vElem(d)};`).join(' ')}
    ${range(R).map(perRow).join('\n    ')}
  }
  ${range(R).map((r) => `if (live${sfx(r)}) {
    let oo = out_at(b, row${sfx(r)}, h) / 4u;
    let inv = 1.0 / l${sfx(r)};
    ${range(H4).map((q) => `out4[oo + ${q}u] = vec4<f32>(${range(4).map((e) => `a${r}_${4 * q + e}`).join(', ')}) * inv;`).join(' ')}
    lse[bh * P.N + row${sfx(r)}] = m${sfx(r)} + log(l${sfx(r)});
  }`).join('\n  ')}
}`,
  });
});

/** The one-pass kernels' start: one workgroup (one subgroup of 8) per (batch, head). */
const HEAD_PER_SUBGROUP = `let bh = wid.y * nwg.x + wid.x;
  if (bh >= P.B * P.nh) { return; }
  let h = bh % P.nh;
  let b = bh / P.nh;`;

/** One query of the one-pass forwards, given its scaled q0… in every lane: scores s0… of this
 * lane's keys (key r is j${r}; keys past N score −∞), the row's max `mx` and sum `ls` over the
 * subgroup, and this lane's share a0… of the output row: `units` accumulators of type `unit`
 * (scalars, or vec4s of `vElem(r, u)`), summed over the lanes by the caller. */
function forwardOnePassQuery(units: number, R: number, kElem: (r: number, d: number) => string, vElem: (r: number, u: number) => string, hd = units, unit = 'f32'): string {
  const allReduce = (x: string, op: (a: string, b: string) => string) =>
    [4, 2, 1].map((m) => `${x} = ${op(x, `subgroupShuffleXor(${x}, ${m}u)`)};`).join(' ');
  const weight = (r: number) => (unit === 'f32' ? `w${r}` : `${unit}(w${r})`);
  return `${range(R).map((r) => `let s${r} = select(-3.0e38, ${dotSum(range(hd).map((d) => `q${d} * ${kElem(r, d)}`))}, j${r} < P.N);`).join('\n    ')}
    var mx = ${range(R).reduce((acc, r) => (acc ? `max(${acc}, s${r})` : `s${r}`), '')};
    ${allReduce('mx', (a, b) => `max(${a}, ${b})`)}
    ${range(R).map((r) => `let p${r} = exp(s${r} - mx);`).join(' ')}
    var ls = ${range(R).map((r) => `p${r}`).join(' + ')};
    ${allReduce('ls', (a, b) => `${a} + ${b}`)}
    ${range(R).map((r) => `let w${r} = p${r} * keep_(bh, i, min(j${r}, P.N - 1u));`).join(' ')}
    ${range(units).map((u) => `let a${u} = ${range(R).reduce((acc, r) => (acc ? `fma(${weight(r)}, ${vElem(r, u)}, ${acc})` : `w${r} * ${vElem(r, u)}`), '')};`).join('\n    ')}`;
}

/** The one-pass forward with scalar loads (hd % 8 == 0, e.g. 24): lane l loads elements
 * l·E … l·E + E − 1 of each query row (E = hd/8) and writes the same elements of its output. */
export const flashForwardOnePassKernel = memo(function flashForwardOnePassKernel(hd: number, dropout: boolean, R: number): KernelSource {
  const E = hd / 8;
  return kernel({
    name: `flash_attn_fwd_onepass_sg_d${hd}_k${R}${dropout ? '_dropout' : ''}`,
    header: 'enable subgroups;',
    uniforms: UNIFORMS,
    buffers: f32Buffers(['qkv'], ['out', 'lse']),
    workgroupSize: 8,
    body: `${helpers(hd, dropout)}
${MAIN_SUBGROUP} {
  ${HEAD_PER_SUBGROUP}
  ${range(R).map((r) => `let j${r} = ${8 * r}u + lane;
  let ko${r} = qkv_at(b, min(j${r}, P.N - 1u), 1u, h);
  ${range(hd).map((d) => `let k${r}_${d} = qkv[ko${r} + ${d}u]; let v${r}_${d} = qkv[ko${r} + P.nh * HD + ${d}u];`).join(' ')}`).join('\n  ')}
  for (var i = 0u; i < P.N; i++) {
    let qo = qkv_at(b, i, 0u, h);
    ${shareLoad('qp', 'qkv', 'qo', E)}
    ${range(hd).map((d) => `let q${d} = ${shared('qp', d, E)} * P.scale;`).join(' ')}
    ${forwardOnePassQuery(hd, R, (r, d) => `k${r}_${d}`, (r, d) => `v${r}_${d}`)}
    ${reduceScatter8(range(hd).map((d) => `a${d}`), (d) => Math.floor(d / E), 'os')}
    let oo = out_at(b, i, h);
    let inv = 1.0 / ls;
    ${range(E).map((e) => `out[oo + lane * ${E}u + ${e}u] = os${e} * inv;`).join(' ')}
    if (lane == 0u) { lse[bh * P.N + i] = mx + log(ls); }
  }
}`,
  });
});

/** A forward in the one-pass backward's layout, for heads whose keys fit one subgroup (N ≤ 8R,
 * hd % 16 == 0; CPU adapters): lane l holds keys l, 8 + l, … and their values; per query the
 * lanes score their keys, take the row's exact max and sum by butterfly all-reduces, weight their
 * values, and the output row is summed over the lanes by the same reduce-scatter as dQ. Grid: one
 * workgroup of 8 (one subgroup) per (batch, head). */
export const flashForwardOnePassVecKernel = memo(function flashForwardOnePassVecKernel(hd: number, dropout: boolean, R: number): KernelSource {
  if (hd % 16 !== 0) throw new Error(`flashForwardOnePassVecKernel: head dim ${hd} is not a multiple of 16`);
  const H4 = hd / 4;
  const c = ['x', 'y', 'z', 'w'];
  const qElem = (d: number) => { const m = Math.floor(d / 4); return `subgroupBroadcast(qv${Math.floor(m / 8)}.${c[d % 4]}, ${m % 8}u)`; };
  return kernel({
    name: `flash_attn_fwd_onepass_sgv_d${hd}_k${R}${dropout ? '_dropout' : ''}`,
    header: 'enable subgroups;',
    uniforms: UNIFORMS,
    buffers: [{ name: 'qkv4', access: 'read', type: 'vec4<f32>' }, { name: 'out4', access: 'read_write', type: 'vec4<f32>' }, { name: 'lse', access: 'read_write', type: 'f32' }],
    workgroupSize: 8,
    body: `${helpers(hd, dropout)}
${MAIN_SUBGROUP} {
  ${HEAD_PER_SUBGROUP}
  let vOff = P.nh * HD / 4u;
  ${range(R).map((r) => `let j${r} = ${8 * r}u + lane;
  let ko${r} = qkv_at(b, min(j${r}, P.N - 1u), 1u, h) / 4u;
  ${range(H4).map((q) => `let kq${r}_${q} = qkv4[ko${r} + ${q}u]; let vq${r}_${q} = qkv4[ko${r} + vOff + ${q}u];`).join(' ')}`).join('\n  ')}
  for (var i = 0u; i < P.N; i++) {
    let qo = qkv_at(b, i, 0u, h) / 4u;
    ${range(Math.ceil(H4 / 8)).map((t) => `var qv${t} = vec4<f32>(0.0);
    if (lane + ${8 * t}u < ${H4}u) { qv${t} = qkv4[qo + lane + ${8 * t}u] * P.scale; }`).join('\n    ')}
    ${range(hd).map((d) => `let q${d} = ${qElem(d)};`).join(' ')}
    ${forwardOnePassQuery(H4, R, (r, d) => `kq${r}_${Math.floor(d / 4)}.${c[d % 4]}`, (r, q) => `vq${r}_${q}`, hd, 'vec4<f32>')}
    ${reduceScatter8(range(H4).map((q) => `a${q}`), (w) => w % 8, 'os')}
    let oo = out_at(b, i, h) / 4u;
    let inv = 1.0 / ls;
    ${range(Math.ceil(H4 / 8)).map((u) => `if (lane + ${8 * u}u < ${H4}u) { out4[oo + lane + ${8 * u}u] = os${u} * inv; }`).join('\n    ')}
    if (lane == 0u) { lse[bh * P.N + i] = mx + log(ls); }
  }
}`,
  });
});

export const flashBackwardQSubgroupKernel = memo(function flashBackwardQSubgroupKernel(hd: number, dropout: boolean, R: number = 1): KernelSource {
  const E = hd / 8;
  const sfx = (r: number) => (r ? `${r}` : '');
  return kernel({
    name: `flash_attn_bwd_q_sg_d${hd}${dropout ? '_dropout' : ''}${R > 1 ? `_r${R}` : ''}`,
    header: 'enable subgroups;',
    uniforms: UNIFORMS,
    buffers: f32Buffers(['qkv', 'out', 'dout', 'lse'], ['delta', 'dqkv']),
    workgroupSize: 8,
    body: `${helpers(hd, dropout)}
${MAIN_SUBGROUP} {
  ${subgroupPrologue(R)}
  ${range(R).map((r) => `let t${sfx(r)} = bh * P.N + row${sfx(r)};
  let qo${sfx(r)} = qkv_at(b, row${sfx(r)}, 0u, h);
  let oo${sfx(r)} = out_at(b, row${sfx(r)}, h);
  ${range(hd).map((d) => `let q${r}_${d} = qkv[qo${sfx(r)} + ${d}u] * P.scale;`).join(' ')}
  ${range(hd).map((d) => `let g${r}_${d} = dout[oo${sfx(r)} + ${d}u];`).join(' ')}
  let D${sfx(r)} = ${dotSum(range(hd).map((d) => `g${r}_${d} * out[oo${sfx(r)} + ${d}u]`))};
  let L${sfx(r)} = lse[t${sfx(r)}];
  ${range(hd).map((d) => `var dq${r}_${d} = 0.0;`).join(' ')}`).join('\n  ')}
  for (var j = 0u; j < P.N; j++) {
    let ko = qkv_at(b, j, 1u, h);
    ${shareLoad('kp', 'qkv', 'ko', E)}
    ${shareLoad('vp', 'qkv', 'ko + P.nh * HD', E)}
    ${range(hd).map((d) => `let k${d} = ${shared('kp', d, E)};`).join(' ')}
    ${range(hd).map((d) => `let v${d} = ${shared('vp', d, E)};`).join(' ')}
    ${range(R).map((r) => `let s${sfx(r)} = ${dotSum(range(hd).map((d) => `q${r}_${d} * k${d}`))};
    let dp${sfx(r)} = ${dotSum(range(hd).map((d) => `g${r}_${d} * v${d}`))};
    let ds${sfx(r)} = exp(s${sfx(r)} - L${sfx(r)}) * (dp${sfx(r)} * keep_(bh, row${sfx(r)}, j) - D${sfx(r)});
    ${range(hd).map((d) => `dq${r}_${d} = fma(ds${sfx(r)}, k${d}, dq${r}_${d});`).join(' ')}`).join('\n    ')}
  }
  ${range(R).map((r) => `if (live${sfx(r)}) {
    delta[t${sfx(r)}] = D${sfx(r)};
    ${range(hd).map((d) => `dqkv[qo${sfx(r)} + ${d}u] = dq${r}_${d} * P.scale;`).join(' ')}
  }`).join('\n  ')}
}`,
  });
});

export const flashBackwardKVSubgroupKernel = memo(function flashBackwardKVSubgroupKernel(hd: number, dropout: boolean, R: number = 1): KernelSource {
  const E = hd / 8;
  const sfx = (r: number) => (r ? `${r}` : '');
  return kernel({
    name: `flash_attn_bwd_kv_sg_d${hd}${dropout ? '_dropout' : ''}${R > 1 ? `_r${R}` : ''}`,
    header: 'enable subgroups;',
    uniforms: UNIFORMS,
    buffers: f32Buffers(['qkv', 'dout', 'lse', 'delta'], ['dqkv']),
    workgroupSize: 8,
    body: `${helpers(hd, dropout)}
${MAIN_SUBGROUP} {
  ${subgroupPrologue(R)}
  ${range(R).map((r) => `let ko${sfx(r)} = qkv_at(b, row${sfx(r)}, 1u, h);
  let vo${sfx(r)} = ko${sfx(r)} + P.nh * HD;
  ${range(hd).map((d) => `let k${r}_${d} = qkv[ko${sfx(r)} + ${d}u];`).join(' ')}
  ${range(hd).map((d) => `let v${r}_${d} = qkv[vo${sfx(r)} + ${d}u];`).join(' ')}
  ${range(hd).map((d) => `var dk${r}_${d} = 0.0; var dv${r}_${d} = 0.0;`).join(' ')}`).join('\n  ')}
  // lse and delta of 8 queries at a time, one per lane, shuffled out per query.
  var lse8 = 0.0;
  var delta8 = 0.0;
  for (var i = 0u; i < P.N; i++) {
    let ii = i % 8u;
    if (ii == 0u) {
      let r8 = bh * P.N + min(i + lane, P.N - 1u);
      lse8 = lse[r8];
      delta8 = delta[r8];
    }
    let L = subgroupShuffle(lse8, ii);
    let Di = subgroupShuffle(delta8, ii);
    let qo = qkv_at(b, i, 0u, h);
    let oo = out_at(b, i, h);
    ${shareLoad('qp', 'qkv', 'qo', E)}
    ${shareLoad('gp', 'dout', 'oo', E)}
    ${range(hd).map((d) => `let qi${d} = ${shared('qp', d, E)};`).join(' ')}
    ${range(hd).map((d) => `let gi${d} = ${shared('gp', d, E)};`).join(' ')}
    ${range(R).map((r) => `let s${sfx(r)} = ${dotSum(range(hd).map((d) => `qi${d} * k${r}_${d}`))};
    let dp${sfx(r)} = ${dotSum(range(hd).map((d) => `gi${d} * v${r}_${d}`))};
    let pij${sfx(r)} = exp(s${sfx(r)} * P.scale - L);
    let keep${sfx(r)} = keep_(bh, i, row${sfx(r)});
    let ds${sfx(r)} = pij${sfx(r)} * (dp${sfx(r)} * keep${sfx(r)} - Di);
    let pd${sfx(r)} = pij${sfx(r)} * keep${sfx(r)};
    ${range(hd).map((d) => `dv${r}_${d} = fma(pd${sfx(r)}, gi${d}, dv${r}_${d}); dk${r}_${d} = fma(ds${sfx(r)}, qi${d}, dk${r}_${d});`).join('\n    ')}`).join('\n    ')}
  }
  ${range(R).map((r) => `if (live${sfx(r)}) {
    ${range(hd).map((d) => `dqkv[ko${sfx(r)} + ${d}u] = dk${r}_${d} * P.scale; dqkv[vo${sfx(r)} + ${d}u] = dv${r}_${d};`).join('\n    ')}
  }`).join('\n  ')}
}`,
  });
});

/** One key j (the lane's) of the one-pass backward for the current query i: P_ij recomputed from
 * the saved logsumexp L, then dV_j, dK_j and the lane's share of dQ_i. `k`, `v`, `dk`, `dv` name
 * element d of the key's rows and accumulators. */
function onePassKeyStep(hd: number, j: string, k: (d: number) => string, v: (d: number) => string, dk: (d: number) => string, dv: (d: number) => string): string {
  const dots = (x: string, y: (d: number) => string) => dotSum(range(hd).map((d) => `${x}${d} * ${y(d)}`));
  return `{
      let j = ${j};
      let s = ${dots('qi', k)};
      let dp = ${dots('gi', v)};
      let pij = select(0.0, exp(s * P.scale - L), j < P.N);
      let keep = keep_(bh, i, min(j, P.N - 1u));
      let ds = pij * (dp * keep - Di);
      let pd = pij * keep;
      ${range(hd).map((d) => `${dv(d)} = fma(pd, gi${d}, ${dv(d)}); ${dk(d)} = fma(ds, qi${d}, ${dk(d)}); dq${d} = fma(ds, ${k(d)}, dq${d});`).join('\n      ')}
    }`;
}

/** WGSL summing per-lane partial values over the 8 lanes of a subgroup so that value w ends, whole,
 * in lane owner(w): a reduce-scatter by butterfly exchanges (subgroupShuffleXor with 4, 2, 1), each
 * halving the values a lane carries, 7/8 of a shuffle per value in all. Lane l gets its values as
 * `${out}0`, `${out}1`, … in increasing w. Against one subgroupAdd per value (gallivm builds a reduction
 * as a loop over the lanes) the one-pass backward took 12–22% less time at hd 16–64. The owners
 * must give every lane the same count of values, or lanes 8 apart the same pattern (w % 8). */
function reduceScatter8(values: string[], owner: (w: number) => number, out: string): string {
  const lines: string[] = [];
  // Value w of lane 0's own share at each position; a lane whose processed bits differ holds the
  // value of the same position in its own share.
  let held = values.map((_, w) => w);
  let names = values.map((v, w) => { lines.push(`let ${out}_0_${w} = ${v};`); return `${out}_0_${w}`; });
  for (const [step, m] of [4, 2, 1].entries()) {
    const low = held.map((w, at) => [w, at] as const).filter(([w]) => (owner(w) & m) === 0);
    const high = held.map((w, at) => [w, at] as const).filter(([w]) => (owner(w) & m) !== 0);
    const hi = `${out}_hi${step}`;
    lines.push(`let ${hi} = (lane & ${m}u) != 0u;`);
    const next: string[] = [];
    for (let k = 0; k < Math.max(low.length, high.length); k++) {
      const name = `${out}_${step + 1}_${k}`;
      const [a, b] = [low[k], high[k]];
      // Keep the half this lane's bit m owns, send the other: one shuffle serves both partners.
      lines.push(a && b
        ? `let ${name} = select(${names[a[1]]}, ${names[b[1]]}, ${hi}) + subgroupShuffleXor(select(${names[b[1]]}, ${names[a[1]]}, ${hi}), ${m}u);`
        : `let ${name} = ${names[(a ?? b)![1]]} + subgroupShuffleXor(${names[(a ?? b)![1]]}, ${m}u);`);
      next.push(name);
    }
    held = range(next.length).map((k) => (low[k] ?? high[k])![0]);
    names = next;
  }
  const mine = values.map((_, w) => w).filter((w) => owner(w) === 0);
  if (held.length < mine.length || mine.some((w, k) => held[k] !== w)) throw new Error(`reduceScatter8: owners do not split evenly (${held} vs ${mine})`);
  return [...lines, ...mine.map((_, k) => `let ${out}${k} = ${names[k]};`)].join('\n    ');
}

// ---- one-pass backward (CPU adapters) ------------------------------------------------------------
// The two backward kernels above each recompute every score q·k and probability, and both take
// dO·v: 7·hd FMAs and 2 exps per (query, key) pair. When one subgroup can own all N keys of a
// head (lane l holds keys l, 8 + l, … : R = ⌈N/8⌉ of them), one pass over the queries does it
// all with 5·hd FMAs and 1 exp per pair: dK and dV accumulate in the lanes that own the keys,
// and dQ_i is the subgroup sum of each lane's share, Σ over its keys of dS_ij·k_j. Keys and
// their accumulators (4·R·hd values a lane) live in memory on a CPU, so this is for CPU
// adapters only; on a GPU they would spill registers.
// Longer sequences go in blocks of 8·R keys, one dispatch per block (keys key0 … key0 + 8R − 1):
// each block makes the full pass over the queries for its keys and adds its share of dQ to what
// the blocks before it wrote (`accumulate`), so dQ is summed in order, without atomics or a
// partial buffer, and the only repeated work is loading each query's q, dO, O once per block.
const ONE_PASS_UNIFORMS = [...UNIFORMS, { name: 'key0', type: 'u32' as const }, { name: 'accumulate', type: 'u32' as const }];

/** Uniforms: as the other flash kernels, plus the key block (`key0`, and `accumulate` = 0 for the
 * first block, which writes dQ, 1 for the later ones, which add to it); grid: one workgroup of 8
 * (one subgroup) per (batch, head). */
export const flashBackwardOnePassKernel = memo(function flashBackwardOnePassKernel(hd: number, dropout: boolean, R: number): KernelSource {
  const E = hd / 8;
  return kernel({
    name: `flash_attn_bwd_onepass_sg_d${hd}_k${R}${dropout ? '_dropout' : ''}`,
    header: 'enable subgroups;',
    uniforms: ONE_PASS_UNIFORMS,
    buffers: f32Buffers(['qkv', 'out', 'dout', 'lse'], ['dqkv']),
    workgroupSize: 8,
    body: `${helpers(hd, dropout)}
const RK = ${R}u;
${MAIN_SUBGROUP} {
  ${HEAD_PER_SUBGROUP}
  var kr: array<array<f32, ${hd}>, ${R}>;
  var vr: array<array<f32, ${hd}>, ${R}>;
  var dkr: array<array<f32, ${hd}>, ${R}>;
  var dvr: array<array<f32, ${hd}>, ${R}>;
  for (var r = 0u; r < RK; r++) {
    let ko = qkv_at(b, min(P.key0 + 8u * r + lane, P.N - 1u), 1u, h);
    ${range(hd).map((d) => `kr[r][${d}] = qkv[ko + ${d}u]; vr[r][${d}] = qkv[ko + P.nh * HD + ${d}u]; dkr[r][${d}] = 0.0; dvr[r][${d}] = 0.0;`).join('\n    ')}
  }
  var lse8 = 0.0;
  for (var i = 0u; i < P.N; i++) {
    let ii = i % 8u;
    if (ii == 0u) { lse8 = lse[bh * P.N + min(i + lane, P.N - 1u)]; }
    let L = subgroupShuffle(lse8, ii);
    let qo = qkv_at(b, i, 0u, h);
    let oo = out_at(b, i, h);
    ${shareLoad('qp', 'qkv', 'qo', E)}
    ${shareLoad('gp', 'dout', 'oo', E)}
    ${shareLoad('op', 'out', 'oo', E)}
    let Di = subgroupAdd(${range(E).map((e) => `gp${e} * op${e}`).join(' + ')});
    ${range(hd).map((d) => `let qi${d} = ${shared('qp', d, E)};`).join(' ')}
    ${range(hd).map((d) => `let gi${d} = ${shared('gp', d, E)};`).join(' ')}
    ${range(hd).map((d) => `var dq${d} = 0.0;`).join(' ')}
    for (var r = 0u; r < RK; r++) {
      ${onePassKeyStep(hd, 'P.key0 + 8u * r + lane', (d) => `kr[r][${d}]`, (d) => `vr[r][${d}]`, (d) => `dkr[r][${d}]`, (d) => `dvr[r][${d}]`)}
    }
    ${reduceScatter8(range(hd).map((d) => `dq${d}`), (d) => Math.floor(d / E), 'dqs')}
    ${range(E).map((e) => `var dq_${e} = dqs${e} * P.scale;
    if (P.accumulate != 0u) { dq_${e} += dqkv[qo + lane * ${E}u + ${e}u]; }
    dqkv[qo + lane * ${E}u + ${e}u] = dq_${e};`).join('\n    ')}
  }
  for (var r = 0u; r < RK; r++) {
    let j = P.key0 + 8u * r + lane;
    if (j < P.N) {
      let ko = qkv_at(b, j, 1u, h);
      ${range(hd).map((d) => `dqkv[ko + ${d}u] = dkr[r][${d}] * P.scale; dqkv[ko + P.nh * HD + ${d}u] = dvr[r][${d}];`).join('\n      ')}
    }
  }
}`,
  });
});

/** The one-pass backward with vec4 memory access (hd % 16 == 0): keys, dK and dV move as vec4;
 * per query, lane l loads vec4 l of [q ‖ dO] (and of O beside dO, for D_i), and lanes
 * 0 … hd/4 − 1 store dQ_i's vec4s. Cold compile on lavapipe (LLVM 15): d16 with 7 keys a lane 9 s
 * against 17 s for the scalar kernel, d32 with 9 keys 63 s against 42 s. Every lane reading the
 * whole query row at the same (uniform) address instead, with D_i and L_i computed in each lane,
 * ran the backward 2.0× slower at B32 h4 N50 d16 and 1.4× at N65 d32 (profiler medians of 21
 * interleaved; results identical): gallivm loads a uniform address a component at a time, each
 * behind its own bounds branch. */
export const flashBackwardOnePassVecKernel = memo(function flashBackwardOnePassVecKernel(hd: number, dropout: boolean, R: number): KernelSource {
  if (hd % 16 !== 0) throw new Error(`flashBackwardOnePassVecKernel: head dim ${hd} is not a multiple of 16`);
  const H4 = hd / 4;
  const T = hd / 16;
  const c = ['x', 'y', 'z', 'w'];
  const qElem = (d: number) => { const m = Math.floor(d / 4); return `subgroupBroadcast(qg${Math.floor(m / 8)}.${c[d % 4]}, ${m % 8}u)`; };
  const gElem = (d: number) => { const m = H4 + Math.floor(d / 4); return `subgroupBroadcast(qg${Math.floor(m / 8)}.${c[d % 4]}, ${m % 8}u)`; };
  return kernel({
    name: `flash_attn_bwd_onepass_sgv_d${hd}_k${R}${dropout ? '_dropout' : ''}`,
    header: 'enable subgroups;',
    uniforms: ONE_PASS_UNIFORMS,
    buffers: [
      { name: 'qkv4', access: 'read', type: 'vec4<f32>' },
      { name: 'out4', access: 'read', type: 'vec4<f32>' },
      { name: 'dout4', access: 'read', type: 'vec4<f32>' },
      { name: 'lse', access: 'read', type: 'f32' },
      { name: 'dqkv4', access: 'read_write', type: 'vec4<f32>' },
    ],
    workgroupSize: 8,
    body: `${helpers(hd, dropout)}
${MAIN_SUBGROUP} {
  ${HEAD_PER_SUBGROUP}
  let vOff = P.nh * HD / 4u;
  ${range(R).map((r) => `let ko${r} = qkv_at(b, min(P.key0 + ${8 * r}u + lane, P.N - 1u), 1u, h) / 4u;
  ${range(H4).map((q) => `let kq${r}_${q} = qkv4[ko${r} + ${q}u]; let vq${r}_${q} = qkv4[ko${r} + vOff + ${q}u];`).join(' ')}
  ${range(hd).map((d) => `let k${r}_${d} = kq${r}_${Math.floor(d / 4)}.${c[d % 4]}; let v${r}_${d} = vq${r}_${Math.floor(d / 4)}.${c[d % 4]}; var dk${r}_${d} = 0.0; var dv${r}_${d} = 0.0;`).join('\n  ')}`).join('\n  ')}
  // Lane l's vec4s of a query's [q ‖ dO]: m = l, 8 + l, …
  ${range(T).map((t) => `let qgm${t} = lane + ${8 * t}u;
  let isG${t} = qgm${t} >= ${H4}u;`).join('\n  ')}
  var lse8 = 0.0;
  for (var i = 0u; i < P.N; i++) {
    let ii = i % 8u;
    if (ii == 0u) { lse8 = lse[bh * P.N + min(i + lane, P.N - 1u)]; }
    let L = subgroupShuffle(lse8, ii);
    let qo = qkv_at(b, i, 0u, h) / 4u;
    let oo = out_at(b, i, h) / 4u;
    ${range(T).map((t) => `var qg${t}: vec4<f32>;
    var go${t} = 0.0;
    if (isG${t}) {
      qg${t} = dout4[oo + qgm${t} - ${H4}u];
      go${t} = dot(qg${t}, out4[oo + qgm${t} - ${H4}u]);
    } else {
      qg${t} = qkv4[qo + qgm${t}];
    }`).join('\n    ')}
    let Di = subgroupAdd(${range(T).map((t) => `go${t}`).join(' + ')});
    ${range(hd).map((d) => `let qi${d} = ${qElem(d)};`).join(' ')}
    ${range(hd).map((d) => `let gi${d} = ${gElem(d)};`).join(' ')}
    ${range(hd).map((d) => `var dq${d} = 0.0;`).join(' ')}
    ${range(R).map((r) => onePassKeyStep(hd, `P.key0 + ${8 * r}u + lane`, (d) => `k${r}_${d}`, (d) => `v${r}_${d}`, (d) => `dk${r}_${d}`, (d) => `dv${r}_${d}`)).join('\n    ')}
    ${reduceScatter8(range(H4).map((w) => `vec4<f32>(${range(4).map((e) => `dq${4 * w + e}`).join(', ')})`), (w) => w % 8, 'dqs')}
    ${range(Math.ceil(H4 / 8)).map((u) => `if (lane + ${8 * u}u < ${H4}u) {
      var dq4 = dqs${u} * P.scale;
      if (P.accumulate != 0u) { dq4 += dqkv4[qo + lane + ${8 * u}u]; }
      dqkv4[qo + lane + ${8 * u}u] = dq4;
    }`).join('\n    ')}
  }
  ${range(R).map((r) => `if (P.key0 + ${8 * r}u + lane < P.N) {
    let ko = qkv_at(b, P.key0 + ${8 * r}u + lane, 1u, h) / 4u;
    ${range(H4).map((q) => `dqkv4[ko + ${q}u] = vec4<f32>(${range(4).map((e) => `dk${r}_${4 * q + e}`).join(', ')}) * P.scale; dqkv4[ko + vOff + ${q}u] = vec4<f32>(${range(4).map((e) => `dv${r}_${4 * q + e}`).join(', ')});`).join('\n    ')}
  }`).join('\n  ')}
}`,
  });
});

// ---- K/V tiles in workgroup memory (FlashAttention-2's layout) ---------------------------------
// The shape FlashAttention-2 gives a GPU: a workgroup of TILE_ROWS invocations owns as many rows
// (queries, or keys for dK/dV) of one (batch, head); the other side's rows are brought in tiles of
// `tile` rows: each invocation copies one row into workgroup memory, a barrier, then every
// invocation reads the whole tile from there, so a workgroup reads each K/V (or Q/dO) row from
// storage once instead of once per row it owns. Registers hold the row's vectors as vec4s, as in
// the vec4 kernels. Tiles are sized by the caller from the device's workgroup storage (16 KiB is
// WebGPU's guaranteed minimum: 64 rows of [k ‖ v] at hd 32, 32 at hd 64). Rows past N compute on
// row N − 1 and skip their stores: every invocation must reach every barrier.
// On lavapipe a workgroup is one CPU thread that runs its invocations 8 at a time and splits the
// kernel at each barrier, so workgroup memory saves no memory traffic there (engine/ops/attention.ts
// has the measurement); on a GPU it is the kernel's reason to exist.
export const TILE_ROWS = 64;

/** Workgroup → (batch, head) and the TILE_ROWS rows it owns: this invocation's row `row` (clamped
 * to N − 1) and whether it is real (`live`). */
const TILE_PROLOGUE = `let w = wid.y * nwg.x + wid.x;
  let tiles = (P.N + ${TILE_ROWS - 1}u) / ${TILE_ROWS}u;
  if (w >= P.B * P.nh * tiles) { return; }
  let bh = w / tiles;
  let h = bh % P.nh;
  let b = bh / P.nh;
  let mine = (w % tiles) * ${TILE_ROWS}u + lid.x;
  let row = min(mine, P.N - 1u);
  let live = mine < P.N;
  let t = bh * P.N + row;`;

function tileBuffers(hd: number, tile: number, names: string[]): string {
  return names.map((n) => `var<workgroup> ${n}: array<vec4<f32>, ${(tile * hd) / 4}>;`).join('\n');
}

/** Copies row `t0 + lid.x` of the other side into the tile (invocations past the tile or past N
 * copy nothing), between the barriers that keep the previous tile's readers and this tile's
 * writers apart. `copy(n)` is the WGSL storing row n's vec4 c to slot lid.x. */
function tileLoad(tile: number, copy: (n: string) => string): string {
  return `workgroupBarrier();
    if (lid.x < ${tile}u && t0 + lid.x < P.N) {
      let n = t0 + lid.x;
      ${copy('n')}
    }
    workgroupBarrier();
    let count = min(${tile}u, P.N - t0);`;
}

/** A kernel of the workgroup-tile family: `kind` names it, `workgroupVars` declares its tiles,
 * `main` follows the prologue (TILE_PROLOGUE) in the entry point. */
function tiledKernel(kind: string, hd: number, dropout: boolean, tile: number, buffers: BufferDecl[], workgroupVars: string, main: string): KernelSource {
  if (hd % 4 !== 0) throw new Error(`flash attention tiles (${kind}): head dim ${hd} is not a multiple of 4`);
  return kernel({
    name: `flash_attn_${kind}_wg_d${hd}_t${tile}${dropout ? '_dropout' : ''}`,
    uniforms: UNIFORMS,
    buffers,
    workgroupSize: TILE_ROWS,
    body: `${vecHelpers(hd, dropout)}
${workgroupVars}
${MAIN_1D} {
  ${TILE_PROLOGUE}
  ${main}
}`,
  });
}

/** Copies key row n's k and v (V vec4s each) into slot lid.x of the K/V tiles. */
function kvTileCopy(V: number): (n: string) => string {
  return (n) => `let ko = row4(b, ${n}, 1u, h);
      let vo = row4(b, ${n}, 2u, h);
      ${range(V).map((c) => `kt[lid.x * ${V}u + ${c}u] = qkv4[ko + ${c}u]; vt[lid.x * ${V}u + ${c}u] = qkv4[vo + ${c}u];`).join('\n      ')}`;
}

export const flashForwardTiledKernel = memo(function flashForwardTiledKernel(hd: number, dropout: boolean, tile: number): KernelSource {
  const V = hd / 4;
  return tiledKernel('fwd', hd, dropout, tile, VEC4_FORWARD_BUFFERS, tileBuffers(hd, tile, ['kt', 'vt']), `let qo = row4(b, row, 0u, h);
  ${range(V).map((c) => `let q${c} = qkv4[qo + ${c}u] * P.scale;\n  var a${c} = vec4<f32>(0.0);`).join('\n  ')}
  var m = -3.0e38;
  var l = 0.0;
  for (var t0 = 0u; t0 < P.N; t0 += ${tile}u) {
    ${tileLoad(tile, kvTileCopy(V))}
    for (var jj = 0u; jj < count; jj++) {
      let s = ${range(V).map((c) => `dot(q${c}, kt[jj * ${V}u + ${c}u])`).join(' + ')};
      let m_new = max(m, s);
      let corr = exp(m - m_new);
      let pj = exp(s - m_new);
      l = l * corr + pj;
      let wj = pj * keep_(bh, row, t0 + jj);
      ${range(V).map((c) => `a${c} = a${c} * corr + wj * vt[jj * ${V}u + ${c}u];`).join('\n      ')}
      m = m_new;
    }
  }
  if (live) {
    let oo = out4(b, row, h);
    let inv = 1.0 / l;
    ${range(V).map((c) => `out4_[oo + ${c}u] = a${c} * inv;`).join('\n    ')}
    lse[t] = m + log(l);
  }`);
});

/** Per query row: D_i = dO_i · O_i (saved for the key kernel) and dQ_i, over K/V tiles. */
export const flashBackwardQTiledKernel = memo(function flashBackwardQTiledKernel(hd: number, dropout: boolean, tile: number): KernelSource {
  const V = hd / 4;
  return tiledKernel('bwd_q', hd, dropout, tile, VEC4_BACKWARD_Q_BUFFERS, tileBuffers(hd, tile, ['kt', 'vt']), `let qo = row4(b, row, 0u, h);
  let oo = out4(b, row, h);
  ${range(V).map((c) => `let q${c} = qkv4[qo + ${c}u] * P.scale;\n  let g${c} = do4[oo + ${c}u];\n  var dq${c} = vec4<f32>(0.0);`).join('\n  ')}
  let D = ${range(V).map((c) => `dot(g${c}, o4[oo + ${c}u])`).join(' + ')};
  let L = lse[t];
  for (var t0 = 0u; t0 < P.N; t0 += ${tile}u) {
    ${tileLoad(tile, kvTileCopy(V))}
    for (var jj = 0u; jj < count; jj++) {
      let s = ${range(V).map((c) => `dot(q${c}, kt[jj * ${V}u + ${c}u])`).join(' + ')};
      let dp = ${range(V).map((c) => `dot(g${c}, vt[jj * ${V}u + ${c}u])`).join(' + ')};
      let ds = exp(s - L) * (dp * keep_(bh, row, t0 + jj) - D);
      ${range(V).map((c) => `dq${c} += ds * kt[jj * ${V}u + ${c}u];`).join('\n      ')}
    }
  }
  if (live) {
    delta[t] = D;
    ${range(V).map((c) => `dqkv4[qo + ${c}u] = dq${c} * P.scale;`).join('\n    ')}
  }`);
});

/** Per key row: dK_j and dV_j over tiles of Q, dO and the queries' logsumexp and D (from the
 * query kernel). */
export const flashBackwardKVTiledKernel = memo(function flashBackwardKVTiledKernel(hd: number, dropout: boolean, tile: number): KernelSource {
  const V = hd / 4;
  return tiledKernel('bwd_kv', hd, dropout, tile, VEC4_BACKWARD_KV_BUFFERS, `${tileBuffers(hd, tile, ['qt', 'gt'])}
var<workgroup> lt: array<f32, ${tile}>;
var<workgroup> dt: array<f32, ${tile}>;`, `let ko = row4(b, row, 1u, h);
  let vo = row4(b, row, 2u, h);
  ${range(V).map((c) => `let k${c} = qkv4[ko + ${c}u];\n  let v${c} = qkv4[vo + ${c}u];\n  var dk${c} = vec4<f32>(0.0);\n  var dv${c} = vec4<f32>(0.0);`).join('\n  ')}
  for (var t0 = 0u; t0 < P.N; t0 += ${tile}u) {
    ${tileLoad(tile, (n) => `let qo = row4(b, ${n}, 0u, h);
      let oo = out4(b, ${n}, h);
      ${range(V).map((c) => `qt[lid.x * ${V}u + ${c}u] = qkv4[qo + ${c}u]; gt[lid.x * ${V}u + ${c}u] = do4[oo + ${c}u];`).join('\n      ')}
      lt[lid.x] = lse[bh * P.N + ${n}];
      dt[lid.x] = delta[bh * P.N + ${n}];`)}
    for (var ii = 0u; ii < count; ii++) {
      let s = ${range(V).map((c) => `dot(qt[ii * ${V}u + ${c}u], k${c})`).join(' + ')};
      let dp = ${range(V).map((c) => `dot(gt[ii * ${V}u + ${c}u], v${c})`).join(' + ')};
      let pij = exp(s * P.scale - lt[ii]);
      let keep = keep_(bh, t0 + ii, row);
      let ds = pij * (dp * keep - dt[ii]);
      let pd = pij * keep;
      ${range(V).map((c) => `dv${c} += pd * gt[ii * ${V}u + ${c}u];\n      dk${c} += ds * qt[ii * ${V}u + ${c}u];`).join('\n      ')}
    }
  }
  if (live) {
    ${range(V).map((c) => `dqkv4[ko + ${c}u] = dk${c} * P.scale;\n    dqkv4[vo + ${c}u] = dv${c};`).join('\n    ')}
  }`);
});
