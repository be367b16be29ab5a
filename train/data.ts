// Datasets on the CPU side: IDX (MNIST / Fashion-MNIST, raw or gzip) and CIFAR-10 binary readers
// that validate what they read, normalisation, and a seeded batch iterator that uploads one
// batch per step into tensors it reuses.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import * as T from '../engine/index.js';

export interface Dataset {
  name: string;
  /** Images as float32 in [0, 1], (count, C, H, W) row-major. */
  images: Float32Array;
  labels: Int32Array;
  count: number;
  channels: number;
  height: number;
  width: number;
  classes: number;
  classNames: string[];
}

export const DATASETS = {
  'fashion-mnist': {
    dir: '/usr/share/datasets/fashion-mnist',
    classNames: ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'],
    mean: [0.286],
    std: [0.353],
  },
  mnist: { dir: '/usr/share/datasets/mnist', classNames: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'], mean: [0.1307], std: [0.3081] },
  cifar10: {
    dir: '/usr/share/datasets/cifar-10-batches-bin',
    classNames: ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'],
    mean: [0.4914, 0.4822, 0.4465],
    std: [0.247, 0.2435, 0.2616],
  },
} as const;
export type DatasetName = keyof typeof DATASETS;

export class DataError extends Error {}

function readMaybeGzip(path: string): Buffer {
  const raw = readFileSync(path);
  if (raw.length >= 2 && raw[0] === 0x1f && raw[1] === 0x8b) {
    try {
      return gunzipSync(raw);
    } catch (e) {
      throw new DataError(`${path}: gzip data is corrupt or truncated (${(e as Error).message})`);
    }
  }
  return raw;
}

/** Parses an IDX file: magic 0x0000 08 NN (unsigned bytes, NN dimensions), big-endian sizes. */
export function parseIdx(buf: Buffer, path: string): { dims: number[]; data: Uint8Array } {
  if (buf.length < 4) throw new DataError(`${path}: too short for an IDX header (${buf.length} bytes)`);
  if (buf[0] !== 0 || buf[1] !== 0) throw new DataError(`${path}: not an IDX file (magic starts ${buf[0]}, ${buf[1]}; expected 0, 0)`);
  if (buf[2] !== 0x08) throw new DataError(`${path}: IDX element type 0x${buf[2]!.toString(16)} is not unsigned byte (0x08)`);
  const rank = buf[3]!;
  if (rank < 1 || rank > 4) throw new DataError(`${path}: IDX rank ${rank} is not 1..4`);
  if (buf.length < 4 + 4 * rank) throw new DataError(`${path}: header truncated (rank ${rank} needs ${4 + 4 * rank} bytes)`);
  const dims = Array.from({ length: rank }, (_, i) => buf.readUInt32BE(4 + 4 * i));
  const expected = dims.reduce((a, b) => a * b, 1);
  const offset = 4 + 4 * rank;
  const have = buf.length - offset;
  if (have !== expected) {
    throw new DataError(`${path}: ${have < expected ? 'truncated' : 'has trailing bytes'}: dimensions [${dims.join(', ')}] need ${expected} data bytes, found ${have}`);
  }
  return { dims, data: new Uint8Array(buf.buffer, buf.byteOffset + offset, expected) };
}

function findFile(dir: string, base: string): string {
  for (const name of [base, `${base}.gz`]) {
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  throw new DataError(`${join(dir, base)}[.gz] not found. Install Debian's dataset package (npm run setup) or point --data-dir / TESSERA_DATA at a folder with the IDX files.`);
}

/** MNIST-format split ('train' or 't10k') from a folder of IDX files. */
export function loadIdx(dir: string, split: 'train' | 'test', name: string, classNames: readonly string[]): Dataset {
  const prefix = split === 'train' ? 'train' : 't10k';
  const ip = findFile(dir, `${prefix}-images-idx3-ubyte`);
  const lp = findFile(dir, `${prefix}-labels-idx1-ubyte`);
  const img = parseIdx(readMaybeGzip(ip), ip);
  const lab = parseIdx(readMaybeGzip(lp), lp);
  if (img.dims.length !== 3) throw new DataError(`${ip}: images must have 3 dimensions (count, rows, cols), found [${img.dims.join(', ')}]`);
  if (lab.dims.length !== 1) throw new DataError(`${lp}: labels must have 1 dimension, found [${lab.dims.join(', ')}]`);
  const [count, h, w] = img.dims as [number, number, number];
  if (lab.dims[0] !== count) throw new DataError(`${ip} has ${count} images but ${lp} has ${lab.dims[0]} labels`);
  const labels = Int32Array.from(lab.data);
  for (let i = 0; i < count; i++) {
    if (labels[i]! >= classNames.length) throw new DataError(`${lp}: label ${labels[i]} at index ${i} is outside the ${classNames.length} classes`);
  }
  const images = new Float32Array(count * h * w);
  for (let i = 0; i < images.length; i++) images[i] = img.data[i]! / 255;
  return { name, images, labels, count, channels: 1, height: h, width: w, classes: classNames.length, classNames: [...classNames] };
}

/** CIFAR-10 binary version: records of 1 label byte + 3072 pixel bytes (R, G, B planes of 32×32). */
export function loadCifar10(dir: string, split: 'train' | 'test'): Dataset {
  const files = split === 'train' ? [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`) : ['test_batch.bin'];
  const rec = 1 + 3072;
  const parts = files.map((f) => {
    const p = join(dir, f);
    if (!existsSync(p)) throw new DataError(`${p} not found (CIFAR-10 binary version; point --data-dir at cifar-10-batches-bin)`);
    const buf = readFileSync(p);
    if (buf.length % rec !== 0) throw new DataError(`${p}: ${buf.length} bytes is not a whole number of ${rec}-byte records (truncated?)`);
    return { p, buf };
  });
  const count = parts.reduce((a, { buf }) => a + buf.length / rec, 0);
  const images = new Float32Array(count * 3072);
  const labels = new Int32Array(count);
  let n = 0;
  for (const { p, buf } of parts) {
    for (let r = 0; r < buf.length / rec; r++, n++) {
      const l = buf[r * rec]!;
      if (l > 9) throw new DataError(`${p}: record ${r} has label ${l} (expected 0..9)`);
      labels[n] = l;
      for (let i = 0; i < 3072; i++) images[n * 3072 + i] = buf[r * rec + 1 + i]! / 255;
    }
  }
  return { name: 'cifar10', images, labels, count, channels: 3, height: 32, width: 32, classes: 10, classNames: [...DATASETS.cifar10.classNames] };
}

/** Loads a dataset split by name; `dir` overrides the default location (also TESSERA_DATA). */
export function loadDataset(name: DatasetName, split: 'train' | 'test', dir?: string): Dataset {
  const spec = DATASETS[name];
  if (!spec) throw new DataError(`unknown dataset '${name}'; datasets: ${Object.keys(DATASETS).join(', ')}`);
  const root = dir ?? process.env.TESSERA_DATA ?? spec.dir;
  return name === 'cifar10' ? loadCifar10(root, split) : loadIdx(root, split, name, spec.classNames);
}

/** Normalises in place with per-channel mean and std. */
export function normalize(ds: Dataset, mean: readonly number[], std: readonly number[]): void {
  if (mean.length !== ds.channels || std.length !== ds.channels) {
    throw new DataError(`normalisation has ${mean.length} means / ${std.length} stds for ${ds.channels}-channel ${ds.name}`);
  }
  const plane = ds.height * ds.width;
  for (let i = 0; i < ds.images.length; i++) {
    const c = Math.floor(i / plane) % ds.channels;
    ds.images[i] = (ds.images[i]! - mean[c]!) / std[c]!;
  }
}

/** The first `n` examples (a view, for quick runs and tests). */
export function subset(ds: Dataset, n: number): Dataset {
  const k = Math.min(n, ds.count);
  const per = ds.channels * ds.height * ds.width;
  return { ...ds, count: k, images: ds.images.subarray(0, k * per), labels: ds.labels.subarray(0, k) };
}

/** A seeded permutation (mulberry32 + Fisher-Yates). */
export function permutation(n: number, seed: number): Int32Array {
  let a = seed >>> 0;
  const rand = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = p[i]!;
    p[i] = p[j]!;
    p[j] = t;
  }
  return p;
}

/** Reusable GPU batch tensors: one upload of images and one of labels per step. */
export class BatchLoader {
  readonly x: T.Tensor;
  readonly y: T.Tensor;
  private hostX: Float32Array;
  private hostY: Int32Array;

  constructor(readonly ds: Dataset, readonly batchSize: number) {
    const per = ds.channels * ds.height * ds.width;
    this.hostX = new Float32Array(batchSize * per);
    this.hostY = new Int32Array(batchSize);
    this.x = T.keep(T.zeros([batchSize, ds.channels, ds.height, ds.width]));
    this.y = T.keep(T.zeros([batchSize], 'int32'));
  }

  /** Number of full batches per epoch (the remainder is dropped in training). */
  get stepsPerEpoch(): number {
    return Math.floor(this.ds.count / this.batchSize);
  }

  /** Uploads examples order[start .. start + batchSize). */
  load(order: Int32Array, start: number): void {
    const per = this.ds.channels * this.ds.height * this.ds.width;
    for (let b = 0; b < this.batchSize; b++) {
      const i = order[start + b]!;
      this.hostX.set(this.ds.images.subarray(i * per, (i + 1) * per), b * per);
      this.hostY[b] = this.ds.labels[i]!;
    }
    T.upload(this.x, this.hostX);
    T.upload(this.y, this.hostY);
    this.y.knownRange = [0, this.ds.classes - 1];
  }

  dispose(): void {
    this.x.dispose();
    this.y.dispose();
  }
}
