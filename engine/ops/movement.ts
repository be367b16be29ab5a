// Movement ops: reshape (a view), and permute / slice / expand / concat / pad / gather, all
// launched as the strided copy or gather kernels. Backward rules are the inverse movements.
import { contiguousStrides, grid1d, putList } from '../../kernels/common.js';
import { gatherGradKernel, gatherKernel, scatterUniqueKernel, stridedCopyKernel } from '../../kernels/movement.js';
import { record } from '../autograd.js';
import { rt } from '../dispatch.js';
import { broadcastShapes, broadcastStrides } from '../reference/nd.js';
import { numel, type Shape, shapeStr, Tensor } from '../tensor.js';
import { fill } from './creation.js';
import { sumToShape } from './reduce.js';

function normAxis(axis: number, rank: number, op: string, t: Tensor): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) throw new Error(`${op}: axis ${axis} is out of range for ${t.describe()} (rank ${rank})`);
  return a;
}

/** Low-level strided copy of `n` words (no autograd). */
/** The same iteration with size-1 dimensions dropped and neighbours merged where both sides are
 * contiguous across them: the kernel pays a runtime division per dimension and element (a scalar
 * division per lane on lavapipe), so the cls-token concat of [128, 49, 64] runs as [128, 3136]. */
function coalesce(shape: Shape, srcStrides: number[], dstStrides: number[]): [number[], number[], number[]] {
  const sh: number[] = [];
  const ss: number[] = [];
  const ds: number[] = [];
  shape.forEach((d, i) => {
    if (d === 1) return;
    const last = sh.length - 1;
    if (last >= 0 && ss[last] === srcStrides[i]! * d && ds[last] === dstStrides[i]! * d) {
      sh[last] = sh[last]! * d;
      ss[last] = srcStrides[i]!;
      ds[last] = dstStrides[i]!;
    } else {
      sh.push(d);
      ss.push(srcStrides[i]!);
      ds.push(dstStrides[i]!);
    }
  });
  return [sh, ss, ds];
}

function copyStrided(src: Tensor, dst: Tensor, fullShape: Shape, fullSrcStrides: number[], fullDstStrides: number[], srcOff = 0, dstOff = 0, label = 'copy'): void {
  const n = numel(fullShape);
  if (n === 0) return;
  const [shape, srcStrides, dstStrides] = coalesce(fullShape, fullSrcStrides, fullDstStrides);
  const rank = Math.max(shape.length, 1);
  // In vec4 units where the innermost run is contiguous on both sides and everything is a
  // multiple of 4 words: the last dimension's strides are 1, the others' and the offsets divide.
  // On lavapipe the ViT's token concat ([128, 49, 64] into [128, 50, 64]) took 0.75 ms so against
  // 1.87 in words (profiler, medians of 15 interleaved rounds of 8).
  const last = shape.length - 1;
  const vec4 = last >= 0 && srcStrides[last] === 1 && dstStrides[last] === 1 && [shape[last]!, srcOff, dstOff, ...srcStrides.slice(0, last), ...dstStrides.slice(0, last)].every((v) => v % 4 === 0);
  const scaled = (l: readonly number[], inner: number) => (vec4 ? l.map((v, i) => (i === last ? inner : v / 4)) : [...l]);
  const pad = (l: readonly number[], fillv: number) => (l.length ? l : [fillv]);
  const units = vec4 ? n / 4 : n;
  const uniforms: Record<string, number> = { n: units, src_off: vec4 ? srcOff / 4 : srcOff, dst_off: vec4 ? dstOff / 4 : dstOff };
  putList(uniforms, 'shape', pad(vec4 ? shape.map((d, i) => (i === last ? d / 4 : d)) : [...shape], 1));
  putList(uniforms, 'sst', pad(scaled(srcStrides, 1), 0));
  putList(uniforms, 'dst', pad(scaled(dstStrides, 1), 0));
  const source = stridedCopyKernel(rank, vec4);
  rt().run({ source, uniforms, buffers: [src.buffer, dst.buffer], grid: grid1d(units, source.workgroupSize), label: `${label} ${shapeStr(fullShape)}` });
}

