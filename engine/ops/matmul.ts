// Batched matmul with NumPy-broadcast batch dimensions and transpose flags for either side
// (nn.Linear's [out, in] weight is used with transB), and `linear` with the bias fused into the
// matmul. Backward is two more matmuls, summed over broadcast batch dimensions. `launchMatmul`
// is the strided primitive other ops (attention) build on.
import { grid1d, type KernelSource, putList } from '../../kernels/common.js';
import { FAST_TM, FAST_TN, MATMUL_BATCH_RANK, MATMUL_TM, MATMUL_TN, matmulFastKernel, matmulFastOk, matmulKernel, matmulPackBKernel, matmulPackBUniformKernel, matmulSubgroupKernel, matmulSubgroupVec, SUBGROUP_TN, UNIFORM_B_MAX_CHUNKS, UNIFORM_B_VEC4 } from '../../kernels/matmul.js';
import { subgroupsOf8 } from '../device.js';
import { composite, record } from '../autograd.js';
import { rt, type ScratchTexture } from '../dispatch.js';
import type { PooledBuffer } from '../memory.js';
import { broadcastShapes, broadcastStrides } from '../reference/nd.js';
import { numel, Tensor } from '../tensor.js';
import { reshape } from './movement.js';
import { sum, sumToShape } from './reduce.js';
import { gelu, geluGrad } from './elementwise.js';
import { zeros } from './creation.js';

/** One operand as the kernel addresses it: element (batch b, row r, col c) lives at
 * `offset + Σ batchStrides·b + r·ld + c` (rows and columns as stored, before any transpose). */
export interface Operand {
  t: Tensor;
  offset: number;
  ld: number;
  batchStrides: number[];
}

export interface MatmulLaunch {
  a: Operand;
  b: Operand;
  c: Operand;
  M: number;
  N: number;
  K: number;
  batchShape: number[];
  transA: boolean;
  transB: boolean;
  bias?: Tensor | null;
  /** Apply GELU in the epilogue: C gets gelu(z), this tensor (C's layout) gets z. Subgroup kernel only. */
  geluPreact?: Tensor;
  /** Also write Σ_k op(A)[m, k] to this [M] tensor, where the kernel can (see launchMatmul). */
  aSums?: Tensor;
  label: string;
}

/** The matmul kernels: `general` (scalar 4×4 per invocation, any layout), `vec4` (4×8 per
 * invocation, vec4 loads; aligned operands only), `subgroup` (TM×32 per subgroup of 8 with
 * broadcast A; any layout, needs subgroups of at least 8), `texture` (the subgroup kernel, 16×64
 * per subgroup, reading B from a texture it is first repacked into; K and N/4 within the texture size limit, batch within
 * its array layers), `uniform` (the subgroup kernel, 16×64, reading B from uniform
 * arrays it is copied or repacked into: one product, M ≥ 128, B within 3 arrays of 64 KiB; see
 * uniformPlan). */
export type MatmulKernelKind = 'general' | 'vec4' | 'subgroup' | 'texture' | 'uniform';

let forcedMatmul: MatmulKernelKind | 'auto' = 'auto';
let forcedRows: 16 | 24 | undefined;
/** Benchmarks and tests: route every matmul through one kernel ('auto' restores the choice);
 * `rows`: the subgroup tile's rows where B is gathered (texture, uniform; default 16, and never
 * more than the product's rows call for). A forced kernel that cannot run an operand layout falls
 * back to `general`. */
export function useMatmulKernel(kind: MatmulKernelKind | 'auto', opts: { rows?: 16 | 24 } = {}): void {
  forcedMatmul = kind;
  forcedRows = kind === 'auto' ? undefined : opts.rows;
}


/** Unbatched products read B from storage unless `tuneMatmul` measured a texture faster here
 * (the texture costs a repack or copy of B and a scratch texture per product shape). */
let singleProductKind: 'texture' | 'subgroup' = 'subgroup';
/** Unbatched products whose B fits a uniform array read it from one when `tuneMatmul` measured
 * that faster here. */
let smallBUniform = false;
/** Rows per subgroup tile where B is gathered (a texture or uniform arrays), unless a product's
 * own tuning says otherwise (see GATHERED_B_COLUMNS). */
const GATHERED_ROWS_DEFAULT = 16;

/** How one unbatched product is run: a kernel kind and, where B is gathered, the rows of its
 * subgroup tile. */
export interface MatmulForm {
  kind: 'subgroup' | 'texture' | 'uniform';
  rows?: 16 | 24;
}
/** Forms `tuneMatmulShapes` measured fastest, by product shape (see shapeKey). */
const shapeForms = new Map<string, MatmulForm>();
/** While a `matmulShapesOf` call runs: the unbatched product shapes launched. */
let shapeLog: Map<string, MatmulShape> | null = null;
/** A form forced for the next launches (tuning races; 'auto' state otherwise). */
let forcedForm: MatmulForm | null = null;

