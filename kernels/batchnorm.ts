// Fused BatchNorm over channels-last rows x [n, C] (a conv stem's im2col + matmul output), with an
// optional ReLU: y = max(x·scale_c + shift_c, 0), scale = γ·inv, shift = β − μ·scale,
// inv = 1/sqrt(σ² + eps). Training statistics are reduced in two passes over chunks of rows:
// per (chunk, channel) a shifted sum and sum of squares → (count, mean, M2), then per channel
// Chan et al.'s pairwise merge, which also updates the running statistics in place. Backward,
// with g' = g·[y > 0] under ReLU and x̂ = (x − μ)·inv:
//   dγ = Σ g'·x̂,  dβ = Σ g',  dx = γ·inv/n · (n·g' − dβ − x̂·dγ)
// Each elementwise kernel gives one invocation a channel and a block of rows, so the channel's
// coefficients are loaded once per block and lanes read neighbouring channels of a row.
import { kernel, type KernelSource, MAIN_1D, memo } from './common.js';

export const BN_WG = 64;
/** Rows per statistics chunk and per elementwise block. */
export const BN_CHUNK = 256;
export const BN_BLOCK = 64;

const DIMS = [
  { name: 'n', type: 'u32' as const },
  { name: 'C', type: 'u32' as const },
  { name: 'chunks', type: 'u32' as const },
  { name: 'eps', type: 'f32' as const },
  { name: 'momentum', type: 'f32' as const },
];

/** Partials [chunks, C, 3]: (count, mean, M2) of each chunk of rows per channel. */
export const bnStatsPartialKernel = memo(function bnStatsPartialKernel(): KernelSource {
  return kernel({
    name: 'bn_stats_partial',
    uniforms: DIMS,
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'part', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: BN_WG,
    body: `${MAIN_1D} {
  ${chunkPrologue()}
  // Sums shifted by the chunk's first value keep M2 accurate when |mean| >> std.
  let x0 = x[r0 * P.C + c];
  var s1 = 0.0;
  var s2 = 0.0;
  for (var r = r0; r < r1; r++) {
    let d = x[r * P.C + c] - x0;
    s1 += d;
    s2 += d * d;
  }
  let cnt = f32(r1 - r0);
  part[3u * t] = cnt;
  part[3u * t + 1u] = x0 + s1 / cnt;
  part[3u * t + 2u] = max(s2 - s1 * s1 / cnt, 0.0);
}`,
  });
});

/** stats [C, 4] = (mean, inv, scale, shift); training merges the partials and updates the
 * running statistics, eval reads them. */