// ---- views and copies -------------------------------------------------------------------------

/** Same data, new shape (one dimension may be -1). Shares the buffer. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const free = shape.indexOf(-1);
  let s = [...shape];
  if (free >= 0) {
    const known = numel(shape.filter((_, i) => i !== free));
    s[free] = known === 0 ? 0 : x.size / known;
  }
  if (numel(s) !== x.size || s.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new Error(`reshape: cannot view ${x.describe()} (${x.size} elements) as ${shapeStr(shape)}`);
  }
  const y = Tensor.view(x, s);
  return record('reshape', y, [x], (g) => [reshape(g, x.shape)]);
}

/** A contiguous copy in a new buffer (no view sharing). */
export function copy(x: Tensor): Tensor {
  const y = Tensor.empty(x.shape, x.dtype, 'copy');
  if (x.size) rt().copy(x.buffer, y.buffer, x.size * 4);
  return record('copy', y, [x], (g) => [g]);
}

/** Reorders dimensions: y.shape[i] = x.shape[perm[i]]. */
export function permute(x: Tensor, perm: readonly number[]): Tensor {
  if (perm.length !== x.rank || [...perm].sort((a, b) => a - b).some((p, i) => p !== i)) {
    throw new Error(`permute: [${perm.join(', ')}] is not a permutation of the ${x.rank} dimensions of ${x.describe()}`);
  }
  if (perm.every((p, i) => p === i)) return reshape(x, x.shape);
  const shape = perm.map((p) => x.shape[p]!);
  const xs = contiguousStrides(x.shape);
  const y = Tensor.empty(shape, x.dtype, 'permute');
  copyStrided(x, y, shape, perm.map((p) => xs[p]!), contiguousStrides(shape), 0, 0, 'permute');
  const inverse = new Array<number>(perm.length);
  perm.forEach((p, i) => (inverse[p] = i));
  return record('permute', y, [x], (g) => [permute(g, inverse)]);
}

export function transpose(x: Tensor, dim0 = -2, dim1 = -1): Tensor {
  const a = normAxis(dim0, x.rank, 'transpose', x);
  const b = normAxis(dim1, x.rank, 'transpose', x);
  const perm = x.shape.map((_, i) => i);
  perm[a] = b;
  perm[b] = a;
  return permute(x, perm);
}

/** Broadcasts to `shape` (NumPy rules) as a materialised copy; backward sums back. */
export function expand(x: Tensor, shape: readonly number[]): Tensor {
  const out = broadcastShapes(x.shape, shape, `expand(${x.describe()} to ${shapeStr(shape)})`);
  if (out.length !== shape.length || out.some((d, i) => d !== shape[i])) {
    throw new Error(`expand: ${x.describe()} cannot be expanded to ${shapeStr(shape)}`);
  }
  const y = Tensor.empty(shape, x.dtype, 'expand');
  copyStrided(x, y, shape, broadcastStrides(x.shape, shape), contiguousStrides(shape), 0, 0, 'expand');
  return record('expand', y, [x], (g) => [sumToShape(g, x.shape)]);
}

/** x[starts[0]:ends[0], ...]; missing trailing axes are taken whole; negative values count from the end. */
export function slice(x: Tensor, starts: readonly number[], ends?: readonly number[]): Tensor {
  if (starts.length > x.rank) throw new Error(`slice: ${starts.length} starts for ${x.describe()}`);
  const lo = x.shape.map((d, i) => {
    const s = starts[i] ?? 0;
    return s < 0 ? s + d : s;
  });
  const hi = x.shape.map((d, i) => {
    const e = ends?.[i] ?? d;
    return e < 0 ? e + d : e;
  });
  x.shape.forEach((d, i) => {
    if (lo[i]! < 0 || hi[i]! > d || lo[i]! > hi[i]!) {
      throw new Error(`slice: range ${lo[i]}:${hi[i]} is out of bounds for dimension ${i} of ${x.describe()}`);
    }
  });
  const shape = lo.map((l, i) => hi[i]! - l);
  const xs = contiguousStrides(x.shape);
  const offset = lo.reduce((acc, l, i) => acc + l * xs[i]!, 0);
  const y = Tensor.empty(shape, x.dtype, 'slice');
  copyStrided(x, y, shape, xs, contiguousStrides(shape), offset, 0, 'slice');
  return record('slice', y, [x], (g) => [pad(g, lo.map((l, i) => [l, x.shape[i]! - hi[i]!] as [number, number]))]);
}

