// The engine in headless Chromium (Debian's, on its SwiftShader WebGPU adapter): forward and
// backward of a small MLP in the page, compared with the CPU reference computed here, and the
// flash-attention kernel families against the unfused path on that adapter.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { extname, join } from 'node:path';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { binary, binaryVjp, unary, unaryVjp } from '../../engine/reference/elementwise.js';
import { matmul, matmulVjp } from '../../engine/reference/matmul.js';
import { nd } from '../../engine/reference/nd.js';
import { max, mean, sum, variance } from '../../engine/reference/reduce.js';
import { crossEntropy, crossEntropyVjp } from '../../engine/reference/softmax.js';
import { buildWeb } from '../../web/build.js';
import type { AttentionRun, MlpInput, MlpOutput, ReduceRun } from '../../web/page.js';
import { expectClose, makeData, rng } from '../helpers.js';

const CHROMIUM = '/usr/lib/chromium/chromium';
let server: Server;
let browser: Browser;
let url: string;
let outdir: string;

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}: run \`npm run setup\` (apt-get install chromium)`);
  outdir = mkdtempSync(join(tmpdir(), 'tessera-web-'));
  await buildWeb(join(outdir, 'dist'));
  const html = readFileSync(new URL('../../web/index.html', import.meta.url));
  const types: Record<string, string> = { '.js': 'text/javascript', '.map': 'application/json', '.html': 'text/html' };
  server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    if (path === '/' || path === '/index.html') return res.writeHead(200, { 'content-type': 'text/html' }).end(html);
    const file = join(outdir, path.replace(/^\/+/, ''));
    if (!file.startsWith(outdir) || !existsSync(file)) return res.writeHead(404).end();
    res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream' }).end(readFileSync(file));
  });
  // WebGPU needs a secure context: 127.0.0.1 counts as one.
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/`;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--enable-unsafe-webgpu', '--enable-unsafe-swiftshader', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await new Promise((r) => server?.close(r));
  if (outdir) rmSync(outdir, { recursive: true, force: true });
});

describe('browser (headless Chromium, WebGPU)', () => {
  it('runs an MLP forward and backward that matches the CPU reference', async () => {
    const r = rng(21);
    const n = 6, d = 5, hidden = 7, classes = 3;
    const input: MlpInput = {
      x: [...makeData([n, d], 'normal', r)],
      xShape: [n, d],
      w1: [...makeData([hidden, d], 'normal', r)].map((v) => Math.fround(v * 0.5)),
      b1: [...makeData([hidden], 'normal', r)],
      w2: [...makeData([classes, hidden], 'normal', r)].map((v) => Math.fround(v * 0.5)),
      b2: [...makeData([classes], 'normal', r)],
      labels: [0, 2, 1, 1, 0, 2],
      hidden,
      classes,
    };
    const page = await browser.newPage();
    const logs: string[] = [];
    page.on('console', (m) => logs.push(m.text()));
    page.on('pageerror', (e) => logs.push(String(e)));
    await page.goto(url);
    await page.waitForFunction(() => window.tesseraReady === true, undefined, { timeout: 60_000 });
    const out = (await page.evaluate((inp) => window.tesseraMlp(inp), input)) as MlpOutput;
    await page.close();
    expect(out.adapter, `page logs: ${logs.join('\n')}`).toBeTruthy();

    // The same MLP on the float64 reference.
    const x = nd(input.x, [n, d]);
    const w1 = nd(input.w1, [hidden, d]);
    const b1 = nd(input.b1, [hidden]);
    const w2 = nd(input.w2, [classes, hidden]);
    const b2 = nd(input.b2, [classes]);
    const labels = Int32Array.from(input.labels);
    const a1 = binary('add', matmul(x, w1, false, true), b1);
    const h = unary('gelu', a1);
    const z = binary('add', matmul(h, w2, false, true), b2);
    const loss = mean(crossEntropy(z, labels)).data[0]!;
    const [dz] = crossEntropyVjp(z, labels, nd(new Array(n).fill(1 / n), [n]));
    const [dh, dw2] = matmulVjp(h, w2, dz!, false, true);
    const db2 = binaryVjp('add', matmul(h, w2, false, true), b2, dz!)[1];
    const da1 = unaryVjp('gelu', a1, dh);
    const [, dw1] = matmulVjp(x, w1, da1, false, true);
    const db1 = binaryVjp('add', matmul(x, w1, false, true), b1, da1)[1];

    // SwiftShader's f32 transcendental functions are a few ulps off: 1e-4 covers the chain.
    const tol = { atol: 1e-4, rtol: 1e-4 };
    expect(Math.abs(out.loss - loss)).toBeLessThan(1e-4);
    expectClose(out.logits, z.data, tol, 'browser logits');
    expectClose(out.grads.w1, dw1.data, tol, 'browser dW1');
    expectClose(out.grads.b1, db1.data, tol, 'browser db1');
    expectClose(out.grads.w2, dw2.data, tol, 'browser dW2');
    expectClose(out.grads.b2, db2.data, tol, 'browser db2');
  }, 180_000);

  it('runs every flash-attention kernel family forward and backward in the page, as the unfused path does', async () => {
    const page = await browser.newPage();
    await page.goto(url);
    await page.waitForFunction(() => window.tesseraReady === true, undefined, { timeout: 60_000 });
    const runs = (await page.evaluate(() => window.tesseraAttention(['workgroup', 'vec4', 'scalar']))) as AttentionRun[];
    await page.close();
    const unfused = runs.find((r) => r.family === 'unfused')!;
    // Two matmuls of K ≤ 37 and a softmax on a driver whose exp is a few ulps off, as above.
    const tol = { atol: 5e-4, rtol: 1e-4 };
    for (const r of runs.filter((x) => x.family !== 'unfused')) {
      expectClose(r.out, unfused.out, tol, `browser attention ${r.family} forward`);
      expectClose(r.dqkv, unfused.dqkv, tol, `browser attention ${r.family} dqkv`);
    }
    // Each family ran its own kernels (compiled in this page for the first time).
    expect(runs.find((r) => r.family === 'workgroup')!.kernels).toEqual(expect.arrayContaining(['flash_attn_fwd_wg_d16_t64', 'flash_attn_bwd_q_wg_d16_t64']));
    expect(runs.find((r) => r.family === 'scalar')!.kernels).toEqual(expect.arrayContaining(['flash_attn_fwd_d16']));
  }, 180_000);

  it('reduces long rows in the page each way (one invocation a row, two passes with and without subgroups) as the CPU reference does', async () => {
    const rows = 3, cols = 4100; // two chunks and a remainder; vec4 loads
    const data = [...makeData([rows, cols], 'normal', rng(5))];
    data[2 * cols + 3000] = 9; // row 2's maximum, in its second chunk
    data[2 * cols + 4099] = 9; // tied later: the first one wins
    const page = await browser.newPage();
    await page.goto(url);
    await page.waitForFunction(() => window.tesseraReady === true, undefined, { timeout: 60_000 });
    const runs = (await page.evaluate(([d, r, c]) => window.tesseraReduce(d as number[], r as number, c as number, ['rows', 'split', 'split-plain']), [data, rows, cols] as const)) as ReduceRun[];
    await page.close();
    const x = nd(data, [rows, cols]);
    const want = { sum: sum(x, [1]).data, max: max(x, [1]), variance: variance(x, [1]).data };
    // Sums of 4,100 terms of magnitude ~1 (worst case n·6e-8 ≈ 2.5e-4).
    const tol = { atol: 5e-4, rtol: 1e-5 };
    for (const r of runs) {
      expectClose(r.sum, want.sum, tol, `browser sum (${r.kind})`);
      expectClose(r.variance, want.variance, tol, `browser variance (${r.kind})`);
      expect(r.max, `browser max (${r.kind})`).toEqual([...want.max.values.data]);
      expect(r.argmax, `browser argmax (${r.kind})`).toEqual([...want.max.indices]);
      expect(r.argmax[2]).toBe(3000);
    }
    // The two-pass kernels were compiled and run in the page ('split' takes the subgroup ones
    // where SwiftShader offers subgroups of 8, else the same plain ones as 'split-plain').
    expect(runs.flatMap((r) => r.kernels)).toEqual(expect.arrayContaining(['reduce_sum_partial_vec4', 'reduce_sum_combine', 'reduce_max_combine', 'reduce_var_combine']));
    expect(runs.find((r) => r.kind === 'split')!.kernels.some((k) => k.startsWith('reduce_sum_partial'))).toBe(true);
  }, 180_000);

  it('profiles kernels in the page with GPU timestamps', async () => {
    const page = await browser.newPage();
    await page.goto(url);
    await page.waitForFunction(() => window.tesseraReady === true, undefined, { timeout: 60_000 });
    const p = await page.evaluate(() => window.tesseraProfile());
    await page.close();
    expect(p.timestamps).toBe(true);
    const kernels = p.rows.map((r) => r.label.split(' ')[0]);
    expect(kernels).toEqual(expect.arrayContaining(['flash_attn_fwd', 'flash_attn_bwd_q', 'flash_attn_bwd_kv', 'gelu']));
    expect(p.rows.every((r) => r.totalMs >= 0 && r.calls >= 1)).toBe(true);
    expect(p.rows.reduce((a, r) => a + r.totalMs, 0)).toBeGreaterThan(0);
    expect(p.table).toContain('| kernel | calls | total ms |');
  }, 180_000);
});
