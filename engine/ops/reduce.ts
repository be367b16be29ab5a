// Reductions over any set of axes (keepdim or not): sum, mean, max with argmax, var. Reduced axes
// are permuted to the end (a recorded op, so its backward comes for free), then one row kernel.
import { grid1d } from '../../kernels/common.js';
import { argmaxScatterKernel, colSumKernel, REDUCE_CHUNK, rowCombineKernel, rowPartialKernel, type RowReduction, rowReduceKernel } from '../../kernels/reduce.js';
import { composite, record } from '../autograd.js';
import { subgroupsOf8 } from '../device.js';
import { rt } from '../dispatch.js';
import { broadcastStrides } from '../reference/nd.js';
import { numel, shapeStr, Tensor } from '../tensor.js';
import { mapElements, mulScalar, sub } from './elementwise.js';
import { expand, permute, reshape } from './movement.js';

export interface ReduceOptions {
  keepdim?: boolean;
}

type Axes = number | readonly number[] | undefined;

function normAxes(x: Tensor, axes: Axes, op: string): number[] {
  const list = axes === undefined ? x.shape.map((_, i) => i) : typeof axes === 'number' ? [axes] : [...axes];
  const out = list.map((a) => (a < 0 ? a + x.rank : a));
  for (const [i, a] of out.entries()) {
    if (!Number.isInteger(a) || a < 0 || a >= x.rank || out.indexOf(a) !== i) {
      throw new Error(`${op}: axes [${list.join(', ')}] are invalid for ${x.describe()}`);
    }
  }
  return out.sort((a, b) => a - b);
}

interface Prepared {
  rows: Tensor; // x permuted to [..kept, ..reduced]
  m: number;
  r: number;
  keptShape: number[];
  keepdimShape: number[];
}

function prepare(x: Tensor, ax: number[]): Prepared {
  const kept = x.shape.map((_, i) => i).filter((i) => !ax.includes(i));
  const perm = [...kept, ...ax];
  const trailing = perm.every((p, i) => p === i);
  const rows = trailing ? x : permute(x, perm);
  const keptShape = kept.map((i) => x.shape[i]!);
  return {
    rows,
    m: numel(keptShape),
    r: numel(ax.map((i) => x.shape[i]!)),
    keptShape,
    keepdimShape: x.shape.map((d, i) => (ax.includes(i) ? 1 : d)),
  };
}

/** How rows are reduced: 'auto' (below), 'rows' (one invocation a row), 'split' (two passes,
 * subgroups where the adapter has them) or 'split-plain' (two passes without subgroups). */
export type ReduceKernelKind = 'auto' | 'rows' | 'split' | 'split-plain';
let forcedReduce: ReduceKernelKind = 'auto';
/** Tests and benchmarks: force how row reductions run ('auto' restores the choice). */
export function useReduceKernel(kind: ReduceKernelKind): void {
  forcedReduce = kind;
}

// One invocation a row reads its row alone, serially: a whole tensor's sum is one row of every
// element. Rows of at least two chunks go in two passes once there is enough to share out:
// profiler medians of 9 (two dispatches against one), sum of 4,096,000 elements 28.6 → 1.8 ms
// (var 57.3 → 2.9), of 409,600 3.0 → 0.46, of 65,536 0.52 → 0.20; [2, 100000] rows 0.79 → 0.26;
// [64, 6400] 0.46 → 0.39; [4096, 4096] 8.9 → 5.0; while [32, 4096] (0.20 → 0.26), [16, 4097]
// and 20,000 elements in one row (0.20 → 0.33) stay faster one invocation a row.
function splitRows(m: number, r: number): boolean {
  if (forcedReduce !== 'auto') return forcedReduce !== 'rows';
  return r >= 2 * REDUCE_CHUNK && (m * r > 1 << 17 || r >= 1 << 15);
}

