// `tessera profile`: per-kernel GPU time of a ViT training or inference step, and the attention
// throughput sweep (fused vs unfused, forward and forward+backward, by sequence length and head
// dimension). Writes markdown tables, a Chrome trace and PNG charts.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as T from '../engine/index.js';
import { presetConfig, type ViTConfig, VisionTransformer } from '../models/vit.js';
import { modelFromCheckpoint } from './checkpoint.js';
import { renderPng, type Spec } from './plot.js';

/** f32 FMA peak of the lanes lavapipe uses on this machine class (2 cores, AVX2, ~3.7 GHz). */
const CEILINGS: [RegExp, number][] = [[/llvmpipe/i, 237]];

function ceilingOf(adapter: string): number | null {
  for (const [re, g] of CEILINGS) if (re.test(adapter)) return g;
  return null;
}

export interface StepProfileOptions {
  preset?: string;
  checkpoint?: string;
  batchSize: number;
  steps: number;
  mode: 'train' | 'infer';
  out: string;
}

export interface StepProfile {
  wallMs: number;
  gpuMs: number;
  busy: number;
  rows: T.KernelSummary[];
  phases: Record<string, number>;
  compiles: { kernel: string; ms: number }[];
  markdown: string;
}

export async function profileStep(o: StepProfileOptions): Promise<StepProfile> {
  const dev = await T.init();
  // The matmul forms `tessera train` would pick on this machine.
  const tuning = await T.tuneMatmul();
  mkdirSync(o.out, { recursive: true });
  let model: VisionTransformer;
  let cfg: ViTConfig;
  if (o.checkpoint) {
    model = modelFromCheckpoint(o.checkpoint).model;
    cfg = model.config;
  } else {
    cfg = presetConfig(o.preset ?? 'vit-fmnist-tiny');
    model = new VisionTransformer(cfg, 0);
  }
  const B = o.batchSize;
  const x = T.keep(T.randn([B, cfg.in_chans, cfg.img_size, cfg.img_size], { seed: 1 }));
  const y = T.keep(T.tensor(Int32Array.from({ length: B }, (_, i) => i % cfg.num_classes), [B]));
  const opt = new T.AdamW(model.paramGroups(0.05), { lr: 1e-4 });
  const step = (prof: T.Profiler | null) =>
    T.scope(() => {
      if (prof) prof.phase = 'forward';
      if (o.mode === 'infer') return T.noGrad(() => model.forward(x, { training: false }).logits);
      const loss = T.crossEntropy(model.forward(x, { training: true }).logits, y);
      if (prof) prof.phase = 'backward';
      loss.backward();
      if (prof) prof.phase = 'optimizer';
      opt.step({ clip: opt.clipGradNorm(1) });
      opt.zeroGrad();
      return loss;
    });

  // Warm-up step under the profiler: every kernel's first dispatch is where lavapipe compiles.
  const warm = T.startProfile();
  const w = step(warm);
  await w.data();
  w.dispose();
  await T.stopProfile();
  const compiles = [...warm.compiles].sort((a, b) => b.ms - a.ms);

  const prof = T.startProfile();
  const t0 = performance.now();
  for (let i = 0; i < o.steps; i++) {
    const r = step(prof);
    await r.data();
    r.dispose();
  }
  const wallMs = performance.now() - t0;
  const { records } = await T.stopProfile();
  const rows = T.summarize(records);
  const gpuMs = rows.reduce((a, r) => a + r.totalMs, 0);
  const phases: Record<string, number> = {};
  for (const r of records) phases[r.phase || 'other'] = (phases[r.phase || 'other'] ?? 0) + r.ns / 1e6;
  const ceiling = ceilingOf(dev.adapterName);
  const n = o.steps;
  const md = [
    `# Profile: ${o.checkpoint ?? o.preset ?? 'vit-fmnist-tiny'}, ${o.mode}, batch ${B}`,
    '',
    `Adapter: ${dev.adapterName}. ${n} steps after one warm-up step. Per step: wall ${(wallMs / n).toFixed(1)} ms, ` +
      `GPU kernels ${(gpuMs / n).toFixed(1)} ms (GPU busy ${((100 * gpuMs) / wallMs).toFixed(0)}% of wall time), ` +
      `${(records.length / n).toFixed(0)} dispatches, ${((B * n) / (wallMs / 1000)).toFixed(1)} images/s.` +
      (dev.features.has('timestamp-query') ? ' Times are GPU timestamps (one compute pass per dispatch while profiling).' : ' No timestamp-query on this adapter: times are missing.') +
      (tuning ? ` Matmuls as tuned (\`T.tuneMatmul()\`): B from ${tuning.choice === 'texture' ? 'a texture' : 'storage'}${tuning.smallB.uniform ? ', B of at most 192 KiB from uniform arrays' : ''}.` : ''),
    '',
    '## Phases',
    '',
    '| phase | ms per step | % |',
    '|---|---:|---:|',
    ...Object.entries(phases).map(([k, v]) => `| ${k} | ${(v / n).toFixed(2)} | ${((100 * v) / gpuMs).toFixed(1)} |`),
    '',
    '## Kernels (sorted by total GPU time)',
    '',
    '| kernel | calls/step | ms/step | % | mean µs | GFLOP/s | GB/s |' + (ceiling ? ' % of peak |' : ''),
    '|---|---:|---:|---:|---:|---:|---:|' + (ceiling ? '---:|' : ''),
    ...rows.slice(0, 40).map((r) =>
      `| ${r.label} | ${(r.calls / n).toFixed(0)} | ${(r.totalMs / n).toFixed(2)} | ${(100 * r.share).toFixed(1)} | ${r.meanUs.toFixed(1)} | ${r.gflops ? r.gflops.toFixed(2) : ''} | ${r.gbps.toFixed(2)} |` +
      (ceiling ? ` ${r.gflops ? ((100 * r.gflops) / ceiling).toFixed(1) : ''} |` : ''),
    ),
    '',
    `## Pipelines compiled in the warm-up step: ${compiles.length}, ${compiles.reduce((a, c) => a + c.ms, 0).toFixed(0)} ms (compile + first run)`,
    '',
    ...compiles.slice(0, 15).map((c) => `- ${c.kernel}: ${c.ms.toFixed(1)} ms`),
    '',
  ].join('\n');
  writeFileSync(join(o.out, 'profile.md'), md);
  writeFileSync(join(o.out, 'trace.json'), JSON.stringify(T.chromeTrace(records, prof.flushes)));
  const top = rows.slice(0, 15).map((r) => ({ kernel: r.label, ms: r.totalMs / n, share: r.share }));
  const spec: Spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: `Top kernels per ${o.mode} step (ms, GPU timestamps)`,
    width: 480,
    data: { values: top },
    mark: 'bar',
    encoding: { y: { field: 'kernel', type: 'nominal', sort: '-x', title: null }, x: { field: 'ms', type: 'quantitative', title: 'ms per step' } },
  };
  await renderPng(spec, join(o.out, 'kernels.png'));
  x.dispose();
  y.dispose();
  opt.dispose();
  model.dispose();
  return { wallMs, gpuMs, busy: gpuMs / wallMs, rows, phases, compiles, markdown: md };
}

