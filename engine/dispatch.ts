// Dispatch: pipeline and bind-group caches, immutable uniform buffers cached by content, and
// command batching (dispatches are recorded into one encoder and submitted on readback or flush).
/// <reference types="@webgpu/types" />
import { type KernelSource, packUniforms } from '../kernels/common.js';
import { currentDevice, type DeviceInfo, gpuWait } from './device.js';
import { BufferPool, type PooledBuffer, Usage } from './memory.js';
import { Profiler } from './profiler.js';

const SHADER_STAGE_COMPUTE = 0x4;
const MAP_MODE_READ = 0x1;

interface CachedPipeline {
  id: number;
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  source: KernelSource;
}

export interface KernelRecord {
  name: string;
  code: string;
}

/** Options an op passes with each launch. */
export interface Launch {
  source: KernelSource;
  uniforms?: Record<string, number>;
  /** Storage buffers in the kernel's declared order. */
  buffers: PooledBuffer[];
  grid: [number, number, number];
  /** e.g. `matmul 64x192x576`; shows in profiles and errors. */
  label: string;
  /** Floating-point operations of this dispatch (for GFLOP/s in profiles). */
  flops?: number;
  /** Bytes read and written (for GB/s in profiles); defaults to the bound buffers' sizes. */
  bytes?: number;
  /** Textures in the kernel's declared order (bound after the buffers). */
  textures?: ScratchTexture[];
}

/** A runtime-owned rgba32f 2-D array texture that kernels use as scratch (a matmul operand
 * repacked for textureLoad, one layer per batch entry). Reused by every launch of the same size;
 * released with the pooled buffers. */
export interface ScratchTexture {
  id: number;
  texture: GPUTexture;
  view: GPUTextureView;
  width: number;
  height: number;
  layers: number;
}

// Measured on lavapipe: ~8.6 µs per dispatch batched in one encoder vs ~16 µs with a submit each,
// and Dawn grows without bound when nothing waits. Submitting every few hundred dispatches keeps
// encoders small; training loops still await once per step.
const AUTO_FLUSH_DISPATCHES = 512;
const MAX_UNIFORM_CACHE = 8192;
const MAX_BIND_GROUP_CACHE = 16384;
// Scratch textures are kept per size; a training step uses a handful of sizes, so this bound only
// matters for programs that sweep many shapes.
const MAX_SCRATCH_TEXTURES = 24;
const TEXTURE_COPY_DST = 0x2;
const TEXTURE_BINDING = 0x4;
const STORAGE_BINDING = 0x8;

export class Runtime {
  readonly device: GPUDevice;
  readonly info: DeviceInfo;
  readonly pool: BufferPool;
  private stagingPool: BufferPool;
  private pipelines = new Map<string, CachedPipeline>();
  private layouts = new Map<string, GPUBindGroupLayout>();
  private bindGroups = new Map<string, GPUBindGroup>();
  private uniformBuffers = new Map<string, PooledBuffer>();
  private scratchTextures = new Map<string, ScratchTexture>();
  private scratchUniformBuffer: { whole: PooledBuffer; chunks: PooledBuffer[] } | null = null;
  // Ids of scratch uniform buffers and their chunks: far below the uniform-parameter buffers' (also
  // negative), so bind-group keys stay distinct.
  private nextScratchId = -1e9;
  private nextTextureId = 1;
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private pendingDispatches = 0;
  private errors: string[] = [];
  // Error scopes popped asynchronously; sync() and read() wait for them so that a bad kernel or
  // binding fails the call that waits for its result.
  private checks: Promise<void>[] = [];
  /** Counters for tests and benchmarks. */
  readonly stats = { dispatches: 0, submits: 0, pipelinesCompiled: 0, bindGroupsCreated: 0, uniformBuffersCreated: 0, texturesCreated: 0, uniformOperands: 0 };
  /** Print each kernel's WGSL when its pipeline is first built (TESSERA_PRINT_KERNELS=1). */
  printKernels = typeof process !== 'undefined' && process.env?.TESSERA_PRINT_KERNELS === '1';
  /** Set while a profile is recorded (engine/profiler.ts); null costs nothing. */
  profiler: Profiler | null = null;
  /** Pipelines whose first dispatch (where lavapipe compiles) has not been timed yet. */
  private firstUse = new Set<CachedPipeline>();