/** An unbatched product's shape as launchMatmul sees it (op(A) is M×K, op(B) K×N). */
export interface MatmulShape {
  M: number;
  N: number;
  K: number;
  transA: boolean;
  transB: boolean;
}
const shapeKey = (s: MatmulShape) => `${s.M}x${s.N}x${s.K}${s.transA ? 't' : 'n'}${s.transB ? 't' : 'n'}`;

const median = (xs: number[]) => [...xs].sort((p, q) => p - q)[xs.length >> 1]!;

/** Times `run` under each form, `repeats` rounds after an untimed one (which compiles); each
 * round runs every form once, starting from a different one, so a machine whose speed drifts
 * compares like with like. Returns each form's times, round by round. */
async function raceForms(forms: MatmulForm[], run: () => void, repeats: number): Promise<number[][]> {
  const times = forms.map((): number[] => []);
  const before = forcedForm;
  try {
    for (let r = 0; r < repeats + 1; r++) {
      for (let j = 0; j < forms.length; j++) {
        const i = (j + r) % forms.length;
        forcedForm = forms[i]!;
        const start = performance.now();
        run();
        await rt().sync();
        if (r > 0) times[i]!.push(performance.now() - start);
      }
    }
  } finally {
    forcedForm = before;
  }
  return times;
}

/** Median over rounds of a form's time over another's (below 1: the first is faster). */
const ratioOf = (a: number[], b: number[]) => median(a.map((t, i) => t / b[i]!));

export interface MatmulTuning {
  /** Median ms of one round (each shape once) per candidate. */
  textureMs: number;
  storageMs: number;
  choice: 'texture' | 'subgroup';
  /** Products whose B fits the uniform arrays (at most 192 KiB: the small models' linear layers
   * and their input gradients): median ms of a round with B from uniform arrays and with `choice`'s
   * form, and whether the uniform arrays are used. */
  smallB: { uniformMs: number; otherMs: number; uniform: boolean };
}

/** Times the subgroup matmul with B from a texture against B from storage on this machine and
 * keeps the faster for unbatched products, then, for products whose B fits 192 KiB, B from
 * uniform arrays against that choice (all forms give bit-identical results: the same FMAs in the
 * same order). On lavapipe the answer depends on the CPU behind the same adapter string: the
 * texture was 1.16–1.52× faster on a Zen 3 host, storage 0.96–1.33× on a Zen 4 host, and the
 * uniform array 1.02–1.21× faster than either there (README). A form must win by a margin in the
 * median of per-round ratios (each round times both forms back to back, so a machine whose speed
 * drifts compares like with like): the texture by `margin` (default 1.05; a tie goes to storage,
 * which needs no repack), the uniform array by `smallMargin` (default 1.02: on the Zen 4 host it
 * won only 1.04–1.07 in these rounds, medians of 40, but 1.10–1.13 on whole training steps).
 * `margin: Infinity` restores the untuned default (storage, no uniform array) and forgets the
 * forms `tuneMatmulShapes` chose. Returns null without subgroups of 8. */
export async function tuneMatmul(opts: { repeats?: number; margin?: number; smallMargin?: number; shapes?: [number, number, number][]; smallShapes?: [number, number, number][] } = {}): Promise<MatmulTuning | null> {
  if (!subgroupsOf8()) return null;
  const margin = opts.margin ?? 1.05;
  const smallMargin = opts.smallMargin ?? (opts.margin === undefined ? 1.02 : opts.margin);
  const repeats = opts.repeats ?? 15;
  if (margin === Infinity) shapeForms.clear();

  const shapes = opts.shapes ?? [[6400, 192, 64], [2048, 192, 192], [512, 512, 512]];
  const operands = shapes.map(([M, N, K]) => [zeros([M, K]), zeros([N, K])] as const);
  const big = await raceForms([{ kind: 'subgroup' }, { kind: 'texture' }], () => {
    for (const [x, w] of operands) linear(x, w).dispose();
  }, repeats).finally(() => operands.forEach((ts) => ts.forEach((t) => t.dispose())));
  singleProductKind = ratioOf(big[0]!, big[1]!) > margin ? 'texture' : 'subgroup';

  // Small B: a linear layer (x · wᵀ) and its input gradient (g · w) per shape.
  const smallShapes = opts.smallShapes ?? [[6400, 192, 64], [6400, 64, 128], [2048, 192, 192]];
  const small = smallShapes.map(([M, N, K]) => [zeros([M, K]), zeros([N, K]), zeros([M, N])] as const);
  const smallTimes = await raceForms([{ kind: singleProductKind }, { kind: 'uniform' }], () => {
    for (const [x, w, g] of small) {
      linear(x, w).dispose();
      matmul(g, w).dispose();
    }
  }, repeats).finally(() => small.forEach((ts) => ts.forEach((t) => t.dispose())));
  smallBUniform = ratioOf(smallTimes[0]!, smallTimes[1]!) > smallMargin;
  return {
    textureMs: median(big[1]!),
    storageMs: median(big[0]!),
    choice: singleProductKind,
    smallB: { uniformMs: median(smallTimes[1]!), otherMs: median(smallTimes[0]!), uniform: smallBUniform },
  };
}

