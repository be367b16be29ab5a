// Batched, strided matmul C[b] = op(A[b]) · op(B[b]) (+ bias), op = optional transpose (baked).
// Every operand is addressed as base offset + batch offsets + row stride ("leading dimension"),
// so attention can read Q, K, V straight out of the qkv projection and write its output heads in
// place, with no permute or slice copies.
//
// Each invocation computes a TM x TN block of C in registers, with no workgroup memory: on
// lavapipe one workgroup runs on one CPU thread, its invocations across SIMD lanes, and barriers
// cost more than they save (see "What is measured about the machines" in DESIGN.md). Edge blocks
// clamp their loads and skip out-of-range stores, so any M, N, K works.
import { fieldList, kernel, type KernelSource, MAIN_1D, MAIN_SUBGROUP, memo, stridedOffsets, type UniformField } from './common.js';
import { WGSL_MATH } from './elementwise.js';

export const MATMUL_WG = 64;
export const MATMUL_TM = 4;
export const MATMUL_TN = 4;
/** Batch dimensions the kernel indexes (more are folded by the op when contiguous). */
export const MATMUL_BATCH_RANK = 4;

/** The uniforms every strided matmul kernel takes (launchMatmul fills them): sizes, offsets,
 * leading dimensions and the batch shape with each operand's batch strides. */
export const MATMUL_UNIFORMS: UniformField[] = [
  ...['M', 'N', 'K', 'batch', 'a_off', 'b_off', 'c_off', 'lda', 'ldb', 'ldc'].map((name) => ({ name, type: 'u32' as const })),
  ...fieldList('bshape', MATMUL_BATCH_RANK),
  ...fieldList('ast', MATMUL_BATCH_RANK),
  ...fieldList('bst', MATMUL_BATCH_RANK),
  ...fieldList('cst', MATMUL_BATCH_RANK),
];

