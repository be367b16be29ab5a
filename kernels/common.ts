// Shared kernel plumbing: a kernel is typed data (name, uniforms, buffers, workgroup size, body)
// from which both the WGSL preamble and the JS uniform packing are generated.
// Follows the spirit of tfjs-backend-webgpu's WebGPUProgram and webgpu-torch's KernelSpec.

export type ScalarType = 'u32' | 'i32' | 'f32';

/** One uniform field; every field is a 4-byte scalar so packing needs no alignment rules. */
export interface UniformField {
  name: string;
  type: ScalarType;
}

/** `uniform`: a fixed-size array in the uniform address space (`length` elements, at most the
 * device's maxUniformBufferBindingSize), bound like a storage buffer. */
export type Access = 'read' | 'read_write' | 'uniform';

export interface BufferDecl {
  name: string;
  access: Access;
  type: 'f32' | 'i32' | 'u32' | 'vec4<f32>' | 'vec4<u32>';
  /** Elements of a `uniform` array (uniform arrays cannot be runtime-sized). */
  length?: number;
}

/** A 2-D array rgba32f texture bound after the storage buffers: `sampled` is read with
 * textureLoad (texture_2d_array<f32>), `write` is written with textureStore
 * (texture_storage_2d_array<rgba32float, write>). */
export interface TextureDecl {
  name: string;
  kind: 'sampled' | 'write';
}

/** Everything the dispatcher needs to compile and bind a kernel. */
export interface KernelSource {
  /** Family name; with the shape it makes the dispatch label. */
  name: string;
  uniforms: UniformField[];
  buffers: BufferDecl[];
  textures: TextureDecl[];
  /** Invocations per workgroup (x only: kernels here are 1-D or use a 2-D grid of 1-D groups). */
  workgroupSize: number;
  /** Full WGSL text. */
  code: string;
}

export interface KernelSpec {
  name: string;
  uniforms?: UniformField[];
  buffers: BufferDecl[];
  textures?: TextureDecl[];
  workgroupSize: number;
  /** WGSL after the generated preamble: helper functions and `@compute fn main`. */
  body: string;
  /** Extra WGSL placed before the bindings (enables, constants). */
  header?: string;
}

// WebGPU limit: at most 65,535 workgroups per grid dimension. Large 1-D problems are split over
// x and y; `global_index()` folds them back into one linear index.
export const MAX_WORKGROUPS_PER_DIM = 65535;

/** Builds the full WGSL: uniform struct at binding 0 (if any), storage buffers after it, then textures. */
export function kernel(spec: KernelSpec): KernelSource {
  const uniforms = spec.uniforms ?? [];
  const lines: string[] = [];
  if (spec.header) lines.push(spec.header);
  let binding = 0;
  if (uniforms.length > 0) {
    lines.push(`struct Params {\n${uniforms.map((f) => `  ${f.name}: ${f.type},`).join('\n')}\n};`);
    lines.push(`@group(0) @binding(${binding++}) var<uniform> P: Params;`);
  }
  for (const b of spec.buffers) {
    if (b.access === 'uniform') {
      if (b.type !== 'vec4<f32>' || !b.length) throw new Error(`kernel ${spec.name}: uniform array ${b.name} needs type vec4<f32> (16-byte stride) and a length`);
      lines.push(`@group(0) @binding(${binding++}) var<uniform> ${b.name}: array<${b.type}, ${b.length}>;`);
    } else lines.push(`@group(0) @binding(${binding++}) var<storage, ${b.access}> ${b.name}: array<${b.type}>;`);
  }
  const textures = spec.textures ?? [];
  for (const t of textures) {
    lines.push(`@group(0) @binding(${binding++}) var ${t.name}: ${t.kind === 'sampled' ? 'texture_2d_array<f32>' : 'texture_storage_2d_array<rgba32float, write>'};`);
  }
  lines.push(`const WG: u32 = ${spec.workgroupSize}u;`);
  lines.push(GLOBAL_INDEX);
  lines.push(spec.body.trim());
  return {
    name: spec.name,
    uniforms,
    buffers: spec.buffers,
    textures,
    workgroupSize: spec.workgroupSize,
    code: lines.join('\n') + '\n',
  };
}

