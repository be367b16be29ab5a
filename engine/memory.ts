// GPU memory ownership: a buffer pool by size class, live-buffer accounting, and scopes that
// release every tensor created inside them except those returned (tfjs's tidy, made explicit).
/// <reference types="@webgpu/types" />

// WebGPU buffer usage bits, spelled out so this file needs no globals from the `webgpu` package.
export const Usage = { MAP_READ: 0x1, COPY_SRC: 0x4, COPY_DST: 0x8, UNIFORM: 0x40, STORAGE: 0x80, QUERY_RESOLVE: 0x200 } as const;

export interface PooledBuffer {
  readonly gpu: GPUBuffer;
  /** Stable id, used in bind-group cache keys. */
  readonly id: number;
  /** Allocated size (the size class), bytes; for a slice, the slice's size. */
  readonly bytes: number;
  /** Byte offset of a slice inside `gpu` (a multiple of minStorageBufferOffsetAlignment). */
  readonly offset?: number;
}

/** Size class: at least 256 bytes; powers of two in quarter steps above 64 KiB, so a reused
 * buffer wastes at most 25% while the number of classes stays small. */
export function sizeClass(bytes: number): number {
  const b = Math.max(256, Math.ceil(bytes / 16) * 16);
  const pow = 2 ** Math.ceil(Math.log2(b));
  if (pow <= 65536) return pow;
  const step = pow / 8;
  return Math.ceil(b / step) * step;
}

let nextBufferId = 1;

/** A range of a pooled buffer, bound on its own (packed parameters and optimizer state). */
export function bufferSlice(parent: PooledBuffer, offset: number, bytes: number): PooledBuffer {
  if (offset + bytes > parent.bytes) throw new Error(`buffer slice [${offset}, ${offset + bytes}) outside a ${parent.bytes}-byte buffer`);
  return { gpu: parent.gpu, id: nextBufferId++, bytes, offset: (parent.offset ?? 0) + offset };
}

export class BufferPool {
  private free = new Map<number, PooledBuffer[]>();
  private live = 0;
  private liveBytesCount = 0;
  private pooledBytesCount = 0;

  constructor(
    private device: GPUDevice,
    private usage: number = Usage.STORAGE | Usage.COPY_SRC | Usage.COPY_DST,
    private maxBufferSize: number = device.limits.maxBufferSize,
  ) {}

  acquire(bytes: number, what: string): PooledBuffer {
    const cls = sizeClass(bytes);
    // Checked here: an oversized createBuffer blocks for a long time before it fails.
    const limit = Math.min(this.maxBufferSize, this.device.limits.maxStorageBufferBindingSize);
    if (cls > limit) {
      throw new Error(`${what}: needs a buffer of ${bytes} bytes, over the device limit of ${limit} bytes (maxStorageBufferBindingSize); use smaller batches or shapes`);
    }
    const list = this.free.get(cls);
    let buf = list?.pop();
    if (buf) this.pooledBytesCount -= cls;
    else buf = { gpu: this.device.createBuffer({ size: cls, usage: this.usage }), id: nextBufferId++, bytes: cls };
    this.live++;
    this.liveBytesCount += cls;
    return buf;
  }

  release(buf: PooledBuffer): void {
    this.live--;
    this.liveBytesCount -= buf.bytes;
    this.pooledBytesCount += buf.bytes;
    let list = this.free.get(buf.bytes);
    if (!list) this.free.set(buf.bytes, (list = []));
    list.push(buf);
  }

  /** Destroys every pooled (not live) buffer. Call after pending work is submitted. */
  trim(): number {
    let n = 0;
    for (const list of this.free.values()) for (const b of list) (b.gpu.destroy(), n++);
    this.free.clear();
    this.pooledBytesCount = 0;
    return n;
  }

  get liveCount(): number {
    return this.live;
  }
  get liveBytes(): number {
    return this.liveBytesCount;
  }
  get pooledBytes(): number {
    return this.pooledBytesCount;
  }
}

// ---- scopes ---------------------------------------------------------------------------------

export interface Disposable {
  dispose(): void;
  readonly isDisposed: boolean;
}

const scopeStack: Set<Disposable>[] = [];

/** Registers a newly created tensor with the innermost scope, if any. */
export function track(t: Disposable): void {
  scopeStack[scopeStack.length - 1]?.add(t);
}

/** Removes a tensor from every open scope so it outlives them (parameters, optimizer state). */
export function keep<T extends Disposable>(t: T): T {
  for (const s of scopeStack) s.delete(t);
  return t;
}

function collect(value: unknown, out: Set<Disposable>, depth = 0): void {
  if (value === null || typeof value !== 'object' || depth > 4) return;
  if ('dispose' in value && 'isDisposed' in value) {
    out.add(value as Disposable);
    return;
  }
  if (Array.isArray(value)) for (const v of value) collect(v, out, depth + 1);
  else if (value.constructor === Object) for (const v of Object.values(value)) collect(v, out, depth + 1);
}

/** Runs `fn`; disposes every tensor created inside except those in its return value (found in
 * the value itself, arrays and plain objects), which move to the enclosing scope. */
export function scope<T>(fn: () => T): T {
  const created = new Set<Disposable>();
  scopeStack.push(created);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopeStack.pop();
    for (const t of [...created].reverse()) if (!t.isDisposed) t.dispose();
    throw e;
  }
  scopeStack.pop();
  if (result instanceof Promise) throw new Error('scope(fn): fn must be synchronous (await outside the scope)');
  const kept = new Set<Disposable>();
  collect(result, kept);
  // Newest first: the pool is LIFO, so the next iteration of a loop gets the same buffer for the
  // same op, and cached bind groups keep hitting.
  for (const t of [...created].reverse()) if (!kept.has(t) && !t.isDisposed) t.dispose();
  const parent = scopeStack[scopeStack.length - 1];
  if (parent) for (const t of kept) if (created.has(t)) parent.add(t);
  return result;
}
