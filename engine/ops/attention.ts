// Multi-head self-attention from a packed qkv projection, as timm's Attention:
//   qkv (B, N, 3·D) → q, k, v heads (B, nh, N, hd) → softmax(q·kᵀ · hd^-½) · v → (B, N, D).
// Two implementations with the same contract ('auto' picks by adapter and head dim, below):
// - 'flash': kernels/attention.ts, FlashAttention-2 style, no N×N matrix in memory.
// - 'unfused' (the reference path and benchmark baseline): matmul → softmax → matmul with the
//   N×N probabilities materialised; strided matmuls read the heads straight out of qkv and write
//   the output heads in place, so no permute or slice copies run.
// Either backward writes dQ, dK, dV into one dqkv buffer.
import { grid1d, type KernelSource } from '../../kernels/common.js';
import { flashBackwardKVKernel, flashBackwardKVSubgroupKernel, flashBackwardOnePassKernel, flashBackwardOnePassVecKernel, flashForwardOnePassKernel, flashForwardOnePassVecKernel, flashBackwardKVVec4Kernel, flashBackwardQKernel, flashBackwardQSubgroupKernel, flashBackwardQVec4Kernel, flashForwardKernel, flashForwardSubgroupKernel, flashForwardSubgroupVecKernel, flashForwardVec4Kernel, flashBackwardKVTiledKernel, flashBackwardQTiledKernel, flashForwardTiledKernel, TILE_ROWS } from '../../kernels/attention.js';
import { dropoutKernel } from '../../kernels/random.js';
import { softmaxGradKernel, softmaxKernel } from '../../kernels/softmax.js';
import { record } from '../autograd.js';
import { cpuAdapter, currentDevice, subgroupsOf8 } from '../device.js';
import { rt } from '../dispatch.js';
import { shapeStr, Tensor } from '../tensor.js';
import { launchMatmul, type Operand } from './matmul.js';
import { nextKey, type RandomKey } from './random.js';

export interface AttentionOptions {
  /** Dropout on the attention probabilities (training only). */
  dropout?: number;
  training?: boolean;
  seed?: number;
  /** Receives the softmax probabilities (B, nh, N, N) of this call, e.g. for attention maps
   * (forces the unfused path, which materialises them). The tensor is the caller's, like the
   * result: released by the enclosing scope, or by dispose() outside one. */
  capture?: (probs: Tensor) => void;
  /** 'auto' (default), 'flash' or 'unfused'. */
  impl?: 'auto' | 'flash' | 'unfused';
}

// Measured on lavapipe (tessera profile attention): the one-row-per-invocation flash kernels
// (vec4, scalar) load every K/V row once per query row, and past head dim 16 they are 2–5×
// slower forward+backward than the unfused path. The subgroup kernels share each K/V row among
// 8 query rows and are faster than unfused forward at every shape measured. Their backward
// recomputes P twice (once for dQ, once for dK and dV: 14·N²·hd FLOPs against the unfused
// 8·N²·hd), which on a CPU adapter, where the unfused matmuls run at full speed, costs more than
// it saves once the head dim is large: forward+backward (bench/results/attention-*, 128 heads)
// flash/unfused = 0.68× the time at hd 16 (N 50), 0.85× at hd 32 (N 65), 1.20× at hd 64
// (N 197). The one-pass backward in key blocks (10·N²·hd) brought N197 d64 to 0.94× / 0.99× the
// unfused path's speed with 128 heads and 1.15× / 1.13× with 512 (benchmark / interleaved
// rounds): no reliable win then. Summing its dQ by butterfly exchanges instead of subgroupAdd made
// it a win (run (N), bench/results/attention-*-N197-d64*: flash 1.20× / 1.13× faster than unfused
// with 128 heads, 1.20× / 1.14× with 512; profiler, B32 h4, flash/unfused time at d64: N40 0.71,
// N50 1.08 and 0.93 in two runs, N65 0.85 and 0.87, N257 0.81). So on a CPU adapter with
// subgroups: flash; without subgroups, unfused past hd 16. GPUs: flash.

