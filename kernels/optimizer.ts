// Optimizer updates, in place. Step-varying hyperparameters (learning rate, bias corrections)
// come from a small storage buffer the optimizer rewrites each step, so the kernel source and
// its uniforms never change and no buffer is created per step.
//   AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization"), as torch.optim.AdamW:
//     p ← p − lr·wd·p;  m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;
//     p ← p − lr · (m / bc1) / (sqrt(v / bc2) + eps),  bc_i = 1 − β_i^t
//   SGD with momentum, as torch.optim.SGD (dampening 0): d = g + wd·p;
// g is first multiplied by clip[1], the global-norm clipping factor (1 when not clipping).
//     buf ← d on the first step, else μ·buf + d;  p ← p − lr·buf
import { memo, kernel, type KernelSource, MAIN_1D } from './common.js';

export const OPTIMIZER_WG = 64;

/** hyper = [lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2] */
export const ADAMW_HYPER = ['lr', 'beta1', 'beta2', 'eps', 'weightDecay', 'bc1', 'bc2'] as const;
/** hyper = [lr, momentum, weight_decay, first_step (1 or 0)] */
export const SGD_HYPER = ['lr', 'momentum', 'weightDecay', 'first'] as const;

export const adamwKernel = memo(function adamwKernel(): KernelSource {
  return kernel({
    name: 'adamw',
    uniforms: [{ name: 'n', type: 'u32' }],
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
  if (i >= P.n) { return; }
  let lr = hyper[0]; let b1 = hyper[1]; let b2 = hyper[2]; let eps = hyper[3];
  let wd = hyper[4]; let bc1 = hyper[5]; let bc2 = hyper[6];
  let gi = g[i] * clip[1];
  let mi = b1 * m[i] + (1.0 - b1) * gi;
  let vi = b2 * v[i] + (1.0 - b2) * gi * gi;
  m[i] = mi;
  v[i] = vi;
  let pi = p[i] * (1.0 - lr * wd);
  p[i] = pi - lr * (mi / bc1) / (sqrt(vi / bc2) + eps);
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
// Pass 1, per tensor: partial sums of squares over chunks of CHUNK elements, written at an offset
// into one partials buffer shared by all parameters. Pass 2: one invocation adds the partials and
// writes [norm, min(1, max_norm / (norm + 1e-6))]. No readback: the optimizer reads the factor.
export const CLIP_CHUNK = 1024;

export const sumSquaresKernel = memo(function sumSquaresKernel(): KernelSource {
  return kernel({
    name: 'sum_squares_partial',
    uniforms: [
      { name: 'n', type: 'u32' },
      { name: 'out_off', type: 'u32' },
    ],
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'partials', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: OPTIMIZER_WG,
    body: `${MAIN_1D} {
  let c = global_index(wid, lid, nwg);
  let start = c * ${CLIP_CHUNK}u;
  if (start >= P.n) { return; }
  let end = min(start + ${CLIP_CHUNK}u, P.n);
  var acc = 0.0;
  for (var i = start; i < end; i++) { let v = x[i]; acc += v * v; }
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
