// Data movement: one strided copy (permute, slice, expand, concat, pad are all instances of it)
// and gather with its scatter-add backward. Values are copied as raw 32-bit words, so the same
// kernels move f32 and i32 tensors.
import { memo, fieldList, kernel, type KernelSource, MAIN_1D, stridedOffsets } from './common.js';

export const MOVEMENT_WG = 64;

/** dst[dst_off + Σ i_k dst_st_k] = src[src_off + Σ i_k src_st_k] over an iteration shape, in
 * 32-bit words or (`vec4`) in 16-byte units, when the caller has found the innermost run
 * contiguous on both sides and every offset, stride and the run a multiple of 4 words: lavapipe
 * runs each storage access as a loop over the lanes, so a vec4 moves four words for the price of
 * one (engine/ops/movement.ts has the measurements). */
export const stridedCopyKernel = memo(function stridedCopyKernel(rank: number, vec4: boolean): KernelSource {
  const type = vec4 ? 'vec4<u32>' : 'u32';
  return kernel({
    name: `copy_r${rank}${vec4 ? '_v4' : ''}`,
    uniforms: [
      { name: 'n', type: 'u32' },
      { name: 'src_off', type: 'u32' },
      { name: 'dst_off', type: 'u32' },
      ...fieldList('shape', rank),
      ...fieldList('sst', rank),
      ...fieldList('dst', rank),
    ],
    buffers: [
      { name: 'src', access: 'read', type },
      { name: 'out', access: 'read_write', type },
    ],
    workgroupSize: MOVEMENT_WG,
    body: `${MAIN_1D} {
  let i = global_index(wid, lid, nwg);
  if (i >= P.n) { return; }
  ${stridedOffsets(rank, 'i', 'shape', ['sst', 'dst'], ['so', 'do_'])}
  out[P.dst_off + do_] = src[P.src_off + so];
}`,
  });
});

/** out[c] = x[c with c[axis] := index[c]] (torch.gather); out of range indices give 0. */
/** gather: element i of the output reads x at its index along the axis. The backward of a
 * gather whose index holds every position along the axis at most once (for each other
 * coordinate) is the same walk the other way: element i of the gradient goes straight to its
 * source, into zeros; distinct targets, so no two invocations write one element. Words are
 * copied as u32, so either dtype moves bit for bit. */
function indexedCopyKernel(kind: 'gather' | 'scatter_unique', rank: number): KernelSource {
  return kernel({
    name: `${kind}_r${rank}`,
    uniforms: [
      { name: 'n', type: 'u32' },
      { name: 'axis_len', type: 'u32' },
      { name: 'axis_stride', type: 'u32' },
      ...fieldList('shape', rank),
      ...fieldList('xst', rank),
      ...fieldList('ist', rank),
    ],
    buffers: [
      { name: 'x', access: 'read', type: 'u32' },
      { name: 'index', access: 'read', type: 'i32' },
      { name: 'out', access: 'read_write', type: 'u32' },
    ],
    workgroupSize: MOVEMENT_WG,
    body: `${MAIN_1D} {
  let i = global_index(wid, lid, nwg);
  if (i >= P.n) { return; }
  ${stridedOffsets(rank, 'i', 'shape', ['xst', 'ist'], ['xo', 'io'])}
  let k = index[io];
  ${kind === 'gather'
    ? `if (k < 0 || u32(k) >= P.axis_len) { out[i] = 0u; return; }
  out[i] = x[xo + u32(k) * P.axis_stride];`
    : `if (k < 0 || u32(k) >= P.axis_len) { return; }
  out[xo + u32(k) * P.axis_stride] = x[i];`}
}`,
  });
}

export const gatherKernel = memo((rank: number) => indexedCopyKernel('gather', rank));
export const scatterUniqueKernel = memo((rank: number) => indexedCopyKernel('scatter_unique', rank));

/** Backward of gather: gx[c] = Σ_k g[c with c[axis] := k] · [index[..k..] == c[axis]].
 * A loop per output element instead of float atomics (WGSL has none): deterministic. */
export const gatherGradKernel = memo(function gatherGradKernel(rank: number, axis: number): KernelSource {
  return kernel({
    name: `gather_grad_r${rank}_a${axis}`,
    uniforms: [
      { name: 'n', type: 'u32' },
      { name: 'k_len', type: 'u32' },
      { name: 'g_axis_stride', type: 'u32' },
      { name: 'i_axis_stride', type: 'u32' },
      ...fieldList('shape', rank),
      ...fieldList('gst', rank),
      ...fieldList('ist', rank),
    ],
    buffers: [
      { name: 'g', access: 'read', type: 'f32' },
      { name: 'index', access: 'read', type: 'i32' },
      { name: 'out', access: 'read_write', type: 'f32' },
    ],
    workgroupSize: MOVEMENT_WG,
    body: `${MAIN_1D} {
  let i = global_index(wid, lid, nwg);
  if (i >= P.n) { return; }
  // gst/ist carry 0 on the gather axis; its coordinate is the value being matched.
  ${stridedOffsets(rank, 'i', 'shape', ['gst', 'ist'], ['go', 'io'])}
  let want = i32((i / ${axisStrideExpr(rank, axis)}) % P.shape${axis});
  var acc = 0.0;
  for (var k = 0u; k < P.k_len; k++) {
    if (index[io + k * P.i_axis_stride] == want) { acc += g[go + k * P.g_axis_stride]; }
  }
  out[i] = acc;
}`,
  });
});

/** WGSL expression for the contiguous stride of `axis` in the iteration shape. */
function axisStrideExpr(rank: number, axis: number): string {
  const parts = [];
  for (let k = axis + 1; k < rank; k++) parts.push(`P.shape${k}`);
  return parts.length ? `(${parts.join(' * ')})` : '1u';
}