function chooseImpl(hd: number): 'flash' | 'unfused' {
  const cpu = cpuAdapter();
  if (hd % 8 === 0 && subgroupsOf8()) return 'flash';
  return cpu && hd > 16 ? 'unfused' : 'flash';
}

function rowsKernel(source: ReturnType<typeof softmaxKernel>, rows: number, cols: number, scale: number, buffers: Tensor[], label: string): void {
  rt().run({ source, uniforms: { rows, cols, scale }, buffers: buffers.map((t) => t.buffer), grid: grid1d(rows, source.workgroupSize), label });
}

function dropoutInto(x: Tensor, p: number, key: RandomKey): Tensor {
  const y = Tensor.empty(x.shape, 'float32', 'attention dropout');
  const source = dropoutKernel();
  rt().run({ source, uniforms: { n: x.size, seed: key.seed, stream: key.stream, p }, buffers: [x.buffer, y.buffer], grid: grid1d(Math.ceil(x.size / 4), source.workgroupSize), label: `attention_dropout ${shapeStr(x.shape)}` });
  return y;
}

export function attention(qkv: Tensor, numHeads: number, opts: AttentionOptions = {}): Tensor {
  if (qkv.rank !== 3 || qkv.dtype !== 'float32' || qkv.shape[2]! % (3 * numHeads) !== 0) {
    throw new Error(`attention: qkv ${qkv.describe()} must be float32 (B, N, 3·D) with D divisible by ${numHeads} heads`);
  }
  const hd = qkv.shape[2]! / 3 / numHeads;
  const impl = opts.impl === undefined || opts.impl === 'auto' ? chooseImpl(hd) : opts.impl;
  return impl === 'flash' && !opts.capture ? flashAttention(qkv, numHeads, opts) : unfusedAttention(qkv, numHeads, opts);
}

/** Flash kernel families: `subgroup` (8 rows per subgroup sharing K/V loads by broadcast; head
 * dims that are multiples of 8, subgroups of 8 or more), `workgroup` (64 rows per workgroup
 * sharing K/V, or Q/dO, tiles in workgroup memory: FlashAttention-2's layout; head dims that are
 * multiples of 4), `vec4` (one row per invocation in vec4 registers; head dims that are multiples
 * of 4), `scalar` (any head dim). */
export type FlashKernelFamily = 'subgroup' | 'workgroup' | 'vec4' | 'scalar';
type FlashFactory = (hd: number, dropout: boolean, rowsPerLane: number) => KernelSource;
/** Rows of a workgroup-memory tile: as many as TILE_ROWS, within the device's workgroup storage
 * (`rowBytes` a row). WebGPU guarantees 16 KiB: [k ‖ v] tiles of 64 rows up to hd 32, 32 at 64. */
function tileRows(rowBytes: number): number {
  const bytes = currentDevice().device.limits.maxComputeWorkgroupStorageSize;
  return Math.max(1, Math.min(TILE_ROWS, Math.floor(bytes / rowBytes)));
}

const FLASH_KERNELS: Record<FlashKernelFamily, [FlashFactory, FlashFactory, FlashFactory]> = {
  workgroup: [
    (hd, dropout) => flashForwardTiledKernel(hd, dropout, tileRows(8 * hd)),
    (hd, dropout) => flashBackwardQTiledKernel(hd, dropout, tileRows(8 * hd)),
    (hd, dropout) => flashBackwardKVTiledKernel(hd, dropout, tileRows(8 * hd + 8)),
  ],
  // Head dims that are multiples of 16 take the forward with vec4 memory access (kernels/attention.ts).
  subgroup: [(hd, dropout, R) => (hd % 16 === 0 ? flashForwardSubgroupVecKernel : flashForwardSubgroupKernel)(hd, dropout, R), flashBackwardQSubgroupKernel, flashBackwardKVSubgroupKernel],
  vec4: [flashForwardVec4Kernel, flashBackwardQVec4Kernel, flashBackwardKVVec4Kernel],
  scalar: [flashForwardKernel, flashBackwardQKernel, flashBackwardKVKernel],
};

let forcedFlash: FlashKernelFamily | 'auto' = 'auto';
/** Tests and benchmarks: run flash attention with one kernel family ('auto' restores the
 * choice); a family that cannot take the head dim falls back to the next one that can. */