export interface ShapeTuning {
  shape: MatmulShape;
  /** Every form raced, with the median ms of one product (of a few back to back). */
  forms: { form: MatmulForm; ms: number }[];
  /** The form this shape now runs (the form 'auto' took before, unless another won by the margin). */
  choice: MatmulForm;
}

/** Races every form an unbatched product of each shape can take — B from storage, from a texture
 * and from uniform arrays, the last two at 16 and 24 rows a subgroup tile — and keeps the fastest
 * for that shape. All forms give bit-identical products, so this changes speed only. Where they
 * are close the choice is noise; a form other than the one 'auto' took before must win by
 * `margin` (default 1.03) in the median of per-round ratios (0: the fastest other form is taken
 * whatever the times; Infinity: none is). Measured on the Zen 5 host (README):
 * at 2176×64·64×128, storage 1.70 ms a product read back, a texture at 24 rows 1.52. Call after
 * `tuneMatmul` (whose choice is the baseline); `matmulShapesOf` lists a model's shapes. Returns
 * [] without subgroups of 8. */
export async function tuneMatmulShapes(shapes: MatmulShape[], opts: { repeats?: number; roundMs?: number; margin?: number } = {}): Promise<ShapeTuning[]> {
  const repeats = opts.repeats ?? 15;
  const roundMs = opts.roundMs ?? 6;
  const margin = opts.margin ?? 1.03;
  for (const s of shapes) {
    if (![s.M, s.N, s.K].every((v) => Number.isInteger(v) && v > 0)) {
      throw new Error(`tuneMatmulShapes: shape ${JSON.stringify(s)} needs positive integer M, N and K (op(A) is M×K, op(B) K×N)`);
    }
  }
  if (!subgroupsOf8()) return [];
  const results: ShapeTuning[] = [];
  const unique = new Map(shapes.map((s) => [shapeKey(s), { ...s, transA: !!s.transA, transB: !!s.transB }]));
  for (const [key, shape] of unique) {
    shapeForms.delete(key);
    const { M, N, K, transA, transB } = shape;
    const a = zeros(transA ? [K, M] : [M, K]);
    const b = zeros(transB ? [N, K] : [K, N]);
    const dense: MatmulLaunch = { a: { t: a, offset: 0, ld: transA ? M : K, batchStrides: [] }, b: { t: b, offset: 0, ld: transB ? K : N, batchStrides: [] }, c: { t: a, offset: 0, ld: N, batchStrides: [] }, M, N, K, batchShape: [], transA, transB, label: 'tune' };
    const baseline = autoForm(dense);
    const forms: MatmulForm[] = [baseline];
    const add = (f: MatmulForm) => {
      if (!forms.some((g) => g.kind === f.kind && (g.rows ?? GATHERED_ROWS_DEFAULT) === (f.rows ?? GATHERED_ROWS_DEFAULT))) forms.push(f);
    };
    add({ kind: 'subgroup' });
    const rowsOptions: (16 | 24)[] = subgroupRows(M) >= 24 ? [16, 24] : [16];
    for (const rows of rowsOptions) {
      if (textureFits(dense, 1)) add({ kind: 'texture', rows });
      if (uniformPlan(dense, 1)) add({ kind: 'uniform', rows });
    }
    try {
      // Enough products back to back that a form's turn in a round takes ~roundMs: a lone short
      // product is mostly submission and wait.
      const once = await raceForms([baseline], () => matmul(a, b, { transA, transB }).dispose(), 1);
      const products = Math.max(1, Math.min(10, Math.ceil(roundMs / median(once[0]!))));
      const times = await raceForms(forms, () => {
        for (let i = 0; i < products; i++) matmul(a, b, { transA, transB }).dispose();
      }, repeats);
      // The fastest other form (per-round ratios to the baseline), kept if it wins by the margin.
      const ratios = times.map((t) => ratioOf(t, times[0]!));
      let best = forms.length > 1 ? 1 : 0;
      for (let i = 2; i < forms.length; i++) if (ratios[i]! < ratios[best]!) best = i;
      if (best > 0 && !(ratios[best]! * margin < 1)) best = 0;
      const choice = forms[best]!;
      if (best > 0) shapeForms.set(key, choice);
      results.push({ shape, forms: forms.map((form, i) => ({ form, ms: median(times[i]!) / products })), choice });
    } finally {
      a.dispose();
      b.dispose();
    }
  }
  return results;
}

