// Dispatch overhead: a chain of 100 small elementwise ops recorded into one command encoder
// (tessera's default) vs a queue.submit after every op, vs a submit and a GPU wait after every op.
import * as T from '../engine/index.js';
import { runSuite } from './harness.js';

export async function dispatchSuite(): Promise<void> {
  await T.init();
  const x = T.ones([256]);
  const chain = async (mode: 'batched' | 'submit' | 'wait') => {
    const out = T.scope(() => {
      let h = x;
      for (let i = 0; i < 100; i++) {
        h = T.addScalar(h, 1);
        if (mode === 'submit') T.flush();
      }
      return h;
    });
    if (mode === 'wait') await T.sync();
    await out.data();
    out.dispose();
  };
  const waitEach = async () => {
    let h = x;
    const made: T.Tensor[] = [];
    for (let i = 0; i < 100; i++) {
      h = T.addScalar(h, 1);
      made.push(h);
      await T.sync();
    }
    await h.data();
    for (const t of made) t.dispose();
  };
  await chain('batched');
  await runSuite(
    'dispatch',
    [
      { name: '100 ops, one encoder', run: () => chain('batched'), work: 100 },
      { name: '100 ops, submit each', run: () => chain('submit'), work: 100 },
      { name: '100 ops, submit + wait each', run: waitEach, work: 100 },
    ],
    {
      baseline: '100 ops, submit each',
      rateUnit: 'ops/s',
      note: 'Chain of 100 addScalar dispatches on a 256-element tensor plus one readback; per-op cost = median / 100.',
    },
  );
}
