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
// polling. While the engine waits for the GPU it therefore lends Dawn a `setImmediate` that sleeps
// the main thread (Atomics.wait, a futex: no core is used) for a tenth of the time waited so far,
// at least 50 µs, before each poll, and past 10 ms polls from a 1 ms timer so that long waits leave
// the event loop free. A short wait thus ends within ~10% of its length. The previous scheme spun
// for the first millisecond and then polled from the timer: the spin took one of lavapipe's two
// cores, so a 1 ms product no longer finished inside it and waited for one or two timer ticks
// (traced: 2.3–3.2 ms). Measured interleaved in one process, medians of 28, product + readback:
// 256³ 2.63 → 1.68 ms, 6400×64·64×192 8.81 → 7.39; attention forward+backward B128 h4 N50 d16
// with dQKV read back, flash 16.2 → 15.7 ms, unfused 42.1 → 41.8; ViT training steps unchanged
// within noise (vit-fmnist-p4 322.5 / 316.0 ms, tiny 142.9 / 134.6). Browsers and other runtimes
// are unaffected.
const MIN_SLEEP_MS = 0.05;
let quietWaiters = 0;
let quietSince = 0;
let nativeSetImmediate: typeof setImmediate | undefined;
const sleeper = typeof SharedArrayBuffer === 'function' ? new Int32Array(new SharedArrayBuffer(4)) : null;

function quietSetImmediate(callback: () => void): unknown {
  const sleepMs = Math.max(MIN_SLEEP_MS, (performance.now() - quietSince) / 10);
  if (sleepMs >= 1 || !sleeper) return setTimeout(callback, 1);
  Atomics.wait(sleeper, 0, 0, sleepMs);
  return nativeSetImmediate!(callback);
}

/** Awaits a promise that settles when the GPU finishes, without busy-polling a CPU core. */
export async function gpuWait<T>(promise: Promise<T>): Promise<T> {
  if (!isNode || typeof globalThis.setImmediate !== 'function') return promise;
  // A nested wait (the benchmark harness wraps whole cases) restarts the clock: the sleep follows
  // the wait for the newest promise.
  quietSince = performance.now();
  if (quietWaiters++ === 0) {
    nativeSetImmediate = globalThis.setImmediate;
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
