// Batched matmul with NumPy-broadcast batch dimensions and transpose flags for either side
// (nn.Linear's [out, in] weight is used with transB). Backward is two more matmuls, summed over
// broadcast batch dimensions.
import { grid1d, putList } from '../../kernels/common.js';
import { MATMUL_BATCH_RANK, MATMUL_TM, MATMUL_TN, matmulKernel } from '../../kernels/matmul.js';
import { record } from '../autograd.js';
import { rt } from '../dispatch.js';
import { broadcastShapes, broadcastStrides } from '../reference/nd.js';
import { numel, Tensor } from '../tensor.js';
import { add } from './elementwise.js';
import { sumToShape } from './reduce.js';

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
}

/** Folds leading batch dimensions so at most MATMUL_BATCH_RANK remain (merging from the left is
 * exact when both operands agree on those dimensions). */
function foldBatch(shape: number[], sa: number[], sb: number[]): [number[], number[], number[]] {
  const s = [...shape];
  const a = [...sa];
  const b = [...sb];
  while (s.length > MATMUL_BATCH_RANK) {
    const d = s.shift()!;
    const ea = a.shift()!;
    const eb = b.shift()!;
    if ((ea !== 0 && ea !== a[0]! * s[0]!) || (eb !== 0 && eb !== b[0]! * s[0]!) || (ea === 0) !== (a[0] === 0) || (eb === 0) !== (b[0] === 0)) {
      throw new Error(`matmul: more than ${MATMUL_BATCH_RANK} batch dimensions with mixed broadcasting are not supported`);
    }
    s[0] = s[0]! * d;
  }
  while (s.length < MATMUL_BATCH_RANK) (s.unshift(1), a.unshift(0), b.unshift(0));
  return [s, a, b];
}

export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const transA = opts.transA ?? false;
  const transB = opts.transB ?? false;
  const desc = () => `matmul(${a.describe()}${transA ? 'ᵀ' : ''}, ${b.describe()}${transB ? 'ᵀ' : ''})`;
  if (a.rank < 2 || b.rank < 2) throw new Error(`${desc()}: both operands need at least 2 dimensions (reshape vectors to [1, n] or [n, 1])`);
  if (a.dtype !== 'float32' || b.dtype !== 'float32') throw new Error(`${desc()}: operands must be float32`);
  const [M, Ka] = transA ? [a.shape[a.rank - 1]!, a.shape[a.rank - 2]!] : [a.shape[a.rank - 2]!, a.shape[a.rank - 1]!];
  const [Kb, N] = transB ? [b.shape[b.rank - 1]!, b.shape[b.rank - 2]!] : [b.shape[b.rank - 2]!, b.shape[b.rank - 1]!];
  if (Ka !== Kb) throw new Error(`${desc()}: inner dimensions differ (${Ka} vs ${Kb})`);
  const K = Ka;
  const aBatch = a.shape.slice(0, -2);
  const bBatch = b.shape.slice(0, -2);
  const batchShape = broadcastShapes(aBatch, bBatch, `${desc()} batch dimensions`);
  const outShape = [...batchShape, M, N];
  const c = Tensor.empty(outShape, 'float32', 'matmul');
  const batch = numel(batchShape);
  if (c.size > 0) {
    const sa = broadcastStrides(aBatch, batchShape).map((s) => s * M * K);
    const sb = broadcastStrides(bBatch, batchShape).map((s) => s * K * N);
    const [bshape, ast, bst] = foldBatch(batchShape, sa, sb);
    const uniforms: Record<string, number> = { M, N, K, batch };
    putList(uniforms, 'bshape', bshape);
    putList(uniforms, 'ast', ast);
    putList(uniforms, 'bst', bst);
    const source = matmulKernel(transA, transB);
    const tiles = batch * Math.ceil(M / MATMUL_TM) * Math.ceil(N / MATMUL_TN);
    if (K === 0) throw new Error(`${desc()}: inner dimension is 0`);
    rt().run({ source, uniforms, buffers: [a.buffer, b.buffer, c.buffer], grid: grid1d(tiles, source.workgroupSize), label: `matmul ${batch > 1 ? `${batch}x` : ''}${M}x${N}x${K} ${transA ? 't' : 'n'}${transB ? 't' : 'n'}` });
  }
  return record('matmul', c, [a, b], (g) => [
    a.requiresGrad
      ? sumToShape(transA ? matmul(b, g, { transA: transB, transB: true }) : matmul(g, b, { transB: !transB }), a.shape)
      : null,
    b.requiresGrad
      ? sumToShape(transB ? matmul(g, a, { transA: true, transB: transA }) : matmul(a, g, { transA: !transA }), b.shape)
      : null,
  ]);
}

/** y = x · wᵀ + b with timm/PyTorch's [out, in] weight layout. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  if (x.shape[x.rank - 1] !== weight.shape[1]) {
    throw new Error(`linear: input ${x.describe()} has ${x.shape[x.rank - 1]} features, weight ${weight.describe()} expects ${weight.shape[1]} ([out, in])`);
  }
  const y = matmul(x, weight, { transB: true });
  return bias ? add(y, bias) : y;
}
