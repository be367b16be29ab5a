import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { profileAttention } from '../../train/profile.js';

describe('tessera profile attention', () => {
  it('times each flash kernel family asked for against the unfused path and writes the tables and chart', async () => {
    const out = mkdtempSync(join(tmpdir(), 'tessera-attn-'));
    const points = await profileAttention({ seqLens: [17], headDims: [16], heads: 2, batch: 2, repeats: 1, out, flashKernels: ['auto', 'workgroup', 'scalar'] });
    expect(points.map((p) => `${p.impl} ${p.pass}`).sort()).toEqual(
      ['flash', 'flash scalar', 'flash workgroup', 'unfused'].flatMap((impl) => [`${impl} forward`, `${impl} forward+backward`]).sort(),
    );
    for (const p of points) expect(p.ms).toBeGreaterThan(0);
    const md = readFileSync(join(out, 'attention.md'), 'utf8');
    expect(md).toMatch(/\| flash workgroup \| forward\+backward \| 17 \| 16 \| \d+\.\d\d \|/);
    expect(md).toMatch(/\| flash scalar \| forward \| 17 \| 16 \| \d+\.\d\d \|/);
    expect(existsSync(join(out, 'attention.png'))).toBe(true);
  });

  it('refuses a kernel family it does not know, naming the choices', () => {
    const r = spawnSync(process.execPath, ['bin/tessera.js', 'profile', 'attention', '--flash-kernels', 'auto,shared'], { encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/--flash-kernels: 'shared' is not one of auto, subgroup, workgroup, vec4, scalar/);
  });
});
