// npm run bench [suite...]: runs the benchmark suites and writes bench/results/.
// Never run while tests run: the machine has 2 cores and timings would mean nothing.
import { dispatchSuite } from './dispatch.js';
import { matmulSuite } from './matmul.js';
import { attentionSuite } from './attention.js';
import { vitSuite } from './vit.js';
import { ladderSuite } from './matmul-ladder.js';
import { augmentSuite } from './augment.js';
import { blockSuite } from './block.js';
import { optimizerSuite } from './optimizer.js';
import { relaunchWithHugePages } from '../train/relaunch.js';

/** BENCH_FILTER=regex: the matmul and attention suites run only the shapes whose names match. */
const benchFilter = (): RegExp | undefined => (process.env.BENCH_FILTER ? new RegExp(process.env.BENCH_FILTER) : undefined);

const suites: Record<string, () => Promise<unknown>> = { dispatch: dispatchSuite, augment: augmentSuite, attention: () => attentionSuite(benchFilter()), block: blockSuite, optimizer: optimizerSuite, vit: vitSuite, ladder: ladderSuite, matmul: () => matmulSuite(benchFilter()) };
// Readbacks copy into fresh memory; with huge pages that copy stops paying a fault per 4 KiB (peers
// and tessera alike: they share the process).
if (!relaunchWithHugePages()) {
  const wanted = process.argv.slice(2);
  for (const name of wanted.length ? wanted : Object.keys(suites)) {
    const run = suites[name];
    if (!run) throw new Error(`unknown suite '${name}'; suites: ${Object.keys(suites).join(', ')}`);
    await run();
  }
  process.exit(0);
}
