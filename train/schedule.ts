// Schedules as pure functions of the step (DINO's cosine_scheduler, MAE's lr_sched).

/** Linear warmup from 0 to `base` over `warmup` steps, then a half cosine down to `min`. */
export function warmupCosine(step: number, total: number, base: number, warmup: number, min = 0): number {
  if (step < warmup) return (base * (step + 1)) / warmup;
  const span = Math.max(1, total - warmup);
  const t = Math.min(1, (step - warmup) / span);
  return min + 0.5 * (base - min) * (1 + Math.cos(Math.PI * t));
}

/** A warning when the warmup (`what`, e.g. "--warmup-steps 100") is not shorter than the
 * schedule: the learning rate then only rises, never reaching its peak nor decaying. Null when the
 * warmup fits. */
export function longWarmupWarning(warmupSteps: number, totalSteps: number, what: string): string | null {
  if (totalSteps <= 0 || warmupSteps < totalSteps) return null;
  const reached = Math.round((100 * totalSteps) / warmupSteps);
  const tenth = Math.max(1, Math.round(totalSteps / 10));
  return `warning: the warmup (${what}) is not shorter than the ${totalSteps}-step schedule: the learning rate only rises, ` +
    `to ${reached}% of its peak, and never decays; a warmup of about a tenth of the schedule (${tenth} step${tenth === 1 ? '' : 's'}) is usual`;
}

/** What a time-budgeted run has measured after its calibration steps. */
export interface BudgetMeasurement {
  /** Wall-clock budget of the whole run, seconds (compilation, training, evaluation, saving). */
  budgetSeconds: number;
  /** Seconds spent so far (setup, compilation, the calibration steps). */
  elapsedSeconds: number;
  /** Steps done so far. */
  stepsDone: number;
  /** Measured seconds per training step after compilation. */
  secondsPerStep: number;
  /** Estimated seconds of one evaluation pass plus checkpoint saves (after every epoch and at the end). */
  secondsPerEval: number;
  stepsPerEpoch: number;
  /** Fraction of the budget held back for run-to-run noise of the machine. */
  margin: number;
}

/** The most optimizer steps whose training and evaluations fit the budget (at least `stepsDone`):
 * the schedule length of a time-budgeted run. */
export function stepsWithinBudget(m: BudgetMeasurement): number {
  const available = m.budgetSeconds * (1 - m.margin) - m.elapsedSeconds;
  const cost = (n: number) => (n - m.stepsDone) * m.secondsPerStep + Math.ceil(n / m.stepsPerEpoch) * m.secondsPerEval;
  let n = m.stepsDone + Math.max(0, Math.floor(available / m.secondsPerStep));
  while (n > m.stepsDone && cost(n) > available) n--;
  return Math.max(n, m.stepsDone);
}
