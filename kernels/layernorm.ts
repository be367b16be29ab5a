// LayerNorm over the last axis (Ba, Kiros, Hinton 2016), fused forward and backward.
// Forward saves mean and rstd per row; backward recomputes x̂ from them:
//   dx = rstd · (ĝ - mean(ĝ) - x̂ · mean(ĝ · x̂)),  ĝ = g · γ
//   dγ = Σ_rows g · x̂,  dβ = Σ_rows g   (one column per invocation)
import { memo, kernel, type KernelSource, MAIN_1D } from './common.js';

export const LAYERNORM_WG = 64;
const ROWS = [
  { name: 'rows', type: 'u32' as const },
  { name: 'cols', type: 'u32' as const },
  { name: 'eps', type: 'f32' as const },
];

export const layerNormKernel = memo(function layerNormKernel(affine: boolean): KernelSource {
  return kernel({
    name: `layernorm${affine ? '' : '_plain'}`,
    uniforms: ROWS,
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      ...(affine ? [{ name: 'gamma', access: 'read' as const, type: 'f32' as const }, { name: 'beta', access: 'read' as const, type: 'f32' as const }] : []),
      { name: 'y', access: 'read_write', type: 'f32' },
      { name: 'stats', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: LAYERNORM_WG,
    body: `${MAIN_1D} {
  let row = global_index(wid, lid, nwg);
  if (row >= P.rows) { return; }
  let base = row * P.cols;
  var s = 0.0;
  for (var c = 0u; c < P.cols; c++) { s += x[base + c]; }
  let mean = s / f32(P.cols);
  var ss = 0.0;
  for (var c = 0u; c < P.cols; c++) { let d = x[base + c] - mean; ss += d * d; }
  let rstd = inverseSqrt(ss / f32(P.cols) + P.eps);
  for (var c = 0u; c < P.cols; c++) {
    let xh = (x[base + c] - mean) * rstd;
    y[base + c] = ${affine ? 'xh * gamma[c] + beta[c]' : 'xh'};
  }
  stats[2u * row] = mean;
  stats[2u * row + 1u] = rstd;
}`,
  });
});

export const layerNormGradKernel = memo(function layerNormGradKernel(affine: boolean): KernelSource {
  const gh = affine ? 'g[base + c] * gamma[c]' : 'g[base + c]';
  return kernel({
    name: `layernorm${affine ? '' : '_plain'}_grad`,
    uniforms: ROWS,
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      ...(affine ? [{ name: 'gamma', access: 'read' as const, type: 'f32' as const }] : []),
      { name: 'stats', access: 'read', type: 'f32' },
      { name: 'g', access: 'read', type: 'f32' },
      { name: 'dx', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: LAYERNORM_WG,
    body: `${MAIN_1D} {
  let row = global_index(wid, lid, nwg);
  if (row >= P.rows) { return; }
  let base = row * P.cols;
  let mean = stats[2u * row];
  let rstd = stats[2u * row + 1u];
  var m1 = 0.0;
  var m2 = 0.0;
  for (var c = 0u; c < P.cols; c++) {
    let gh = ${gh};
    m1 += gh;
    m2 += gh * (x[base + c] - mean) * rstd;
  }
  m1 = m1 / f32(P.cols);
  m2 = m2 / f32(P.cols);
  for (var c = 0u; c < P.cols; c++) {
    let xh = (x[base + c] - mean) * rstd;
    dx[base + c] = rstd * (${gh} - m1 - xh * m2);
  }
}`,
  });
});

/** dγ and dβ, one column per invocation, looping over rows. */
export const layerNormParamGradKernel = memo(function layerNormParamGradKernel(): KernelSource {
  return kernel({
    name: 'layernorm_param_grad',
    uniforms: ROWS,
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'stats', access: 'read', type: 'f32' },
      { name: 'g', access: 'read', type: 'f32' },
      { name: 'dgamma', access: 'read_write', type: 'f32' },
      { name: 'dbeta', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: LAYERNORM_WG,
    body: `${MAIN_1D} {
  let c = global_index(wid, lid, nwg);
  if (c >= P.cols) { return; }
  var dg = 0.0;
  var db = 0.0;
  for (var r = 0u; r < P.rows; r++) {
    let gv = g[r * P.cols + c];
    dg += gv * (x[r * P.cols + c] - stats[2u * r]) * stats[2u * r + 1u];
    db += gv;
  }
  dgamma[c] = dg;
  dbeta[c] = db;
}`,
  });
});
