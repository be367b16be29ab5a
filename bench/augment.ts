// Augmentation throughput, images/s: the GPU pipeline against a plain-TypeScript CPU pipeline
// doing the same ops on the same batch (engine/reference/augment.ts, fed by the CPU twin of the
// Philox generator), and the share of a training step that augmentation takes.
import * as T from '../engine/index.js';
import { augmentLayerUniforms } from '../engine/ops/augment.js';
import * as R from '../engine/reference/augment.js';
import { uniform } from '../engine/reference/random.js';
import { GEOMETRY_UNIFORMS } from '../kernels/augment-geometry.js';
import { ERASE_UNIFORMS, MIX_UNIFORMS } from '../kernels/augment-mix.js';
import { OP_UNIFORMS } from '../kernels/augment-ops.js';
import { presetConfig, VisionTransformer } from '../models/vit.js';
import { AUGMENT_DEFAULTS, augmentBatch } from '../train/augment.js';
import { runSuite, trainStep, type BenchCase, type SuiteRow } from './harness.js';

const MEAN = [0.286];
const STD = [0.353];

/** The pipeline `--aug randaugment --random-erasing 0.25 --mixup 0.8 --cutmix 1` on the CPU. */
function cpuPipeline(x: Float64Array, shape: number[], seed: number): Float64Array {
  const [B, C, H, W] = shape as [number, number, number, number];
  const theta = R.geometryParams(uniform(B * GEOMETRY_UNIFORMS, seed, 1), B, H, W, { mode: 'padCrop', scale: [0.08, 1], ratio: [0.75, 4 / 3], pad: 4, flipProb: 0.5 });
  let img = R.affineSample({ data: x, shape }, theta, 0);
  const u = uniform(B * 2 * OP_UNIFORMS, seed, 2);
  for (let l = 0; l < 2; l++) img = R.augmentLayer(img, u, augmentLayerUniforms(shape, l, 2, {}));
  const plane = H * W;
  for (let i = 0; i < img.data.length; i++) {
    const c = Math.floor(i / plane) % C;
    img.data[i] = (img.data[i]! - MEAN[c]!) / STD[c]!;
  }
  const boxes = R.eraseParams(uniform(B * ERASE_UNIFORMS, seed, 3), B, H, W, { prob: 0.25, area: [0.02, 1 / 3], ratio: [0.3, 1 / 0.3] });
  img = R.eraseApply(img, boxes, uniform(img.data.length, seed, 4));
  const params = R.mixParams(uniform(MIX_UNIFORMS, seed, 5), H, W, { mixupAlpha: 0.8, cutmixAlpha: 1, switchProb: 0.5, prob: 1 });
  return R.mixApply(img, params).data;
}

export async function augmentSuite(): Promise<SuiteRow[]> {
  await T.init();
  const cases: BenchCase[] = [];
  const B = 128;
  const shape = [B, 1, 28, 28];
  const host = Float32Array.from({ length: B * 784 }, (_, i) => ((i * 2654435761) >>> 24) / 255);
  const x = T.keep(T.tensor(host, shape));
  const labels = T.keep(T.tensor(Int32Array.from({ length: B }, (_, i) => i % 10), [B]));
  const recipe = { ...AUGMENT_DEFAULTS, aug: 'randaugment' as const, randomErasing: 0.25, mixup: 0.8, cutmix: 1 };
  const norm = { mean: MEAN, std: STD, labelSmoothing: 0.1 };
  let seed = 0;
  // Sustained throughput: four batches are recorded before waiting, as in training, where the
  // GPU never waits for augmentation alone; one wait per batch is the second row.
  const gpuBatches = (n: number) => async () => {
    for (let i = 0; i < n; i++) {
      T.manualSeed(seed++);
      const r = augmentBatch(x, labels, 10, recipe, norm);
      r.images.dispose();
      r.targets?.dispose();
    }
    await T.sync();
  };
  cases.push({ name: 'tessera GPU randaugment+erasing+mixup', work: 4 * B, run: gpuBatches(4) });
  cases.push({ name: 'tessera GPU, waiting after every batch', work: B, run: gpuBatches(1) });
  const x64 = Float64Array.from(host);
  cases.push({ name: 'plain TypeScript CPU, same ops', work: B, run: () => void cpuPipeline(x64, shape, seed++) });
  // A whole training step of the default model with and without the pipeline: the difference is
  // augmentation's share of the step.
  const model = new VisionTransformer(presetConfig('vit-fmnist-tiny'), 0);
  const opt = new T.AdamW(model.paramGroups(0.05), { lr: 1e-4 });
  const step = (augment: boolean) => async () => {
    T.manualSeed(seed++);
    await trainStep(opt, () => {
      const batch = augment ? augmentBatch(x, labels, 10, recipe, norm) : null;
      return T.crossEntropy(model.forward(batch?.images ?? x, { training: true }).logits, batch?.targets ?? labels);
    });
  };
  cases.push({ name: 'vit-fmnist-tiny step, no augmentation', work: B, run: step(false) });
  cases.push({ name: 'vit-fmnist-tiny step, with the GPU pipeline', work: B, run: step(true) });
  const rows = await runSuite('augment', cases, {
    baseline: 'plain TypeScript CPU, same ops',
    rateUnit: 'images/s',
    note: 'Batch of 128 Fashion-MNIST-sized images (1×28×28): pad-4 crop + flip, RandAugment (2 ops, magnitude 9, noise 0.5, p 0.5), ' +
      'normalise, random erasing (p 0.25), Mixup 0.8 / CutMix 1.0 with soft targets. The GPU rows wait for the GPU to finish (the batch stays on the GPU for the model): after 4 batches, and after each; ' +
      'the CPU row runs the same ops with the float64 reference code on one core. The step rows give augmentation\'s share of a training step.',
    minSamples: 5,
    maxTime: 6,
  });
  x.dispose();
  labels.dispose();
  model.dispose();
  opt.dispose();
  return rows;
}