export const bnStatsFinishKernel = memo(function bnStatsFinishKernel(training: boolean): KernelSource {
  return kernel({
    name: `bn_stats_finish${training ? '' : '_eval'}`,
    uniforms: DIMS,
    buffers: [
      { name: 'part', access: 'read', type: 'f32' },
      { name: 'weight', access: 'read', type: 'f32' },
      { name: 'bias', access: 'read', type: 'f32' },
      { name: 'running_mean', access: 'read_write', type: 'f32' },
      { name: 'running_var', access: 'read_write', type: 'f32' },
      { name: 'stats', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: BN_WG,
    body: `${MAIN_1D} {
  let c = global_index(wid, lid, nwg);
  if (c >= P.C) { return; }
  ${training ? `var cnt = 0.0;
  var mu = 0.0;
  var m2 = 0.0;
  for (var k = 0u; k < P.chunks; k++) {
    let o = 3u * (k * P.C + c);
    let nb = part[o];
    let d = part[o + 1u] - mu;
    let tot = cnt + nb;
    mu += d * nb / tot;
    m2 += part[o + 2u] + d * d * cnt * nb / tot;
    cnt = tot;
  }
  let variance = m2 / cnt;
  running_mean[c] = (1.0 - P.momentum) * running_mean[c] + P.momentum * mu;
  running_var[c] = (1.0 - P.momentum) * running_var[c] + P.momentum * m2 / max(cnt - 1.0, 1.0);` : `let mu = running_mean[c];
  let variance = running_var[c];`}
  let inv = inverseSqrt(variance + P.eps);
  let scale = weight[c] * inv;
  stats[4u * c] = mu;
  stats[4u * c + 1u] = inv;
  stats[4u * c + 2u] = scale;
  stats[4u * c + 3u] = bias[c] - mu * scale;
}`,
  });
});

/** Invocation t = (chunk, channel c) over rows r0..r1 of the chunk. */
function chunkPrologue(): string {
  return `let t = global_index(wid, lid, nwg);
  if (t >= P.chunks * P.C) { return; }
  let c = t % P.C;
  let r0 = (t / P.C) * ${BN_CHUNK}u;
  let r1 = min(r0 + ${BN_CHUNK}u, P.n);`;
}

/** Invocation t = (block of rows, channel c) over rows r0..r1 of the block. */
function blockPrologue(): string {
  return `let t = global_index(wid, lid, nwg);
  let blocks = (P.n + ${BN_BLOCK - 1}u) / ${BN_BLOCK}u;
  if (t >= blocks * P.C) { return; }
  let c = t % P.C;
  let r0 = (t / P.C) * ${BN_BLOCK}u;
  let r1 = min(r0 + ${BN_BLOCK}u, P.n);`;
}

export const bnApplyKernel = memo(function bnApplyKernel(relu: boolean): KernelSource {
  return kernel({
    name: `bn_apply${relu ? '_relu' : ''}`,
    uniforms: DIMS,
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'stats', access: 'read', type: 'f32' },
      { name: 'y', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: BN_WG,
    body: `${MAIN_1D} {
  ${blockPrologue()}
  let scale = stats[4u * c + 2u];
  let shift = stats[4u * c + 3u];
  for (var r = r0; r < r1; r++) {
    let i = r * P.C + c;
    y[i] = ${relu ? 'max(fma(x[i], scale, shift), 0.0)' : 'fma(x[i], scale, shift)'};
  }
}`,
  });
});

/** Partials [chunks, C, 2]: Σ g' and Σ g'·x̂ per chunk of rows. */
export const bnGradPartialKernel = memo(function bnGradPartialKernel(relu: boolean): KernelSource {
  return kernel({
    name: `bn_grad_partial${relu ? '_relu' : ''}`,
    uniforms: DIMS,
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'y', access: 'read', type: 'f32' },
      { name: 'g', access: 'read', type: 'f32' },
      { name: 'stats', access: 'read', type: 'f32' },
      { name: 'part', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: BN_WG,
    body: `${MAIN_1D} {
  ${chunkPrologue()}
  let mu = stats[4u * c];
  let inv = stats[4u * c + 1u];
  var sg = 0.0;
  var sgx = 0.0;
  for (var r = r0; r < r1; r++) {
    let i = r * P.C + c;
    let gi = ${relu ? 'select(0.0, g[i], y[i] > 0.0)' : 'g[i]'};
    sg += gi;
    sgx += gi * (x[i] - mu) * inv;
  }
  part[2u * t] = sg;
  part[2u * t + 1u] = sgx;
}`,
  });
});

/** dweight, dbias [C] from the partials. */
export const bnGradFinishKernel = memo(function bnGradFinishKernel(): KernelSource {
  return kernel({
    name: 'bn_grad_finish',
    uniforms: DIMS,
    buffers: [
      { name: 'part', access: 'read', type: 'f32' },
      { name: 'dweight', access: 'read_write', type: 'f32' },
      { name: 'dbias', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: BN_WG,
    body: `${MAIN_1D} {
  let c = global_index(wid, lid, nwg);
  if (c >= P.C) { return; }
  var sg = 0.0;
  var sgx = 0.0;
  for (var k = 0u; k < P.chunks; k++) {
    sg += part[2u * (k * P.C + c)];
    sgx += part[2u * (k * P.C + c) + 1u];
  }
  dweight[c] = sgx;
  dbias[c] = sg;
}`,
  });
});

/** dx; in training through the batch statistics, in eval dx = g'·γ·inv. */
export const bnGradInputKernel = memo(function bnGradInputKernel(relu: boolean, training: boolean): KernelSource {
  return kernel({
    name: `bn_grad_input${relu ? '_relu' : ''}${training ? '' : '_eval'}`,
    uniforms: DIMS,
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'y', access: 'read', type: 'f32' },
      { name: 'g', access: 'read', type: 'f32' },
      { name: 'stats', access: 'read', type: 'f32' },
      { name: 'dweight', access: 'read', type: 'f32' },
      { name: 'dbias', access: 'read', type: 'f32' },
      { name: 'dx', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: BN_WG,
    body: `${MAIN_1D} {
  ${blockPrologue()}
  let mu = stats[4u * c];
  let inv = stats[4u * c + 1u];
  let scale = stats[4u * c + 2u];
  let nf = f32(P.n);
  let dw = dweight[c];
  let db = dbias[c];
  for (var r = r0; r < r1; r++) {
    let i = r * P.C + c;
    let gi = ${relu ? 'select(0.0, g[i], y[i] > 0.0)' : 'g[i]'};
    dx[i] = ${training ? '(scale / nf) * (nf * gi - db - (x[i] - mu) * inv * dw)' : 'gi * scale'};
  }
}`,
  });
});