/** Pads each dimension with [before, after] elements of `value`. */
export function pad(x: Tensor, widths: readonly (readonly [number, number])[], value = 0): Tensor {
  if (widths.length > x.rank) throw new Error(`pad: ${widths.length} pad widths for ${x.describe()}`);
  const w = x.shape.map((_, i) => widths[i] ?? [0, 0]);
  if (w.some(([a, b]) => a < 0 || b < 0 || !Number.isInteger(a) || !Number.isInteger(b))) throw new Error(`pad: widths must be non-negative integers`);
  const shape = x.shape.map((d, i) => d + w[i]![0] + w[i]![1]);
  const y = fill(shape, value, 0, x.dtype);
  const ys = contiguousStrides(shape);
  const offset = w.reduce((acc, [b], i) => acc + b * ys[i]!, 0);
  copyStrided(x, y, x.shape, contiguousStrides(x.shape), ys, 0, offset, 'pad');
  return record('pad', y, [x], (g) => [slice(g, w.map(([b]) => b), w.map(([b], i) => b + x.shape[i]!))]);
}

/** Joins tensors along `axis`; all other dimensions must match. */
export function concat(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new Error('concat: no tensors given');
  const first = xs[0]!;
  const a = normAxis(axis, first.rank, 'concat', first);
  for (const t of xs) {
    if (t.rank !== first.rank || t.shape.some((d, i) => i !== a && d !== first.shape[i]) || t.dtype !== first.dtype) {
      throw new Error(`concat along axis ${a}: ${t.describe()} does not match ${first.describe()} outside that axis`);
    }
  }
  const shape = [...first.shape];
  shape[a] = xs.reduce((acc, t) => acc + t.shape[a]!, 0);
  const y = Tensor.empty(shape, first.dtype, 'concat');
  const ys = contiguousStrides(shape);
  let at = 0;
  const starts: number[] = [];
  for (const t of xs) {
    starts.push(at);
    copyStrided(t, y, t.shape, contiguousStrides(t.shape), ys, 0, at * ys[a]!, 'concat');
    at += t.shape[a]!;
  }
  return record('concat', y, [...xs], (g) =>
    xs.map((t, i) => {
      const lo = shape.map(() => 0);
      const hi = [...shape];
      lo[a] = starts[i]!;
      hi[a] = starts[i]! + t.shape[a]!;
      return t.requiresGrad ? slice(g, lo, hi) : null;
    }),
  );
}

// ---- gather -----------------------------------------------------------------------------------

function checkIndex(op: string, index: Tensor, axisLen: number, x: Tensor): void {
  if (index.dtype !== 'int32') throw new Error(`${op}: index ${index.describe()} must be int32`);
  const r = index.knownRange;
  if (r && index.size > 0 && (r[0] < 0 || r[1] >= axisLen)) {
    throw new Error(`${op}: index values span [${r[0]}, ${r[1]}], out of range for an axis of length ${axisLen} in ${x.describe()}`);
  }
}

export interface GatherOptions {
  /** A promise that along the axis the index names every position at most once (for each other
   * coordinate): a permutation or part of one, as MAE's masks are. The backward then sends each
   * gradient element to its source (O(1) an element) instead of searching the index for every
   * element of x (O(index length)): the backward of a [128, 49, 64] gather along 49 takes 3.5
   * instead of 25.3 ms (profiler, medians of 15 interleaved), MAE's two of a vit-fmnist-p4 step
   * 4.6 instead of 27. A repeated position breaks the promise and its gradient. */
  uniqueIndices?: boolean;
}