export function useFlashKernels(family: FlashKernelFamily | 'auto'): void {
  forcedFlash = family;
}

/** Rows per lane of the subgroup kernels: every K/V (or Q/dO) row a subgroup loads and
 * broadcasts serves 8 · R of its rows. Measured forward+backward (B32 h4, medians of 9, R = 1 / 2
 * / 3): N197 d64 403 / 315 / – ms (R = 3 at d64 takes minutes to compile), N65 d32 38.2 / 33.8 /
 * 30.3, N50 d16 12.0 / 12.5 / 12.8 (B128: 30.2 / 26.0 / 26.1), B128 N17 d32 12.9 / 12.7 / 10.9. */
function flashRowsPerLane(hd: number, N: number, pass: 'forward' | 'backward'): number {
  if (forcedRows !== 'auto') return forcedRows;
  // GPUs: R rows multiply each lane's registers (at d64, 2·64 query values and accumulators per
  // row), which costs occupancy there; one row per lane as on a GPU's usual flash kernel.
  if (!cpuAdapter()) return 1;
  if (hd >= 64) return 2;
  if (pass === 'backward') return hd >= 32 || N <= 24 ? 3 : 2;
  // The forward pays a fixed cost per group of 8·R rows (the K/V loads and broadcasts of every
  // key), so the fewest groups win, then the fewest rows, among row counts whose registers stay
  // affordable: with the vec4 forward, B128 h4, profiler medians of 45, N50 d16 R = 4 / 5 / 6 / 7:
  // 4.00 / 4.65 / 5.24 / 3.47 ms (2 / 2 / 2 / 1 groups), N65 d16 R = 4 / 5 / 7: 8.78 / 7.47 / 9.90
  // (3 / 2 / 2), B8 N257 d16 R = 4 / 7: 5.05 / 4.59 (9 / 5); of 21 interleaved, N65 d32 R = 3 / 5 / 9:
  // 11.2 / 13.8 / 12.9 ms (3 / 2 / 1 groups: beyond 3 rows of 32 the registers cost more).
  const candidates = hd >= 32 ? [2, 3] : hd > 16 ? [2, 3, 4] : [2, 3, 4, 5, 6, 7];
  const cost = (R: number): [number, number] => [Math.ceil(N / (8 * R)), 8 * R * Math.ceil(N / (8 * R))];
  return candidates.reduce((best, R) => {
    const [g, rows] = cost(R);
    const [bg, brows] = cost(best);
    return g < bg || (g === bg && rows < brows) ? R : best;
  });
}

let forcedOnePass: boolean | number | 'auto' = 'auto';
/** Tests and benchmarks: force the one-pass backward on (where the family is `subgroup`) or off;
 * a number forces it with that many keys a lane, so in blocks of 8 × that many keys. */
export function useFlashOnePass(on: boolean | number | 'auto'): void {
  forcedOnePass = on;
}

/** Keys a lane of the one-pass backward, whose compile time grows with keys per lane × head dim
 * (the compiler unrolls the key loop): ~30 s cold at 9 × 32 on lavapipe, 63 s at 5 × 64 (Zen 5), while
 * 25 × 64 (N = 197, d = 64 in one block) ran out of patience after 10 minutes and 5 GB. So at
 * most 9 keys a lane and 320 key values; longer heads go in the fewest blocks of 8 × that many
 * keys, balanced (N = 197: 5 blocks of 40 at d64, 3 of 72 at d32; N = 257 d16: 4 of 72). Blocks
 * of 32 keys at N197 d64 (7 blocks, 224 key slots) were slower than 40 (5, 200 slots): each
 * block pays for every query's loads, broadcasts and dQ sums over the subgroup. */
export function onePassKeysPerLane(N: number, hd: number): number {
  const maxKeys = Math.max(1, Math.min(9, Math.floor(320 / hd)));
  const keysPerLane = Math.ceil(N / 8);
  return Math.ceil(keysPerLane / Math.ceil(keysPerLane / maxKeys));
}