/** The unbatched product shapes `fn` launches (a training step, say), for `tuneMatmulShapes`. */
export async function matmulShapesOf(fn: () => unknown): Promise<MatmulShape[]> {
  const log = new Map<string, MatmulShape>();
  const outer = shapeLog;
  shapeLog = log;
  try {
    await fn();
  } finally {
    shapeLog = outer;
  }
  if (outer) for (const [k, v] of log) outer.set(k, v);
  return [...log.values()];
}

/** The form an unbatched product takes untuned for its shape: the global tuning's choice. */
function autoForm(l: MatmulLaunch): MatmulForm {
  if (smallBUniform && uniformPlan(l, 1)) return { kind: 'uniform' };
  return { kind: singleProductKind };
}

/** How B is read from uniform arrays, or null where it cannot be: one product, M ≥ 128 (the copy
 * pays back over M's row tiles: at 300×70×37 the uniform form was slower, 0.63 vs 0.52 ms). A
 * dense B of at most 64 KiB is copied whole and read as stored (`asIs`: a transposed weight too,
 * as four vec4 of its rows per 4-k step); otherwise a dense row-major B is copied, a transposed
 * one repacked, into `chunks` arrays of `rows` rows each, row-major (N % 4 == 0). */
interface UniformPlan { asIs: boolean; chunks: number; rows: number }
function uniformPlan(l: MatmulLaunch, batch: number): UniformPlan | null {
  if (batch !== 1 || l.M < 128) return null;
  const one = l.K * l.N <= 4 * UNIFORM_B_VEC4;
  if (one && (l.transB ? l.b.ld === l.K && l.K % 4 === 0 : l.b.ld === l.N && l.N % 4 === 0)) return { asIs: true, chunks: 1, rows: l.K };
  // A row-major B that is not dense would need a repack of its own: it stays where it is.
  if (l.N % 4 !== 0 || (!l.transB && l.b.ld !== l.N)) return null;
  const rows = Math.floor((4 * UNIFORM_B_VEC4) / l.N / 4) * 4;
  const maxChunks = Math.min(UNIFORM_B_MAX_CHUNKS, rt().device.limits.maxUniformBuffersPerShaderStage - 1);
  if (rows < 4 || Math.ceil(l.K / rows) > maxChunks) return null;
  return { asIs: false, chunks: Math.ceil(l.K / rows), rows };
}

/** Records B's move into the scratch uniform arrays for `plan`; returns the chunks to bind. */
function stageUniformB(l: MatmulLaunch, plan: UniformPlan, uniforms: Record<string, number>): PooledBuffer[] {
  const maxChunks = Math.min(UNIFORM_B_MAX_CHUNKS, rt().device.limits.maxUniformBuffersPerShaderStage - 1);
  const scratch = rt().scratchUniform(maxChunks, 16 * UNIFORM_B_VEC4);
  const src = l.b.t.buffer;
  if (plan.asIs) {
    rt().copy(src, scratch.chunks[0]!, 4 * l.K * l.N, 4 * l.b.offset, 0);
  } else if (!l.transB) {
    // Row-major and dense: each chunk's rows are one contiguous run.
    for (let c = 0; c < plan.chunks; c++) {
      const rows = Math.min(plan.rows, l.K - c * plan.rows);
      rt().copy(src, scratch.chunks[c]!, 4 * rows * l.N, 4 * (l.b.offset + c * plan.rows * l.N), 0);
    }
  } else {
    const source = matmulPackBUniformKernel(plan.rows);
    rt().run({
      source, uniforms, buffers: [src, scratch.whole],
      grid: grid1d((l.N / 4) * l.K, source.workgroupSize),
      bytes: 8 * l.K * l.N,
      label: `${l.label}_pack_b_uniform ${l.K}x${l.N}${l.transB ? ' t' : ''}`,
    });
  }
  return scratch.chunks.slice(0, plan.chunks);
}

/** Columns per lane where B comes from a texture or uniform arrays. lavapipe loads those
 * as vector gathers, far cheaper than a storage buffer's per-lane loop, so a lane can take 8
 * columns (two vec4 groups: each broadcast A element feeds two FMAs) for 16 rows instead of 4 for
 * 24: with B from uniform arrays, medians of 61 paired rounds of 10 products, 16×8 / 24×4 =
 * 1.01–1.09 at the K = 64 and 6400×64·192 shapes (32×4: 1.03–1.06); with B from a texture, 31
 * rounds, 1.03–1.10 at 6400×192·64, 6400×576·192, 1024³ and 6400×192·768 (Zen 4 host). On the
 * Zen 5 host 24 rows × 8 columns beat 16 × 8 (a form `tuneMatmulShapes` races): 10 products back to back,
 * medians of 20 interleaved rounds, at 2176×64·64×{128,192}, 6400×192·192×64, 6400×64·64×192 and
 * 6400×192·192×{192,576}: with B from a texture 1.05–1.11× (0.99 at 6400×64·64×192), from uniform
 * arrays 1.01–1.14×; 32 rows lost to 24 at every shape (kernel time). B from storage lost 21–24% with 8 columns
 * (twice the per-lane B loads), so it keeps 24×4. Same FMAs in the same order: results identical
 * to the bit. */