function gatherImpl(op: string, x: Tensor, a: number, index: Tensor, outShape: number[], indexStrides: number[], opts: GatherOptions = {}): Tensor {
  const rank = Math.max(outShape.length, 1);
  const xs = contiguousStrides(x.shape);
  const y = Tensor.empty(outShape, x.dtype, op);
  const n = y.size;
  if (n > 0) {
    const uniforms: Record<string, number> = { n, axis_len: x.shape[a]!, axis_stride: xs[a]! };
    putList(uniforms, 'shape', outShape);
    putList(uniforms, 'xst', xs.map((s, k) => (k === a ? 0 : s)));
    putList(uniforms, 'ist', indexStrides);
    const source = gatherKernel(rank);
    rt().run({ source, uniforms, buffers: [x.buffer, index.buffer, y.buffer], grid: grid1d(n, source.workgroupSize), label: `${op} ${shapeStr(outShape)}` });
  }
  return record(op, y, [x, index], (g) => {
    if (opts.uniqueIndices) {
      const gx = fill(x.shape, 0);
      const uniforms: Record<string, number> = { n, axis_len: x.shape[a]!, axis_stride: xs[a]! };
      putList(uniforms, 'shape', outShape);
      putList(uniforms, 'xst', xs.map((s, k) => (k === a ? 0 : s)));
      putList(uniforms, 'ist', indexStrides);
      const source = scatterUniqueKernel(rank);
      if (n > 0) rt().run({ source, uniforms, buffers: [g.buffer, index.buffer, gx.buffer], grid: grid1d(n, source.workgroupSize), label: `${op}_grad_unique ${shapeStr(x.shape)}` });
      return [gx, null];
    }
    const gx = Tensor.empty(x.shape, 'float32', `${op} backward`);
    const gs = contiguousStrides(outShape);
    const uniforms: Record<string, number> = { n: x.size, k_len: outShape[a]!, g_axis_stride: gs[a]!, i_axis_stride: indexStrides[a]! };
    putList(uniforms, 'shape', x.shape);
    putList(uniforms, 'gst', gs.map((s, k) => (k === a ? 0 : s)));
    putList(uniforms, 'ist', indexStrides.map((s, k) => (k === a ? 0 : s)));
    const source = gatherGradKernel(rank, a);
    if (x.size > 0) rt().run({ source, uniforms, buffers: [g.buffer, index.buffer, gx.buffer], grid: grid1d(x.size, source.workgroupSize), label: `${op}_grad ${shapeStr(x.shape)}` });
    return [gx, null];
  });
}

/** torch.gather: out[c] = x[c with c[axis] := index[c]]; index has x's rank and shape except
 * along `axis`. Backward scatter-adds into x's shape. */
export function gather(x: Tensor, axis: number, index: Tensor, opts: GatherOptions = {}): Tensor {
  const a = normAxis(axis, x.rank, 'gather', x);
  if (index.rank !== x.rank || index.shape.some((d, i) => i !== a && d !== x.shape[i])) {
    throw new Error(`gather along axis ${a}: index ${index.describe()} must match ${x.describe()} in every dimension but ${a}`);
  }
  checkIndex('gather', index, x.shape[a]!, x);
  return gatherImpl('gather', x, a, index, [...index.shape], contiguousStrides(index.shape), opts);
}

/** torch.index_select: picks entries `index` (1-D int32) along `axis`. */
export function indexSelect(x: Tensor, axis: number, index: Tensor): Tensor {
  const a = normAxis(axis, x.rank, 'indexSelect', x);
  if (index.rank !== 1) throw new Error(`indexSelect: index ${index.describe()} must be 1-D`);
  checkIndex('indexSelect', index, x.shape[a]!, x);
  const outShape = [...x.shape];
  outShape[a] = index.size;
  return gatherImpl('indexSelect', x, a, index, outShape, outShape.map((_, k) => (k === a ? 1 : 0)));
}
