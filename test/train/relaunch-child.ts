// Run by relaunch.test.ts: reports the tunables it ended up with and exits with argv[2].
import { relaunchWithHugePages } from '../../train/relaunch.js';

if (!relaunchWithHugePages()) {
  console.log(`pid=${process.pid} tunables=${process.env.GLIBC_TUNABLES ?? ''}`);
  process.exit(Number(process.argv[2] ?? 0));
}
