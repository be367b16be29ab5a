// A one-line progress bar on stderr: position, loss, images/s and ETA. Redraws in place on a
// terminal; elsewhere (CI logs) prints a line every `logEvery` updates.

export class ProgressBar {
  private start = performance.now();
  private lastDraw = 0;
  private isTty = !!process.stderr.isTTY;

  constructor(private label: string, private total: number, private imagesPerStep: number, private logEvery = 50) {}

  private static time(s: number): string {
    if (!Number.isFinite(s)) return '--:--';
    const m = Math.floor(s / 60);
    return `${m}:${String(Math.floor(s % 60)).padStart(2, '0')}`;
  }

  update(done: number, fields: Record<string, string>): void {
    const elapsed = (performance.now() - this.start) / 1000;
    const rate = (done * this.imagesPerStep) / elapsed;
    const eta = ((this.total - done) * elapsed) / Math.max(done, 1);
    const width = 24;
    const fill = Math.round((width * done) / this.total);
    const extra = Object.entries(fields).map(([k, v]) => `${k} ${v}`).join('  ');
    const line = `${this.label} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${done}/${this.total}  ${extra}  ${rate.toFixed(0)} img/s  ETA ${ProgressBar.time(eta)}`;
    if (this.isTty) {
      const now = performance.now();
      if (now - this.lastDraw > 100 || done === this.total) {
        process.stderr.write(`\r${line}\x1b[K`);
        this.lastDraw = now;
      }
    } else if (done % this.logEvery === 0 || done === this.total) process.stderr.write(`${line}\n`);
  }

  /** Changes the length and label once the total is known (a time-budgeted run's first epoch). */
  retotal(total: number, label: string): void {
    this.total = total;
    this.label = label;
  }

  finish(): number {
    if (this.isTty) process.stderr.write('\n');
    return (performance.now() - this.start) / 1000;
  }
}
