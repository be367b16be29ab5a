// Schedules as pure functions of the step (DINO's cosine_scheduler, MAE's lr_sched).

/** Linear warmup from 0 to `base` over `warmup` steps, then a half cosine down to `min`. */
export function warmupCosine(step: number, total: number, base: number, warmup: number, min = 0): number {
  if (step < warmup) return (base * (step + 1)) / warmup;
  const span = Math.max(1, total - warmup);
  const t = Math.min(1, (step - warmup) / span);
  return min + 0.5 * (base - min) * (1 + Math.cos(Math.PI * t));
}
