// Optimizer updates, in place. Step-varying hyperparameters (learning rate, bias corrections)
// come from a small storage buffer the optimizer rewrites each step, so the kernel source and
// its uniforms never change and no buffer is created per step.
//   AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization"), as torch.optim.AdamW:
//     p ← p − lr·wd·p;  m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;
//     p ← p − lr · (m / bc1) / (sqrt(v / bc2) + eps),  bc_i = 1 − β_i^t
//   SGD with momentum, as torch.optim.SGD (dampening 0): d = g + wd·p;
// g is first multiplied by clip[1], the global-norm clipping factor (1 when not clipping).
//     buf ← d on the first step, else μ·buf + d;  p ← p − lr·buf
import { fieldList, memo, kernel, type KernelSource, MAIN_1D } from './common.js';

export const OPTIMIZER_WG = 64;

/** hyper = [lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2] */
export const ADAMW_HYPER = ['lr', 'beta1', 'beta2', 'eps', 'weightDecay', 'bc1', 'bc2'] as const;
/** hyper = [lr, momentum, weight_decay, first_step (1 or 0)] */
export const SGD_HYPER = ['lr', 'momentum', 'weightDecay', 'first'] as const;

// ---- AdamW over several tensors per dispatch --------------------------------------------------------
// One dispatch updates up to ADAMW_PER_DISPATCH parameters: invocation i walks the concatenation of their ranges
// (sizes n0, n1, …) and the slot it lands in picks the buffers. WGSL cannot index bindings, so
// each slot's update is written out; a stage has 16 storage bindings (the WebGPU default), so
// AdamW takes 3 parameters (p, g, m, v each, plus hyper and clip) and the sum of squares 15.
export const ADAMW_PER_DISPATCH = 3;
export const SUM_SQUARES_PER_DISPATCH = 15;

/** WGSL that finds the slot of linear index `idx` among ranges `${sizes}0..k-1` and runs
 * `body(slot)` with `j` the index inside that range. */
function bySlot(k: number, idx: string, sizes: string, body: (slot: number) => string): string {
  let out = '';
  for (let s = k - 1; s >= 0; s--) {
    out = s === k - 1 ? `if (j < P.${sizes}${s}) { ${body(s)} }` : `if (j < P.${sizes}${s}) { ${body(s)} } else { j -= P.${sizes}${s}; ${out} }`;
  }
  return `var j = ${idx};\n  ${out}`;
}

/** WGSL: the AdamW hyperparameters (ADAMW_HYPER order) starting at hyper[base]. */
function adamwHyper(base: string): string {
  return `let h = ${base};
  let lr = hyper[h]; let b1 = hyper[h + 1u]; let b2 = hyper[h + 2u]; let eps = hyper[h + 3u];
  let wd = hyper[h + 4u]; let bc1 = hyper[h + 5u]; let bc2 = hyper[h + 6u];`;
}

/** WGSL: one AdamW update of element j of tensor p with gradient g and moments m, v. */
function adamwUpdate(p: string, g: string, m: string, v: string, j: string): string {
  return `let gi = ${g}[${j}] * clip[1];
    let mi = b1 * ${m}[${j}] + (1.0 - b1) * gi;
    let vi = b2 * ${v}[${j}] + (1.0 - b2) * gi * gi;
    ${m}[${j}] = mi;
    ${v}[${j}] = vi;
    ${p}[${j}] = ${p}[${j}] * (1.0 - lr * wd) - lr * (mi / bc1) / (sqrt(vi / bc2) + eps);`;
}

export const adamwMultiKernel = memo(function adamwMultiKernel(k: number): KernelSource {
  const update = (s: number) => adamwUpdate(`p${s}`, `g${s}`, `m${s}`, `v${s}`, 'j');
  return kernel({
    name: `adamw_x${k}`,
    uniforms: [{ name: 'total', type: 'u32' }, ...fieldList('n', k)],
    buffers: [
      ...Array.from({ length: k }, (_, s) => [
        { name: `p${s}`, access: 'read_write' as const, type: 'f32' as const },
        { name: `g${s}`, access: 'read' as const, type: 'f32' as const },
        { name: `m${s}`, access: 'read_write' as const, type: 'f32' as const },
        { name: `v${s}`, access: 'read_write' as const, type: 'f32' as const },
      ]).flat(),
      { name: 'hyper', access: 'read', type: 'f32' },
      { name: 'clip', access: 'read', type: 'f32' },
    ],
    workgroupSize: OPTIMIZER_WG,
    body: `${MAIN_1D} {
  let i = global_index(wid, lid, nwg);
  if (i >= P.total) { return; }
  ${adamwHyper('0u')}
  ${bySlot(k, 'i', 'n', update)}
}`,
  });
});