  constructor(info: DeviceInfo) {
    this.info = info;
    this.device = info.device;
    this.pool = new BufferPool(this.device);
    this.stagingPool = new BufferPool(this.device, Usage.MAP_READ | Usage.COPY_DST, this.device.limits.maxBufferSize);
    this.device.onuncapturederror = (ev: GPUUncapturedErrorEvent) => {
      this.errors.push(ev.error.message);
      console.error(`tessera: WebGPU error: ${ev.error.message}`);
    };
  }

  // ---- pipelines --------------------------------------------------------------------------

  private layoutFor(source: KernelSource): GPUBindGroupLayout {
    const kinds = (source.uniforms.length ? ['u'] : [])
      .concat(source.buffers.map((b) => (b.access === 'read' ? 'r' : b.access === 'uniform' ? 'u' : 'w')))
      .concat(source.textures.map((t) => (t.kind === 'sampled' ? 't' : 's')));
    const key = kinds.join('');
    let layout = this.layouts.get(key);
    if (!layout) {
      const entries: GPUBindGroupLayoutEntry[] = kinds.map((k, binding) => {
        const entry: GPUBindGroupLayoutEntry = { binding, visibility: SHADER_STAGE_COMPUTE };
        if (k === 't') entry.texture = { sampleType: 'unfilterable-float', viewDimension: '2d-array' };
        else if (k === 's') entry.storageTexture = { access: 'write-only', format: 'rgba32float', viewDimension: '2d-array' };
        else entry.buffer = { type: k === 'u' ? 'uniform' : k === 'r' ? 'read-only-storage' : 'storage' };
        return entry;
      });
      layout = this.device.createBindGroupLayout({ entries, label: key });
      this.layouts.set(key, layout);
    }
    return layout;
  }

  /** Pipelines are cached by WGSL source, never rebuilt per call. */
  pipeline(source: KernelSource): CachedPipeline {
    let cached = this.pipelines.get(source.code);
    if (!cached) {
      if (this.printKernels) console.log(`// ---- kernel ${source.name}\n${source.code}`);
      const layout = this.layoutFor(source);
      this.device.pushErrorScope('validation');
      const module = this.device.createShaderModule({ code: source.code, label: source.name });
      const pipeline = this.device.createComputePipeline({
        layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
        compute: { module, entryPoint: 'main' },
        label: source.name,
      });
      this.popCheck(`kernel ${source.name}`);
      cached = { id: this.pipelines.size + 1, pipeline, layout, source };
      this.pipelines.set(source.code, cached);
      this.firstUse.add(cached);
      this.stats.pipelinesCompiled++;
    }
    return cached;
  }

  /** Every kernel built so far, for printing and counting. */
  kernels(): KernelRecord[] {
    return [...this.pipelines.values()].map((p) => ({ name: p.source.name, code: p.source.code }));
  }

  // ---- uniforms and bind groups -----------------------------------------------------------

  // Uniform buffers are immutable and cached by content: written at creation (mappedAtCreation),
  // so a value can never change under a dispatch that is recorded but not yet submitted.
  private uniformBuffer(bytes: ArrayBuffer): PooledBuffer {
    const u32 = new Uint32Array(bytes);
    let key = '';
    for (let i = 0; i < u32.length; i++) key += u32[i]!.toString(36) + ',';
    let buf = this.uniformBuffers.get(key);
    if (!buf) {
      if (this.uniformBuffers.size >= MAX_UNIFORM_CACHE) this.dropUniformCache();
      const gpu = this.device.createBuffer({ size: bytes.byteLength, usage: Usage.UNIFORM, mappedAtCreation: true });
      new Uint8Array(gpu.getMappedRange()).set(new Uint8Array(bytes));
      gpu.unmap();
      buf = { gpu, id: -(this.uniformBuffers.size + 1 + this.stats.uniformBuffersCreated), bytes: bytes.byteLength };
      this.uniformBuffers.set(key, buf);
      this.stats.uniformBuffersCreated++;
    }
    return buf;
  }