const GLOBAL_INDEX = /* wgsl */ `
// Linear invocation index over a grid that may be split across x and y (65,535 per dimension).
fn global_index(wid: vec3<u32>, lid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return (wid.y * nwg.x + wid.x) * WG + lid.x;
}`;

/** The standard entry-point signature used by 1-D kernels. */
export const MAIN_1D = `@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>)`;

/** Entry point of the subgroup kernels: one workgroup is one subgroup, `lane` its invocation
 * (the header must `enable subgroups;`). */
export const MAIN_SUBGROUP = `@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32)`;

/** Caches a kernel factory by its arguments: generating WGSL text per op call would cost more
 * than recording the dispatch. */
export function memo<A extends unknown[]>(fn: (...args: A) => KernelSource): (...args: A) => KernelSource {
  const cache = new Map<string, KernelSource>();
  return (...args: A) => {
    const key = args.join('|');
    let k = cache.get(key);
    if (!k) cache.set(key, (k = fn(...args)));
    return k;
  };
}

/** Packs uniform values in declaration order; a missing value is a programming error. */
export function packUniforms(fields: UniformField[], values: Record<string, number>): ArrayBuffer {
  // Uniform buffers must be a multiple of 16 bytes.
  const bytes = Math.max(16, Math.ceil((fields.length * 4) / 16) * 16);
  const buf = new ArrayBuffer(bytes);
  const u32 = new Uint32Array(buf);
  const i32 = new Int32Array(buf);
  const f32 = new Float32Array(buf);
  fields.forEach((f, i) => {
    const v = values[f.name];
    if (v === undefined) throw new Error(`kernel uniform '${f.name}' has no value`);
    if (f.type === 'u32') u32[i] = v >>> 0;
    else if (f.type === 'i32') i32[i] = v | 0;
    else f32[i] = v;
  });
  return buf;
}

/** Grid for `invocations` threads of a 1-D kernel, split over y past the per-dimension limit. */
export function grid1d(invocations: number, workgroupSize: number): [number, number, number] {
  const groups = Math.max(1, Math.ceil(invocations / workgroupSize));
  if (groups <= MAX_WORKGROUPS_PER_DIM) return [groups, 1, 1];
  const y = Math.ceil(groups / MAX_WORKGROUPS_PER_DIM);
  const x = Math.ceil(groups / y);
  return [x, y, 1];
}

/** Uniform fields `${prefix}0 .. ${prefix}{n-1}` of one type (shapes and strides up to a baked rank). */
export function fieldList(prefix: string, n: number, type: ScalarType = 'u32'): UniformField[] {
  return Array.from({ length: n }, (_, i) => ({ name: `${prefix}${i}`, type }));
}

/** WGSL: decompose linear index `i` of a shape given by uniforms `${shape}k` and accumulate
 * `offset += idx_k * ${strides}k` for each strides prefix. Rank is baked, values are uniforms. */
export function stridedOffsets(rank: number, index: string, shape: string, strides: string[], outs: string[]): string {
  const lines = [`var rem_ = ${index};`];
  for (const o of outs) lines.push(`var ${o} = 0u;`);
  for (let k = rank - 1; k >= 0; k--) {
    lines.push(`{ let d_ = P.${shape}${k}; let c_ = rem_ % d_; rem_ = rem_ / d_;`);
    strides.forEach((s, j) => lines.push(`  ${outs[j]} += c_ * P.${s}${k};`));
    lines.push('}');
  }
  return lines.join('\n    ');
}

/** Row-major strides of a shape. */
export function contiguousStrides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i]!;
  }
  return s;
}

/** Fills `${prefix}k` entries of a uniform value record from an array. */
export function putList(values: Record<string, number>, prefix: string, list: readonly number[]): void {
  list.forEach((v, i) => (values[`${prefix}${i}`] = v));
}
