// Elementwise kernels over up to three broadcast inputs: one WGSL expression per op (the op table
// in engine/ops/elementwise.ts), rank and broadcast pattern baked into the source, shapes and
// strides passed as uniforms.
import { memo, type BufferDecl, fieldList, kernel, type KernelSource, MAIN_1D, stridedOffsets, type UniformField } from './common.js';

export const ELEMENTWISE_WG = 64;

/** How an input is indexed: 'same' = contiguous with the output shape (index = i), 'strided'
 * = through per-dimension strides (0 on broadcast dimensions). */
export type InputIndexing = 'same' | 'strided';

// WGSL has no erf: Abramowitz & Stegun 7.1.26, max absolute error 1.5e-7 (below f32 resolution
// of erf near 1), used by the exact (erf) GELU as in timm.
export const WGSL_MATH = /* wgsl */ `
fn erf_(x: f32) -> f32 {
  let s = sign(x);
  let a = abs(x);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-a * a);
  return s * y;
}
// tanh via exp of a clamped argument: some drivers overflow to NaN for |x| > ~44.
fn tanh_(x: f32) -> f32 {
  let e = exp(-2.0 * clamp(abs(x), 0.0, 15.0));
  return sign(x) * (1.0 - e) / (1.0 + e);
}
fn sigmoid_(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }
fn gelu_(x: f32) -> f32 { return 0.5 * x * (1.0 + erf_(x * 0.7071067811865476)); }
// WGSL's pow is undefined for a < 0; integer exponents of negative bases are the useful case.
fn pow_(a: f32, e: f32) -> f32 {
  if (a >= 0.0 || e != round(e)) { return pow(a, e); }
  let m = pow(-a, e);
  return select(m, -m, (i32(e) & 1) == 1);
}
// Φ(x) + x·φ(x), with erf_ written out so that one exp serves both terms: erf's factor exp(−a²),
// a = |x|/√2, is the density's exp(−x²/2). 1.23 vs 1.38 ms over 819,200 elements on lavapipe.
fn gelu_grad_(x: f32) -> f32 {
  let e = exp(-0.5 * x * x);
  let t = 1.0 / (1.0 + 0.3275911 * 0.7071067811865476 * abs(x));
  let erf_abs = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * e;
  return 0.5 * (1.0 + sign(x) * erf_abs) + x * e * 0.3989422804014327;
}
`;

const NAMES = ['a', 'b', 'c', 'd', 'e'];

/**
 * out[i] = expr(a[ia], b[ib], ...), with named scalar params p and q available to the expression.
 * `expr` refers to inputs as `a`, `b`, `c` ... (already loaded as f32).
 */
export const elementwiseKernel = memo(function elementwiseKernel(name: string, expr: string, indexing: InputIndexing[], rank: number, perLane: number): KernelSource {
  if (indexing.every((m) => m === 'same')) return elementwiseVec4Kernel(name, expr, indexing.length, perLane);
  const strided = indexing.map((m, i) => (m === 'strided' ? i : -1)).filter((i) => i >= 0);
  const uniforms: UniformField[] = [
    { name: 'n', type: 'u32' },
    { name: 'p', type: 'f32' },
    { name: 'q', type: 'f32' },
    ...(strided.length ? fieldList('shape', rank) : []),
    ...strided.flatMap((i) => fieldList(`st${NAMES[i]}`, rank)),
  ];
  const buffers: BufferDecl[] = [
    ...indexing.map((_, i) => ({ name: `in_${NAMES[i]}`, access: 'read' as const, type: 'f32' as const })),
    { name: 'out', access: 'read_write', type: 'f32' },
  ];
  const offsets = strided.length
    ? stridedOffsets(rank, 'i', 'shape', strided.map((i) => `st${NAMES[i]}`), strided.map((i) => `o_${NAMES[i]}`))
    : '';
  const loads = indexing.map((m, i) => `let ${NAMES[i]} = in_${NAMES[i]}[${m === 'same' ? 'i' : `o_${NAMES[i]}`}];`).join('\n    ');
  return kernel({
    name,
    uniforms,
    buffers,
    workgroupSize: ELEMENTWISE_WG,
    body: `${WGSL_MATH}
${MAIN_1D} {
  let i = global_index(wid, lid, nwg);
  if (i >= P.n) { return; }
  let p = P.p;
  let q = P.q;
  ${offsets}
  ${loads}
  out[i] = ${expr};
}`,
  });
});