const GATHERED_B_COLUMNS = 8 as const;

/** Rows per subgroup tile: with the row-by-row FMA order, 24 rows ran 2–13% faster than 16 at
 * the ViT shapes (medians of 21 interleaved repeats; 32 no better than 24); 16 wastes less on
 * short matrices (attention's per-head products), 8 for matrices of a few rows. */
function subgroupRows(M: number): number {
  return M <= 8 ? 8 : M < 512 ? 16 : 24;
}

/** Records one strided matmul dispatch (no autograd). Returns whether `aSums` was written: only
 * the subgroup kernels write it, for one batch; otherwise the caller sums A itself. */
export function launchMatmul(l: MatmulLaunch): boolean {
  const batch = numel(l.batchShape);
  if (batch === 0 || l.M === 0 || l.N === 0) return false;
  if (l.batchShape.length > MATMUL_BATCH_RANK) throw new Error(`${l.label}: more than ${MATMUL_BATCH_RANK} batch dimensions`);
  const pad = (s: number[], v: number) => [...new Array<number>(MATMUL_BATCH_RANK - s.length).fill(v), ...s];
  const uniforms: Record<string, number> = {
    M: l.M, N: l.N, K: l.K, batch,
    a_off: l.a.offset, b_off: l.b.offset, c_off: l.c.offset,
    lda: l.a.ld, ldb: l.b.ld, ldc: l.c.ld,
  };
  putList(uniforms, 'bshape', pad(l.batchShape, 1));
  putList(uniforms, 'ast', pad(l.a.batchStrides, 0));
  putList(uniforms, 'bst', pad(l.b.batchStrides, 0));
  putList(uniforms, 'cst', pad(l.c.batchStrides, 0));
  const shapeInfo = { M: l.M, N: l.N, K: l.K, transA: l.transA, transB: l.transB, aOff: l.a.offset, bOff: l.b.offset, lda: l.a.ld, ldb: l.b.ld, aStrides: l.a.batchStrides, bStrides: l.b.batchStrides };
  // Batched products (attention's per-head matmuls, when not fused) keep B in storage: their
  // small per-head B, repacked per call, gained nothing (unfused attention forward+backward, B32
  // h4, lavapipe: N197 d64 605 vs 602 ms, N65 d32 58 vs 48 ms, N50 d16 31 vs 30 ms).
  const plan = uniformPlan(l, batch);
  const shape = { M: l.M, N: l.N, K: l.K, transA: l.transA, transB: l.transB };
  if (batch === 1) shapeLog?.set(shapeKey(shape), shape);
  // An unbatched product: a form forced by a tuning race, else the form its shape was tuned to,
  // else the global tuning's choice.
  const form = batch === 1 && forcedMatmul === 'auto' && subgroupsOf8() ? forcedForm ?? shapeForms.get(shapeKey(shape)) : undefined;
  let kind: MatmulKernelKind = forcedMatmul !== 'auto' ? forcedMatmul : form ? form.kind : subgroupsOf8() ? (batch === 1 ? (smallBUniform && plan ? 'uniform' : singleProductKind) : 'subgroup') : 'vec4';
  if (kind === 'uniform' && !plan) kind = 'subgroup';
  // A repack reads and writes all of B once; the texture pays it back over M's row tiles. With few
  // of them storage B wins: the conv stem's weight gradient 64×288×6272 ran 11.1 GFLOP/s from
  // storage vs 9.3 repacked (medians of 11); a B that is only copied gains at any M.
  if (forcedMatmul === 'auto' && !form && kind === 'texture' && l.M < 128 && !copiesToTexture(l, batch)) kind = 'subgroup';
  if (kind === 'texture' && !textureFits(l, batch)) kind = 'subgroup';
  const subgroupKind = (k: MatmulKernelKind) => k === 'subgroup' || k === 'texture' || k === 'uniform';
  if (subgroupKind(kind) && !subgroupsOf8()) kind = 'general';
  if (l.geluPreact && !subgroupKind(kind)) throw new Error(`${l.label}: the GELU epilogue needs the subgroup kernel`);
  if (kind === 'vec4' && !matmulFastOk(shapeInfo)) kind = 'general';
  const sums = !!l.aSums && batch === 1 && subgroupKind(kind);
  let source: KernelSource;
  let workgroups: number;
  let textures: ScratchTexture[] = [];
  let bBuffers = [l.b.t.buffer];
  if (subgroupKind(kind)) {
    const uniformB = kind === 'uniform' ? plan : null;
    let transB = l.transB;
    let vec = matmulSubgroupVec(shapeInfo);
    if (uniformB) {
      bBuffers = stageUniformB(l, uniformB, uniforms);
      uniforms.b_off = 0;
      if (uniformB.asIs) vec = matmulSubgroupVec({ ...shapeInfo, bOff: 0 });
      else {
        // Repacked or copied row-major, N wide.
        transB = false;
        uniforms.ldb = l.N;
        vec = { aVec: vec.aVec, bVec: true };
      }
    }
    const cVec = [l.N, l.c.ld, l.c.offset, ...l.c.batchStrides].every((v) => v % 4 === 0);
    const [TM, TN] = kind === 'subgroup' ? [subgroupRows(l.M), 4 as const] : [Math.min(form?.rows ?? forcedRows ?? GATHERED_ROWS_DEFAULT, subgroupRows(l.M)), GATHERED_B_COLUMNS];
    const bTex = kind === 'texture';
    if (bTex) textures = [packB(l, uniforms, batch)];
    source = matmulSubgroupKernel(l.transA, transB, !!l.bias, vec.aVec, vec.bVec, TM, !!l.geluPreact, bTex, cVec, false, sums, uniformB?.chunks ?? 0, uniformB && uniformB.chunks > 1 ? uniformB.rows : 0, TN);
    workgroups = batch * Math.ceil(l.M / TM) * Math.ceil(l.N / (SUBGROUP_TN * (TN / 4)));
  } else {
    const fast = kind === 'vec4';
    source = (fast ? matmulFastKernel : matmulKernel)(l.transA, l.transB, !!l.bias);
    workgroups = Math.ceil((batch * Math.ceil(l.M / (fast ? FAST_TM : MATMUL_TM)) * Math.ceil(l.N / (fast ? FAST_TN : MATMUL_TN))) / source.workgroupSize);
  }
  const buffers = [l.a.t.buffer, ...(textures.length ? [] : bBuffers), ...(l.bias ? [l.bias.buffer] : []), l.c.t.buffer, ...(l.geluPreact ? [l.geluPreact.buffer] : []), ...(sums ? [l.aSums!.buffer] : [])];
  rt().run({
    source, uniforms, buffers, textures,
    grid: grid1d(workgroups * source.workgroupSize, source.workgroupSize),
    flops: 2 * batch * l.M * l.N * l.K,
    bytes: 4 * (batch * (l.M * l.K + l.K * l.N + l.M * l.N)),
    label: `${l.label} ${batch > 1 ? `${batch}x` : ''}${l.M}x${l.N}x${l.K} ${l.transA ? 't' : 'n'}${l.transB ? 't' : 'n'}`,
  });
  return sums;
}

