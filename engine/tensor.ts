// Tensor: a shape, a dtype and a pooled GPU buffer (shared by reshaped views), plus the autograd
// fields the tape needs. Creation functions that need no kernel live here too.
/// <reference types="@webgpu/types" />
import { backward } from './autograd.js';
import { getDevice, type DeviceInfo } from './device.js';
import { rt } from './dispatch.js';
import { bufferSlice, type Disposable, type PooledBuffer, track } from './memory.js';

export type DType = 'float32' | 'int32';
export type Shape = readonly number[];
export type TypedArrayFor<D extends DType> = D extends 'int32' ? Int32Array : Float32Array;

/** A backward rule: given dL/d(output), the gradients for each input (null = not needed).
 * `pending[i]`, when given, is the gradient input i has already received from its other
 * consumers; a rule may add it into its own result in the same kernel and say so by returning
 * that result through `folded()` (engine/autograd.ts), which saves the tape's separate add. */
export interface GradNode {
  op: string;
  inputs: Tensor[];
  backward: (grad: Tensor, pending?: readonly (Tensor | undefined)[]) => (Tensor | null)[];
  /** Tensors made for this backward alone, released with the node. */
  saved?: Tensor[];
}

/** Reference-counted GPU storage shared by a tensor and its reshaped views. A slice's storage
 * holds a reference on the storage it was cut from, whose buffer lives until the last slice goes. */
class Storage {
  refs = 1;
  constructor(readonly buffer: PooledBuffer, readonly parent: Storage | null = null) {
    if (parent) parent.refs++;
  }
  release(): void {
    if (--this.refs > 0) return;
    if (this.parent) this.parent.release();
    else rt().pool.release(this.buffer);
  }
}

let nextTensorId = 1;

export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function shapeStr(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}

export class Tensor implements Disposable {
  readonly id = nextTensorId++;
  readonly shape: Shape;
  readonly dtype: DType;
  readonly size: number;
  /** Optional name used in error messages (parameters carry their timm names). */
  name: string | undefined;
  requiresGrad = false;
  grad: Tensor | null = null;
  gradFn: GradNode | null = null;
  /** For int tensors made from host data: the [min, max] of their values, used to validate
   * indices on the CPU side without a readback. */
  knownRange: [number, number] | undefined;
  private storage: Storage | null;

  /** Internal: ops create tensors through `Tensor.empty` or `Tensor.view`. */
  constructor(shape: Shape, dtype: DType, storage: Storage) {
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.size = numel(shape);
    this.storage = storage;
    track(this);
  }

  /** An uninitialised tensor (contents are whatever the pooled buffer held). */
  static empty(shape: Shape, dtype: DType = 'float32', what = 'tensor'): Tensor {
    for (const d of shape) {
      if (!Number.isInteger(d) || d < 0) throw new Error(`${what}: invalid shape ${shapeStr(shape)} (dimensions must be non-negative integers)`);
    }
    const buffer = rt().pool.acquire(numel(shape) * 4, `${what} ${shapeStr(shape)}`);
    return new Tensor(shape, dtype, new Storage(buffer));
  }

  /** A tensor sharing this one's storage with another shape of the same size. */
  static view(src: Tensor, shape: Shape): Tensor {
    const storage = src.liveStorage();
    storage.refs++;
    const t = new Tensor(shape, src.dtype, storage);
    t.knownRange = src.knownRange;
    return t;
  }

  /** A tensor over elements [offset, offset + numel(shape)) of `src`'s storage, bound on its own:
   * offset × 4 bytes must be a multiple of the device's minStorageBufferOffsetAlignment. */
  static slice(src: Tensor, offset: number, shape: Shape): Tensor {
    const storage = src.liveStorage();
    const n = numel(shape);
    if (!Number.isInteger(offset) || offset < 0 || offset + n > src.size) {
      throw new Error(`Tensor.slice: elements [${offset}, ${offset + n}) are outside ${src.describe()}`);
    }
    const align = rt().device.limits.minStorageBufferOffsetAlignment;
    if ((offset * 4) % align !== 0) throw new Error(`Tensor.slice: offset ${offset} × 4 bytes is not a multiple of the device's storage offset alignment (${align} bytes)`);
    // Bound as whole vec4s where the parent has room: kernels that declare vec4 arrays (matmul)
    // would otherwise lose the last elements to bounds clamping.
    const bytes = Math.min(Math.max(16, Math.ceil(n / 4) * 16), storage.buffer.bytes - offset * 4);
    return new Tensor(shape, src.dtype, new Storage(bufferSlice(storage.buffer, offset * 4, bytes), storage));
  }

  /** Copies this tensor's values into `target` (same size and dtype) and from then on uses
   * target's storage, so that kernels binding either see the same memory (the optimizer packs
   * parameters into one buffer this way). Refused while views share this tensor's storage. */
  moveInto(target: Tensor): void {
    const own = this.liveStorage();
    if (target.size !== this.size || target.dtype !== this.dtype) throw new Error(`moveInto: ${this.describe()} does not fit ${target.describe()}`);
    if (own.refs !== 1) throw new Error(`moveInto: ${this.describe()} has ${own.refs - 1} live view(s) sharing its storage; dispose them first`);
    const dest = target.liveStorage();
    if (this.size > 0) rt().copy(own.buffer, dest.buffer, this.size * 4);
    dest.refs++;
    this.storage = dest;
    own.release();
  }

  /** Whether views (reshapes or slices) share this tensor's storage. */
  get hasViews(): boolean {
    return this.liveStorage().refs > 1;
  }

