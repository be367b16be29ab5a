// The peers run in this Node process on the same Dawn adapter as tessera: TensorFlow.js with its
// WebGPU backend and jax-js (webgpu and wasm devices) find the GPU through a `navigator` shim.
import { getDevice, gpuHandles } from '../../engine/index.js';

let shimmed = false;

export async function shimNavigator(): Promise<void> {
  if (shimmed) return;
  await getDevice();
  const gpu = gpuHandles().instance;
  if (!gpu) throw new Error('no WebGPU instance for the peers');
  Object.defineProperty(globalThis, 'navigator', { value: { gpu, userAgent: 'Node', hardwareConcurrency: 2 }, configurable: true });
  shimmed = true;
}

export type Tf = typeof import('@tensorflow/tfjs');
let tfPromise: Promise<Tf> | undefined;

/** TensorFlow.js 4.22 (the union package: gradients and chained ops) on its WebGPU backend. */
export function loadTf(): Promise<Tf> {
  tfPromise ??= (async () => {
    await shimNavigator();
    const tf = await import('@tensorflow/tfjs');
    await import('@tensorflow/tfjs-backend-webgpu');
    if (!(await tf.setBackend('webgpu'))) throw new Error('tfjs: the webgpu backend did not initialise');
    await tf.ready();
    return tf;
  })();
  return tfPromise;
}

export type Jax = typeof import('@jax-js/jax');
let jaxPromise: Promise<{ jax: Jax; devices: string[] }> | undefined;

/** jax-js with all its backends started. */
export function loadJax(): Promise<{ jax: Jax; devices: string[] }> {
  jaxPromise ??= (async () => {
    await shimNavigator();
    const jax = await import('@jax-js/jax');
    const devices = (await jax.init()) as string[];
    return { jax, devices };
  })();
  return jaxPromise;
}