/** Whether B fits the scratch texture's size limits. */
function textureFits(l: MatmulLaunch, batch: number): boolean {
  const limits = rt().device.limits;
  return l.K <= limits.maxTextureDimension2D && Math.ceil(l.N / 4) <= limits.maxTextureDimension2D && batch <= limits.maxTextureArrayLayers;
}

/** Whether B is already the texture's layout: row-major with rows that are whole texels and
 * 256-byte multiples, contiguous batches, 16-byte aligned — one copy instead of a repack. */
function copiesToTexture(l: MatmulLaunch, batch: number): boolean {
  const rowsContiguous = batch === 1 || l.batchShape.every((_, i) => l.b.batchStrides[i] === l.K * l.N * numel(l.batchShape.slice(i + 1)));
  return !l.transB && l.N % 64 === 0 && l.b.ld === l.N && rowsContiguous && ((l.b.t.buffer.offset ?? 0) + 4 * l.b.offset) % 16 === 0;
}

/** Records the repacking of B into the scratch texture of its size (see matmulPackBKernel). */
function packB(l: MatmulLaunch, uniforms: Record<string, number>, batch: number): ScratchTexture {
  const width = Math.ceil(l.N / 4);
  const texture = rt().scratchTexture(width, l.K, batch);
  // Row-major B whose rows are whole texels and 256-byte aligned is already the texture's
  // layout: a copy (a memcpy per row on lavapipe) instead of a kernel.
  const src = l.b.t.buffer;
  if (copiesToTexture(l, batch)) {
    rt().copyToTexture(src, 4 * l.b.offset, 4 * l.N, texture, width, l.K, batch);
    return texture;
  }
  const al = (v: number) => v % 4 === 0;
  const vec = !l.transB && al(l.N) && al(l.b.ld) && al(l.b.offset) && al((src.offset ?? 0) / 4) && l.b.batchStrides.every(al);
  const source = matmulPackBKernel(l.transB, vec);
  rt().run({
    source, uniforms, buffers: [l.b.t.buffer], textures: [texture],
    grid: grid1d(width * l.K * batch, source.workgroupSize),
    bytes: 4 * batch * l.K * l.N * 2,
    label: `${l.label}_pack_b ${l.K}x${l.N}${l.transB ? ' t' : ''}`,
  });
  return texture;
}

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
}

