// Random tensors and dropout from the GPU Philox generator (kernels/random.ts). Every call takes
// an explicit seed or draws the next stream of the global generator set by manualSeed().
import { grid1d } from '../../kernels/common.js';
import { dropoutKernel, type RandomDistribution, randomKernel } from '../../kernels/random.js';
import { record } from '../autograd.js';
import { rt } from '../dispatch.js';
import { type Shape, shapeStr, Tensor } from '../tensor.js';

export interface RandomKey {
  seed: number;
  stream: number;
}

let globalSeed = 0;
let nextStream = 1;

/** Resets the global generator: the calls that follow repeat their values for the same seed. */
export function manualSeed(seed: number): void {
  globalSeed = seed >>> 0;
  nextStream = 1;
}

/** The key for the next random call: an explicit seed, or the global seed's next stream. */
export function nextKey(seed?: number): RandomKey {
  if (seed !== undefined) return { seed: seed >>> 0, stream: 0 };
  return { seed: globalSeed, stream: nextStream++ >>> 0 };
}

function random(dist: RandomDistribution, shape: Shape, a: number, b: number, seed?: number): Tensor {
  const t = Tensor.empty(shape, 'float32', dist);
  const key = nextKey(seed);
  if (t.size > 0) {
    const source = randomKernel(dist);
    rt().run({
      source,
      uniforms: { n: t.size, seed: key.seed, stream: key.stream, a, b },
      buffers: [t.buffer],
      grid: grid1d(Math.ceil(t.size / 4), source.workgroupSize),
      label: `random_${dist} ${shapeStr(shape)}`,
    });
  }
  return t;
}

/** Uniform on [low, high). */
export const rand = (shape: Shape, opts: { seed?: number; low?: number; high?: number } = {}) => random('uniform', shape, opts.low ?? 0, opts.high ?? 1, opts.seed);
/** Normal with mean and std. */
export const randn = (shape: Shape, opts: { seed?: number; mean?: number; std?: number } = {}) => random('normal', shape, opts.mean ?? 0, opts.std ?? 1, opts.seed);

function dropoutLaunch(x: Tensor, p: number, key: RandomKey): Tensor {
  const y = Tensor.empty(x.shape, 'float32', 'dropout');
  if (x.size > 0) {
    const source = dropoutKernel();
    rt().run({
      source,
      uniforms: { n: x.size, seed: key.seed, stream: key.stream, p },
      buffers: [x.buffer, y.buffer],
      grid: grid1d(Math.ceil(x.size / 4), source.workgroupSize),
      label: `dropout ${shapeStr(x.shape)}`,
    });
  }
  return y;
}

/** Inverted dropout: zeroes each element with probability p and scales the rest by 1/(1-p).
 * Identity when p = 0 or `training` is false. */
export function dropout(x: Tensor, p: number, opts: { training?: boolean; seed?: number } = {}): Tensor {
  if (!(p >= 0 && p < 1)) throw new Error(`dropout: p = ${p} must be in [0, 1)`);
  if (p === 0 || opts.training === false) return x;
  const key = nextKey(opts.seed);
  const y = dropoutLaunch(x, p, key);
  return record('dropout', y, [x], (g) => [dropoutLaunch(g, p, key)]);
}
