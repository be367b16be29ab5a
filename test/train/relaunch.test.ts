import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const child = fileURLToPath(new URL('./relaunch-child.ts', import.meta.url));

function run(env: Record<string, string>, status: number): { status: number | null; out: string } {
  const base = { ...process.env };
  delete base.GLIBC_TUNABLES;
  delete base.TESSERA_NO_RELAUNCH;
  const r = spawnSync(process.execPath, ['--import', 'tsx', child, String(status)], { env: { ...base, ...env }, encoding: 'utf8' });
  return { status: r.status, out: r.stdout + r.stderr };
}

describe.runIf(process.platform === 'linux')('relaunch with huge pages for malloc', () => {
  it('runs the process again with the tunable and passes its exit status on', () => {
    const r = run({}, 3);
    expect(r.out).toMatch(/tunables=glibc\.malloc\.hugetlb=1\n/);
    expect(r.status).toBe(3);
  });

  it('keeps tunables already set, and does not relaunch where the tunable is there', () => {
    expect(run({ GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' }, 0).out).toMatch(/tunables=glibc\.malloc\.arena_max=2:glibc\.malloc\.hugetlb=1\n/);
    expect(run({ GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' }, 0).out).toMatch(/tunables=glibc\.malloc\.hugetlb=0\n/);
  });

  it('stays in this process with TESSERA_NO_RELAUNCH=1', () => {
    const r = run({ TESSERA_NO_RELAUNCH: '1' }, 5);
    expect(r.out).toMatch(/tunables=\n/);
    expect(r.status).toBe(5);
  });
});