/** Merges leading batch dimensions while both operands stay expressible (equal or both zero). */
function foldBatch(shape: number[], sa: number[], sb: number[]): [number[], number[], number[]] {
  const s = [...shape];
  const a = [...sa];
  const b = [...sb];
  while (s.length > MATMUL_BATCH_RANK) {
    const d = s.shift()!;
    const ea = a.shift()!;
    const eb = b.shift()!;
    const okA = (ea === 0 && a[0] === 0) || ea === a[0]! * s[0]!;
    const okB = (eb === 0 && b[0] === 0) || eb === b[0]! * s[0]!;
    if (!okA || !okB) throw new Error(`matmul: more than ${MATMUL_BATCH_RANK} batch dimensions with mixed broadcasting are not supported`);
    s[0] = s[0]! * d;
  }
  return [s, a, b];
}

function describeMatmul(a: Tensor, b: Tensor, transA: boolean, transB: boolean): string {
  return `matmul(${a.describe()}${transA ? 'ᵀ' : ''}, ${b.describe()}${transB ? 'ᵀ' : ''})`;
}

function matmulForward(a: Tensor, b: Tensor, transA: boolean, transB: boolean, bias: Tensor | null, op: string, geluPreact?: Tensor): Tensor {
  const desc = () => describeMatmul(a, b, transA, transB);
  if (a.rank < 2 || b.rank < 2) throw new Error(`${desc()}: both operands need at least 2 dimensions (reshape vectors to [1, n] or [n, 1])`);
  if (a.dtype !== 'float32' || b.dtype !== 'float32') throw new Error(`${desc()}: operands must be float32`);
  const ar = a.rank;
  const br = b.rank;
  const [M, Ka] = transA ? [a.shape[ar - 1]!, a.shape[ar - 2]!] : [a.shape[ar - 2]!, a.shape[ar - 1]!];
  const [Kb, N] = transB ? [b.shape[br - 1]!, b.shape[br - 2]!] : [b.shape[br - 2]!, b.shape[br - 1]!];
  if (Ka !== Kb) throw new Error(`${desc()}: inner dimensions differ (${Ka} vs ${Kb})`);
  if (Ka === 0) throw new Error(`${desc()}: inner dimension is 0`);
  const K = Ka;
  const aBatch = a.shape.slice(0, -2);
  const bBatch = b.shape.slice(0, -2);
  const batchShape = broadcastShapes(aBatch, bBatch, `${desc()} batch dimensions`);
  const c = Tensor.empty([...batchShape, M, N], 'float32', op);
  if (geluPreact && !(br === 2 && !transA)) throw new Error(`${desc()}: the GELU epilogue is for a 2-D right operand`);
  if (br === 2 && !transA) {
    // A shared 2-D right operand: fold A's batch into its rows, one large matmul.
    const rows = numel(aBatch) * M;
    launchMatmul({
      a: { t: a, offset: 0, ld: K, batchStrides: [] }, b: { t: b, offset: 0, ld: transB ? K : N, batchStrides: [] }, c: { t: c, offset: 0, ld: N, batchStrides: [] },
      M: rows, N, K, batchShape: [], transA: false, transB, bias, geluPreact, label: op,
    });
    return c;
  }
  const sa = broadcastStrides(aBatch, batchShape).map((s) => s * M * K);
  const sb = broadcastStrides(bBatch, batchShape).map((s) => s * K * N);
  const sc = broadcastStrides(batchShape, batchShape).map((s) => s * M * N);
  const [bshape, ast, bst] = foldBatch(batchShape, sa, sb);
  launchMatmul({
    a: { t: a, offset: 0, ld: transA ? M : K, batchStrides: ast },
    b: { t: b, offset: 0, ld: transB ? K : N, batchStrides: bst },
    c: { t: c, offset: 0, ld: N, batchStrides: sc.slice(sc.length - bshape.length) },
    M, N, K, batchShape: bshape, transA, transB, bias, label: op,
  });
  return c;
}

