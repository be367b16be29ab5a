// Elementwise ops as one table (tinygrad style): each row holds the WGSL expression, the gradient
// expression and names its CPU reference in engine/reference/elementwise.ts. Broadcasting follows
// NumPy; the backward of a broadcast input sums the gradient back to its shape.
import { grid1d, putList } from '../../kernels/common.js';
import { ELEMENTWISE_VEC, elementwiseKernel, type InputIndexing } from '../../kernels/elementwise.js';
import { isGradEnabled, record } from '../autograd.js';
import { rt } from '../dispatch.js';
import { cpuAdapter } from '../device.js';
import { broadcastShapes, broadcastStrides } from '../reference/nd.js';
import { shapeStr, Tensor } from '../tensor.js';
import { sumToShape } from './reduce.js';

// ---- the op tables ----------------------------------------------------------------------------

/** WGSL in terms of `a` (input), `p`, `q` (scalar params); gradient in terms of a (x), b (y = f(x)). */
const UNARY: Record<string, { fwd: string; grad: string }> = {
  neg: { fwd: '-a', grad: '-1.0' },
  exp: { fwd: 'exp(a)', grad: 'b' },
  log: { fwd: 'log(a)', grad: '1.0 / a' },
  sqrt: { fwd: 'sqrt(a)', grad: '0.5 / b' },
  rsqrt: { fwd: 'inverseSqrt(a)', grad: '-0.5 * b * b * b' },
  abs: { fwd: 'abs(a)', grad: 'sign(a)' },
  tanh: { fwd: 'tanh_(a)', grad: '1.0 - b * b' },
  sigmoid: { fwd: 'sigmoid_(a)', grad: 'b * (1.0 - b)' },
  relu: { fwd: 'max(a, 0.0)', grad: 'select(0.0, 1.0, a > 0.0)' },
  gelu: { fwd: 'gelu_(a)', grad: 'gelu_grad_(a)' },
  addScalar: { fwd: 'a + p', grad: '1.0' },
  mulScalar: { fwd: 'a * p', grad: 'p' },
  powScalar: { fwd: 'pow_(a, p)', grad: 'p * pow_(a, p - 1.0)' },
  clamp: { fwd: 'clamp(a, p, q)', grad: 'select(0.0, 1.0, a >= p && a <= q)' },
};

/** WGSL in terms of `a`, `b`; partial derivatives likewise (absent for comparisons). */
const BINARY: Record<string, { fwd: string; da?: string; db?: string }> = {
  add: { fwd: 'a + b', da: '1.0', db: '1.0' },
  sub: { fwd: 'a - b', da: '1.0', db: '-1.0' },
  mul: { fwd: 'a * b', da: 'b', db: 'a' },
  div: { fwd: 'a / b', da: '1.0 / b', db: '-a / (b * b)' },
  pow: { fwd: 'pow_(a, b)', da: 'b * pow_(a, b - 1.0)', db: 'pow_(a, b) * log(a)' },
  maximum: { fwd: 'max(a, b)', da: 'select(0.0, 1.0, a >= b)', db: 'select(1.0, 0.0, a >= b)' },
  minimum: { fwd: 'min(a, b)', da: 'select(0.0, 1.0, a <= b)', db: 'select(1.0, 0.0, a <= b)' },
  gt: { fwd: 'select(0.0, 1.0, a > b)' },
  ge: { fwd: 'select(0.0, 1.0, a >= b)' },
  lt: { fwd: 'select(0.0, 1.0, a < b)' },
  le: { fwd: 'select(0.0, 1.0, a <= b)' },
  eq: { fwd: 'select(0.0, 1.0, a == b)' },
  ne: { fwd: 'select(0.0, 1.0, a != b)' },
};

// ---- launching ----------------------------------------------------------------------------------

function checkFloat(op: string, ...ts: Tensor[]): void {
  for (const t of ts) if (t.dtype !== 'float32') throw new Error(`${op}: ${t.describe()} is int32; elementwise ops take float32 (use cast())`);
}

/** Runs `expr` over inputs broadcast to `outShape`; returns a new tensor of that shape. */
export function mapElements(op: string, expr: string, inputs: Tensor[], outShape: readonly number[], p = 0, q = 0): Tensor {
  const out = Tensor.empty(outShape, 'float32', op);
  if (out.size === 0) return out;
  const indexing: InputIndexing[] = inputs.map((t) => (t.size === out.size && t.rank <= outShape.length ? 'same' : 'strided'));
  const rank = Math.max(outShape.length, 1);
  const shape = outShape.length ? outShape : [1];
  const uniforms: Record<string, number> = { n: out.size, p, q };
  if (indexing.includes('strided')) putList(uniforms, 'shape', shape);
  inputs.forEach((t, i) => {
    if (indexing[i] === 'strided') putList(uniforms, `st${'abcde'[i]}`, broadcastStrides(t.shape, shape));
  });
  const contiguous = indexing.every((m) => m === 'same');
  // vec4s per invocation on the contiguous path (kernels/elementwise.ts has the measurements).
  const perLane = contiguous && cpuAdapter() ? 4 : 1;
  const source = elementwiseKernel(op, expr, indexing, rank, perLane);
  rt().run({
    source,
    uniforms,
    buffers: [...inputs.map((t) => t.buffer), out.buffer],
    grid: grid1d(contiguous ? Math.ceil(out.size / (ELEMENTWISE_VEC * perLane)) : out.size, source.workgroupSize),
    flops: out.size,
    bytes: 4 * (out.size + inputs.reduce((a, t) => a + t.size, 0)),
    label: `${op} ${shapeStr(outShape)}`,
  });
  return out;
}

