// Per-kernel GPU time from timestamp queries. While a profile is active, every dispatch runs in
// its own compute pass with timestampWrites (begin, end); query sets are resolved at each flush
// and read back asynchronously, so profiling never stalls the step it measures. Without the
// `timestamp-query` feature, records carry wall-clock time per flush instead (and say so).
/// <reference types="@webgpu/types" />
import { gpuWait } from './device.js';

export interface KernelRecord {
  /** Dispatch label, e.g. `matmul 6400x576x192 nt`. */
  label: string;
  /** Kernel family name, e.g. `matmul_nt`. */
  kernel: string;
  workgroups: [number, number, number];
  /** GPU nanoseconds between the pass's begin and end timestamps (NaN until resolved). */
  ns: number;
  /** GPU begin timestamp, ns after the first timestamp of the profile (NaN until resolved). */
  gpuStart: number;
  flops: number;
  bytes: number;
  /** CPU time (ms since profile start) when the dispatch was recorded. */
  cpuAt: number;
  /** Optional phase tag set by the caller (forward / backward / optimizer). */
  phase: string;
}

export interface FlushRecord {
  cpuStart: number;
  cpuEnd: number;
  dispatches: number;
}

export interface CompileRecord {
  kernel: string;
  ms: number;
}

const QUERY_CAPACITY = 4096; // 2,048 dispatches per flush; the runtime flushes every 512
const QUERY_RESOLVE = 0x200;
const COPY_SRC = 0x4;
const COPY_DST = 0x8;
const MAP_READ = 0x1;

export class Profiler {
  readonly timestamps: boolean;
  records: KernelRecord[] = [];
  flushes: FlushRecord[] = [];
  compiles: CompileRecord[] = [];
  phase = '';
  private t0 = 0;
  private querySet: GPUQuerySet | null = null;
  private pendingInSet: KernelRecord[] = [];
  private reads: Promise<void>[] = [];
  private gpuBase: bigint | null = null;
  /** Query sets created (tests check that none are made when profiling is off). */
  static querySetsCreated = 0;

  constructor(private device: GPUDevice) {
    this.timestamps = device.features.has('timestamp-query');
  }

  start(): void {
    this.records = [];
    this.flushes = [];
    this.compiles = [];
    this.t0 = performance.now();
  }

  now(): number {
    return performance.now() - this.t0;
  }

  /** Pass descriptor for one dispatch; records it. */
  passFor(rec: Omit<KernelRecord, 'ns' | 'gpuStart' | 'cpuAt' | 'phase'>): GPUComputePassDescriptor {
    const r: KernelRecord = { ...rec, ns: NaN, gpuStart: NaN, cpuAt: this.now(), phase: this.phase };
    this.records.push(r);
    if (!this.timestamps) return {};
    if (!this.querySet) {
      this.querySet = this.device.createQuerySet({ type: 'timestamp', count: QUERY_CAPACITY });
      Profiler.querySetsCreated++;
    }
    const i = this.pendingInSet.length * 2;
    this.pendingInSet.push(r);
    return { timestampWrites: { querySet: this.querySet, beginningOfPassWriteIndex: i, endOfPassWriteIndex: i + 1 } };
  }

  /** True when the current query set is full and the runtime must flush before the next dispatch. */
  get full(): boolean {
    return this.pendingInSet.length * 2 >= QUERY_CAPACITY;
  }

  /** Called by the runtime with the encoder about to be submitted. */
  resolve(encoder: GPUCommandEncoder): (() => void) | null {
    if (!this.querySet || this.pendingInSet.length === 0) return null;
    const count = this.pendingInSet.length * 2;
    const qs = this.querySet;
    const recs = this.pendingInSet;
    this.querySet = null;
    this.pendingInSet = [];
    const resolveBuf = this.device.createBuffer({ size: count * 8, usage: QUERY_RESOLVE | COPY_SRC });
    const staging = this.device.createBuffer({ size: count * 8, usage: MAP_READ | COPY_DST });
    encoder.resolveQuerySet(qs, 0, count, resolveBuf, 0);
    encoder.copyBufferToBuffer(resolveBuf, 0, staging, 0, count * 8);
    // After submit: read back without blocking the caller.
    return () => {
      this.reads.push(
        staging.mapAsync(MAP_READ).then(() => {
          const t = new BigUint64Array(staging.getMappedRange().slice(0));
          staging.unmap();
          recs.forEach((r, k) => {
            const begin = t[2 * k]!;
            const end = t[2 * k + 1]!;
            this.gpuBase ??= begin;
            r.ns = end >= begin ? Number(end - begin) : 0;
            r.gpuStart = Number(begin - this.gpuBase);
          });
          staging.destroy();
          resolveBuf.destroy();
          qs.destroy();
        }),
      );
    };
  }

