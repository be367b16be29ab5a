// LayerNorm over the last axis with optional affine γ, β (timm uses eps 1e-6).
import { grid1d } from '../../kernels/common.js';
import { LAYERNORM_SG_MAX_COLS, LAYERNORM_SG_ROWS, layerNormGradKernel, layerNormGradSubgroupKernel, layerNormKernel, layerNormParamGradFinishKernel, layerNormParamGradKernel, layerNormSubgroupKernel } from '../../kernels/layernorm.js';
import { type KernelSource } from '../../kernels/common.js';
import { subgroupsOf8 } from '../device.js';
import { folded, record } from '../autograd.js';
import { rt } from '../dispatch.js';
import { shapeStr, Tensor } from '../tensor.js';

let forcedLayerNorm: 'auto' | 'rows' | 'subgroup' = 'auto';
/** Tests and benchmarks: 'rows' (one row per invocation) or 'subgroup' (8 lanes per row, widths
 * up to 256, needs subgroups of 8+; otherwise falls back to rows); 'auto' picks subgroup where it can. */
export function useLayerNormKernel(kind: 'auto' | 'rows' | 'subgroup'): void {
  forcedLayerNorm = kind;
}

export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps = 1e-5): Tensor {
  if (x.dtype !== 'float32' || x.rank === 0) throw new Error(`layerNorm: ${x.describe()} must be float32 with at least one dimension`);
  const cols = x.shape[x.rank - 1]!;
  const rows = cols === 0 ? 0 : x.size / cols;
  const affine = weight !== null || bias !== null;
  if (affine) {
    for (const [name, p] of [['weight', weight], ['bias', bias]] as const) {
      if (!p || p.rank !== 1 || p.shape[0] !== cols) {
        throw new Error(`layerNorm: ${name} ${p ? p.describe() : 'is missing'}; expected [${cols}] to match the last axis of ${x.describe()} (pass both or neither)`);
      }
    }
  }
  const y = Tensor.empty(x.shape, 'float32', 'layerNorm');
  const stats = Tensor.empty([rows, 2], 'float32', 'layerNorm stats');
  const uniforms = { rows, cols, eps };
  const label = `${shapeStr([rows, cols])}`;
  // Widths that are a multiple of 4 take the subgroup kernels' vec4 form: forward (incl. a readback)
  // and forward+backward, medians of 25, three alternating processes on the Zen 4 host: [6400, 64]
  // 1.25–1.61 → 1.07–1.21 ms and 3.3–4.0 → 2.5–3.2 ms, [25216, 192] 9.5–11.4 → 6.0–6.9 ms and
  // 28–30 → 20–22 ms.
  const subgroup = forcedLayerNorm !== 'rows' && cols <= LAYERNORM_SG_MAX_COLS && subgroupsOf8();
  const grid = (k: KernelSource) => (subgroup ? grid1d(Math.ceil(rows / LAYERNORM_SG_ROWS) * 8, 8) : grid1d(rows, k.workgroupSize));
  const fwd = subgroup ? layerNormSubgroupKernel(affine, cols) : layerNormKernel(affine);
  if (rows > 0) rt().run({ source: fwd, uniforms, buffers: affine ? [x.buffer, weight!.buffer, bias!.buffer, y.buffer, stats.buffer] : [x.buffer, y.buffer, stats.buffer], grid: grid(fwd), flops: 8 * x.size, bytes: 8 * x.size, label: `layernorm ${label}` });
  const inputs = affine ? [x, weight!, bias!] : [x];
  return record('layerNorm', y, inputs, (g, pending) => {
    let dx: Tensor | null = null;
    // With the subgroup kernels the input gradient's pass also sums γ's and β's gradients over each
    // block of rows (x and g read once); otherwise a second pass over chunks of rows does. GPU time
    // of the whole backward, profiler medians of 20 interleaved rounds of 8: [6400, 64] 0.89 vs
    // 1.24–1.34 ms, [2176, 64] 0.51–0.63 vs 0.66–1.12, [25216, 192] 6.6–10.1 vs 7.8–13.9 (two
    // runs); training steps (medians of 15 interleaved): vit-fmnist-p4 269.3 vs 275.6 ms,
    // vit-fmnist-tiny 140.7 vs 147.5.
    const fused = subgroup && affine && x.requiresGrad && rows > 0;
    const blocks = Math.ceil(rows / LAYERNORM_SG_ROWS);
    const partial = fused ? Tensor.empty([2, blocks, cols], 'float32', 'layerNorm parameter-gradient partial sums') : null;
    // The subgroup kernel adds in the gradient x already has (the residual branch's, in a ViT block)
    // rather than leaving it to the tape's add: in a vit-fmnist-p4 training step 13 instead of 25
    // add dispatches, GPU time of the adds 21.0 → 10.3 ms and of the layernorm backwards 14.5 →
    // 17.1 ms a step (profiler, 11 interleaved steps each way; the whole step's GPU time moved
    // within the host's noise, ±4 ms on single matmul kernels).
    const prev = subgroup && rows > 0 ? pending?.[0] : undefined;
    if (x.requiresGrad) {
      dx = Tensor.empty(x.shape, 'float32', 'layerNorm backward');
      const k = subgroup ? layerNormGradSubgroupKernel(affine, cols, fused, !!prev) : layerNormGradKernel(affine);
      const buffers = affine ? [x.buffer, weight!.buffer, stats.buffer, g.buffer, dx.buffer] : [x.buffer, stats.buffer, g.buffer, dx.buffer];
      if (partial) buffers.push(partial.buffer);
      if (prev) buffers.push(prev.buffer);
      rt().run({ source: k, uniforms, buffers, grid: grid(k), flops: (fused ? 14 : 10) * x.size, bytes: 12 * x.size, label: `layernorm_grad${fused ? '_params' : ''}${prev ? '_acc' : ''} ${label}` });
      if (prev) dx = folded(dx);
    }
    if (!affine) return [dx];
    const dgamma = Tensor.empty([cols], 'float32', 'layerNorm dweight');
    const dbeta = Tensor.empty([cols], 'float32', 'layerNorm dbias');
    // Unfused: ~64 chunks of at least 64 rows, enough invocations for every core, few partials to add.
    const chunkRows = fused ? LAYERNORM_SG_ROWS : Math.max(64, Math.ceil(rows / 64));
    const chunks = fused ? blocks : Math.max(1, Math.ceil(rows / chunkRows));
    const sums = { ...uniforms, chunk_rows: chunkRows, chunks };
    const sumsOf = partial ?? Tensor.empty([2, chunks, cols], 'float32', 'layerNorm parameter-gradient partial sums');
    if (!fused) {
      const k = layerNormParamGradKernel(cols % 4 === 0);
      rt().run({ source: k, uniforms: sums, buffers: [x.buffer, stats.buffer, g.buffer, sumsOf.buffer], grid: grid1d((chunks * cols) / (cols % 4 === 0 ? 4 : 1), k.workgroupSize), flops: 5 * x.size, bytes: 12 * x.size, label: `layernorm_param_grad ${label}` });
    }
    const vec = cols % 4 === 0;
    const fin = layerNormParamGradFinishKernel(vec);
    rt().run({ source: fin, uniforms: sums, buffers: [sumsOf.buffer, dgamma.buffer, dbeta.buffer], grid: grid1d(vec ? cols / 4 : cols, fin.workgroupSize), label: `layernorm_param_grad_finish ${label}` });
    sumsOf.dispose();
    return [dx, dgamma, dbeta];
  }, [stats]);
}
