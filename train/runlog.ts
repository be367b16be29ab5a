// A run folder's logs: metrics.jsonl (one line an evaluation) and loss.jsonl (one line a step).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

/** Opens both logs for a run: empty for a new run (`step` null); for a run resumed at `step`,
 * the lines of steps up to it (a run killed after its last checkpoint logged steps it will now
 * repeat), with both files rewritten so. Returns what they hold. */
export function openRunLogs<M extends { step: number }>(metricsPath: string, lossPath: string, step: number | null): { metrics: M[]; losses: number[] } {
  const lines = (path: string) => (step !== null && existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter(Boolean) : []);
  const keptMetrics = lines(metricsPath).filter((l) => (JSON.parse(l) as M).step <= step!);
  const keptLosses = lines(lossPath).slice(0, step ?? 0);
  writeFileSync(metricsPath, keptMetrics.map((l) => l + '\n').join(''));
  writeFileSync(lossPath, keptLosses.map((l) => l + '\n').join(''));
  return { metrics: keptMetrics.map((l) => JSON.parse(l) as M), losses: keptLosses.map((l) => (JSON.parse(l) as { loss: number }).loss) };
}
