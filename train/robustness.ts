// Robustness to common corruptions (Hendrycks & Dietterich 2019): accuracy of a classifier on the
// test set corrupted on the GPU at each severity, and the corruption error relative to a baseline
// model, CE_c = Σ_s E(model, c, s) / Σ_s E(baseline, c, s), averaged over corruptions as mCE.
import * as T from '../engine/index.js';
import type { VisionTransformer } from '../models/vit.js';
import { BatchLoader, type Dataset } from './data.js';

export interface CorruptionRow {
  corruption: T.Corruption | 'clean';
  severity: number;
  accuracy: number;
}

/** Accuracy on `ds` (images in [0, 1], not normalised) under each corruption and severity. */
export async function corruptionAccuracy(
  model: VisionTransformer,
  ds: Dataset,
  opts: { corruptions?: readonly T.Corruption[]; severities?: readonly number[]; batchSize?: number; seed?: number; onRow?: (r: CorruptionRow) => void },
): Promise<CorruptionRow[]> {
  const batchSize = Math.min(opts.batchSize ?? 500, ds.count);
  const loader = new BatchLoader(ds, batchSize);
  const steps = Math.floor(ds.count / batchSize);
  const order = Int32Array.from({ length: ds.count }, (_, i) => i);
  const { mean, std } = model.config;
  const rows: CorruptionRow[] = [];
  const run = async (corruption: T.Corruption | 'clean', severity: number) => {
    let correct = 0;
    for (let s = 0; s < steps; s++) {
      loader.load(order, s * batchSize);
      const pred = T.noGrad(() =>
        T.scope(() => {
          // A fixed seed per (corruption, severity, batch): the same images get the same noise in
          // every model compared.
          const x = corruption === 'clean' ? loader.x : T.corrupt(loader.x, corruption, severity, { seed: (opts.seed ?? 0) * 7919 + severity * 131 + s });
          return T.max(model.forward(T.augmentFinish(x, { mean, std }), { training: false }).logits, 1).indices;
        }),
      );
      const p = await pred.data();
      pred.dispose();
      for (let b = 0; b < batchSize; b++) if (p[b] === ds.labels[s * batchSize + b]) correct++;
    }
    const row = { corruption, severity, accuracy: correct / (steps * batchSize) };
    rows.push(row);
    opts.onRow?.(row);
  };
  try {
    await run('clean', 0);
    for (const c of opts.corruptions ?? T.CORRUPTIONS) for (const s of opts.severities ?? [1, 2, 3, 4, 5]) await run(c, s);
  } finally {
    loader.dispose();
  }
  return rows;
}

/** Per-corruption mean accuracy, CE relative to a baseline's rows (when given), and mCE. */
export function corruptionSummary(rows: CorruptionRow[], baseline?: CorruptionRow[]): { table: string; meanAccuracy: number; mCE?: number } {
  const kinds = [...new Set(rows.filter((r) => r.corruption !== 'clean').map((r) => r.corruption))];
  const severities = [...new Set(rows.filter((r) => r.corruption !== 'clean').map((r) => r.severity))].sort();
  const errors = (rs: CorruptionRow[], k: string) => rs.filter((r) => r.corruption === k).reduce((a, r) => a + (1 - r.accuracy), 0);
  const lines = [
    `| corruption | ${severities.map((s) => `severity ${s}`).join(' | ')} | mean |${baseline ? ' CE |' : ''}`,
    `|---|${severities.map(() => '---:').join('|')}|---:|${baseline ? '---:|' : ''}`,
  ];
  const ces: number[] = [];
  const means: number[] = [];
  for (const k of kinds) {
    const accs = severities.map((s) => rows.find((r) => r.corruption === k && r.severity === s)!.accuracy);
    const m = accs.reduce((a, b) => a + b, 0) / accs.length;
    means.push(m);
    let ce = '';
    if (baseline) {
      const c = errors(rows, k) / errors(baseline, k);
      ces.push(c);
      ce = ` ${(100 * c).toFixed(1)}% |`;
    }
    lines.push(`| ${k} | ${accs.map((a) => `${(100 * a).toFixed(2)}%`).join(' | ')} | ${(100 * m).toFixed(2)}% |${ce}`);
  }
  const clean = rows.find((r) => r.corruption === 'clean');
  const meanAccuracy = means.reduce((a, b) => a + b, 0) / Math.max(means.length, 1);
  const mCE = baseline ? ces.reduce((a, b) => a + b, 0) / ces.length : undefined;
  lines.push('', `clean accuracy ${clean ? (100 * clean.accuracy).toFixed(2) : '?'}%, mean corrupted accuracy ${(100 * meanAccuracy).toFixed(2)}%` +
    (mCE !== undefined ? `, mCE ${(100 * mCE).toFixed(1)}% of the baseline` : ''));
  return { table: lines.join('\n'), meanAccuracy, mCE };
}
