// A one-line progress bar on stderr: position, loss, images/s and ETA. Redraws in place on a
// terminal; elsewhere (CI logs) prints a line every `logEvery` updates.

export class ProgressBar {
  private start = performance.now();
  private lastDraw = 0;
  private isTty = !!process.stderr.isTTY;

  private logEvery: number;
  private startAt: number;
  private stepsAfter: number;

  /** `logEvery`: steps between lines when stderr is not a terminal. `startAt`: steps of the epoch
   * done before this bar began (a resumed run's), left out of the rate and the ETA. `stepsAfter`:
   * the run's steps after this bar's, for an ETA of the whole run (at this bar's pace, evaluations
   * not counted). */
  constructor(private label: string, private total: number, private imagesPerStep: number, opts: { logEvery?: number; startAt?: number; stepsAfter?: number } = {}) {
    this.logEvery = opts.logEvery ?? 50;
    this.startAt = opts.startAt ?? 0;
    this.stepsAfter = opts.stepsAfter ?? 0;
  }

  private static time(s: number): string {
    if (!Number.isFinite(s)) return '--:--';
    const m = Math.floor(s / 60);
    const sec = String(Math.floor(s % 60)).padStart(2, '0');
    return m < 60 ? `${m}:${sec}` : `${Math.floor(m / 60)}:${String(m % 60).padStart(2, '0')}:${sec}`;
  }

  /** The bar's text after `done` of `total` steps, `elapsed` seconds after it started. */
  line(done: number, fields: Record<string, string>, elapsed: number): string {
    const timed = Math.max(done - this.startAt, 0);
    const rate = timed ? (timed * this.imagesPerStep) / elapsed : NaN;
    const perStep = timed ? elapsed / timed : NaN;
    const eta = (this.total - done) * perStep;
    const width = 24;
    const fill = Math.round((width * done) / this.total);
    const extra = Object.entries(fields).map(([k, v]) => `${k} ${v}`).join('  ');
    return `${this.label} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${done}/${this.total}  ${extra}  ${Number.isFinite(rate) ? rate.toFixed(0) : '--'} img/s  ETA ${ProgressBar.time(eta)}${this.stepsAfter ? ` (run ${ProgressBar.time(eta + this.stepsAfter * perStep)})` : ''}`;
  }

  update(done: number, fields: Record<string, string>): void {
    const line = this.line(done, fields, (performance.now() - this.start) / 1000);
    if (this.isTty) {
      const now = performance.now();
      if (now - this.lastDraw > 100 || done === this.total) {
        process.stderr.write(`\r${line}\x1b[K`);
        this.lastDraw = now;
      }
    } else if (done % this.logEvery === 0 || done === this.total) process.stderr.write(`${line}\n`);
  }

  /** Changes the length and label once the total is known (a time-budgeted run's first epoch). */
  retotal(total: number, label: string, stepsAfter = this.stepsAfter): void {
    this.total = total;
    this.label = label;
    this.stepsAfter = stepsAfter;
  }

  finish(): number {
    if (this.isTty) process.stderr.write('\n');
    return (performance.now() - this.start) / 1000;
  }
}
