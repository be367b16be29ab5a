// Sorting: argsort along the last axis (kernels/sort.ts).
import { grid1d } from '../../kernels/common.js';
import { argsortKernel } from '../../kernels/sort.js';
import { rt } from '../dispatch.js';
import { shapeStr, Tensor } from '../tensor.js';
import { permute } from './movement.js';

/** The indices (int32) that sort `x` ascending along `axis`, ties in index order (stable), as
 * torch.argsort(x, dim, stable=True). Carries no gradient (its result is integer); NaNs get an
 * unspecified place. Cost O(L²) a row of L: meant for rows of up to a few thousand. */
export function argsort(x: Tensor, axis = -1): Tensor {
  if (x.rank === 0) throw new Error(`argsort: ${x.describe()} is a scalar; give a tensor of rank ≥ 1`);
  const a = axis < 0 ? axis + x.rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= x.rank) throw new Error(`argsort: axis ${axis} is out of range for ${x.describe()}`);
  if (a !== x.rank - 1) {
    const perm = [...Array(x.rank).keys()];
    [perm[a], perm[x.rank - 1]] = [x.rank - 1, a];
    return permute(argsort(permute(x, perm)), perm);
  }
  const L = x.shape[a]!;
  const y = Tensor.empty(x.shape, 'int32', 'argsort');
  if (y.size > 0) {
    const source = argsortKernel(x.dtype === 'int32' ? 'i32' : 'f32');
    rt().run({ source, uniforms: { rows: x.size / L, L }, buffers: [x.buffer, y.buffer], grid: grid1d(x.size, source.workgroupSize), label: `argsort ${shapeStr(x.shape)}` });
  }
  return y;
}