/** Elementwise over contiguous same-shape inputs through vec4 loads and stores (measured on
 * lavapipe: scalar ~1 GB/s, vec4 ×4 ~4.9 GB/s), `perLane` consecutive vec4s per invocation. On a
 * CPU adapter 4 a lane (64 bytes, a cache line) beat 1: an add of 409,600 / 819,200 floats 0.43
 * vs 0.55 and 0.67 vs 1.02 ms (profiler, medians of 15 interleaved rounds of 8), where the same as
 * a loop (0.46 / 0.80), 4 vec4s 64 invocations apart (0.75 vs 0.94 / 1.07 vs 1.16 in another run)
 * and 8 a lane (0.93 / 0.96 there) gained less; GPUs keep 1, so that neighbouring invocations read
 * neighbouring vec4s. The scalar expression is applied per component. Pooled buffers are
 * multiples of 16 bytes and owned by one tensor, so the last vec4 may run past n inside its own
 * buffer: those lanes are never read. */
export const ELEMENTWISE_VEC = 4;
const elementwiseVec4Kernel = memo(function elementwiseVec4Kernel(name: string, expr: string, inputs: number, perLane: number): KernelSource {
  const ins = NAMES.slice(0, inputs);
  return kernel({
    name: perLane > 1 ? `${name}_x${perLane}` : name,
    uniforms: [
      { name: 'n', type: 'u32' },
      { name: 'p', type: 'f32' },
      { name: 'q', type: 'f32' },
    ],
    buffers: [
      ...ins.map((n) => ({ name: `in_${n}`, access: 'read' as const, type: 'vec4<f32>' as const })),
      { name: 'out', access: 'read_write', type: 'vec4<f32>' },
    ],
    workgroupSize: ELEMENTWISE_WG,
    body: `${WGSL_MATH}
fn apply_(${ins.map((n) => `${n}: f32`).join(', ')}, p: f32, q: f32) -> f32 { return ${expr}; }
${MAIN_1D} {
  let i0 = global_index(wid, lid, nwg) * ${perLane}u;
  ${Array.from({ length: perLane }, (_, k) => `if ((i0 + ${k}u) * 4u < P.n) {
    let i = i0 + ${k}u;
    ${ins.map((n) => `let v${n} = in_${n}[i];`).join('\n    ')}
    out[i] = vec4<f32>(${[0, 1, 2, 3].map((c) => `apply_(${ins.map((n) => `v${n}[${c}]`).join(', ')}, P.p, P.q)`).join(', ')});
  }`).join('\n  ')}
}`,
  });
});

/** Fill: out[i] = start + i * step (zeros, ones, full, arange), for f32 or i32 outputs. */
export const fillKernel = memo(function fillKernel(dtype: 'f32' | 'i32'): KernelSource {
  return kernel({
    name: `fill_${dtype}`,
    uniforms: [
      { name: 'n', type: 'u32' },
      { name: 'start', type: 'f32' },
      { name: 'step', type: 'f32' },
    ],
    buffers: [{ name: 'out', access: 'read_write', type: dtype }],
    workgroupSize: ELEMENTWISE_WG,
    body: `${MAIN_1D} {
  let i = global_index(wid, lid, nwg);
  if (i >= P.n) { return; }
  out[i] = ${dtype}(P.start + f32(i) * P.step);
}`,
  });
});

/** Converts between f32 and i32 storage (i32 -> f32 exactly; f32 -> i32 truncates toward 0). */
export const castKernel = memo(function castKernel(from: 'f32' | 'i32', to: 'f32' | 'i32'): KernelSource {
  return kernel({
    name: `cast_${from}_${to}`,
    uniforms: [{ name: 'n', type: 'u32' }],
    buffers: [
      { name: 'src', access: 'read', type: from },
      { name: 'out', access: 'read_write', type: to },
    ],
    workgroupSize: ELEMENTWISE_WG,
    body: `${MAIN_1D} {
  let i = global_index(wid, lid, nwg);
  if (i >= P.n) { return; }
  out[i] = ${to}(src[i]);
}`,
  });
});
