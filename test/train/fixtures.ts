// Small generated datasets in the IDX format, so training tests need no download and run fast.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

export function idxBytes(dims: number[], data: Uint8Array): Buffer {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header[2] = 0x08;
  header[3] = dims.length;
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([header, Buffer.from(data)]);
}

/** 28×28 images of class c: the class's own fixed 7×7 binary pattern, bright, in a random
 * cell of the 4×4 patch grid, over noise. The class is in the content of one patch (what a
 * patch embedding sees first), not in its position, so a small ViT learns it in a few dozen steps. */
export function synthImages(count: number, seed: number): { images: Uint8Array; labels: Uint8Array } {
  let s = seed >>> 0;
  const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
  let ps = 12345;
  const prand = () => ((ps = (Math.imul(ps, 1664525) + 1013904223) >>> 0) / 4294967296);
  const patterns = Array.from({ length: 10 }, () => Array.from({ length: 49 }, () => prand() < 0.5));
  const images = new Uint8Array(count * 784);
  const labels = new Uint8Array(count);
  for (let n = 0; n < count; n++) {
    const c = Math.floor(rand() * 10);
    labels[n] = c;
    const cell = Math.floor(rand() * 16);
    const r0 = 7 * Math.floor(cell / 4);
    const c0 = 7 * (cell % 4);
    for (let i = 0; i < 784; i++) images[n * 784 + i] = Math.floor(rand() * 40);
    for (let y = 0; y < 7; y++) for (let x = 0; x < 7; x++) {
      if (patterns[c]![y * 7 + x]) images[n * 784 + (r0 + y) * 28 + c0 + x] = 200 + Math.floor(rand() * 55);
    }
  }
  return { images, labels };
}

/** Writes train and t10k IDX files (gzip for train, raw for test) into dir. */
export function writeSynthDataset(dir: string, train: number, test: number): string {
  mkdirSync(dir, { recursive: true });
  const tr = synthImages(train, 1);
  const te = synthImages(test, 2);
  writeFileSync(join(dir, 'train-images-idx3-ubyte.gz'), gzipSync(idxBytes([train, 28, 28], tr.images)));
  writeFileSync(join(dir, 'train-labels-idx1-ubyte.gz'), gzipSync(idxBytes([train], tr.labels)));
  writeFileSync(join(dir, 't10k-images-idx3-ubyte'), idxBytes([test, 28, 28], te.images));
  writeFileSync(join(dir, 't10k-labels-idx1-ubyte'), idxBytes([test], te.labels));
  return dir;
}

/** 28×28 images of one soft blob (a Gaussian of random centre and width) on black, labelled by
 * the quadrant of its centre: most patches can be predicted from their neighbours, which is
 * what a masked autoencoder learns. */
export function blobImages(count: number, seed: number): { images: Uint8Array; labels: Uint8Array } {
  let s = seed >>> 0;
  const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
  const images = new Uint8Array(count * 784);
  const labels = new Uint8Array(count);
  for (let n = 0; n < count; n++) {
    const [cx, cy, w] = [4 + rand() * 20, 4 + rand() * 20, 12 + rand() * 40];
    labels[n] = (cx < 14 ? 0 : 1) + (cy < 14 ? 0 : 2);
    for (let y = 0; y < 28; y++) for (let x = 0; x < 28; x++) images[n * 784 + y * 28 + x] = Math.round(255 * Math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / w));
  }
  return { images, labels };
}

/** Writes blob images as train and t10k IDX files into dir. */
export function writeBlobDataset(dir: string, train: number, test: number): string {
  mkdirSync(dir, { recursive: true });
  const tr = blobImages(train, 3);
  const te = blobImages(test, 4);
  writeFileSync(join(dir, 'train-images-idx3-ubyte'), idxBytes([train, 28, 28], tr.images));
  writeFileSync(join(dir, 'train-labels-idx1-ubyte'), idxBytes([train], tr.labels));
  writeFileSync(join(dir, 't10k-images-idx3-ubyte'), idxBytes([test, 28, 28], te.images));
  writeFileSync(join(dir, 't10k-labels-idx1-ubyte'), idxBytes([test], te.labels));
  return dir;
}