  private dropUniformCache(): void {
    this.flush();
    for (const b of this.uniformBuffers.values()) b.gpu.destroy();
    this.uniformBuffers.clear();
    this.bindGroups.clear();
  }

  private bindGroup(p: CachedPipeline, buffers: PooledBuffer[], textures: ScratchTexture[]): GPUBindGroup {
    let key = `${p.id}`;
    for (const b of buffers) key += `:${b.id}`;
    for (const t of textures) key += `:t${t.id}`;
    let group = this.bindGroups.get(key);
    if (!group) {
      if (this.bindGroups.size >= MAX_BIND_GROUP_CACHE) this.bindGroups.clear();
      const entries: GPUBindGroupEntry[] = buffers.map((b, binding) => ({ binding, resource: b.offset === undefined ? { buffer: b.gpu } : { buffer: b.gpu, offset: b.offset, size: b.bytes } }));
      textures.forEach((t, i) => entries.push({ binding: buffers.length + i, resource: t.view }));
      group = this.device.createBindGroup({ layout: p.layout, entries });
      this.bindGroups.set(key, group);
      this.stats.bindGroupsCreated++;
    }
    return group;
  }

  // ---- recording and submission -------------------------------------------------------------

  private computePass(): GPUComputePassEncoder {
    if (!this.pass) {
      this.encoder ??= this.device.createCommandEncoder();
      this.pass = this.encoder.beginComputePass();
    }
    return this.pass;
  }

  private commandEncoder(): GPUCommandEncoder {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    this.encoder ??= this.device.createCommandEncoder();
    return this.encoder;
  }