/** Keys a lane of the one-pass backward that flash attention takes for this head (kernels/
 * attention.ts), or 0 for the two backward kernels. CPU adapters take the one pass: forward+
 * backward 1.15–1.5× faster than the two kernels in one block (see README), and in key blocks,
 * backward alone (B32 h4 N197, B16 h4 N257, medians interleaved in one process): d64 155 vs 190
 * ms, d32 60 vs 69, d16 21.5 vs 31. GPUs keep the two kernels (the one pass's per-lane keys and
 * accumulators would spill registers there). */
export function onePassKeys(N: number, hd: number): number {
  if (typeof forcedOnePass === 'number') return forcedOnePass;
  if (forcedOnePass === false) return 0;
  if (forcedOnePass === 'auto' && !cpuAdapter()) return 0;
  return onePassKeysPerLane(N, hd);
}

let forcedForwardOnePass: boolean | 'auto' = 'auto';
/** Tests and benchmarks: force the forward in the one-pass layout on (where it fits) or off. */
export function useFlashForwardOnePass(on: boolean | 'auto'): void {
  forcedForwardOnePass = on;
}

/** Keys a lane of the one-pass forward for this head, or 0 for the row kernels: heads whose keys
 * fit one block of the one-pass backward, on CPU adapters (the family is `subgroup`: hd % 8 == 0).
 * Forward alone there (profiler medians of 11–15 interleaved, B32 h4 unless marked): N50 d16 1.18
 * vs 1.44 ms, N65 d16 1.57 vs 2.23, N50 d32 1.97 vs 2.95, N65 d32 2.69 vs 3.54, B128 N50 d16 3.87
 * vs 4.52, B64 N17 d16 0.98 vs 1.11; scalar loads, B128 h4 N50 d24 5.96 vs 8.32, B128 h8 N50 d8
 * 5.37 vs 5.77. Longer heads would need the blocks' softmax states merged;
 * at N197 d64 the row kernels already run at ~35 GFLOP/s. */
export function forwardOnePassKeys(N: number, hd: number): number {
  if (forcedForwardOnePass === false || hd % 8 !== 0) return 0;
  if (forcedForwardOnePass === 'auto' && !cpuAdapter()) return 0;
  const keys = onePassKeysPerLane(N, hd);
  return 8 * keys >= N ? keys : 0;
}

let forcedRows: number | 'auto' = 'auto';
/** Tests: rows per lane of the subgroup flash kernels ('auto' restores the choice above). */
export function useFlashRowsPerLane(rows: number | 'auto'): void {
  forcedRows = rows;
}

// Which family on which adapter. CPU adapters (lavapipe, SwiftShader) take the subgroup kernels:
// forward+backward GPU time on lavapipe (profiler medians of 9 interleaved rounds, B32 h4 unless
// marked; subgroup / workgroup tiles / the same one-row kernels streaming K/V from storage /
// unfused): N50 d16 2.82 / 20.6 / 14.3 / 11.4 ms, N65 d32 9.96 / 101 / 72.6 / 20.6, B8 N197 d64
// 40.0 / 313 / 444 / 55.7. Workgroup memory there is ordinary memory behind a barrier that splits
// the kernel, and a workgroup runs as one thread, 8 invocations at a time: the tiles saved loads
// only at hd 64 (1.42× the streamed kernels), lost 1.4× at hd 16–32, and are 7–10× slower than
// broadcasting K/V across a subgroup of 8. GPU adapters take the workgroup tiles: FlashAttention-
// 2's layout, 64 rows a workgroup (the subgroup kernels' workgroups of 8 would leave 3/4 of a
// 32-wide SIMD unit idle). No GPU is at hand to measure that choice; the tests run every family.
function flashFamily(hd: number): FlashKernelFamily {
  const subgroupOk = hd % 8 === 0 && subgroupsOf8();
  if (forcedFlash === 'auto' && !cpuAdapter() && hd % 4 === 0) return 'workgroup';
  if ((forcedFlash === 'auto' || forcedFlash === 'subgroup') && subgroupOk) return 'subgroup';
  if (forcedFlash === 'workgroup' && hd % 4 === 0) return 'workgroup';
  if (forcedFlash !== 'scalar' && hd % 4 === 0) return 'vec4';
  return 'scalar';
}

