// tessera's engine: the public API. Import from here; nothing in engine/ knows about models.
import { installTapeOps } from './autograd.js';
import { add } from './ops/elementwise.js';
import { onesLike } from './ops/creation.js';
import { copy } from './ops/movement.js';
import { rt } from './dispatch.js';

installTapeOps({ add, onesLike, copy });

export { backward, detach, isGradEnabled, noGrad } from './autograd.js';
export { cpuAdapter, currentDevice, getDevice, type DeviceInfo, gpuHandles, gpuWait, subgroupsOf8 } from './device.js';
export { type Launch, rt, Runtime } from './dispatch.js';
export { keep, scope } from './memory.js';
export { AdamW, type AdamWOptions, clipGradNorm, type ParamGroup, SGD, type SGDOptions, WeightEma, type WeightEmaOptions } from './optim.js';
export { arange, cast, fill, full, ones, onesLike, zeros, zerosLike } from './ops/creation.js';
export { conv2d, type Conv2dOptions, im2col, type Im2colOptions, patchEmbed } from './ops/conv.js';
export * from './ops/elementwise.js';
export { layerNorm, useLayerNormKernel } from './ops/layernorm.js';
export { linear, linearGelu, matmul, type MatmulForm, type MatmulKernelKind, type MatmulOptions, type MatmulShape, matmulShapesOf, type MatmulTuning, type ShapeTuning, tuneMatmul, tuneMatmulShapes, useMatmulKernel } from './ops/matmul.js';
export { concat, copy, expand, gather, type GatherOptions, indexSelect, pad, permute, reshape, slice, transpose } from './ops/movement.js';
export { dropout, manualSeed, rand, randn } from './ops/random.js';
export { argsort } from './ops/sort.js';
export { max, mean, type ReduceKernelKind, type ReduceOptions, sum, sumToShape, useReduceKernel, variance } from './ops/reduce.js';
export { crossEntropy, type CrossEntropyOptions, jsdLoss, logSoftmax, softmax } from './ops/softmax.js';
export { attention, type AttentionOptions, type FlashKernelFamily, useFlashKernels, useFlashRowsPerLane } from './ops/attention.js';
export { launchMatmul, type MatmulLaunch, type Operand } from './ops/matmul.js';
export { type DType, init, numel, parameter, type Shape, Tensor, tensor, upload } from './tensor.js';

/** Number of GPU buffers held by live tensors (pooled free buffers are not counted). */
export const liveBuffers = (): number => rt().pool.liveCount;
/** Bytes held by live tensors (size classes). */
export const liveBytes = (): number => rt().pool.liveBytes;
/** Submits all recorded GPU work without waiting. */
export const flush = (): void => rt().flush();
/** Submits and waits for the GPU; throws any WebGPU error seen. */
export const sync = (): Promise<void> => rt().sync();
/** The WGSL of every kernel compiled so far (set TESSERA_PRINT_KERNELS=1 to print them as built). */
export const compiledKernels = () => rt().kernels();

import { Profiler, type KernelRecord } from './profiler.js';
export { chromeTrace, type KernelRecord, type KernelSummary, Profiler, summarize, summaryTable } from './profiler.js';

/** Starts recording per-dispatch GPU time (timestamp queries when the adapter has them). */
export function startProfile(): Profiler {
  const r = rt();
  r.flush();
  r.profiler = new Profiler(r.device);
  r.profiler.start();
  return r.profiler;
}

/** Stops recording; resolves when every timestamp has been read back. */
export async function stopProfile(): Promise<{ records: KernelRecord[]; profiler: Profiler }> {
  const r = rt();
  const p = r.profiler;
  if (!p) throw new Error('stopProfile(): no profile is running (call startProfile() first)');
  await r.sync();
  r.profiler = null;
  await p.settle();
  return { records: p.records, profiler: p };
}

export {
  affineSample,
  AUGMIX_OPS,
  augmentFinish,
  type FinishOptions,
  AUGMENT_OPS,
  augmentLayer,
  type AugmentLayerOptions,
  type AugmentOpName,
  type AugmentPolicy,
  colorApply,
  type ColorOptions,
  colorParams,
  eraseApply,
  eraseParams,
  type ErasingOptions,
  geometryParams,
  type GeometryOptions,
  mixApply,
  mixBatch,
  mixParams,
  type MixOptions,
  padCrop,
  randAugment,
  type RandAugmentOptions,
  randomColor,
  randomErasing,
  randomFlip,
  randomResizedCrop,
  softTargets,
  type SoftTargetOptions,
} from './ops/augment.js';
export { corrupt, type Corruption, CORRUPTIONS, SEVERITY } from './ops/corrupt.js';
export { batchNorm2d, batchNormChannelsLast, type BatchNormOptions } from './ops/batchnorm.js';
