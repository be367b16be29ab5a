// Sorting along the last axis of contiguous rows. argsort ranks every element by counting the
// elements of its row that come before it (smaller, or equal and earlier: a stable order), then
// writes its index at that rank. That is O(L) reads per element, O(L²) per row: for the rows it
// is meant for (a random permutation of a ViT's 49–256 patches per image, as MAE's masking
// draws them) one pass with no barriers, no workgroup memory and no atomics beats a bitonic
// network's log²L passes; past a few thousand elements a row a merge sort would win.
import { kernel, type KernelSource, memo } from './common.js';

export const argsortKernel = memo(function argsortKernel(type: 'f32' | 'i32'): KernelSource {
  return kernel({
    name: `argsort_${type}`,
    uniforms: [{ name: 'rows', type: 'u32' }, { name: 'L', type: 'u32' }],
    buffers: [
      { name: 'x', access: 'read', type },
      { name: 'order', access: 'read_write', type: 'i32' },
    ],
    workgroupSize: 64,
    body: `@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = global_index(wid, lid, nwg);
  if (t >= P.rows * P.L) { return; }
  let base = t - t % P.L;
  let i = t - base;
  let v = x[t];
  var rank = 0u;
  for (var j = 0u; j < P.L; j++) {
    let w = x[base + j];
    rank += select(0u, 1u, w < v || (w == v && j < i));
  }
  order[base + rank] = i32(i);
}`,
  });
});