function flashAttention(qkv: Tensor, nh: number, opts: AttentionOptions): Tensor {
  const [B, N, threeD] = qkv.shape as [number, number, number];
  const hd = threeD / 3 / nh;
  const p = opts.training === false ? 0 : (opts.dropout ?? 0);
  const key = p > 0 ? nextKey(opts.seed) : { seed: 0, stream: 0 };
  const uniforms = { B, N, nh, scale: hd ** -0.5, p, seed: key.seed, stream: key.stream };
  const rows = B * nh * N;
  const tag = `B${B} h${nh} N${N} d${hd}`;
  // FLOPs: q·k and p·v per (row, key): 4·N²·hd per head forward.
  const flops = 4 * B * nh * N * N * hd;
  const out = Tensor.empty([B, N, threeD / 3], 'float32', 'attention');
  const lse = Tensor.empty([B, nh, N], 'float32', 'attention lse');
  const family = flashFamily(hd);
  const [fwdKernel, qKernel, kvKernel] = FLASH_KERNELS[family];
  const Rf = family === 'subgroup' ? flashRowsPerLane(hd, N, 'forward') : 1;
  const R = family === 'subgroup' ? flashRowsPerLane(hd, N, 'backward') : 1;
  // The subgroup kernels run 8·R rows per workgroup (one subgroup), the workgroup kernels TILE_ROWS
  // rows of one head; the others one row per invocation.
  const grid = (k: KernelSource, rowsPerLane = R) =>
    family === 'subgroup' ? grid1d(B * nh * Math.ceil(N / (8 * rowsPerLane)) * 8, 8)
      : family === 'workgroup' ? grid1d(B * nh * Math.ceil(N / TILE_ROWS) * TILE_ROWS, TILE_ROWS)
      : grid1d(rows, k.workgroupSize);
  const fwdKeys = family === 'subgroup' ? forwardOnePassKeys(N, hd) : 0;
  if (fwdKeys > 0) {
    const fwd = (hd % 16 === 0 ? flashForwardOnePassVecKernel : flashForwardOnePassKernel)(hd, p > 0, fwdKeys);
    rt().run({ source: fwd, uniforms, buffers: [qkv.buffer, out.buffer, lse.buffer], grid: grid1d(B * nh * 8, 8), flops, label: `flash_attn_fwd_onepass ${tag}` });
  } else {
    const fwd = fwdKernel(hd, p > 0, Rf);
    rt().run({ source: fwd, uniforms, buffers: [qkv.buffer, out.buffer, lse.buffer], grid: grid(fwd, Rf), flops, label: `flash_attn_fwd ${tag}` });
  }
  return record('attention', out, [qkv], (g) => {
    const dqkv = Tensor.empty(qkv.shape, 'float32', 'attention dqkv');
    const keysPerLane = family === 'subgroup' ? onePassKeys(N, hd) : 0;
    if (keysPerLane > 0) {
      const k1 = (hd % 16 === 0 ? flashBackwardOnePassVecKernel : flashBackwardOnePassKernel)(hd, p > 0, keysPerLane);
      const blocks = Math.ceil(N / (8 * keysPerLane));
      for (let block = 0; block < blocks; block++) {
        const key0 = block * 8 * keysPerLane;
        rt().run({
          source: k1,
          uniforms: { ...uniforms, key0, accumulate: block > 0 ? 1 : 0 },
          buffers: [qkv.buffer, out.buffer, g.buffer, lse.buffer, dqkv.buffer],
          grid: grid1d(B * nh * 8, 8),
          flops: (2.5 * flops * Math.min(8 * keysPerLane, N - key0)) / N,
          label: `flash_attn_bwd_onepass ${tag}${blocks > 1 ? ` keys ${key0}+` : ''}`,
        });
      }
      return [dqkv];
    }
    const delta = Tensor.empty([B, nh, N], 'float32', 'attention delta');
    const kq = qKernel(hd, p > 0, R);
    rt().run({ source: kq, uniforms, buffers: [qkv.buffer, out.buffer, g.buffer, lse.buffer, delta.buffer, dqkv.buffer], grid: grid(kq), flops: 1.5 * flops, label: `flash_attn_bwd_q ${tag}` });
    const kkv = kvKernel(hd, p > 0, R);
    rt().run({ source: kkv, uniforms, buffers: [qkv.buffer, g.buffer, lse.buffer, delta.buffer, dqkv.buffer], grid: grid(kkv), flops: 2 * flops, label: `flash_attn_bwd_kv ${tag}` });
    return [dqkv];
  }, [lse]);
}