  get rank(): number {
    return this.shape.length;
  }

  get isDisposed(): boolean {
    return this.storage === null;
  }

  /** Describes the tensor for error messages: `tensor #12 'head.weight' [10, 64] float32`. */
  describe(): string {
    return `tensor #${this.id}${this.name ? ` '${this.name}'` : ''} ${shapeStr(this.shape)}${this.dtype === 'int32' ? ' int32' : ''}`;
  }

  private liveStorage(): Storage {
    if (!this.storage) throw new Error(`${this.describe()} was used after dispose()`);
    return this.storage;
  }

  /** The GPU buffer; throws when the tensor was disposed. */
  get buffer(): PooledBuffer {
    return this.liveStorage().buffer;
  }

  /** Releases the buffer (when no view shares it), the autograd links and the tensors its op
   * saved for the backward. Idempotent. */
  dispose(): void {
    const s = this.storage;
    if (!s) return;
    this.storage = null;
    const saved = this.gradFn?.saved;
    this.gradFn = null;
    s.release();
    if (saved) for (const t of saved) t.dispose();
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }

  /** Copies the values to the CPU (submits pending GPU work) into a new array, or into `into`
   * (a Float32Array, or Int32Array for int32, of exactly `size` elements), which is returned.
   * Reading into a reused array spares the JavaScript heap a fresh allocation per read: in Node,
   * reading a 6400×192 product back into a new array each time can send V8 into a full
   * garbage collection every two or three reads, whose marking threads take the cores the GPU
   * work needs (README, "Reading a product back"). */
  async data(into?: TypedArrayFor<this['dtype']>): Promise<TypedArrayFor<this['dtype']>> {
    if (into === undefined) {
      const bytes = await rt().read(this.buffer, this.size * 4);
      return (this.dtype === 'int32' ? new Int32Array(bytes) : new Float32Array(bytes)) as TypedArrayFor<this['dtype']>;
    }
    const want = this.dtype === 'int32' ? Int32Array : Float32Array;
    if (!(into instanceof want) || into.length !== this.size) {
      const got = ArrayBuffer.isView(into) ? `${into.constructor.name} of ${(into as ArrayLike<number>).length} elements` : typeof into;
      throw new Error(`data(into): ${this.describe()} needs ${want === Int32Array ? 'an' : 'a'} ${want.name} of ${this.size} elements to read into, got a ${got}; pass \`new ${want.name}(${this.size})\` (or omit it for a new array)`);
    }
    await rt().read(this.buffer, this.size * 4, 0, new Uint8Array(into.buffer, into.byteOffset, into.byteLength));
    return into;
  }

  /** The single value of a one-element tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item(): ${this.describe()} has ${this.size} elements, expected 1`);
    return (await this.data())[0]!;
  }

  /** Reverse-mode gradients of this (scalar) tensor into the leaves' `.grad`. */
  backward(grad?: Tensor, opts?: { retainGraph?: boolean }): void {
    backward(this, grad, opts);
  }

  /** Nested arrays are not built here; `data()` is the fast path, this is for printing. */
  toString(): string {
    return `Tensor(${shapeStr(this.shape)}, ${this.dtype}${this.requiresGrad ? ', requiresGrad' : ''})`;
  }
}

// ---- device and creation ----------------------------------------------------------------------

/** Acquires the GPU device; call once before creating tensors. */
export async function init(): Promise<DeviceInfo> {
  const info = await getDevice();
  rt();
  return info;
}

function inferShape(data: ArrayLike<number>, shape: Shape | undefined): Shape {
  const s = shape ?? [data.length];
  if (numel(s) !== data.length) throw new Error(`tensor(): ${data.length} values do not fill shape ${shapeStr(s)} (${numel(s)} elements)`);
  return s;
}

/** Uploads host data. Numbers become float32 unless `dtype: 'int32'` or an Int32Array is given. */
export function tensor(
  data: ArrayLike<number>,
  shape?: Shape,
  opts: { dtype?: DType; requiresGrad?: boolean; name?: string } = {},
): Tensor {
  const s = inferShape(data, shape);
  const dtype: DType = opts.dtype ?? (data instanceof Int32Array ? 'int32' : 'float32');
  const t = Tensor.empty(s, dtype, opts.name ?? 'tensor()');
  let host: Float32Array | Int32Array;
  if (dtype === 'int32') {
    host = data instanceof Int32Array ? data : Int32Array.from(data, (v) => {
      if (!Number.isInteger(v)) throw new Error(`tensor(): int32 tensor given non-integer value ${v}`);
      return v;
    });
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = 0; i < host.length; i++) {
      const v = host[i]!;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    t.knownRange = [lo, hi];
  } else {
    host = data instanceof Float32Array ? data : Float32Array.from(data);
  }
  rt().write(t.buffer, host);
  t.requiresGrad = opts.requiresGrad ?? false;
  t.name = opts.name;
  return t;
}

/** Overwrites a tensor's contents from host data of the same size (e.g. a new data batch). */
export function upload(t: Tensor, data: Float32Array | Int32Array): void {
  if (data.length !== t.size) throw new Error(`upload(): ${data.length} values for ${t.describe()} (${t.size} elements)`);
  rt().write(t.buffer, data);
}

/** A leaf tensor that collects gradients. */
export function parameter(data: ArrayLike<number>, shape: Shape, name?: string): Tensor {
  return tensor(data, shape, { requiresGrad: true, name });
}
