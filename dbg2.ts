import * as T from './engine/index.js';
import { matmulFastKernel, matmulLanesKernel, LANES } from './kernels/matmul.js';
import { grid1d, putList } from './kernels/common.js';
await T.init();
const shapes: [number, number, number][] = [[2176, 192, 64], [2176, 64, 128], [64, 128, 2176]];
const variants = process.argv.slice(2);
for (const [M, N, K] of shapes) {
  for (const v of variants) {
    const [kind, lay, tms, tns] = v.split(':') as [string, string, string, string];
    const ta = lay[0] === 't', tb = lay[1] === 't';
    const tm = Number(tms), tn = Number(tns);
    const a = T.randn(ta ? [K, M] : [M, K]); const b = T.randn(tb ? [N, K] : [K, N]); const c = T.zeros([M, N]);
    const src = kind === 'lanes' ? matmulLanesKernel(ta, tb, false, tm, tn) : matmulFastKernel(ta, tb, false, tm, tn, 8);
    const u: Record<string, number> = { M, N, K, batch: 1, a_off: 0, b_off: 0, c_off: 0, lda: ta ? M : K, ldb: tb ? K : N, ldc: N };
    putList(u, 'bshape', [1, 1, 1, 1]); putList(u, 'ast', [0, 0, 0, 0]); putList(u, 'bst', [0, 0, 0, 0]); putList(u, 'cst', [0, 0, 0, 0]);
    const grid = kind === 'lanes' ? grid1d(Math.ceil(M / tm) * Math.ceil(N / (LANES * tn)) * LANES, LANES) : grid1d(Math.ceil(M / tm) * Math.ceil(N / tn), 8);
    const go = () => T.rt().run({ source: src, uniforms: u, buffers: [a.buffer, b.buffer, c.buffer], grid, label: 'x' });
    go(); await T.sync();
    const times: number[] = [];
    for (let r = 0; r < 7; r++) { const t0 = performance.now(); for (let i = 0; i < 5; i++) go(); await T.sync(); times.push((performance.now() - t0) / 5); }
    times.sort((x, y) => x - y);
    const ms = times[3]!;
    // check against reference on a few entries
    const cd = await c.data(); const ad = await a.data(); const bd = await b.data();
    let err = 0;
    for (const [m, n] of [[0, 0], [M - 1, N - 1], [M >> 1, N >> 2]]) { let s = 0; for (let k = 0; k < K; k++) s += (ta ? ad[k * M + m]! : ad[m * K + k]!) * (tb ? bd[n * K + k]! : bd[k * N + n]!); err = Math.max(err, Math.abs(s - cd[m * N + n]!)); }
    console.log(`${M}x${N}x${K} ${v}: ${ms.toFixed(2)} ms ${(2 * M * N * K / ms / 1e6).toFixed(2)} GFLOP/s err ${err.toExponential(1)}`);
    a.dispose(); b.dispose(); c.dispose();
  }
}
process.exit(0);