  recordFlush(cpuStart: number, dispatches: number): void {
    this.flushes.push({ cpuStart, cpuEnd: this.now(), dispatches });
  }

  /** Waits until every resolved timestamp has been read. */
  async settle(): Promise<void> {
    while (this.reads.length) {
      const r = this.reads;
      this.reads = [];
      await gpuWait(Promise.all(r));
    }
  }
}

// ---- reports ------------------------------------------------------------------------------------

export interface KernelSummary {
  label: string;
  kernel: string;
  calls: number;
  totalMs: number;
  share: number;
  meanUs: number;
  gflops: number;
  gbps: number;
}

/** Groups records by label, sorted by total GPU time. */
export function summarize(records: KernelRecord[]): KernelSummary[] {
  const groups = new Map<string, KernelRecord[]>();
  for (const r of records) {
    let g = groups.get(r.label);
    if (!g) groups.set(r.label, (g = []));
    g.push(r);
  }
  const total = records.reduce((a, r) => a + (Number.isNaN(r.ns) ? 0 : r.ns), 0);
  const rows = [...groups.entries()].map(([label, rs]) => {
    const ns = rs.reduce((a, r) => a + (Number.isNaN(r.ns) ? 0 : r.ns), 0);
    const flops = rs.reduce((a, r) => a + r.flops, 0);
    const bytes = rs.reduce((a, r) => a + r.bytes, 0);
    return {
      label,
      kernel: rs[0]!.kernel,
      calls: rs.length,
      totalMs: ns / 1e6,
      share: total ? ns / total : 0,
      meanUs: ns / rs.length / 1e3,
      gflops: ns ? flops / ns : 0,
      gbps: ns ? bytes / ns : 0,
    };
  });
  return rows.sort((a, b) => b.totalMs - a.totalMs);
}

export function summaryTable(rows: KernelSummary[], limit = 30): string {
  const lines = ['| kernel | calls | total ms | % | mean µs | GFLOP/s | GB/s |', '|---|---:|---:|---:|---:|---:|---:|'];
  for (const r of rows.slice(0, limit)) {
    lines.push(`| ${r.label} | ${r.calls} | ${r.totalMs.toFixed(2)} | ${(100 * r.share).toFixed(1)} | ${r.meanUs.toFixed(1)} | ${r.gflops ? r.gflops.toFixed(2) : ''} | ${r.gbps.toFixed(2)} |`);
  }
  return lines.join('\n');
}

// ---- Chrome trace (chrome://tracing, Perfetto) ----------------------------------------------------

export interface TraceEvent {
  name: string;
  cat: string;
  ph: 'X' | 'M';
  ts?: number;
  dur?: number;
  pid: number;
  tid: number;
  args?: Record<string, unknown>;
}

/** GPU kernels on one track (their own timestamps), CPU flushes on another (wall clock). */
export function chromeTrace(records: KernelRecord[], flushes: FlushRecord[]): { traceEvents: TraceEvent[]; displayTimeUnit: 'ms' } {
  const events: TraceEvent[] = [
    { name: 'process_name', cat: '__metadata', ph: 'M', pid: 1, tid: 0, args: { name: 'tessera' } },
    { name: 'thread_name', cat: '__metadata', ph: 'M', pid: 1, tid: 1, args: { name: 'GPU kernels' } },
    { name: 'thread_name', cat: '__metadata', ph: 'M', pid: 1, tid: 2, args: { name: 'CPU: encode and submit' } },
  ];
  for (const r of records) {
    if (Number.isNaN(r.ns)) continue;
    events.push({
      name: r.label, cat: r.phase || 'kernel', ph: 'X', ts: r.gpuStart / 1000, dur: r.ns / 1000, pid: 1, tid: 1,
      args: { kernel: r.kernel, workgroups: r.workgroups.join('x'), flops: r.flops, bytes: r.bytes, gflops: r.ns ? r.flops / r.ns : 0, gbps: r.ns ? r.bytes / r.ns : 0 },
    });
  }
  for (const f of flushes) events.push({ name: 'submit', cat: 'cpu', ph: 'X', ts: f.cpuStart * 1000, dur: Math.max(1, (f.cpuEnd - f.cpuStart) * 1000), pid: 1, tid: 2, args: { dispatches: f.dispatches } });
  return { traceEvents: events, displayTimeUnit: 'ms' };
}