// ---- attention sweep ------------------------------------------------------------------------------

export interface AttentionSweepOptions {
  seqLens: number[];
  headDims: number[];
  heads: number;
  batch: number;
  repeats: number;
  out: string;
  /** Flash kernel families to time, each against the unfused path ('auto': the adapter's choice). */
  flashKernels?: (T.FlashKernelFamily | 'auto')[];
}

export interface AttentionPoint {
  /** 'flash' (the adapter's kernels), 'flash <family>' (a family asked for) or 'unfused'. */
  impl: string;
  pass: 'forward' | 'forward+backward';
  N: number;
  hd: number;
  ms: number;
  gflops: number;
  gbps: number;
}

/** Median of `repeats` timed runs of fn after one warm-up. */
async function medianMs(fn: () => T.Tensor, repeats: number): Promise<number> {
  const w = fn();
  await w.data();
  w.dispose();
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    const r = fn();
    await r.data();
    times.push(performance.now() - t0);
    r.dispose();
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

export async function profileAttention(o: AttentionSweepOptions, log: (s: string) => void = () => {}): Promise<AttentionPoint[]> {
  const dev = await T.init();
  mkdirSync(o.out, { recursive: true });
  const points: AttentionPoint[] = [];
  for (const hd of o.headDims) {
    for (const N of o.seqLens) {
      const D = hd * o.heads;
      const qkv = T.keep(T.randn([o.batch, N, 3 * D], { seed: N }));
      qkv.requiresGrad = true;
      const g = T.keep(T.randn([o.batch, N, D], { seed: N + 1 }));
      // FLOPs as the attention literature counts them: 4·N²·hd per head forward, 2.5× that backward.
      const fwdFlops = 4 * o.batch * o.heads * N * N * hd;
      const variants = [
        ...(o.flashKernels ?? ['auto']).map((family) => ({ label: family === 'auto' ? 'flash' : `flash ${family}`, impl: 'flash' as const, family })),
        { label: 'unfused', impl: 'unfused' as const, family: 'auto' as const },
      ];
      for (const { label, impl, family } of variants) {
        T.useFlashKernels(family);
        let fwd: number;
        let both: number;
        try {
          fwd = await medianMs(() => T.noGrad(() => T.attention(qkv, o.heads, { impl })), o.repeats);
          both = await medianMs(() => {
            const out = T.scope(() => {
              const y = T.attention(qkv, o.heads, { impl });
              y.backward(g);
              return y;
            });
            qkv.grad?.dispose();
            qkv.grad = null;
            return out;
          }, o.repeats);
        } finally {
          T.useFlashKernels('auto');
        }
        // Bytes that must move at least once: qkv and out forward; plus dout and dqkv backward.
        const fwdBytes = 4 * o.batch * N * 4 * D;
        for (const [pass, ms, flops, bytes] of [['forward', fwd, fwdFlops, fwdBytes], ['forward+backward', both, 3.5 * fwdFlops, 2.5 * fwdBytes]] as const) {
          points.push({ impl: label, pass, N, hd, ms, gflops: flops / ms / 1e6, gbps: bytes / ms / 1e6 });
        }
        log(`attention ${label} N=${N} hd=${hd}: forward ${fwd.toFixed(2)} ms, forward+backward ${both.toFixed(2)} ms`);
      }
      qkv.dispose();
      g.dispose();
    }
  }
  const rows = points.map((p) => `| ${p.impl} | ${p.pass} | ${p.N} | ${p.hd} | ${p.ms.toFixed(3)} | ${p.gflops.toFixed(2)} | ${p.gbps.toFixed(3)} |`);
  const ratio: string[] = [];
  for (const p of points.filter((q) => q.impl !== 'unfused')) {
    const u = points.find((q) => q.impl === 'unfused' && q.pass === p.pass && q.N === p.N && q.hd === p.hd)!;
    ratio.push(`| ${p.impl} | ${p.pass} | ${p.N} | ${p.hd} | ${(u.ms / p.ms).toFixed(2)} |`);
  }
  const md = [
    `# Attention throughput on ${dev.adapterName}`,
    '',
    `Batch ${o.batch}, ${o.heads} heads; medians of ${o.repeats} runs after a warm-up (wall clock incl. one readback). FLOPs: 4·N²·hd per head forward, 3.5× for forward+backward.`,
    '',
    '| impl | pass | N | hd | ms | GFLOP/s | GB/s (qkv, out, grads once) |',
    '|---|---|---:|---:|---:|---:|---:|',
    ...rows,
    '',
    '## Fused vs unfused (unfused ms / flash ms)',
    '',
    '| kernels | pass | N | hd | speed-up |',
    '|---|---|---:|---:|---:|',
    ...ratio,
    '',
  ].join('\n');
  writeFileSync(join(o.out, 'attention.md'), md);
  writeFileSync(join(o.out, 'attention.json'), JSON.stringify(points, null, 2));
  const values = points.map((p) => ({ ...p, series: `${p.impl} hd${p.hd}` }));
  const chart = (field: 'gflops' | 'gbps', title: string) => ({
    width: 300,
    height: 200,
    mark: { type: 'line' as const, point: true },
    encoding: {
      x: { field: 'N', type: 'quantitative' as const, scale: { type: 'log' as const }, title: 'sequence length N' },
      y: { field, type: 'quantitative' as const, title },
      color: { field: 'series', type: 'nominal' as const, title: null, legend: { labelLimit: 400 } },
      column: { field: 'pass', type: 'nominal' as const, title: null },
    },
  });
  await renderPng({ $schema: 'https://vega.github.io/schema/vega-lite/v6.json', data: { values }, vconcat: [chart('gflops', 'GFLOP/s'), chart('gbps', 'GB/s')] } as Spec, join(o.out, 'attention.png'));
  return points;
}
