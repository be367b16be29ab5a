import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../../engine/index.js';
import * as R from '../../../engine/reference/elementwise.js';
import { nd } from '../../../engine/reference/nd.js';
import { checkOp, expectClose } from '../../helpers.js';

beforeAll(async () => {
  await T.init();
});

// Tolerances: one f32 op on inputs of magnitude ~1 is exact to ~6e-8 relative; erf (A&S 7.1.26,
// 1.5e-7 absolute) and exp/log/pow on lavapipe stay within a few ulps, so 1e-5 has a margin of
// ~100x. Backward is one or two more f32 ops: 1e-4.
const POSITIVE = new Set(['log', 'sqrt', 'rsqrt', 'powScalar']);
const UNARY: [string, (x: T.Tensor) => T.Tensor, number, number][] = [
  ['neg', T.neg, 0, 0],
  ['exp', T.exp, 0, 0],
  ['log', T.log, 0, 0],
  ['sqrt', T.sqrt, 0, 0],
  ['rsqrt', T.rsqrt, 0, 0],
  ['abs', T.abs, 0, 0],
  ['tanh', T.tanh, 0, 0],
  ['sigmoid', T.sigmoid, 0, 0],
  ['relu', T.relu, 0, 0],
  ['gelu', T.gelu, 0, 0],
  ['addScalar', (x) => T.addScalar(x, 0.75), 0.75, 0],
  ['mulScalar', (x) => T.mulScalar(x, -1.5), -1.5, 0],
  ['powScalar', (x) => T.powScalar(x, 2.5), 2.5, 0],
  ['clamp', (x) => T.clamp(x, -0.5, 0.8), -0.5, 0.8],
];

describe('unary ops', () => {
  for (const [name, fn, p, q] of UNARY) {
    for (const shape of [[1], [7, 13], [3, 5, 17]]) {
      it(`${name} ${JSON.stringify(shape)}`, () =>
        checkOp({
          name,
          inputs: [{ shape, gen: POSITIVE.has(name) ? 'positive' : 'normal' }],
          gpu: fn,
          ref: (x) => R.unary(name, x, p, q),
          vjp: ([x], g) => [R.unaryVjp(name, x!, g, p, q)],
        }));
    }
  }

  it('gelu matches erf-GELU at large |x| and tanh does not overflow', async () => {
    const xs = [-60, -8, -3, 0, 3, 8, 60];
    const t = T.tensor(xs, [xs.length]);
    expectClose(await T.gelu(t).data(), xs.map(R.gelu), { atol: 1e-6, rtol: 1e-6 }, 'gelu');
    expectClose(await T.tanh(t).data(), xs.map(Math.tanh), { atol: 1e-6, rtol: 1e-6 }, 'tanh');
  });

  // A workgroup spans 64 invocations × 4 vec4s = 1,024 elements on a CPU adapter (4 vec4s a
  // lane), 256 on a GPU: 4,099 reaches five or seventeen workgroups and ends in a partial vec4.
  it('contiguous inputs over several workgroups, with a tail', async () => {
    const n = 4099;
    const a = T.randn([n], { seed: 11 });
    const b = T.randn([n], { seed: 12 });
    const [ha, hb] = [await a.data(), await b.data()];
    expectClose(await T.add(a, b).data(), Array.from(ha, (x, i) => x + hb[i]!), { atol: 1e-6, rtol: 1e-6 }, 'add');
    expectClose(await T.exp(a).data(), Array.from(ha, Math.exp), { atol: 1e-5, rtol: 1e-5 }, 'exp');
  });

  it('powScalar of a negative base with an integer exponent', async () => {
    const t = T.tensor([-2, -1.5, 3], [3]);
    expectClose(await T.powScalar(t, 3).data(), [-8, -3.375, 27], { atol: 1e-5, rtol: 1e-6 }, 'pow');
  });
});

const BCAST: [number[], number[]][] = [
  [[7, 13], [7, 13]],
  [[7, 13], [13]],
  [[7, 1], [1, 13]],
  [[1], [3, 5, 4]],
  [[2, 3, 1, 5], [3, 4, 1]],
];

describe('binary ops with broadcasting', () => {
  for (const op of ['add', 'sub', 'mul', 'div', 'pow', 'maximum', 'minimum'] as const) {
    for (const [sa, sb] of BCAST) {
      it(`${op} ${JSON.stringify(sa)} ${JSON.stringify(sb)}`, () =>
        checkOp({
          name: op,
          inputs: [
            { shape: sa, gen: op === 'pow' ? 'positive' : 'normal' },
            { shape: sb, gen: op === 'div' ? 'positive' : 'normal' },
          ],
          gpu: T[op],
          ref: (a, b) => R.binary(op, a, b),
          vjp: ([a, b], g) => R.binaryVjp(op, a!, b!, g),
          // Broadcast gradients sum up to 60 terms: 60 · 6e-8 relative, well inside 1e-4.
        }));
    }
  }

  for (const op of ['gt', 'ge', 'lt', 'le', 'eq', 'ne'] as const) {
    it(`${op} gives a 0/1 mask`, () =>
      checkOp({
        name: op,
        inputs: [{ shape: [7, 13], gen: { int: 3 } }, { shape: [13], gen: { int: 3 } }].map((s) => s) as never,
        gpu: (a, b) => T[op](T.cast(a!, 'float32'), T.cast(b!, 'float32')),
        ref: (a, b) => R.binary(op, a, b),
      }));
  }

  it('where(cond, a, b) broadcasts all three; gradients go to the chosen side', () =>
    checkOp({
      name: 'where',
      inputs: [{ shape: [5, 1], gen: 'unit', grad: false }, { shape: [5, 6] }, { shape: [6] }],
      gpu: (c, a, b) => T.where(T.gt(c!, T.full([1], 0.5)), a!, b!),
      ref: (c, a, b) => R.where(R.binary('gt', c!, nd([0.5], [1])), a!, b!),
      vjp: ([c, a, b], g) => [null, ...R.whereVjp(R.binary('gt', c!, nd([0.5], [1])), a!, b!, g)],
    }));

  it('an op past 65,535 workgroups in one dimension (2-D grid)', async () => {
    // 2100² = 4.41M elements = 68,907 workgroups of 64.
    const n = 2100;
    const a = new Float32Array(n * n).map((_, i) => (i % 1000) * 0.5);
    const b = new Float32Array(n).map((_, i) => i);
    const y = T.add(T.tensor(a, [n, n]), T.tensor(b, [n]));
    const out = await y.data();
    for (const i of [0, 1, 65535 * 64 - 1, 65535 * 64, 65535 * 64 + 1, n * n - 1]) {
      expect(out[i]).toBe(a[i]! + b[i % n]!);
    }
  });

  it('incompatible shapes name the op and both shapes', () => {
    const a = T.zeros([3, 4]);
    const b = T.zeros([5]);
    expect(() => T.add(a, b)).toThrow(/add\(tensor #\d+ \[3, 4\], tensor #\d+ \[5\]\).*cannot be broadcast/);
    const i = T.zeros([3], 'int32');
    expect(() => T.mul(a, i)).toThrow(/int32/);
  });
});