/** Gradients of C = op(A)·op(B) for A and B (summed over broadcast batch dimensions). */
function matmulGrads(a: Tensor, b: Tensor, g: Tensor, transA: boolean, transB: boolean): [Tensor | null, Tensor | null] {
  const ga = a.requiresGrad
    ? sumToShape(transA ? matmul(b, g, { transA: transB, transB: true }) : matmul(g, b, { transB: !transB }), a.shape)
    : null;
  let gb: Tensor | null = null;
  if (b.requiresGrad) {
    if (b.rank === 2 && a.rank > 2 && !transA) {
      // Fold the batch: dB = gᵀ·A or Aᵀ·g over all rows at once.
      const a2 = reshape(a, [-1, a.shape[a.rank - 1]!]);
      const g2 = reshape(g, [-1, g.shape[g.rank - 1]!]);
      gb = transB ? matmul(g2, a2, { transA: true }) : matmul(a2, g2, { transA: true });
    } else {
      gb = sumToShape(transB ? matmul(g, a, { transA: true, transB: transA }) : matmul(a, g, { transA: !transA }), b.shape);
    }
  }
  return [ga, gb];
}

export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const transA = opts.transA ?? false;
  const transB = opts.transB ?? false;
  const c = matmulForward(a, b, transA, transB, null, 'matmul');
  return record('matmul', c, [a, b], (g) => matmulGrads(a, b, g, transA, transB));
}

function checkLinear(op: string, x: Tensor, weight: Tensor, bias: Tensor | null | undefined): void {
  if (weight.rank !== 2 || x.shape[x.rank - 1] !== weight.shape[1]) {
    throw new Error(`${op}: input ${x.describe()} has ${x.shape[x.rank - 1]} features, weight ${weight.describe()} expects ${weight.shape[1]} ([out, in])`);
  }
  if (bias && (bias.rank !== 1 || bias.shape[0] !== weight.shape[0])) throw new Error(`${op}: bias ${bias.describe()} must be [${weight.shape[0]}]`);
}

/** gelu(x · wᵀ + b), the first half of a transformer MLP. With the subgroup matmul the GELU runs
 * in the matmul's epilogue (which also keeps the pre-activation for the backward); otherwise it
 * is linear followed by gelu. */
export function linearGelu(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  checkLinear('linearGelu', x, weight, bias);
  if (!(forcedMatmul === 'auto' || forcedMatmul === 'subgroup' || forcedMatmul === 'texture' || forcedMatmul === 'uniform') || !subgroupsOf8()) return composite([x, weight, bias], () => gelu(linear(x, weight, bias)));
  const preact = Tensor.empty([...x.shape.slice(0, -1), weight.shape[0]!], 'float32', 'linearGelu preactivation');
  const y = matmulForward(x, weight, false, true, bias ?? null, 'linear_gelu', preact);
  const inputs = bias ? [x, weight, bias] : [x, weight];
  return record('linearGelu', y, inputs, (g) => {
    const dz = geluGrad(preact, g);
    const grads = linearGrads(x, weight, bias, dz);
    dz.dispose();
    return grads;
  }, [preact]);
}

/** Gradients of y = x·wᵀ + b for x, w and b from g = dy: dx = g·w, dw = gᵀ·x over all rows, and
 * db = Σ_rows g written by dw's product where the kernel can (profile of vit-fmnist-p4: the
 * separate column sums were 2.5% of a training step). */
function linearGrads(x: Tensor, weight: Tensor, bias: Tensor | null | undefined, g: Tensor): (Tensor | null)[] {
  const gx = x.requiresGrad ? matmul(g, weight) : null;
  const [out, inF] = weight.shape as [number, number];
  const wantBias = !!bias?.requiresGrad;
  let gw: Tensor | null = null;
  let gb: Tensor | null = null;
  if (weight.requiresGrad) {
    const rows = g.size / out;
    gw = Tensor.empty([out, inF], 'float32', 'linear weight grad');
    const sums = wantBias ? Tensor.empty([out], 'float32', 'linear bias grad') : undefined;
    const summed = launchMatmul({
      a: { t: g, offset: 0, ld: out, batchStrides: [] }, b: { t: x, offset: 0, ld: inF, batchStrides: [] }, c: { t: gw, offset: 0, ld: inF, batchStrides: [] },
      M: out, N: inF, K: rows, batchShape: [], transA: true, transB: false, aSums: sums, label: 'matmul',
    });
    if (sums && summed) gb = sums;
    else sums?.dispose();
  }
  if (wantBias && !gb) gb = sum(reshape(g, [-1, out]), 0);
  return bias ? [gx, gw, gb] : [gx, gw];
}

/** y = x · wᵀ + b with timm/PyTorch's [out, in] weight layout; the bias add is fused. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  checkLinear('linear', x, weight, bias);
  const y = matmulForward(x, weight, false, true, bias ?? null, 'linear');
  const inputs = bias ? [x, weight, bias] : [x, weight];
  return record('linear', y, inputs, (g) => linearGrads(x, weight, bias, g));
}
