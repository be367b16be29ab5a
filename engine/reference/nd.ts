// The CPU reference's array type: float64 values and a shape. Every op in engine/ops has a
// plain-TypeScript twin in this folder, written for clarity, used as the oracle by the tests.

export interface Nd {
  data: Float64Array;
  shape: number[];
}

export function nd(data: ArrayLike<number>, shape: readonly number[]): Nd {
  const n = shape.reduce((a, b) => a * b, 1);
  if (data.length !== n) throw new Error(`nd: ${data.length} values for shape [${shape.join(', ')}]`);
  return { data: Float64Array.from(data), shape: [...shape] };
}

export function zerosNd(shape: readonly number[]): Nd {
  return { data: new Float64Array(shape.reduce((a, b) => a * b, 1)), shape: [...shape] };
}

export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1]! * shape[i + 1]!;
  return s;
}

/** NumPy broadcasting of two shapes; throws with both shapes when they are incompatible. */
export function broadcastShapes(a: readonly number[], b: readonly number[], what = 'broadcast'): number[] {
  const rank = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new Error(`${what}: shapes [${a.join(', ')}] and [${b.join(', ')}] cannot be broadcast (dimension ${i} of the result: ${da} vs ${db})`);
    }
    out.push(da === 1 ? db : da);
  }
  return out;
}

/** Strides that read `shape` as if broadcast to `outShape` (0 on broadcast dimensions). */
export function broadcastStrides(shape: readonly number[], outShape: readonly number[]): number[] {
  const s = stridesOf(shape);
  const off = outShape.length - shape.length;
  return outShape.map((d, i) => (i < off || shape[i - off] === 1 ? 0 : s[i - off]!));
}

/** Calls fn(outIndex, multiIndex) for every element of shape, in row-major order. */
export function forEachIndex(shape: readonly number[], fn: (i: number, idx: number[]) => void): void {
  const n = shape.reduce((a, b) => a * b, 1);
  const idx = new Array<number>(shape.length).fill(0);
  for (let i = 0; i < n; i++) {
    fn(i, idx);
    for (let k = shape.length - 1; k >= 0; k--) {
      if (++idx[k]! < shape[k]!) break;
      idx[k] = 0;
    }
  }
}

/** Reads `x` broadcast to `outShape`, as a new array. */
export function broadcastTo(x: Nd, outShape: readonly number[]): Nd {
  const st = broadcastStrides(x.shape, outShape);
  const out = zerosNd(outShape);
  forEachIndex(outShape, (i, idx) => {
    let o = 0;
    for (let k = 0; k < idx.length; k++) o += idx[k]! * st[k]!;
    out.data[i] = x.data[o]!;
  });
  return out;
}

/** Sums `g` (shaped like a broadcast result) back down to `shape`: the backward of broadcasting. */
export function sumToShape(g: Nd, shape: readonly number[]): Nd {
  const st = broadcastStrides(shape, g.shape);
  const out = zerosNd(shape);
  forEachIndex(g.shape, (i, idx) => {
    let o = 0;
    for (let k = 0; k < idx.length; k++) o += idx[k]! * st[k]!;
    out.data[o] = out.data[o]! + g.data[i]!;
  });
  return out;
}
