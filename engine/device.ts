// One place that acquires a GPUDevice: Node (npm `webgpu`, Dawn) or a browser (navigator.gpu).
/// <reference types="@webgpu/types" />

/** Features the engine uses when the adapter has them. */
const WANTED_FEATURES: GPUFeatureName[] = ['timestamp-query', 'shader-f16', 'subgroups'];

export interface DeviceInfo {
  device: GPUDevice;
  /** Human-readable adapter name, e.g. "mesa llvmpipe (software)". */
  adapterName: string;
  features: ReadonlySet<string>;
  limits: GPUSupportedLimits;
  /** Smallest subgroup the adapter may run (0 when it has no subgroups or does not say). */
  subgroupMinSize: number;
}

// Dawn in Node crashes (SIGSEGV in its callback flush) when the `webgpu` instance is collected
// while a device lives: these module-level references keep the instance and adapter alive.
let gpuInstance: GPU | undefined;
let adapterRef: GPUAdapter | undefined;
let pending: Promise<DeviceInfo> | undefined;
let current: DeviceInfo | undefined;

const NO_ADAPTER_HELP =
  'No WebGPU adapter found. In Node, tessera uses Dawn (npm "webgpu"), which needs a Vulkan, Metal or ' +
  'D3D12 driver: on Debian bookworm run `npm run setup` as root (installs Mesa lavapipe from ' +
  'bookworm-backports). In a browser, enable WebGPU (Chromium: --enable-unsafe-webgpu).';

const isNode = typeof process !== 'undefined' && !!process.versions?.node && typeof window === 'undefined';

async function nodeGpu(): Promise<GPU> {
  // Dawn wants a writable XDG_RUNTIME_DIR before the instance is created.
  if (!process.env.XDG_RUNTIME_DIR) {
    const { mkdirSync } = await import('node:fs');
    const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
    const dir = `/tmp/tessera-xdg-${uid}`;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    process.env.XDG_RUNTIME_DIR = dir;
  }
  // The module name is held in a variable so browser bundles never try to resolve it.
  const moduleName = 'webgpu';
  const mod = (await import(/* @vite-ignore */ moduleName)) as {
    create: (flags: string[]) => GPU;
    globals: Record<string, unknown>;
  };
  Object.assign(globalThis, mod.globals);
  return mod.create([]);
}

async function acquire(): Promise<DeviceInfo> {
  const gpu = isNode ? await nodeGpu() : (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) throw new Error(NO_ADAPTER_HELP);
  gpuInstance = gpu;
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new Error(NO_ADAPTER_HELP);
  adapterRef = adapter;

  // Request the adapter's full limits: the defaults are half of what lavapipe offers
  // (16 KiB workgroup storage, 256 invocations), and kernels size their tiles from these.
  const requiredLimits: Record<string, number> = {};
  for (const key in adapter.limits) {
    const value = (adapter.limits as unknown as Record<string, unknown>)[key];
    // Dawn clamps the dynamic-offset limits itself and warns when asked for more.
    if (typeof value === 'number' && !key.startsWith('maxDynamic')) requiredLimits[key] = value;
  }
  const requiredFeatures = WANTED_FEATURES.filter((f) => adapter.features.has(f));
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  device.lost.then((info) => {
    if (current?.device === device) current = undefined;
    if (info.reason !== 'destroyed') console.error(`tessera: GPU device lost: ${info.message}`);
  });
  device.onuncapturederror = (ev: GPUUncapturedErrorEvent) => {
    console.error(`tessera: uncaptured WebGPU error: ${ev.error.message}`);
  };
  const info = adapter.info;
  const adapterName = [info?.vendor, info?.device || info?.description, info?.architecture ? `(${info.architecture})` : '']
    .filter(Boolean)
    .join(' ');
  const features = new Set<string>(device.features);
  const subgroupMinSize = features.has('subgroups') ? Number((info as unknown as { subgroupMinSize?: number }).subgroupMinSize ?? 0) : 0;
  current = { device, adapterName: adapterName || 'unknown adapter', features, limits: device.limits, subgroupMinSize };
  return current;
}

/** Acquires (once) and returns the GPU device with the adapter's full limits. */
export function getDevice(): Promise<DeviceInfo> {
  if (current) return Promise.resolve(current);
  pending ??= acquire().finally(() => (pending = undefined));
  return pending;
}

/** Whether subgroups of at least 8 invocations are guaranteed: the subgroup kernels (matmul,
 * flash attention, LayerNorm) give one workgroup of 8 to one subgroup and broadcast by lane. */
export function subgroupsOf8(): boolean {
  return currentDevice().subgroupMinSize >= 8;
}

/** Whether the adapter is a CPU rasteriser (lavapipe / llvmpipe, SwiftShader), where some kernels
 * take a layout that suits CPU caches and lanes rather than GPU memory coalescing. */
export function cpuAdapter(): boolean {
  return /llvmpipe|lavapipe|swiftshader/i.test(currentDevice().adapterName);
}

/** The device acquired by `getDevice()`; ops call this and need it to exist already. */
export function currentDevice(): DeviceInfo {
  if (!current) throw new Error('No GPU device yet: call `await init()` (or `await getDevice()`) before creating tensors.');
  return current;
}

/** Keeps the module-level references visible to tools that look for unused bindings. */
export function gpuHandles(): { instance: GPU | undefined; adapter: GPUAdapter | undefined } {
  return { instance: gpuInstance, adapter: adapterRef };
}

// Dawn's Node binding polls its device from `setImmediate` for as long as any promise it handed
// out is pending (AsyncRunner: tick, re-queue, tick…), looking the function up on the global
// object each time. That loop keeps one CPU core busy for the whole wait; with a software adapter
// the GPU's work runs on the same cores, so on a 2-core machine a third of the compute went to
// polling. While the engine waits for the GPU it therefore lends Dawn a `setImmediate` that keeps
// the immediate re-queue for the first millisecond (short waits stay short) and then polls once per
// timer tick (~1 ms). Browsers and other runtimes are unaffected. Longer spinning was measured
// (matmul + readback, medians of 25, 3 interleaved rounds, idle host): 4 ms of it took 256³ from
// 2.7–2.9 to 2.4–2.7 ms but 512³ from 10.7–11.1 to 12.0–14.3 and 20 ms 512³ to 16–17: the spinning
// core is one lavapipe would use. Polling with 0.1–0.25 ms futex sleeps (Atomics.wait) instead of the
// timer gained nothing measurable at 256³ (2.46–2.60 vs 2.53–2.57 ms).
const SPIN_MS = 1;
let quietWaiters = 0;
let quietSince = 0;
let nativeSetImmediate: typeof setImmediate | undefined;

function quietSetImmediate(callback: () => void): unknown {
  return performance.now() - quietSince < SPIN_MS ? nativeSetImmediate!(callback) : setTimeout(callback, 1);
}

/** Awaits a promise that settles when the GPU finishes, without busy-polling a CPU core. */
export async function gpuWait<T>(promise: Promise<T>): Promise<T> {
  if (!isNode || typeof globalThis.setImmediate !== 'function') return promise;
  if (quietWaiters++ === 0) {
    nativeSetImmediate = globalThis.setImmediate;
    quietSince = performance.now();
    globalThis.setImmediate = quietSetImmediate as unknown as typeof setImmediate;
  }
  try {
    return await promise;
  } finally {
    if (--quietWaiters === 0) {
      globalThis.setImmediate = nativeSetImmediate!;
      nativeSetImmediate = undefined;
    }
  }
}
