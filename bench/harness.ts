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
  /** The case's benny median in each round (absent for results written without rounds). */
  roundMediansMs?: number[];
}

/** Benny rounds per suite (`BENCH_ROUNDS`, default 3). benny times a case's samples back to back,
 * so a drift of the host between cases (it runs 2-3× slower under load and drifts by tens of
 * percent idle) lands in the ratios; rounds with the case order rotated, each case's median taken
 * over the rounds' medians, spread the drift over every case. */
export function benchRounds(): number {
  const r = Number(process.env.BENCH_ROUNDS ?? 3);
  if (!Number.isInteger(r) || r < 1) throw new Error(`BENCH_ROUNDS=${process.env.BENCH_ROUNDS}: a positive integer`);
  return r;
}

const medianOf = (xs: number[]): number => {
  const s = [...xs].sort((p, q) => p - q);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** Runs cases with benny (≥ 5 samples each) in `benchRounds()` rounds, rotating the case order
 * each round; writes JSON + markdown with each case's median over the rounds; returns the rows. */
export async function runSuite(suite: string, cases: BenchCase[], opts: { baseline: string; rateUnit?: string; rateScale?: number; note?: string; minSamples?: number; maxTime?: number; rounds?: number }): Promise<SuiteRow[]> {
  const rounds = opts.rounds ?? benchRounds();
  const perCase = new Map<string, { medians: number[]; samples: number }>(cases.map((c) => [c.name, { medians: [], samples: 0 }]));
  for (let round = 0; round < rounds; round++) {
    const order = cases.map((_, i) => cases[(i + round) % cases.length]!);
    await b.suite(
      rounds > 1 ? `${suite} (round ${round + 1}/${rounds})` : suite,
      // Every case, peers included, waits for Dawn without its busy-polling loop (engine/device.ts
      // gpuWait): the same conditions for all, whoever's promise is pending.
      ...order.map((c) => b.add(c.name, async () => gpuWait(Promise.resolve(c.run())))),
      b.configure({ cases: { minSamples: opts.minSamples ?? 5, maxTime: opts.maxTime ?? 3, delay: 0.05 } }),
      // One line a finished case (benny's default display throws a RangeError when the fastest
      // case's ops/s prints more than two characters shorter than another's, e.g. '2' and '0.175').
      b.cycle((result) => {
        console.log(`  ${result.name}: ${result.details.median * 1000 < 10 ? (result.details.median * 1000).toFixed(3) : (result.details.median * 1000).toFixed(1)} ms median, ${result.samples} samples, ±${result.margin.toFixed(2)}%`);
      }),
      b.complete((summary) => {
        for (const r of summary.results) {
          const entry = perCase.get(r.name)!;
          entry.medians.push(r.details.median * 1000);
          entry.samples += r.samples;
        }
      }),
    );
  }
  const medians = new Map([...perCase].map(([name, e]) => [name, medianOf(e.medians)]));
  const base = medians.get(opts.baseline);
  const baseWork = cases.find((x) => x.name === opts.baseline)?.work;
  const rows: SuiteRow[] = cases.map((c) => {
    const ms = medians.get(c.name)!;
    return {
      name: c.name,
      medianMs: ms,
      samples: perCase.get(c.name)!.samples,
      roundMediansMs: perCase.get(c.name)!.medians,
      rate: c.work !== undefined ? (c.work / (ms / 1000)) * (opts.rateScale ?? 1) : undefined,
      // Cases that state their work compare by rate (they may do different amounts per run).
      ratio: base === undefined ? NaN : c.work !== undefined && baseWork !== undefined ? (c.work / ms) / (baseWork / base) : base / ms,
    };
  });
  writeResults(suite, rows, { ...opts, rounds });
  return rows;
}

/** Times cases in interleaved rounds (every case once a round, the order rotated), the way to
 * compare cases whose ratio, not their absolute speed, is the question: the host's drift (tens of
 * percent within minutes here) lands on every case of a round alike, while benny times one case's
 * samples back to back. Each row's median is over the rounds, and its ratio is the median over
 * rounds of (baseline time / case time) in the same round. Writes `${suite}.json` and `.md`. */
export async function runInterleaved(suite: string, cases: BenchCase[], opts: { baseline: string; rounds: number; rateUnit?: string; rateScale?: number; note?: string }): Promise<SuiteRow[]> {
  for (const c of cases) for (let w = 0; w < 2; w++) await gpuWait(Promise.resolve(c.run()));
  const times = new Map<string, number[]>(cases.map((c) => [c.name, []]));
  for (let round = 0; round < opts.rounds; round++) {
    for (let i = 0; i < cases.length; i++) {
      const c = cases[(i + round) % cases.length]!;
      const t0 = performance.now();
      await gpuWait(Promise.resolve(c.run()));
      times.get(c.name)!.push(performance.now() - t0);
    }
  }
  const base = times.get(opts.baseline);
  if (!base) throw new Error(`runInterleaved: baseline '${opts.baseline}' is not among the cases`);
  const rows: SuiteRow[] = cases.map((c) => {
    const ts = times.get(c.name)!;
    const ms = medianOf(ts);
    return {
      name: c.name,
      medianMs: ms,
      samples: ts.length,
      rate: c.work !== undefined ? (c.work / (ms / 1000)) * (opts.rateScale ?? 1) : undefined,
      ratio: medianOf(ts.map((t, r) => base[r]! / t)),
    };
  });
  writeResults(suite, rows, {
    ...opts,
    method: `${opts.rounds} interleaved rounds (each case once a round, order rotated, after 2 warm-up runs each); median ms over the rounds. Ratio = median over rounds of (${opts.baseline} time / case time) in the same round (higher is faster)`,
  });
  return rows;
}

export function writeResults(suite: string, rows: SuiteRow[], opts: { baseline: string; rateUnit?: string; note?: string; rounds?: number; method?: string }): void {
  mkdirSync(RESULTS_DIR, { recursive: true });
  // lavapipe's speed is the CPU's: results from different hosts differ by 2-3x, so each file names its CPU.
  const machine = { date: new Date().toISOString(), node: process.version, platform: `${process.platform} ${process.arch}`, cpu: describeCpu(), malloc: process.env.GLIBC_TUNABLES ?? '' };
  const rounds = opts.rounds ?? 1;
  writeFileSync(join(RESULTS_DIR, `${suite}.json`), JSON.stringify({ suite, baseline: opts.baseline, rounds, ...(opts.method ? { method: opts.method } : {}), machine, rows }, null, 2) + '\n');
  const spread = (r: SuiteRow) => r.roundMediansMs && r.roundMediansMs.length > 1 ? ` ${Math.min(...r.roundMediansMs).toFixed(2)}–${Math.max(...r.roundMediansMs).toFixed(2)} |` : '';
  const withSpread = rows.some((r) => spread(r) !== '');
  const md = [
    `# ${suite}`,
    '',
    opts.note ?? '',
    '',
    opts.method
      ? `${opts.method}. ${machine.date}, Node ${machine.node}, ${machine.cpu}${machine.malloc ? `, GLIBC_TUNABLES=${machine.malloc}` : ''}.`
      : `${rounds > 1 ? `Median over ${rounds} rounds (case order rotated each round) of each round's benny median` : 'Medians of benny samples'} (≥ 5 samples after warm-up per round), ${machine.date}, Node ${machine.node}, ${machine.cpu}${machine.malloc ? `, GLIBC_TUNABLES=${machine.malloc}` : ''}. Ratio = case rate / ${opts.baseline} rate where a rate is given, else ${opts.baseline} median / case median (higher is faster).`,
    '',
    `| case | median ms |${withSpread ? ' round medians, ms |' : ''} samples |${opts.rateUnit ? ` ${opts.rateUnit} |` : ''} × ${opts.baseline} |`,
    `|---|---:|${withSpread ? '---:|' : ''}---:|${opts.rateUnit ? '---:|' : ''}---:|`,
    ...rows.map((r) => `| ${r.name} | ${r.medianMs.toFixed(3)} |${withSpread ? spread(r) || ' |' : ''} ${r.samples} |${opts.rateUnit ? ` ${r.rate?.toFixed(2) ?? ''} |` : ''} ${r.ratio.toFixed(2)} |`),
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