  /** Records one dispatch; nothing is submitted until flush or readback. */
  run(launch: Launch): void {
    const { source, grid } = launch;
    const expected = source.buffers.length;
    if (launch.buffers.length !== expected) {
      throw new Error(`${launch.label}: kernel ${source.name} takes ${expected} buffers, got ${launch.buffers.length}`);
    }
    const textures = launch.textures ?? [];
    if (textures.length !== source.textures.length) {
      throw new Error(`${launch.label}: kernel ${source.name} takes ${source.textures.length} textures, got ${textures.length}`);
    }
    if (grid[0] === 0 || grid[1] === 0 || grid[2] === 0) return;
    const p = this.pipeline(source);
    const all = source.uniforms.length ? [this.uniformBuffer(packUniforms(source.uniforms, launch.uniforms ?? {})), ...launch.buffers] : launch.buffers;
    const bindGroup = this.bindGroup(p, all, textures);
    const prof = this.profiler;
    if (prof) {
      if (prof.full) this.flush();
      // Each dispatch gets its own pass so its begin/end timestamps bound it alone.
      const desc = prof.passFor({
        label: launch.label,
        kernel: source.name,
        workgroups: grid,
        flops: launch.flops ?? 0,
        bytes: launch.bytes ?? launch.buffers.reduce((a, b) => a + b.bytes, 0),
      });
      const encoder = this.commandEncoder();
      const pass = encoder.beginComputePass(desc);
      pass.setPipeline(p.pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(grid[0], grid[1], grid[2]);
      pass.end();
      if (this.firstUse.has(p)) {
        // lavapipe compiles on first dispatch: time it alone, outside the measured kernels.
        this.firstUse.delete(p);
        const t = performance.now();
        this.flush();
        void this.device.queue.onSubmittedWorkDone().then(() => prof.compiles.push({ kernel: source.name, ms: performance.now() - t }));
      }
    } else {
      this.firstUse.delete(p);
      const pass = this.computePass();
      pass.setPipeline(p.pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(grid[0], grid[1], grid[2]);
    }
    this.stats.dispatches++;
    if (++this.pendingDispatches >= AUTO_FLUSH_DISPATCHES) this.flush();
  }

  /** A buffer of `chunks` × `chunkBytes` that operands are copied or repacked into (`whole`, bound
   * as storage) and read from as uniform arrays (`chunks`: one binding each), created on first use.
   * Copies and repacks are ordered with the recorded dispatches: like a scratch texture, a later
   * one cannot disturb an earlier launch. Each call counts in `stats.uniformOperands`. */
  scratchUniform(chunks: number, chunkBytes: number): { whole: PooledBuffer; chunks: PooledBuffer[] } {
    this.stats.uniformOperands++;
    if (chunkBytes > this.device.limits.maxUniformBufferBindingSize) throw new Error(`scratchUniform: ${chunkBytes} bytes exceed maxUniformBufferBindingSize`);
    const have = this.scratchUniformBuffer;
    if (!have || have.chunks.length < chunks || have.chunks[0]!.bytes !== chunkBytes) {
      if (have) {
        this.flush();
        this.bindGroups.clear();
        have.whole.gpu.destroy();
      }
      const bytes = chunks * chunkBytes;
      const gpu = this.device.createBuffer({ size: bytes, usage: Usage.UNIFORM | Usage.STORAGE | Usage.COPY_DST, label: 'scratch uniform' });
      this.scratchUniformBuffer = {
        whole: { gpu, id: this.nextScratchId--, bytes },
        chunks: Array.from({ length: chunks }, (_, c) => ({ gpu, id: this.nextScratchId--, offset: c * chunkBytes, bytes: chunkBytes })),
      };
    }
    return this.scratchUniformBuffer!;
  }

  /** The scratch texture of this size (rgba32f, `width` texels × `height` rows × `layers`),
   * created on first use. Launches recorded in order may share it: each one's writes and reads are
   * ordered by the queue, so a later launch overwriting it cannot disturb an earlier one. */
  scratchTexture(width: number, height: number, layers: number): ScratchTexture {
    const key = `${width}x${height}x${layers}`;
    let t = this.scratchTextures.get(key);
    if (t) {
      // Most recently used last, so eviction drops the least recently used size.
      this.scratchTextures.delete(key);
      this.scratchTextures.set(key, t);
      return t;
    }
    if (this.scratchTextures.size >= MAX_SCRATCH_TEXTURES) {
      const [oldKey, old] = this.scratchTextures.entries().next().value as [string, ScratchTexture];
      // Recorded launches may still use it: submit them first (destroy waits for submitted work).
      this.flush();
      this.scratchTextures.delete(oldKey);
      this.bindGroups.clear();
      old.texture.destroy();
    }
    const texture = this.device.createTexture({
      size: [width, height, layers],
      format: 'rgba32float',
      usage: TEXTURE_COPY_DST | TEXTURE_BINDING | STORAGE_BINDING,
      label: `scratch ${key}`,
    });
    t = { id: this.nextTextureId++, texture, view: texture.createView({ dimension: '2d-array' }), width, height, layers };
    this.scratchTextures.set(key, t);
    this.stats.texturesCreated++;
    return t;
  }

  /** Scratch textures alive now (tests check that loops do not grow it). */
  get liveTextures(): number {
    return this.scratchTextures.size;
  }

  /** Copies `layers` images of `rows` rows of `width` rgba32f texels (row r of layer l starting at
   * byte `srcOffset + (l · rows + r) · bytesPerRow`) into a scratch texture, in order with the
   * recorded dispatches. WebGPU needs `bytesPerRow` a multiple of 256 and `srcOffset` of 16. */
  copyToTexture(src: PooledBuffer, srcOffset: number, bytesPerRow: number, dst: ScratchTexture, width: number, rows: number, layers: number): void {
    this.commandEncoder().copyBufferToTexture(
      { buffer: src.gpu, offset: (src.offset ?? 0) + srcOffset, bytesPerRow, rowsPerImage: rows },
      { texture: dst.texture },
      [width, rows, layers],
    );
  }

  /** Copies `bytes` between pooled buffers, in order with the recorded dispatches. */
  copy(src: PooledBuffer, dst: PooledBuffer, bytes: number, srcOffset = 0, dstOffset = 0): void {
    this.commandEncoder().copyBufferToBuffer(src.gpu, (src.offset ?? 0) + srcOffset, dst.gpu, (dst.offset ?? 0) + dstOffset, bytes);
  }

  /** Zeros the first `bytes` of a buffer (rounded up to 4) with clearBuffer, in queue order. */
  clear(dst: PooledBuffer, bytes: number): void {
    this.commandEncoder().clearBuffer(dst.gpu, dst.offset ?? 0, Math.ceil(bytes / 4) * 4);
  }

  get hasPendingWork(): boolean {
    return this.encoder !== null;
  }

  /** Submits everything recorded so far. */
  flush(): void {
    if (!this.encoder) return;
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    const prof = this.profiler;
    const flushStart = prof?.now() ?? 0;
    const afterSubmit = prof?.resolve(this.encoder) ?? null;
    this.device.pushErrorScope('validation');
    this.device.queue.submit([this.encoder.finish()]);
    this.popCheck('submit');
    afterSubmit?.();
    prof?.recordFlush(flushStart, this.pendingDispatches);
    this.encoder = null;
    this.pendingDispatches = 0;
    this.stats.submits++;
  }

  /** Submits and waits until the GPU has finished; throws any WebGPU error seen so far. */
  async sync(): Promise<void> {
    this.flush();
    await gpuWait(this.device.queue.onSubmittedWorkDone());
    await this.awaitChecks();
    this.throwErrors();
  }

  private popCheck(what: string): void {
    this.checks.push(
      this.device.popErrorScope().then((err) => {
        if (err) this.errors.push(`${what}: ${err.message}`);
      }),
    );
  }

  private async awaitChecks(): Promise<void> {
    while (this.checks.length) {
      const pending = this.checks;
      this.checks = [];
      await gpuWait(Promise.all(pending));
    }
  }

  private throwErrors(): void {
    if (this.errors.length) {
      const msg = this.errors.join('\n');
      this.errors = [];
      throw new Error(`WebGPU error: ${msg}`);
    }
  }

  /** queue.writeBuffer runs before any not-yet-submitted commands, so those are submitted
   * first: a pooled buffer may be read by a recorded dispatch and reused for new data. */
  write(dst: PooledBuffer, data: ArrayBufferView, dstOffset = 0): void {
    if (this.encoder) this.flush();
    const bytes = data.byteLength;
    if (bytes === 0) return;
    dstOffset += dst.offset ?? 0;
    const aligned = Math.ceil(bytes / 4) * 4;
    if (aligned === bytes) this.device.queue.writeBuffer(dst.gpu, dstOffset, data.buffer, data.byteOffset, bytes);
    else {
      const padded = new Uint8Array(aligned);
      padded.set(new Uint8Array(data.buffer, data.byteOffset, bytes));
      this.device.queue.writeBuffer(dst.gpu, dstOffset, padded);
    }
  }

  /** Reads `bytes` from a buffer: submits pending work, copies into a pooled staging buffer, and
   * from its mapped range into a new ArrayBuffer, or into `into` (its first `bytes` bytes). */
  async read(src: PooledBuffer, bytes: number, srcOffset = 0, into?: Uint8Array): Promise<ArrayBuffer> {
    const size = Math.max(4, Math.ceil(bytes / 4) * 4);
    const staging = this.stagingPool.acquire(size, 'readback');
    try {
      this.commandEncoder().copyBufferToBuffer(src.gpu, (src.offset ?? 0) + srcOffset, staging.gpu, 0, size);
      this.flush();
      await gpuWait(staging.gpu.mapAsync(MAP_MODE_READ, 0, size));
      const mapped = staging.gpu.getMappedRange(0, size);
      let out: ArrayBuffer;
      if (into) {
        into.set(new Uint8Array(mapped, 0, bytes));
        out = into.buffer as ArrayBuffer;
      } else out = mapped.slice(0, bytes);
      staging.gpu.unmap();
      await this.awaitChecks();
      this.throwErrors();
      return out;
    } finally {
      this.stagingPool.release(staging);
    }
  }

  /** Returns pooled memory to the driver (destroy only takes effect after later queue work). */
  async releasePooled(): Promise<number> {
    this.flush();
    this.bindGroups.clear();
    for (const t of this.scratchTextures.values()) t.texture.destroy();
    this.scratchTextures.clear();
    const n = this.pool.trim() + this.stagingPool.trim();
    this.device.queue.submit([]);
    await gpuWait(this.device.queue.onSubmittedWorkDone());
    return n;
  }
}

let runtime: Runtime | undefined;

/** The process-wide runtime for the current device. */
export function rt(): Runtime {
  const info = currentDevice();
  if (!runtime || runtime.info !== info) runtime = new Runtime(info);
  return runtime;
}