function launchSplit(kind: RowReduction, p: Prepared, scale: number, correction: number, label: string, out: Tensor, idx: Tensor | undefined): void {
  const chunks = Math.ceil(p.r / REDUCE_CHUNK);
  const subgroup = forcedReduce !== 'split-plain' && subgroupsOf8();
  const vec = p.r % 4 === 0;
  const part = Tensor.empty([p.m * chunks * 2], 'float32', `${label} partials`);
  const pidx = kind === 'max' ? Tensor.empty([p.m * chunks], 'int32', `${label} partial indices`) : undefined;
  const uniforms = { rows: p.m, cols: p.r, chunks, scale, correction };
  const first = rowPartialKernel(kind, subgroup, vec);
  const items = p.m * chunks;
  rt().run({
    source: first,
    uniforms,
    buffers: [p.rows.buffer, part.buffer, ...(pidx ? [pidx.buffer] : [])],
    grid: subgroup ? grid1d(items * 8, 8) : grid1d(items, first.workgroupSize),
    label: `${label}_partial ${p.m}x${p.r}`,
  });
  const second = rowCombineKernel(kind);
  rt().run({
    source: second,
    uniforms,
    buffers: [part.buffer, ...(pidx ? [pidx.buffer] : []), out.buffer, ...(idx ? [idx.buffer] : [])],
    grid: grid1d(p.m, second.workgroupSize),
    label: `${label}_combine ${p.m}x${chunks}`,
  });
  part.dispose();
  pidx?.dispose();
}

function launchRows(kind: RowReduction, p: Prepared, scale: number, correction: number, label: string): { out: Tensor; idx?: Tensor } {
  const out = Tensor.empty(p.keptShape, 'float32', label);
  const idx = kind === 'max' ? Tensor.empty(p.keptShape, 'int32', label) : undefined;
  if (p.m > 0 && p.r > 0 && splitRows(p.m, p.r)) launchSplit(kind, p, scale, correction, label, out, idx);
  else if (p.m > 0) {
    const source = rowReduceKernel(kind);
    rt().run({
      source,
      uniforms: { rows: p.m, cols: p.r, scale, correction },
      buffers: idx ? [p.rows.buffer, out.buffer, idx.buffer] : [p.rows.buffer, out.buffer],
      grid: grid1d(p.m, source.workgroupSize),
      label: `${label} ${p.m}x${p.r}`,
    });
  }
  return { out, idx };
}

function finish(y: Tensor, p: Prepared, opts: ReduceOptions): Tensor {
  return opts.keepdim ? reshape(y, p.keepdimShape) : y;
}

function checkFloat(op: string, x: Tensor): void {
  if (x.dtype !== 'float32') throw new Error(`${op}: ${x.describe()} must be float32`);
}

/** Sum over leading axes of a contiguous tensor: the column kernel, no permute. */
function leadingSum(op: string, x: Tensor, ax: number[], opts: ReduceOptions, mean: boolean): Tensor {
  const lead = x.shape.slice(0, ax.length);
  const keptShape = x.shape.slice(ax.length);
  const rows = numel(lead);
  const cols = numel(keptShape);
  const scale = mean ? 1 / rows : 1;
  const out = Tensor.empty(keptShape, 'float32', op);
  if (cols > 0) {
    const source = colSumKernel();
    rt().run({ source, uniforms: { rows, cols, scale }, buffers: [x.buffer, out.buffer], grid: grid1d(cols, source.workgroupSize), label: `${op}_cols ${rows}x${cols}` });
  }
  const y = record(op, out, [x], (g) => {
    const full = expand(reshape(g, [...lead.map(() => 1), ...keptShape]), x.shape);
    return [scale === 1 ? full : mulScalar(full, scale)];
  });
  return opts.keepdim ? reshape(y, x.shape.map((d, i) => (i < ax.length ? 1 : d))) : y;
}

function scaledSum(op: string, x: Tensor, axes: Axes, opts: ReduceOptions, mean: boolean): Tensor {
  checkFloat(op, x);
  const ax = normAxes(x, axes, op);
  // Reducing leading axes only (but not everything): columns, read in place.
  if (ax.length < x.rank && ax.every((a, i) => a === i) && !(mean && numel(ax.map((a) => x.shape[a]!)) === 0)) return leadingSum(op, x, ax, opts, mean);
  const p = prepare(x, ax);
  if (p.r === 0 && mean) throw new Error(`mean: reducing ${x.describe()} over empty axes`);
  const scale = mean ? 1 / p.r : 1;
  const { out } = launchRows('sum', p, scale, 0, op);
  const y = record(op, out, [p.rows], (g) => {
    const full = expand(reshape(g, [...p.keptShape, ...new Array(ax.length).fill(1)]), p.rows.shape);
    return [scale === 1 ? full : mulScalar(full, scale)];
  });
  return finish(y, p, opts);
}

