// Benchmark plumbing: suites run through benny (benchmark.js statistics: median of the samples
// after warm-up), and every suite writes bench/results/<suite>.json and <suite>.md with the
// ratio of each case to a named baseline measured in the same run.
import b from 'benny';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gpuWait } from '../engine/device.js';
import * as T from '../engine/index.js';

export const RESULTS_DIR = join(dirname(fileURLToPath(import.meta.url)), 'results');

export interface BenchCase {
  name: string;
  /** One timed repetition (awaits the GPU). */
  run: () => Promise<void> | void;
  /** Work per repetition for a rate column, e.g. FLOPs or images. */
  work?: number;
}

export interface SuiteRow {
  name: string;
  medianMs: number;
  samples: number;
  rate?: number;
  ratio: number;
}

/** Runs cases with benny (≥ 5 samples each), writes JSON + markdown, returns the rows. */
export async function runSuite(suite: string, cases: BenchCase[], opts: { baseline: string; rateUnit?: string; rateScale?: number; note?: string; minSamples?: number; maxTime?: number }): Promise<SuiteRow[]> {
  let rows: SuiteRow[] = [];
  await b.suite(
    suite,
    // Every case, peers included, waits for Dawn without its busy-polling loop (engine/device.ts
    // gpuWait): the same conditions for all, whoever's promise is pending.
    ...cases.map((c) => b.add(c.name, async () => gpuWait(Promise.resolve(c.run())))),
    b.configure({ cases: { minSamples: opts.minSamples ?? 5, maxTime: opts.maxTime ?? 3, delay: 0.05 } }),
    b.cycle(),
    b.complete((summary) => {
      const medians = new Map(summary.results.map((r) => [r.name, r.details.median * 1000]));
      const base = medians.get(opts.baseline);
      const baseWork = cases.find((x) => x.name === opts.baseline)?.work;
      rows = summary.results.map((r) => {
        const c = cases.find((x) => x.name === r.name)!;
        const ms = r.details.median * 1000;
        return {
          name: r.name,
          medianMs: ms,
          samples: r.samples,
          rate: c.work !== undefined ? (c.work / (ms / 1000)) * (opts.rateScale ?? 1) : undefined,
          // Cases that state their work compare by rate (they may do different amounts per run).
          ratio: !base ? NaN : c.work !== undefined && baseWork !== undefined ? (c.work / ms) / (baseWork / base) : base / ms,
        };
      });
    }),
  );
  writeResults(suite, rows, opts);
  return rows;
}

export function writeResults(suite: string, rows: SuiteRow[], opts: { baseline: string; rateUnit?: string; note?: string }): void {
  mkdirSync(RESULTS_DIR, { recursive: true });
  // lavapipe's speed is the CPU's: results from different hosts differ by 2-3x, so each file names its CPU.
  const machine = { date: new Date().toISOString(), node: process.version, platform: `${process.platform} ${process.arch}`, cpu: describeCpu() };
  writeFileSync(join(RESULTS_DIR, `${suite}.json`), JSON.stringify({ suite, baseline: opts.baseline, machine, rows }, null, 2) + '\n');
  const md = [
    `# ${suite}`,
    '',
    opts.note ?? '',
    '',
    `Medians of benny samples (≥ 5 after warm-up), ${machine.date}, Node ${machine.node}, ${machine.cpu}. Ratio = case rate / ${opts.baseline} rate where a rate is given, else ${opts.baseline} median / case median (higher is faster).`,
    '',
    `| case | median ms | samples |${opts.rateUnit ? ` ${opts.rateUnit} |` : ''} × ${opts.baseline} |`,
    `|---|---:|---:|${opts.rateUnit ? '---:|' : ''}---:|`,
    ...rows.map((r) => `| ${r.name} | ${r.medianMs.toFixed(3)} | ${r.samples} |${opts.rateUnit ? ` ${r.rate?.toFixed(2) ?? ''} |` : ''} ${r.ratio.toFixed(2)} |`),
    '',
  ].join('\n');
  writeFileSync(join(RESULTS_DIR, `${suite}.md`), md);
}

/** CPU model, family/model numbers, clock and widest SIMD: lavapipe runs the kernels on it. */
export function describeCpu(): string {
  const info = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
  const field = (name: string) => new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm').exec(info)?.[1]?.trim();
  const flags = ` ${field('flags') ?? ''} `;
  const simd = flags.includes(' avx512f ') ? 'AVX-512' : flags.includes(' avx2 ') ? 'AVX2' : 'SSE';
  const mhz = Number(field('cpu MHz') ?? cpus()[0]?.speed ?? 0);
  const family = field('cpu family');
  const model = field('model');
  return `${cpus().length} × ${field('model name') ?? cpus()[0]?.model.trim() ?? 'unknown CPU'}${family ? ` (family ${family} model ${model})` : ''}` +
    `${mhz ? ` @ ${(mhz / 1000).toFixed(2)} GHz` : ''}, ${simd}`;
}

/** One training step as `tessera train` takes it (backward, clip at norm 1, AdamW), awaited:
 * `lossOf` builds the loss inside the step's scope. */
export async function trainStep(opt: T.AdamW, lossOf: () => T.Tensor): Promise<void> {
  const l = T.scope(() => {
    const loss = lossOf();
    loss.backward();
    opt.step({ clip: opt.clipGradNorm(1) });
    opt.zeroGrad();
    return loss;
  });
  await l.item();
  l.dispose();
}
