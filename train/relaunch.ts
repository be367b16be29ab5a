// Node processes that read large tensors back (`tessera`, `npm run bench`) run with glibc's
// malloc asking for transparent huge pages. A readback copies the mapped staging buffer into a
// fresh ArrayBuffer, and glibc serves every allocation over 128 KiB from a fresh mmap: the copy
// then takes one page fault per 4 KiB. Measured on the 2-core Zen 4 host (lavapipe, medians of
// 25): reading back a 6400×192 f32 product took 4.0 ms, 2.9 of them in that copy; with
// `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` the copy took 0.41 ms and the readback 1.4 ms. The
// tunable can only be set before a process starts, hence the relaunch. Where the kernel does not
// hand out huge pages (transparent_hugepage = never) or libc is not glibc, it changes nothing.
import { spawn } from 'node:child_process';
import { constants } from 'node:os';

const TUNABLE = 'glibc.malloc.hugetlb=1';

/** Runs this process again with the tunable set and exits with the child's status; returns
 * false (and does nothing) where it is set already, off Linux, or with TESSERA_NO_RELAUNCH=1. */
export function relaunchWithHugePages(): boolean {
  const current = process.env.GLIBC_TUNABLES ?? '';
  if (process.platform !== 'linux' || process.env.TESSERA_NO_RELAUNCH === '1' || current.includes('glibc.malloc.hugetlb')) return false;
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, GLIBC_TUNABLES: current ? `${current}:${TUNABLE}` : TUNABLE },
  });
  // Signals go on to the child, which stops at a checkpoint (train/interrupt.ts); this process
  // waits for it. Ctrl-C in a terminal reaches the child from there too: it takes two deliveries
  // within a second as one.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => child.kill(sig));
  child.on('exit', (code, signal) => {
    process.exit(code ?? (signal ? 128 + (constants.signals[signal] ?? 0) : 1));
  });
  child.on('error', (err) => {
    console.error(`could not relaunch with ${TUNABLE} (${err.message}); set TESSERA_NO_RELAUNCH=1 to run without it`);
    process.exit(1);
  });
  return true;
}
