// CPU twin of the GPU Philox 4x32-10 generator (kernels/random.ts): the same bits for the same
// (seed, stream, index), so random ops and dropout masks are checked exactly.

function mulhilo(a: number, b: number): [number, number] {
  const a0 = a & 0xffff, a1 = a >>> 16, b0 = b & 0xffff, b1 = b >>> 16;
  const p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
  const mid = (p00 >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
  const hi = (p11 + (p01 >>> 16) + (p10 >>> 16) + (mid >>> 16)) >>> 0;
  return [hi, Math.imul(a, b) >>> 0];
}

export function philox(counter: [number, number, number, number], key: [number, number]): [number, number, number, number] {
  let [c0, c1, c2, c3] = counter;
  let [k0, k1] = key;
  for (let r = 0; r < 10; r++) {
    const [h0, l0] = mulhilo(0xd2511f53, c0);
    const [h1, l1] = mulhilo(0xcd9e8d57, c2);
    [c0, c1, c2, c3] = [(h1 ^ c1 ^ k0) >>> 0, l1, (h0 ^ c3 ^ k1) >>> 0, l0];
    k0 = (k0 + 0x9e3779b9) >>> 0;
    k1 = (k1 + 0xbb67ae85) >>> 0;
  }
  return [c0, c1, c2, c3];
}

export const toUnit = (x: number): number => (x >>> 8) / 16777216;

/** The four 32-bit words for elements 4j..4j+3. */
export function wordsAt(j: number, seed: number, stream: number): [number, number, number, number] {
  return philox([j >>> 0, 0, 0, 0], [seed >>> 0, stream >>> 0]);
}

export function uniform(n: number, seed: number, stream: number, low = 0, high = 1): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = toUnit(wordsAt(i >> 2, seed, stream)[i & 3]!) * (high - low) + low;
  return out;
}

export function normal(n: number, seed: number, stream: number, mean = 0, std = 1): Float64Array {
  const out = new Float64Array(n);
  for (let j = 0; 4 * j < n; j++) {
    const r = wordsAt(j, seed, stream);
    const u1 = [toUnit(r[0]) + 1 / 16777216, toUnit(r[2]) + 1 / 16777216];
    const u2 = [toUnit(r[1]), toUnit(r[3])];
    const v: number[] = [];
    for (let p = 0; p < 2; p++) {
      const rad = Math.sqrt(-2 * Math.log(u1[p]!));
      v.push(rad * Math.cos(2 * Math.PI * u2[p]!), rad * Math.sin(2 * Math.PI * u2[p]!));
    }
    for (let e = 0; e < 4 && 4 * j + e < n; e++) out[4 * j + e] = v[e]! * std + mean;
  }
  return out;
}

/** Inverted-dropout keep mask scaled by 1/(1-p): 0 or 1/(1-p) per element. */
export function dropoutScale(n: number, p: number, seed: number, stream: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = toUnit(wordsAt(i >> 2, seed, stream)[i & 3]!) >= p ? 1 / (1 - p) : 0;
  return out;
}
