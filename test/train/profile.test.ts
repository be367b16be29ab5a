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

describe('tessera kernels', () => {
  const kernels = (...args: string[]) => spawnSync(process.execPath, ['bin/tessera.js', 'kernels', ...args], { encoding: 'utf8' });
  const headers = (stdout: string) => stdout.split('\n').filter((l) => l.startsWith('// ---- kernel ')).map((l) => l.slice('// ---- kernel '.length));

  it('prints the kernels an op runs forward and backward, as chosen for this adapter and shape, and only those', () => {
    const flash = kernels('attention', '--shape', '2,50,4,16');
    expect(flash.status, flash.stderr).toBe(0);
    // A CPU adapter with subgroups of 8 takes the one-pass flash kernels: 50 keys over 8 lanes, 7 a lane.
    expect(headers(flash.stdout)).toEqual(['flash_attn_fwd_onepass_sgv_d16_k7', 'flash_attn_bwd_onepass_sgv_d16_k7']);
    expect(flash.stdout).toContain('@compute');
    const unfused = headers(kernels('attention', '--shape', '2,17,2,16', '--impl', 'unfused').stdout);
    expect(unfused).toContain('softmax');
    expect(unfused).toContain('softmax_grad');
    // Six batched products, three kernels (nt, nn, tn): a kernel compiled once prints once.
    expect(unfused.filter((k) => k.startsWith('matmul_sg_'))).toHaveLength(3);
    // A linear layer: the forward with its bias, dX, and dW with the bias gradient's row sums.
    const linear = headers(kernels('linear', '--shape', '100,64,48').stdout);
    expect(linear).toHaveLength(3);
    expect(linear[0]).toMatch(/^matmul_sg_nt_bias_/);
    expect(linear[2]).toMatch(/^matmul_sg_tn_.*_rs_/);
  });

  it('refuses a shape it cannot read, naming the layout', () => {
    const r = kernels('attention', '--shape', '2,50,4');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--shape for attention is B,N,HEADS,HEAD_DIM, positive integers \(e\.g\. 2,50,4,16\), got '2,50,4'/);
    expect(kernels('linear', '--impl', 'flash').stderr).toMatch(/--impl is flash or unfused, for attention only/);
  });
});