// ---- AdamW over packed parameters: one dispatch for the whole model -----------------------------
// Parameters, gradients and both moments live in four buffers with the same layout (each tensor
// at an aligned offset, zero padding between), ordered by parameter group: group s ends at
// element e_s, and its hyperparameters are hyper[7s .. 7s + 6] (ADAMW_HYPER order). Padding has
// zero gradient and moments, so it is only ever scaled by weight decay and never read elsewhere.
export const adamwFlatKernel = memo(function adamwFlatKernel(groups: number): KernelSource {
  const group = Array.from({ length: groups - 1 }, (_, s) => `select(0u, 1u, i >= P.e${s})`).join(' + ') || '0u';
  return kernel({
    name: `adamw_flat_g${groups}`,
    uniforms: [{ name: 'total', type: 'u32' }, ...fieldList('e', Math.max(groups - 1, 1))],
    buffers: [
      { name: 'p', access: 'read_write', type: 'f32' },
      { name: 'g', access: 'read', type: 'f32' },
      { name: 'm', access: 'read_write', type: 'f32' },
      { name: 'v', access: 'read_write', type: 'f32' },
      { name: 'hyper', access: 'read', type: 'f32' },
      { name: 'clip', access: 'read', type: 'f32' },
    ],
    workgroupSize: OPTIMIZER_WG,
    body: `${MAIN_1D} {
  let i = global_index(wid, lid, nwg);
  if (i >= P.total) { return; }
  ${adamwHyper(`7u * (${group})`)}
  ${adamwUpdate('p', 'g', 'm', 'v', 'i')}
}`,
  });
});

export const sgdKernel = memo(function sgdKernel(): KernelSource {
  return kernel({
    name: 'sgd',
    uniforms: [{ name: 'n', type: 'u32' }],
    buffers: [
      { name: 'p', access: 'read_write', type: 'f32' },
      { name: 'g', access: 'read', type: 'f32' },
      { name: 'buf', access: 'read_write', type: 'f32' },
      { name: 'hyper', access: 'read', type: 'f32' },
      { name: 'clip', access: 'read', type: 'f32' },
    ],
    workgroupSize: OPTIMIZER_WG,
    body: `${MAIN_1D} {
  let i = global_index(wid, lid, nwg);
  if (i >= P.n) { return; }
  let lr = hyper[0]; let mu = hyper[1]; let wd = hyper[2]; let first = hyper[3];
  let d = g[i] * clip[1] + wd * p[i];
  let b = select(mu * buf[i] + d, d, first > 0.5);
  buf[i] = b;
  p[i] = p[i] - lr * select(b, d, mu == 0.0);
}`,
  });
});

// ---- gradient clipping by global norm (torch.nn.utils.clip_grad_norm_) --------------------------
// Pass 1, up to 15 tensors per dispatch: partial sums of squares over chunks of CHUNK elements,
// written one after another into one partials buffer shared by all parameters. Pass 2: one invocation adds the partials and
// writes [norm, min(1, max_norm / (norm + 1e-6))]. No readback: the optimizer reads the factor.
export const CLIP_CHUNK = 1024;

/** Partial sums of squares of up to SUM_SQUARES_PER_DISPATCH tensors: invocation c walks the
 * concatenation of their chunk ranges (chunk counts c0, c1, …; sizes n0, n1, …) and writes
 * partials[out_off + c]. */
export const sumSquaresMultiKernel = memo(function sumSquaresMultiKernel(k: number): KernelSource {
  const partial = (s: number) => `let start = j * ${CLIP_CHUNK}u;
    let end = min(start + ${CLIP_CHUNK}u, P.n${s});
    for (var e = start; e < end; e++) { let v = x${s}[e]; acc += v * v; }`;
  return kernel({
    name: `sum_squares_partial_x${k}`,
    uniforms: [{ name: 'total', type: 'u32' }, { name: 'out_off', type: 'u32' }, ...fieldList('c', k), ...fieldList('n', k)],
    buffers: [
      ...Array.from({ length: k }, (_, s) => ({ name: `x${s}`, access: 'read' as const, type: 'f32' as const })),
      { name: 'partials', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: OPTIMIZER_WG,
    body: `${MAIN_1D} {
  let c = global_index(wid, lid, nwg);
  if (c >= P.total) { return; }
  var acc = 0.0;
  ${bySlot(k, 'c', 'c', partial)}
  partials[P.out_off + c] = acc;
}`,
  });
});

export const clipFactorKernel = memo(function clipFactorKernel(): KernelSource {
  return kernel({
    name: 'clip_factor',
    uniforms: [
      { name: 'count', type: 'u32' },
      { name: 'max_norm', type: 'f32' },
    ],
    buffers: [
      { name: 'partials', access: 'read', type: 'f32' },
      { name: 'out', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: 1,
    body: `${MAIN_1D} {
  var acc = 0.0;
  for (var i = 0u; i < P.count; i++) { acc += partials[i]; }
  let norm = sqrt(acc);
  out[0] = norm;
  out[1] = select(1.0, min(1.0, P.max_norm / (norm + 1e-6)), P.max_norm > 0.0);
}`,
  });
});

/** Exponential moving average of weights: ema ← m·ema + (1 − m)·p. */
export const emaKernel = memo(function emaKernel(): KernelSource {
  return kernel({
    name: 'ema',
    uniforms: [
      { name: 'n', type: 'u32' },
      { name: 'm', type: 'f32' },
    ],
    buffers: [
      { name: 'p', access: 'read', type: 'f32' },
      { name: 'ema', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: OPTIMIZER_WG,
    body: `${MAIN_1D} {
  let i = global_index(wid, lid, nwg);
  if (i >= P.n) { return; }
  ema[i] = P.m * ema[i] + (1.0 - P.m) * p[i];
}`,
  });
});