export const matmulKernel = memo(function matmulKernel(transA: boolean, transB: boolean, bias: boolean): KernelSource {
  const aAt = transA ? 'ao + k * P.lda + m' : 'ao + m * P.lda + k';
  const bAt = transB ? 'bo + n * P.ldb + k' : 'bo + k * P.ldb + n';
  return kernel({
    name: `matmul_${transA ? 't' : 'n'}${transB ? 't' : 'n'}${bias ? '_bias' : ''}`,
    uniforms: MATMUL_UNIFORMS,
    buffers: [
      { name: 'A', access: 'read', type: 'f32' },
      { name: 'B', access: 'read', type: 'f32' },
      ...(bias ? [{ name: 'bias', access: 'read' as const, type: 'f32' as const }] : []),
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
  ${stridedOffsets(MATMUL_BATCH_RANK, 'bi', 'bshape', ['ast', 'bst', 'cst'], ['ao_', 'bo_', 'co_'])}
  let ao = P.a_off + ao_;
  let bo = P.b_off + bo_;
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
  let co = P.c_off + co_;
  for (var i = 0u; i < TM; i++) {
    let m = m0 + i;
    if (m >= P.M) { break; }
    for (var j = 0u; j < TN; j++) {
      let n = n0 + j;
      if (n < P.N) { C[co + m * P.ldc + n] = acc[i][j]${bias ? ' + bias[n]' : ''}; }
    }
  }
}`,
  });
});

// ---- register-blocked vec4 kernel ---------------------------------------------------------------
// TM×TN outputs per invocation (default 4×8), k in steps of 4, every load a vec4 along whichever
// dimension of the operand is contiguous (k for row-major A / transposed B, m or n otherwise):
// per 4-k step, TM + TN vec4 loads feed 4·TM·TN FMAs. Workgroups of 8 invocations (one 8-wide
// SIMD row on lavapipe). Measured at 2176×192×64 on lavapipe (bench/matmul ladder): 4×8 in
// groups of 8 ran 7.1–7.2 GFLOP/s for nt/nn/tn; 4×4×64 5–6.6; 8×8×8 4.4–5.9 (lavapipe keeps
// one scalar per SIMD lane in each register, so big per-invocation tiles spill).
// Needs 4-aligned K, contiguous dimensions, strides and offsets; `matmulFastOk` checks.

export const FAST_TM = 4;
export const FAST_TN = 8;
export const FAST_WG = 8;

export const matmulFastKernel = memo(function matmulFastKernel(transA: boolean, transB: boolean, bias: boolean, TM: number = FAST_TM, TN: number = FAST_TN, WG: number = FAST_WG): KernelSource {
  const HM = TM / 4;
  const HN = TN / 4;
  // Everything is unrolled in the generated text: private arrays indexed in loops would live in
  // memory on lavapipe; named vec4 registers with static swizzles stay in vector registers.
  const c = ['x', 'y', 'z', 'w'];
  const range = (n: number) => [...Array(n).keys()];
  const decl: string[] = [];
  const loads: string[] = [];
  if (transA) {
    for (const kk of range(4)) for (const h of range(HM)) decl.push(`var at${kk}_${h}: vec4<f32>;`);
    for (const kk of range(4)) {
      loads.push(`{ let row = (ao + (k + ${kk}u) * P.lda + m0c) / 4u; ${range(HM).map((h) => `at${kk}_${h} = A4[row + ${h}u];`).join(' ')} }`);
    }
  } else {
    for (const i of range(TM)) decl.push(`var a${i}: vec4<f32>;`);
    for (const i of range(TM)) loads.push(`a${i} = A4[(ao + min(m0 + ${i}u, P.M - 1u) * P.lda + k) / 4u];`);
  }
  if (transB) {
    for (const j of range(TN)) decl.push(`var bt${j}: vec4<f32>;`);
    for (const j of range(TN)) loads.push(`bt${j} = B4[(bo + min(n0 + ${j}u, P.N - 1u) * P.ldb + k) / 4u];`);
  } else {
    for (const kk of range(4)) for (const h of range(HN)) decl.push(`var b${kk}_${h}: vec4<f32>;`);
    for (const kk of range(4)) {
      loads.push(`{ let row = (bo + (k + ${kk}u) * P.ldb + n0c) / 4u; ${range(HN).map((h) => `b${kk}_${h} = B4[row + ${h}u];`).join(' ')} }`);
    }
  }
  const fmas: string[] = [];
  for (const kk of range(4)) {
    for (const h of range(HN)) {
      fmas.push(`let bv${kk}_${h} = ${transB ? `vec4<f32>(${range(4).map((q) => `bt${h * 4 + q}.${c[kk]}`).join(', ')})` : `b${kk}_${h}`};`);
    }
    for (const i of range(TM)) {
      const a = transA ? `at${kk}_${i >> 2}.${c[i & 3]}` : `a${i}.${c[kk]}`;
      for (const h of range(HN)) fmas.push(`acc${i}_${h} = fma(vec4<f32>(${a}), bv${kk}_${h}, acc${i}_${h});`);
    }
  }
  const accDecl = range(TM).flatMap((i) => range(HN).map((h) => `var acc${i}_${h} = vec4<f32>(0.0);`));
  const stores = range(TM).map((i) => {
    const m = transA ? `m0c + ${i}u` : `m0 + ${i}u`;
    return `{ let m = ${m};
    if (m < P.M && m >= m0) {
      let row = co + m * P.ldc;
${range(TN).map((j) => {
  const n = transB ? `n0 + ${j}u` : `n0c + ${j}u`;
  return `      { let n = ${n}; if (n < P.N && n >= n0) { C[row + n] = acc${i}_${j >> 2}.${c[j & 3]}${bias ? ' + bias[n]' : ''}; } }`;
}).join('\n')}
    } }`;
  });
  return kernel({
    name: `matmul_fast_${transA ? 't' : 'n'}${transB ? 't' : 'n'}${bias ? '_bias' : ''}${TM !== FAST_TM || TN !== FAST_TN || WG !== FAST_WG ? `_${TM}x${TN}w${WG}` : ''}`,
    uniforms: MATMUL_UNIFORMS,
    buffers: [
      { name: 'A4', access: 'read', type: 'vec4<f32>' },
      { name: 'B4', access: 'read', type: 'vec4<f32>' },
      ...(bias ? [{ name: 'bias', access: 'read' as const, type: 'f32' as const }] : []),
      { name: 'C', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: WG,
    body: `const TM = ${TM}u;
const TN = ${TN}u;
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
  // Block starts clamped so vec4 loads of edge blocks stay inside the operand (M, N % 4 == 0,
  // M, N >= 8 where the dimension is loaded as vec4); stores skip rows/columns of other blocks.
  let m0c = min(m0, P.M - TM);
  let n0c = min(n0, P.N - TN);
  ${stridedOffsets(MATMUL_BATCH_RANK, 'bi', 'bshape', ['ast', 'bst', 'cst'], ['ao_', 'bo_', 'co_'])}
  let ao = P.a_off + ao_;
  let bo = P.b_off + bo_;
  ${accDecl.join('\n  ')}
  ${decl.join('\n  ')}
  for (var k = 0u; k < P.K; k += 4u) {
    ${loads.join('\n    ')}
    ${fmas.join('\n    ')}
  }
  let co = P.c_off + co_;
  ${stores.join('\n  ')}
}`,
  });
});

/** Whether the vec4 kernel can run these operands (alignment of every vec4 load). */
export function matmulFastOk(o: { M: number; N: number; K: number; transA: boolean; transB: boolean; aOff: number; bOff: number; lda: number; ldb: number; aStrides: number[]; bStrides: number[] }): boolean {
  const al = (v: number) => v % 4 === 0;
  if (!al(o.K) || !al(o.aOff) || !al(o.bOff) || !al(o.lda) || !al(o.ldb)) return false;
  if (!o.aStrides.every(al) || !o.bStrides.every(al)) return false;
  // m0c / n0c = min(m0, M - 8) needs M >= 8 where m is the vec4 dimension; likewise n.
  if (o.transA && (!al(o.M) || o.M < 8)) return false;
  if (!o.transB && (!al(o.N) || o.N < 8)) return false;
  return true;
}

// ---- subgroup-broadcast kernel -------------------------------------------------------------------
// One workgroup = one subgroup of 8 invocations ("lanes") owns a TM×32 block of C: lane l owns
// columns n0 + 4l … n0 + 4l + 3 of every one of the TM rows. Each A element is loaded by one lane
// only (lane l loads rows m0 + 8g + l) and handed to the others with subgroupBroadcast, so per
// 4-k step a lane loads TM/8 A values and 4×4 B values for 4·TM·4 FMAs.
//
// Why this shape (measured on lavapipe, Mesa 25.0): a storage load costs ~25–35 CPU cycles per
// component per 8 lanes whatever its address pattern (uniform addresses are not detected, every
// load is a per-lane loop), an 8-lane FMA ~2.5 cycles and a broadcast ~2: loads, not arithmetic,
// bound a matmul, and a broadcast is ~15× cheaper than a load. Counting loads per FMA, the v4
// kernel (4×8 per lane) does 2.7 FMAs per loaded component; this one (16 rows) 10.7.
// The loads are still ~75% of the time: with its loads replaced by constants this kernel runs
// at ~50 GFLOP/s at 6400×576×192, against ~11 as it stands. What did not help there (medians of
// 7, 2.45 GHz Zen 3): 64 columns per workgroup (8 per lane: 8.7–10.0), 32 rows (10.2), unrolling
// k by 8 or 16 (6–7: the larger body spills the loaded values), reading the operands from
// workgroup memory instead of storage (12.6–14.9 even without the copy into it: workgroup loads
// are per-lane loops too, only without the bounds check).
// B may also come from uniform arrays (`bChunks`): gallivm loads a uniform value at a per-lane
// address as one vector gather with one bounds mask, not a per-lane loop, so a B of at most 64 KiB
// copied into one ran 1.02–1.21× faster than from storage or a texture (Zen 4). A binding holds at
// most 64 KiB, so a larger B is split along k over up to UNIFORM_B_MAX_CHUNKS arrays of
// `chunkRows` rows each, row-major [k][n], each with its own copy of the k loop (a switch on the
// chunk inside one loop ate the gain: 1.01–1.03 at 6400×192·192×{192,576}). Speed against storage,
// medians of 25 paired rounds: 3 arrays (192×192) 1.07–1.10, 4 (256×256, 128×512) 1.02, 7 and 10
// (192×576, 768×192) 0.86–1.01; the convstem16-w128 training step, whose qkv weight takes 4, ran
// 0.96× with it (medians of 31 interleaved steps): hence at most 3.
// Needs subgroups with at least 8 invocations (`subgroupMinSize >= 8`); launchMatmul checks.
// Loads are vec4 where the operand's contiguous dimension and alignment allow (`aVec`: A along k,
// `bVec`: B along n for row-major B, along k for transposed B) and scalar otherwise, so any
// shape, offset and stride works; rows and columns past the edge are clamped on load and skipped
// on store.
export const SUBGROUP_LANES = 8;
export const SUBGROUP_TN = 32;
/** vec4s of one uniform array of B (64 KiB, WebGPU's guaranteed maxUniformBufferBindingSize). */
export const UNIFORM_B_VEC4 = 4096;
/** Uniform arrays for B (WebGPU guarantees 12 uniform buffers per stage; the parameters take one):
 * more were no faster than storage (see the subgroup kernel). */
export const UNIFORM_B_MAX_CHUNKS = 3;

/** `gelu`: the epilogue also applies the exact GELU, writing the activation to C and the
 * pre-activation (needed by the backward) to Z — one pass instead of a matmul and an
 * elementwise kernel reading it back.
 * `aSums`: also write the sums over k of A's rows, Σ_k op(A)[m, k], to `Asum[m]` (one batch only):
 * the bias gradient of a linear layer from its weight-gradient product gᵀ·x, whose A = g the kernel
 * loads anyway — a vec4 add per k-step instead of a reduction kernel reading g again. */
export const matmulSubgroupKernel = memo(function matmulSubgroupKernel(transA: boolean, transB: boolean, bias: boolean, aVec: boolean, bVec: boolean, TM: number, gelu = false, bTex = false, cVec = false, kMajor = false, aSums = false, bChunks: number = 0, chunkRows: number = 0, TN: 4 | 8 = 4): KernelSource {
  if (TM % SUBGROUP_LANES !== 0) throw new Error(`matmulSubgroupKernel: TM ${TM} is not a multiple of ${SUBGROUP_LANES}`);
  // B repacked by matmulPackBKernel: texel (n / 4, k) of layer bi holds B[bi][k, n .. n + 3]
  // whatever B's layout, so transB and bVec do not apply.
  if (bTex) { transB = false; bVec = false; }
  if (bTex && bChunks) throw new Error('matmulSubgroupKernel: B comes from a texture or uniform arrays, not both');
  // Several chunks: B row-major [k][n] in chunks of chunkRows rows (a multiple of 4, so a 4-k step
  // and the K % 4 tail never straddle two), addressed from each chunk's start.
  const chunked = bChunks > 1;
  if (chunked && (transB || !bVec || chunkRows <= 0 || chunkRows % 4 !== 0)) throw new Error('matmulSubgroupKernel: chunked uniform B must be row-major with vec4 rows and chunks of a multiple of 4 rows');
  if (aVec && transA) throw new Error('matmulSubgroupKernel: vec4 A loads need row-major A (contiguous along k)');
  const G = TM / SUBGROUP_LANES;
  // Column groups of 4 per lane: TN = 8 gives each lane 8 columns and the subgroup 64, so every
  // broadcast A element feeds two vec4 FMAs, at the price of twice the B loads per A row — worth
  // it where B loads are gathers (a texture or uniform arrays; measured in engine/ops/matmul.ts).
  // Names stay as for TN = 4 with one group (acc3, bk2, bn, bx) and take a suffix _v per group
  // with two (acc3_1, bk2_1, bn_1, bx_1).
  const V = TN / 4;
  if (V !== 1 && V !== 2) throw new Error(`matmulSubgroupKernel: TN ${TN} is not 4 or 8`);
  if (V > 1 && !bTex && !bChunks) throw new Error('matmulSubgroupKernel: 8 columns per lane are for B from a texture or uniform arrays (from storage they lost 21–24%)');
  const c = ['x', 'y', 'z', 'w'];
  const range = (n: number) => [...Array(n).keys()];
  const groups = range(V);
  const gs = (v: number) => (V === 1 ? '' : `_${v}`);
  const bnCol = (v: number, q: number) => `bn${4 * v + q}`;
  const tileN = SUBGROUP_TN * V;
  // Scalar element of an operand declared as vec4 array (tails and unaligned modes).
  const aElem = (m: string, k: string) => (transA ? `ldA(ao + (${k}) * P.lda + ${m})` : `ldA(ao + ${m} * P.lda + ${k})`);
  const bElem = (k: string, n: string) => (transB ? `ldB(bo + ${n} * P.ldb + ${k})` : `ldB(bo + (${k}) * P.ldb + ${n})`);

  // Loads for one 4-k step starting at k: a{g} (vec4 over kk) and bk{kk} (vec4 over the lane's 4 columns).
  const load4: string[] = [];
  for (const g of range(G)) {
    load4.push(aVec ? `let a${g} = A4[(ao + ar${g} * P.lda + k) / 4u];` : `let a${g} = vec4<f32>(${range(4).map((kk) => aElem(`ar${g}`, `k + ${kk}u`)).join(', ')});`);
  }
  for (const v of groups) {
    const x = gs(v);
    if (bTex) {
      for (const kk of range(4)) load4.push(`let bk${kk}${x} = textureLoad(Bt, vec2<u32>(bx${x}, k + ${kk}u), bi, 0);`);
    } else if (chunked) {
      // Loaded per chunk in the chunk's own loop (below); CHUNK stands for its index.
      for (const kk of range(4)) load4.push(`let bk${kk}${x} = B4_CHUNK[((k - CHUNK_START + ${kk}u) * P.ldb + bn${x}) / 4u];`);
    } else if (!transB) {
      for (const kk of range(4)) {
        load4.push(bVec ? `let bk${kk}${x} = B4[(bo + (k + ${kk}u) * P.ldb + bn${x}) / 4u];` : `let bk${kk}${x} = vec4<f32>(${range(4).map((q) => bElem(`k + ${kk}u`, bnCol(v, q))).join(', ')});`);
      }
    } else {
      for (const q of range(4)) {
        const col = 4 * v + q;
        load4.push(bVec ? `let bc${col} = B4[(bo + ${bnCol(v, q)} * P.ldb + k) / 4u];` : `let bc${col} = vec4<f32>(${range(4).map((kk) => bElem(`k + ${kk}u`, bnCol(v, q))).join(', ')});`);
      }
      for (const kk of range(4)) load4.push(`let bk${kk}${x} = vec4<f32>(${range(4).map((q) => `bc${4 * v + q}.${c[kk]}`).join(', ')});`);
    }
  }
  // Row by row: each accumulator takes its 4 FMAs in a row. TM accumulators of vec4 × 8 lanes are
  // 4·TM AVX2 registers on lavapipe, far more than the CPU's 16, so they live in memory; taking a
  // row's FMAs together loads and stores each accumulator once per 4-k step instead of once per
  // FMA: 29.2 vs 23.4 GFLOP/s at 6400×576×192 against the k-major order (`kMajor`, kept for the
  // ladder; medians of 21 interleaved repeats). Unrolling k by 8 in this order was slower (16.2
  // vs 18.3).
  const fma4: string[] = [];
  const fma = (g: number, i: number, kk: number) => {
    const row = g * SUBGROUP_LANES + i;
    if (V === 1) return `acc${row} = fma(vec4<f32>(subgroupBroadcast(a${g}.${c[kk]}, ${i}u)), bk${kk}, acc${row});`;
    return `let s${row}_${kk} = vec4<f32>(subgroupBroadcast(a${g}.${c[kk]}, ${i}u)); ${groups.map((v) => `acc${row}${gs(v)} = fma(s${row}_${kk}, bk${kk}${gs(v)}, acc${row}${gs(v)});`).join(' ')}`;
  };
  if (kMajor) {
    for (const kk of range(4)) for (const g of range(G)) for (const i of range(SUBGROUP_LANES)) fma4.push(fma(g, i, kk));
  } else {
    for (const g of range(G)) for (const i of range(SUBGROUP_LANES)) for (const kk of range(4)) fma4.push(fma(g, i, kk));
  }
  // One k at a time for K % 4. Vec4 A loads imply K % 4 == 0 (matmulSubgroupVec), and there the
  // kernel has no tail loop: an empty tail still cost 1–5% at K = 64 (paired rounds of ten
  // 6400×192·64 and 2176×128·64 products), its accumulators live across a second loop.
  const tail = [
    ...range(G).map((g) => `let t${g} = ${aElem(`ar${g}`, 'k')};`),
    ...groups.map((v) => bTex ? `let tb${gs(v)} = textureLoad(Bt, vec2<u32>(bx${gs(v)}, k), bi, 0);` : chunked ? `let tb${gs(v)} = ldBRow(k, bn${gs(v)});` : `let tb${gs(v)} = vec4<f32>(${range(4).map((q) => bElem('k', bnCol(v, q))).join(', ')});`),
    ...range(G).flatMap((g) => range(SUBGROUP_LANES).map((i) => {
      const row = g * SUBGROUP_LANES + i;
      return `let ts${row} = vec4<f32>(subgroupBroadcast(t${g}, ${i}u)); ${groups.map((v) => `acc${row}${gs(v)} = fma(ts${row}, tb${gs(v)}, acc${row}${gs(v)});`).join(' ')}`;
    })),
  ];
  // vec4 stores (`cVec`: N, ldc, C's offset and batch strides multiples of 4, so a lane's 4
  // columns are all inside C or all past its edge): one store instead of four per row, which
  // matters where K is short: the linear layers at K = 128 ran 5–15% faster (medians of 21-25
  // interleaved repeats).
  const vecStores = (v: number) => range(TM).map((i) => {
    const z = `acc${i}${gs(v)}${bias ? ` + bv${gs(v)}` : ''}`;
    return `if (m0 + ${i}u < P.M) {
    let at = (co + (m0 + ${i}u) * P.ldc + n0 + ${4 * v}u) / 4u;
    ${gelu ? `let z = ${z}; Z4[at] = z; C4[at] = vec4<f32>(${range(4).map((q) => `gelu_(z.${c[q]})`).join(', ')});` : `C4[at] = ${z};`}
  }`;
  });
  const scalarStores = range(TM).map((i) => `if (m0 + ${i}u < P.M) {
    let row = co + (m0 + ${i}u) * P.ldc;
    ${groups.flatMap((v) => range(4).map((q) => {
      const z = `acc${i}${gs(v)}.${c[q]}${bias ? ` + bv${gs(v)}.${c[q]}` : ''}`;
      const n = `n0 + ${4 * v + q}u`;
      return `if (${n} < P.N) { ${gelu ? `let z = ${z}; Z[row + ${n}] = z; C[row + ${n}] = gelu_(z);` : `C[row + ${n}] = ${z};`} }`;
    })).join('\n    ')}
  }`);
  const stores = cVec ? groups.flatMap((v) => [`if (n0 + ${4 * v}u < P.N) {`, ...vecStores(v), '}']) : scalarStores;
  return kernel({
    name: `matmul_sg_${transA ? 't' : 'n'}${bTex ? 'x' : transB ? 't' : 'n'}${bChunks ? `_bu${chunked ? `${bChunks}x${chunkRows}` : ''}` : ''}${bias ? '_bias' : ''}${gelu ? '_gelu' : ''}${aVec ? '_av' : ''}${bVec ? '_bv' : ''}${cVec ? '_cv' : ''}${kMajor ? '_km' : ''}${aSums ? '_rs' : ''}_${TM}${V > 1 ? `x${TN}` : ''}`,
    header: gelu ? `enable subgroups;\n${WGSL_MATH}` : 'enable subgroups;',
    uniforms: MATMUL_UNIFORMS,
    buffers: [
      { name: 'A4', access: 'read', type: 'vec4<f32>' },
      ...(bTex ? [] : chunked ? range(bChunks).map((ci) => ({ name: `B4_${ci}`, access: 'uniform' as const, type: 'vec4<f32>' as const, length: UNIFORM_B_VEC4 })) : [bChunks ? { name: 'B4', access: 'uniform' as const, type: 'vec4<f32>' as const, length: UNIFORM_B_VEC4 } : { name: 'B4', access: 'read' as const, type: 'vec4<f32>' as const }]),
      ...(bias ? [{ name: 'bias', access: 'read' as const, type: 'f32' as const }] : []),
      { name: cVec ? 'C4' : 'C', access: 'read_write', type: cVec ? 'vec4<f32>' : 'f32' },
      ...(gelu ? [{ name: cVec ? 'Z4' : 'Z', access: 'read_write' as const, type: cVec ? 'vec4<f32>' as const : 'f32' as const }] : []),
      ...(aSums ? [{ name: 'Asum', access: 'read_write' as const, type: 'f32' as const }] : []),
    ],
    textures: bTex ? [{ name: 'Bt', kind: 'sampled' }] : [],
    workgroupSize: SUBGROUP_LANES,
    body: `fn ldA(i: u32) -> f32 { return A4[i / 4u][i % 4u]; }
${bTex ? '' : chunked ? `// Row k's 4 columns from n of chunked B (n % 4 == 0).
fn ldBRow(k: u32, n: u32) -> vec4<f32> {
  switch (k / ${chunkRows}u) {
    ${range(bChunks).map((ci) => `${ci === bChunks - 1 ? 'default' : `case ${ci}u`}: { return B4_${ci}[((k - ${ci * chunkRows}u) * P.ldb + n) / 4u]; }`).join('\n    ')}
  }
}` : 'fn ldB(i: u32) -> f32 { return B4[i / 4u][i % 4u]; }'}

${MAIN_SUBGROUP} {
  // Everything up to the lane's columns is workgroup-uniform, as subgroupBroadcast requires.
  let w = wid.y * nwg.x + wid.x;
  let tiles_n = (P.N + ${tileN - 1}u) / ${tileN}u;
  let tiles_m = (P.M + ${TM - 1}u) / ${TM}u;
  let per_batch = tiles_m * tiles_n;
  if (w >= per_batch * P.batch) { return; }
  let bi = w / per_batch;
  let r = w % per_batch;
  let m0 = (r / tiles_n) * ${TM}u;
  let n0 = (r % tiles_n) * ${tileN}u + ${TN}u * lane;
  ${stridedOffsets(MATMUL_BATCH_RANK, 'bi', 'bshape', ['ast', 'bst', 'cst'], ['ao_', 'bo_', 'co_'])}
  let ao = P.a_off + ao_;
  let bo = P.b_off + bo_;
  ${range(G).map((g) => `let ar${g} = min(m0 + ${g * SUBGROUP_LANES}u + lane, P.M - 1u);`).join('\n  ')}
  ${groups.map((v) => !transB && bVec ? `let bn${gs(v)} = min(n0 + ${4 * v}u, P.N - 4u);` : '').join(' ')}
  ${groups.map((v) => bTex ? `let bx${gs(v)} = min((n0 + ${4 * v}u) / 4u, (P.N + 3u) / 4u - 1u);` : '').join(' ')}
  ${groups.flatMap((v) => range(4).map((q) => `let ${bnCol(v, q)} = min(n0 + ${4 * v + q}u, P.N - 1u);`)).join('\n  ')}
  ${range(TM).map((i) => groups.map((v) => `var acc${i}${gs(v)} = vec4<f32>(0.0);`).join(' ')).join('\n  ')}
  ${aSums ? range(G).map((g) => `var as${g} = vec4<f32>(0.0);`).join(' ') : ''}
  let k4 = P.K - P.K % 4u;
  var k = 0u;
  ${(chunked ? range(bChunks) : [-1]).map((ci) => `for (; k < ${ci < 0 || ci === bChunks - 1 ? 'k4' : `min(k4, ${(ci + 1) * chunkRows}u)`}; k += 4u) {
    ${load4.join('\n    ').replaceAll('B4_CHUNK', `B4_${ci}`).replaceAll('CHUNK_START', `${ci * chunkRows}u`)}
    ${fma4.join('\n    ')}
    ${aSums ? range(G).map((g) => `as${g} += a${g};`).join(' ') : ''}
  }`).join('\n  ')}
  ${aVec ? '' : `for (; k < P.K; k++) {
    ${tail.join('\n    ')}
    ${aSums ? range(G).map((g) => `as${g}.x += t${g};`).join(' ') : ''}
  }`}
  let co = P.c_off + co_;
  ${bias ? groups.map((v) => `let bv${gs(v)} = vec4<f32>(${range(4).map((q) => `bias[${bnCol(v, q)}]`).join(', ')});`).join(' ') : ''}
  ${stores.join('\n  ')}
  ${aSums ? `// The first column tile of each row tile writes its rows' sums.
  if (r % tiles_n == 0u) {
    ${range(G).map((g) => `if (m0 + ${g * SUBGROUP_LANES}u + lane < P.M) { Asum[m0 + ${g * SUBGROUP_LANES}u + lane] = (as${g}.x + as${g}.y) + (as${g}.z + as${g}.w); }`).join('\n    ')}
  }` : ''}
}`,
  });
});

/** Which loads of the subgroup kernel can be vec4 for these operands (alignment of every vec4
 * address: offsets, leading dimensions, batch strides and the vectorised extent). */
export function matmulSubgroupVec(o: { N: number; K: number; transA: boolean; transB: boolean; aOff: number; bOff: number; lda: number; ldb: number; aStrides: number[]; bStrides: number[] }): { aVec: boolean; bVec: boolean } {
  const al = (v: number) => v % 4 === 0;
  const aVec = !o.transA && al(o.K) && al(o.aOff) && al(o.lda) && o.aStrides.every(al);
  const bVec = al(o.bOff) && al(o.ldb) && o.bStrides.every(al) && (o.transB ? al(o.K) : al(o.N) && o.N >= 4);
  return { aVec, bVec };
}

// ---- B repacked into a texture --------------------------------------------------------------------
// On lavapipe (Mesa 25.0) a storage-buffer load runs as a per-lane loop with a bounds branch per
// component, while textureLoad of an rgba32f texel is a vector gather: the subgroup kernel reading
// B from a texture ran 15.2–15.6 GFLOP/s at 6400×576×192 against 10.0 reading it from storage
// (medians of 6, 2.45 GHz Zen 3; A from a texture as well was slower, 12.1). This kernel writes
// B — any transpose, offset, stride and batch — as texel (n / 4, k) of layer bi = B[bi][k, n .. n + 3],
// zero past N, once per matmul; the matmul then reads 4 columns per load.

/** Uniforms: the matmul's (`MATMUL_UNIFORMS`); grid: one invocation per texel. `vec`: row-major
 * B with N, ldb, offset and batch strides multiples of 4, so a texel is one vec4 load. */
export const matmulPackBKernel = memo(function matmulPackBKernel(transB: boolean, vec = false): KernelSource {
  if (vec && transB) throw new Error('matmulPackBKernel: vec4 loads need row-major B');
  const bAt = transB ? 'bo + n * P.ldb + k' : 'bo + k * P.ldb + n';
  const load = vec
    ? 'let v = B[(bo + k * P.ldb) / 4u + x];'
    : `var v = vec4<f32>(0.0);
  for (var q = 0u; q < 4u; q++) {
    let n = 4u * x + q;
    if (n < P.N) { v[q] = B[${bAt}]; }
  }`;
  return kernel({
    name: `matmul_pack_b_${transB ? 't' : 'n'}${vec ? '_v' : ''}`,
    uniforms: MATMUL_UNIFORMS,
    buffers: [{ name: 'B', access: 'read', type: vec ? 'vec4<f32>' : 'f32' }],
    textures: [{ name: 'Bt', kind: 'write' }],
    workgroupSize: 64,
    body: `${MAIN_1D} {
  let t = global_index(wid, lid, nwg);
  let w = (P.N + 3u) / 4u;
  if (t >= w * P.K * P.batch) { return; }
  let x = t % w;
  let row = t / w;
  let bi = row / P.K;
  let k = row % P.K;
  ${stridedOffsets(MATMUL_BATCH_RANK, 'bi', 'bshape', ['bst'], ['bo_'])}
  let bo = P.b_off + bo_;
  ${load}
  textureStore(Bt, vec2<u32>(x, k), bi, v);
}`,
  });
});

// ---- transposed B repacked into uniform arrays -----------------------------------------------------
// For a transposed B (a linear layer's weight) that is larger than one uniform array or not read
// as stored: writes B[k, n .. n + 3] = Bᵀ-as-stored[n .. n + 3, k] (any offset and leading
// dimension; one product) as vec4 (k − c·rows)·N/4 + n/4 of chunk c = k / rows, each chunk
// `UNIFORM_B_VEC4` vec4s long, into the scratch buffer the matmul then binds chunk by chunk as
// uniform arrays. N % 4 == 0. (A row-major B is copied instead.)

/** Uniforms: the matmul's (`MATMUL_UNIFORMS`); grid: one invocation per vec4 of B. */
export const matmulPackBUniformKernel = memo(function matmulPackBUniformKernel(rows: number): KernelSource {
  const bAt = (q: number) => `P.b_off + (n + ${q}u) * P.ldb + k`;
  return kernel({
    name: `matmul_pack_b_uniform_t_${rows}`,
    uniforms: MATMUL_UNIFORMS,
    buffers: [{ name: 'B', access: 'read', type: 'f32' }, { name: 'Bu', access: 'read_write', type: 'vec4<f32>' }],
    workgroupSize: 64,
    body: `${MAIN_1D} {
  let t = global_index(wid, lid, nwg);
  let w = P.N / 4u;
  if (t >= w * P.K) { return; }
  let x = t % w;
  let k = t / w;
  let n = 4u * x;
  let c = k / ${rows}u;
  Bu[c * ${UNIFORM_B_VEC4}u + (k - c * ${rows}u) * w + x] = vec4<f32>(${[0, 1, 2, 3].map((q) => `B[${bAt(q)}]`).join(', ')});
}`,
  });
});
