import { describe, expect, it } from 'vitest';
import { ProgressBar } from '../../train/progress.js';

describe('progress bar', () => {
  it('counts images/s and the ETA over the steps it timed, not those a resumed run had done', () => {
    const fresh = new ProgressBar('epoch 1/2', 100, 128);
    expect(fresh.line(50, { loss: '1.0' }, 10)).toBe('epoch 1/2 [############............] 50/100  loss 1.0  640 img/s  ETA 0:10');
    // Resumed at step 40 of the epoch: 10 steps in 10 s, 50 to go.
    const resumed = new ProgressBar('epoch 2/2', 100, 128, { startAt: 40 });
    expect(resumed.line(50, {}, 10)).toMatch(/50\/100 {4}128 img\/s {2}ETA 0:50$/);
    expect(resumed.line(40, {}, 0)).toMatch(/-- img\/s {2}ETA --:--$/);
  });
});
