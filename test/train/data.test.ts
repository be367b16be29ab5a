import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadCifar10, loadDataset, normalize, parseIdx, permutation } from '../../train/data.js';
import { idxBytes, writeSynthDataset } from './fixtures.js';

describe('dataset readers', () => {
  const dir = writeSynthDataset(mkdtempSync(join(tmpdir(), 'tessera-data-')), 64, 32);

  it('reads gzip and raw IDX files with their labels', () => {
    const tr = loadDataset('fashion-mnist', 'train', dir);
    const te = loadDataset('fashion-mnist', 'test', dir);
    expect([tr.count, tr.channels, tr.height, tr.width, tr.classes]).toEqual([64, 1, 28, 28, 10]);
    expect(te.count).toBe(32);
    expect(Math.max(...tr.images)).toBeLessThanOrEqual(1);
    normalize(tr, [0.5], [0.25]);
    expect(Math.min(...tr.images)).toBeGreaterThanOrEqual(-2);
  });

  it('refuses truncated, mislabelled and foreign files with the path and the reason', () => {
    const bad = mkdtempSync(join(tmpdir(), 'tessera-bad-'));
    const good = idxBytes([4, 28, 28], new Uint8Array(4 * 784));
    expect(() => parseIdx(good.subarray(0, good.length - 10), 'x.idx')).toThrow(/x\.idx: truncated: dimensions \[4, 28, 28\] need 3136 data bytes, found 3126/);
    expect(() => parseIdx(Buffer.from([1, 2, 3, 4, 5, 6, 7, 8]), 'y.idx')).toThrow(/y\.idx: not an IDX file/);
    expect(() => parseIdx(Buffer.from([0, 0, 0x0d, 1, 0, 0, 0, 0]), 'z.idx')).toThrow(/element type 0xd is not unsigned byte/);
    writeFileSync(join(bad, 'train-images-idx3-ubyte'), good);
    writeFileSync(join(bad, 'train-labels-idx1-ubyte'), idxBytes([3], new Uint8Array(3)));
    expect(() => loadDataset('fashion-mnist', 'train', bad)).toThrow(/has 4 images but .*train-labels-idx1-ubyte has 3 labels/);
    writeFileSync(join(bad, 'train-labels-idx1-ubyte'), idxBytes([4], Uint8Array.from([0, 1, 12, 3])));
    expect(() => loadDataset('fashion-mnist', 'train', bad)).toThrow(/label 12 at index 2 is outside the 10 classes/);
    writeFileSync(join(bad, 'train-images-idx3-ubyte'), Buffer.from([0x1f, 0x8b, 8, 0, 1, 2, 3]));
    expect(() => loadDataset('fashion-mnist', 'train', bad)).toThrow(/gzip data is corrupt or truncated/);
    expect(() => loadDataset('fashion-mnist', 'test', bad)).toThrow(/t10k-images-idx3-ubyte\[\.gz\] not found/);
  });

  it('reads CIFAR-10 binary records and refuses a partial record', () => {
    const cdir = mkdtempSync(join(tmpdir(), 'tessera-cifar-'));
    const rec = Buffer.alloc(2 * 3073);
    rec[0] = 3;
    rec[3073] = 9;
    rec[1] = 255;
    writeFileSync(join(cdir, 'test_batch.bin'), rec);
    const ds = loadCifar10(cdir, 'test');
    expect([ds.count, ds.channels, ds.height, ...ds.labels]).toEqual([2, 3, 32, 3, 9]);
    expect(ds.images[0]).toBe(1);
    writeFileSync(join(cdir, 'test_batch.bin'), rec.subarray(0, 5000));
    expect(() => loadCifar10(cdir, 'test')).toThrow(/test_batch\.bin: 5000 bytes is not a whole number of 3073-byte records/);
  });

  it('seeded permutations repeat and differ across seeds', () => {
    expect([...permutation(10, 1)]).toEqual([...permutation(10, 1)]);
    expect([...permutation(10, 1)]).not.toEqual([...permutation(10, 2)]);
    expect([...permutation(10, 3)].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });
});