function unfusedAttention(qkv: Tensor, numHeads: number, opts: AttentionOptions): Tensor {
  const [B, N, threeD] = qkv.shape as [number, number, number];
  const D = threeD / 3;
  const nh = numHeads;
  const hd = D / nh;
  const scale = hd ** -0.5;
  const p = opts.training === false ? 0 : (opts.dropout ?? 0);
  const key = p > 0 ? nextKey(opts.seed) : null;
  const tag = `attention B${B} h${nh} N${N} d${hd}`;

  // Heads of a (B, N, 3D) or (B, N, D) tensor: batch (b, h), row n, column d.
  const head = (t: Tensor, which: number, width: number): Operand => ({ t, offset: which * D, ld: width, batchStrides: [N * width, hd] });
  const square = (t: Tensor): Operand => ({ t, offset: 0, ld: N, batchStrides: [nh * N * N, N * N] });
  const batchShape = [B, nh];

  const scores = Tensor.empty([B, nh, N, N], 'float32', 'attention scores');
  launchMatmul({ a: head(qkv, 0, threeD), b: head(qkv, 1, threeD), c: square(scores), M: N, N, K: hd, batchShape, transA: false, transB: true, label: 'attn_qk' });
  const probs = Tensor.empty([B, nh, N, N], 'float32', 'attention probs');
  rowsKernel(softmaxKernel(false), B * nh * N, N, scale, [scores, probs], `softmax ${tag}`);
  scores.dispose();
  opts.capture?.(probs);
  const used = key ? dropoutInto(probs, p, key) : probs;
  const out = Tensor.empty([B, N, D], 'float32', 'attention');
  launchMatmul({ a: square(used), b: head(qkv, 2, threeD), c: head(out, 0, D), M: N, N: hd, K: N, batchShape, transA: false, transB: false, label: 'attn_pv' });

  return record('attention', out, [qkv], (g) => {
    const dqkv = Tensor.empty(qkv.shape, 'float32', 'attention dqkv');
    const dUsed = Tensor.empty([B, nh, N, N], 'float32', 'attention dprobs');
    // dP = dO · Vᵀ ; dV = Pᵀ · dO
    launchMatmul({ a: head(g, 0, D), b: head(qkv, 2, threeD), c: square(dUsed), M: N, N, K: hd, batchShape, transA: false, transB: true, label: 'attn_dp' });
    launchMatmul({ a: square(used), b: head(g, 0, D), c: head(dqkv, 2, threeD), M: N, N: hd, K: N, batchShape, transA: true, transB: false, label: 'attn_dv' });
    const dProbs = key ? dropoutInto(dUsed, p, key) : dUsed;
    // dS = scale · P ⊙ (dP − Σ dP ⊙ P)
    const dScores = Tensor.empty([B, nh, N, N], 'float32', 'attention dscores');
    rowsKernel(softmaxGradKernel(false), B * nh * N, N, scale, [probs, dProbs, dScores], `softmax_grad ${tag}`);
    // dQ = dS · K ; dK = dSᵀ · Q
    launchMatmul({ a: square(dScores), b: head(qkv, 1, threeD), c: head(dqkv, 0, threeD), M: N, N: hd, K: N, batchShape, transA: false, transB: false, label: 'attn_dq' });
    launchMatmul({ a: square(dScores), b: head(qkv, 0, threeD), c: head(dqkv, 1, threeD), M: N, N: hd, K: N, batchShape, transA: true, transB: false, label: 'attn_dk' });
    return [dqkv];
  }, [...(opts.capture ? [] : [probs]), ...(used !== probs ? [used] : [])]);
}