/** Σ over `axes` (all when omitted). */
export const sum = (x: Tensor, axes?: Axes, opts: ReduceOptions = {}) => composite([x], () => scaledSum('sum', x, axes, opts, false));
/** Mean over `axes` (all when omitted). */
export const mean = (x: Tensor, axes?: Axes, opts: ReduceOptions = {}) => composite([x], () => scaledSum('mean', x, axes, opts, true));

/** Maximum over `axes` and the (first) position of it, flattened over the reduced axes. The
 * gradient goes to that position only. */
export function max(x: Tensor, axes?: Axes, opts: ReduceOptions = {}): { values: Tensor; indices: Tensor } {
  return composite([x], () => maxRows(x, axes, opts));
}

function maxRows(x: Tensor, axes: Axes, opts: ReduceOptions): { values: Tensor; indices: Tensor } {
  checkFloat('max', x);
  const ax = normAxes(x, axes, 'max');
  const p = prepare(x, ax);
  if (p.r === 0) throw new Error(`max: reducing ${x.describe()} over empty axes`);
  const { out, idx } = launchRows('max', p, 1, 0, 'max');
  const values = record('max', out, [p.rows], (g) => {
    const gx = Tensor.empty(p.rows.shape, 'float32', 'max backward');
    const source = argmaxScatterKernel();
    rt().run({ source, uniforms: { n: gx.size, cols: p.r }, buffers: [g.buffer, idx!.buffer, gx.buffer], grid: grid1d(gx.size, source.workgroupSize), label: `max_grad ${shapeStr(gx.shape)}` });
    return [gx];
  });
  idx!.knownRange = [0, p.r - 1];
  return { values: finish(values, p, opts), indices: opts.keepdim ? reshape(idx!, p.keepdimShape) : idx! };
}

/** Variance over `axes` with Bessel's correction by default (correction = 1, as torch.var). */
export function variance(x: Tensor, axes?: Axes, opts: ReduceOptions & { correction?: number } = {}): Tensor {
  return composite([x], () => varianceRows(x, axes, opts));
}

function varianceRows(x: Tensor, axes: Axes, opts: ReduceOptions & { correction?: number }): Tensor {
  checkFloat('var', x);
  const ax = normAxes(x, axes, 'var');
  const p = prepare(x, ax);
  const correction = opts.correction ?? 1;
  if (p.r - correction <= 0) throw new Error(`var: ${p.r} elements per reduction with correction ${correction} leaves no degrees of freedom (${x.describe()})`);
  const { out } = launchRows('var', p, 1, correction, 'var');
  const y = record('var', out, [p.rows], (g) => {
    // d var / dx = 2 (x - mean) / (R - correction)
    const m = mean(p.rows, ax.map((_, i) => p.keptShape.length + i), { keepdim: true });
    const centered = sub(p.rows, m);
    const gk = reshape(g, [...p.keptShape, ...new Array(ax.length).fill(1)]);
    return [mapElements('var_grad', 'a * b * p', [centered, gk], p.rows.shape, 2 / (p.r - correction))];
  });
  return finish(y, p, opts);
}

/** Sums a broadcast gradient back to `shape` (the backward of broadcasting). */
export function sumToShape(g: Tensor, shape: readonly number[]): Tensor {
  if (g.shape.length === shape.length && g.shape.every((d, i) => d === shape[i])) return g;
  return composite([g], () => sumBroadcast(g, shape));
}

function sumBroadcast(g: Tensor, shape: readonly number[]): Tensor {
  const lead = g.rank - shape.length;
  const strides = broadcastStrides(shape, g.shape);
  const axes = g.shape.map((_, i) => i).filter((i) => i < lead || (strides[i] === 0 && g.shape[i] !== 1));
  const s = axes.length ? sum(g, axes) : g;
  return reshape(s, shape);
}
