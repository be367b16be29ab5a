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

  it('adds the whole run\'s ETA at the epoch\'s pace, in hours past the hour', () => {
    // 0.2 s a step; 50 steps left in the epoch, 300 after it.
    const bar = new ProgressBar('epoch 1/4', 100, 128, { stepsAfter: 300 });
    expect(bar.line(50, {}, 10)).toMatch(/ETA 0:10 \(run 1:10\)$/);
    const long = new ProgressBar('epoch 1/60', 468, 128, { stepsAfter: 59 * 468 });
    expect(long.line(18, {}, 36)).toMatch(/ETA 15:00 \(run 15:35:24\)$/);
    // The last epoch has nothing after it.
    expect(new ProgressBar('epoch 4/4', 100, 128).line(50, {}, 10)).toMatch(/ETA 0:10$/);
  });
});
