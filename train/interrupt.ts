// Stopping a run by hand without losing it: on Ctrl-C (SIGINT) or SIGTERM the step under way
// finishes, the loop writes its checkpoint at that step (mid-epoch if need be) and returns, so
// `--resume` continues exactly where it stopped; a second signal exits at once. A second signal
// within a second of the first is the same request delivered twice (Ctrl-C reaches a relaunched
// child both from the terminal and through its parent, train/relaunch.ts) and is ignored.

export type StopSignal = 'SIGINT' | 'SIGTERM';

/** The conventional exit status of a process stopped by a signal: 128 + its number. */
export const SIGNAL_EXIT: Record<StopSignal, number> = { SIGINT: 130, SIGTERM: 143 };

/** A repeat of the signal closer than this to the first is a duplicate delivery, not a second press. */
const REPEAT_MS = 1000;

export class InterruptWatch {
  /** The signal that asked the run to stop, once one has. */
  requested: StopSignal | null = null;
  private requestedAt = 0;
  private readonly handlers: [StopSignal, () => void][];

  /** `say` tells the user what will happen (the run's log). */
  constructor(say: (s: string) => void) {
    this.handlers = (['SIGINT', 'SIGTERM'] as const).map((sig) => [sig, () => {
      if (this.requested) {
        if (performance.now() - this.requestedAt < REPEAT_MS) return;
        say(`\n${sig} again: exiting without a checkpoint of the steps since the last one`);
        process.exit(SIGNAL_EXIT[sig]);
      }
      this.requested = sig;
      this.requestedAt = performance.now();
      say(`\n${sig}: finishing this step, then writing the checkpoint (${sig === 'SIGINT' ? 'Ctrl-C' : 'SIGTERM'} again exits at once)`);
    }]);
    for (const [sig, h] of this.handlers) process.on(sig, h);
  }

  dispose(): void {
    for (const [sig, h] of this.handlers) process.off(sig, h);
  }
}
