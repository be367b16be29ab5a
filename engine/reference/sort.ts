// CPU twin of engine/ops/sort.ts.
import { type Nd } from './nd.js';

/** Stable ascending argsort along the last axis. */
export function argsort(x: Nd): Nd {
  const L = x.shape[x.shape.length - 1]!;
  const out = new Float64Array(x.data.length);
  for (let base = 0; base < x.data.length; base += L) {
    const idx = [...Array(L).keys()].sort((i, j) => x.data[base + i]! - x.data[base + j]! || i - j);
    idx.forEach((v, k) => (out[base + k] = v));
  }
  return { data: out, shape: [...x.shape] };
}
