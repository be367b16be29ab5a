// Counter-based random numbers on the GPU: Philox 4x32-10 (Salmon et al., "Parallel random
// numbers: as easy as 1, 2, 3", SC 2011). Key = (seed, stream), counter = (element group, 0, 0, 0):
// every value depends only on (seed, stream, index), so results are reproducible and need no
// upload. engine/reference/random.ts computes the same bits on the CPU.
import { memo, kernel, type KernelSource, MAIN_1D } from './common.js';

export const RANDOM_WG = 64;

export const WGSL_PHILOX = /* wgsl */ `
// 32x32 -> 64-bit product as (hi, lo); WGSL has no mulhi.
fn mulhilo_(a: u32, b: u32) -> vec2<u32> {
  let a0 = a & 0xFFFFu; let a1 = a >> 16u;
  let b0 = b & 0xFFFFu; let b1 = b >> 16u;
  let p00 = a0 * b0; let p01 = a0 * b1; let p10 = a1 * b0; let p11 = a1 * b1;
  let mid = (p00 >> 16u) + (p01 & 0xFFFFu) + (p10 & 0xFFFFu);
  let hi = p11 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
  return vec2<u32>(hi, a * b);
}
fn philox_(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
  var c = counter;
  var k = key;
  for (var r = 0u; r < 10u; r++) {
    let p0 = mulhilo_(0xD2511F53u, c.x);
    let p1 = mulhilo_(0xCD9E8D57u, c.z);
    c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
    k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
  }
  return c;
}
// 24 high-quality bits to [0, 1).
fn to_unit_(x: u32) -> f32 { return f32(x >> 8u) * (1.0 / 16777216.0); }
`;

export type RandomDistribution = 'uniform' | 'normal';

/** uniform: low + (high - low) * u; normal: mean + std * z (Box-Muller on pairs). */
export const randomKernel = memo(function randomKernel(dist: RandomDistribution): KernelSource {
  const values =
    dist === 'uniform'
      ? `let v = vec4<f32>(to_unit_(r.x), to_unit_(r.y), to_unit_(r.z), to_unit_(r.w)) * (P.b - P.a) + P.a;`
      : `// u1 in (0, 1] so log(u1) is finite.
  let u1 = vec2<f32>(to_unit_(r.x), to_unit_(r.z)) + vec2<f32>(1.0 / 16777216.0);
  let u2 = vec2<f32>(to_unit_(r.y), to_unit_(r.w));
  let rad = sqrt(-2.0 * log(u1));
  let ang = 6.283185307179586 * u2;
  let v = vec4<f32>(rad.x * cos(ang.x), rad.x * sin(ang.x), rad.y * cos(ang.y), rad.y * sin(ang.y)) * P.b + P.a;`;
  return kernel({
    name: `random_${dist}`,
    uniforms: [
      { name: 'n', type: 'u32' },
      { name: 'seed', type: 'u32' },
      { name: 'stream', type: 'u32' },
      { name: 'a', type: 'f32' },
      { name: 'b', type: 'f32' },
    ],
    buffers: [{ name: 'out', access: 'read_write', type: 'f32' }],
    workgroupSize: RANDOM_WG,
    body: `${WGSL_PHILOX}
${MAIN_1D} {
  let j = global_index(wid, lid, nwg);
  if (j * 4u >= P.n) { return; }
  let r = philox_(vec4<u32>(j, 0u, 0u, 0u), vec2<u32>(P.seed, P.stream));
  ${values}
  for (var e = 0u; e < 4u; e++) {
    if (j * 4u + e < P.n) { out[j * 4u + e] = v[e]; }
  }
}`,
  });
});

/** Inverted dropout: keep with probability 1 - p, scale kept values by 1 / (1 - p). The mask
 * is recomputed from (seed, stream) in backward, so nothing is stored. */
export const dropoutKernel = memo(function dropoutKernel(): KernelSource {
  return kernel({
    name: 'dropout',
    uniforms: [
      { name: 'n', type: 'u32' },
      { name: 'seed', type: 'u32' },
      { name: 'stream', type: 'u32' },
      { name: 'p', type: 'f32' },
    ],
    buffers: [
      { name: 'x', access: 'read', type: 'f32' },
      { name: 'out', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: RANDOM_WG,
    body: `${WGSL_PHILOX}
${MAIN_1D} {
  let j = global_index(wid, lid, nwg);
  if (j * 4u >= P.n) { return; }
  let r = philox_(vec4<u32>(j, 0u, 0u, 0u), vec2<u32>(P.seed, P.stream));
  let scale = 1.0 / (1.0 - P.p);
  for (var e = 0u; e < 4u; e++) {
    let i = j * 4u + e;
    if (i < P.n) { out[i] = select(0.0, x[i] * scale, to_unit_(r[e]) >= P.p); }
  }
}`,
  });
});