function unaryOp(op: string, x: Tensor, p = 0, q = 0): Tensor {
  checkFloat(op, x);
  const def = UNARY[op]!;
  const y = mapElements(op, def.fwd, [x], x.shape, p, q);
  return record(op, y, [x], (g) => [mapElements(`${op}_grad`, `c * (${def.grad})`, [x, y, g], x.shape, p, q)]);
}

function binaryOp(op: string, a: Tensor, b: Tensor): Tensor {
  checkFloat(op, a, b);
  const def = BINARY[op]!;
  const shape = broadcastShapes(a.shape, b.shape, `${op}(${a.describe()}, ${b.describe()})`);
  const y = mapElements(op, def.fwd, [a, b], shape);
  if (!def.da || !isGradEnabled()) return y;
  return record(op, y, [a, b], (g) => {
    const grad = (expr: string, target: Tensor): Tensor | null => {
      if (!target.requiresGrad) return null;
      const full = expr === '1.0' ? g : mapElements(`${op}_grad`, `c * (${expr})`, [a, b, g], shape);
      return sumToShape(full, target.shape);
    };
    return [grad(def.da!, a), grad(def.db!, b)];
  });
}

// ---- public ops --------------------------------------------------------------------------------

export const neg = (x: Tensor) => unaryOp('neg', x);
export const exp = (x: Tensor) => unaryOp('exp', x);
export const log = (x: Tensor) => unaryOp('log', x);
export const sqrt = (x: Tensor) => unaryOp('sqrt', x);
export const rsqrt = (x: Tensor) => unaryOp('rsqrt', x);
export const abs = (x: Tensor) => unaryOp('abs', x);
export const tanh = (x: Tensor) => unaryOp('tanh', x);
export const sigmoid = (x: Tensor) => unaryOp('sigmoid', x);
export const relu = (x: Tensor) => unaryOp('relu', x);
/** Exact (erf) GELU, as timm's nn.GELU default. */
export const gelu = (x: Tensor) => unaryOp('gelu', x);
/** g · gelu'(z): the backward of a GELU whose input z was kept (linearGelu's epilogue). */
export const geluGrad = (z: Tensor, g: Tensor) => mapElements('gelu_grad', `b * (${UNARY.gelu!.grad})`, [z, g], z.shape);
export const addScalar = (x: Tensor, s: number) => unaryOp('addScalar', x, s);
export const mulScalar = (x: Tensor, s: number) => unaryOp('mulScalar', x, s);
export const powScalar = (x: Tensor, e: number) => unaryOp('powScalar', x, e);
export function clamp(x: Tensor, min: number, max: number): Tensor {
  if (!(min <= max)) throw new Error(`clamp: min ${min} > max ${max}`);
  return unaryOp('clamp', x, min, max);
}

export const add = (a: Tensor, b: Tensor) => binaryOp('add', a, b);
export const sub = (a: Tensor, b: Tensor) => binaryOp('sub', a, b);
export const mul = (a: Tensor, b: Tensor) => binaryOp('mul', a, b);
export const div = (a: Tensor, b: Tensor) => binaryOp('div', a, b);
export const pow = (a: Tensor, b: Tensor) => binaryOp('pow', a, b);
export const maximum = (a: Tensor, b: Tensor) => binaryOp('maximum', a, b);
export const minimum = (a: Tensor, b: Tensor) => binaryOp('minimum', a, b);
/** Comparisons return float32 masks of 0 and 1 and carry no gradient. */
export const gt = (a: Tensor, b: Tensor) => binaryOp('gt', a, b);
export const ge = (a: Tensor, b: Tensor) => binaryOp('ge', a, b);
export const lt = (a: Tensor, b: Tensor) => binaryOp('lt', a, b);
export const le = (a: Tensor, b: Tensor) => binaryOp('le', a, b);
export const eq = (a: Tensor, b: Tensor) => binaryOp('eq', a, b);
export const ne = (a: Tensor, b: Tensor) => binaryOp('ne', a, b);

/** where(cond != 0, a, b), broadcasting all three; gradients flow to a and b, not cond. */
export function where(cond: Tensor, a: Tensor, b: Tensor): Tensor {
  checkFloat('where', cond, a, b);
  const what = `where(${cond.describe()}, ${a.describe()}, ${b.describe()})`;
  const shape = broadcastShapes(broadcastShapes(cond.shape, a.shape, what), b.shape, what);
  const y = mapElements('where', 'select(c, b, a != 0.0)', [cond, a, b], shape);
  return record('where', y, [cond, a, b], (g) => [
    null,
    a.requiresGrad ? sumToShape(mapElements('where_grad', 'select(0.0, b, a != 0.0)', [cond, g], shape), a.shape) : null,
    b.requiresGrad ? sumToShape(mapElements('where_grad', 'select(b, 0.0, a != 0.0)', [cond, g], shape), b.shape) : null,
  ]);
}

export const OP_NAMES = { unary: Object.keys(UNARY), binary: Object.keys(BINARY) };
