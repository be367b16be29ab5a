// How good a frozen encoder's features are, without fine-tuning it: k-nearest-neighbour
// classification as DINO's eval_knn.py does it (cosine similarity to every training image, the
// k nearest vote with weights exp(sim / T)), and a linear probe (a linear classifier trained on
// the frozen features, standardised, as MAE's main_linprobe.py with its BatchNorm without
// affine). Features are the class token after the encoder's final norm.
import * as T from '../engine/index.js';
import { VisionTransformer } from '../models/vit.js';
import { checkpointArch, encoderConfig, loadEncoderWeights, loadWeights, readCheckpoint } from './checkpoint.js';
import { BatchLoader, type Dataset, permutation } from './data.js';
import { ProgressBar } from './progress.js';
import { warmupCosine } from './schedule.js';

/** The encoder of a classifier, MAE or DINO checkpoint (its teacher), as a ViT (the new head is
 * left unused). */
export function encoderFromCheckpoint(path: string): VisionTransformer {
  const info = readCheckpoint(path);
  if (checkpointArch(info) !== 'vit') {
    const model = new VisionTransformer(encoderConfig(info, 'vit-fmnist-p4'), 0);
    loadEncoderWeights(model, info, path);
    return model;
  }
  const model = new VisionTransformer(info.config, 0);
  loadWeights(model, info, path);
  return model;
}

/** Class-token features [N, D] of a normalised dataset; `progress` names a bar to show. */
export async function extractFeatures(model: VisionTransformer, ds: Dataset, batchSize = 500, progress?: string): Promise<Float32Array> {
  const D = model.config.embed_dim;
  const out = new Float32Array(ds.count * D);
  const order = Int32Array.from({ length: ds.count }, (_, i) => i);
  const steps = Math.ceil(ds.count / batchSize);
  const bar = progress ? new ProgressBar(progress, steps, batchSize, { logEvery: 10 }) : null;
  for (let start = 0; start < ds.count; start += batchSize) {
    const n = Math.min(batchSize, ds.count - start);
    const loader = new BatchLoader(ds, n);
    loader.load(order, start);
    const f = T.noGrad(() => T.scope(() => T.reshape(T.slice(model.forwardFeatures(loader.x, { training: false }), [0, 0], [n, 1]), [n, D])));
    await f.data(out.subarray(start * D, (start + n) * D));
    f.dispose();
    loader.dispose();
    bar?.update(start / batchSize + 1, {});
  }
  bar?.finish();
  return out;
}

function l2normalize(f: Float32Array, D: number): Float32Array {
  const out = new Float32Array(f.length);
  for (let i = 0; i < f.length; i += D) {
    let s = 0;
    for (let d = 0; d < D; d++) s += f[i + d]! ** 2;
    const inv = 1 / Math.max(Math.sqrt(s), 1e-12);
    for (let d = 0; d < D; d++) out[i + d] = f[i + d]! * inv;
  }
  return out;
}

/** DINO's weighted k-NN: predictions for `testF` from the `k` most cosine-similar rows of
 * `trainF`, each voting exp(sim / temperature) for its label. Similarities come from GPU matmuls
 * in chunks of test rows; the top k of each row is picked on the CPU. */
export async function knnPredict(trainF: Float32Array, trainY: Int32Array, testF: Float32Array, D: number, classes: number, k = 20, temperature = 0.07): Promise<Int32Array> {
  const nTrain = trainY.length;
  const nTest = testF.length / D;
  if (trainF.length !== nTrain * D) throw new Error(`knn: ${trainF.length} train feature values for ${nTrain} labels of dim ${D}`);
  const kk = Math.min(k, nTrain);
  const bank = T.keep(T.tensor(l2normalize(trainF, D), [nTrain, D]));
  const queries = l2normalize(testF, D);
  const pred = new Int32Array(nTest);
  const chunk = Math.max(1, Math.floor(16_000_000 / nTrain));
  const sims = new Float32Array(chunk * nTrain);
  const topSim = new Float64Array(kk);
  const topIdx = new Int32Array(kk);
  const votes = new Float64Array(classes);
  try {
    for (let start = 0; start < nTest; start += chunk) {
      const n = Math.min(chunk, nTest - start);
      const s = T.noGrad(() => T.scope(() => T.matmul(T.tensor(queries.subarray(start * D, (start + n) * D), [n, D]), bank, { transB: true })));
      await s.data(sims.subarray(0, n * nTrain));
      s.dispose();
      for (let r = 0; r < n; r++) {
        // Insertion into a sorted top-k: k is small (20) against the bank.
        topSim.fill(-Infinity);
        const row = r * nTrain;
        for (let j = 0; j < nTrain; j++) {
          const v = sims[row + j]!;
          if (v <= topSim[kk - 1]!) continue;
          let p = kk - 1;
          while (p > 0 && topSim[p - 1]! < v) {
            topSim[p] = topSim[p - 1]!;
            topIdx[p] = topIdx[p - 1]!;
            p--;
          }
          topSim[p] = v;
          topIdx[p] = j;
        }
        votes.fill(0);
        for (let q = 0; q < kk; q++) votes[trainY[topIdx[q]!]!]! += Math.exp(topSim[q]! / temperature);
        let best = 0;
        for (let c = 1; c < classes; c++) if (votes[c]! > votes[best]!) best = c;
        pred[start + r] = best;
      }
    }
  } finally {
    bank.dispose();
  }
  return pred;
}

export interface LinearProbeOptions {
  epochs?: number;
  batchSize?: number;
  lr?: number;
  weightDecay?: number;
  seed?: number;
}

/** A linear classifier on frozen features, standardised with the training set's mean and
 * spread; AdamW with warmup and cosine. Returns test predictions. */
export async function linearProbe(trainF: Float32Array, trainY: Int32Array, testF: Float32Array, D: number, classes: number, opts: LinearProbeOptions = {}): Promise<Int32Array> {
  const { epochs = 30, batchSize = 256, lr = 3e-3, weightDecay = 1e-4, seed = 0 } = opts;
  const n = trainY.length;
  const mean = new Float64Array(D);
  const sq = new Float64Array(D);
  for (let i = 0; i < n; i++) for (let d = 0; d < D; d++) mean[d]! += trainF[i * D + d]! / n;
  for (let i = 0; i < n; i++) for (let d = 0; d < D; d++) sq[d]! += (trainF[i * D + d]! - mean[d]!) ** 2 / n;
  const standardise = (f: Float32Array) => f.map((v, i) => (v - mean[i % D]!) / Math.sqrt(sq[i % D]! + 1e-6));
  const [xs, xt] = [standardise(trainF), standardise(testF)];
  const weight = T.keep(T.zeros([classes, D]));
  const bias = T.keep(T.zeros([classes]));
  weight.requiresGrad = bias.requiresGrad = true;
  const opt = new T.AdamW([{ params: [weight], weightDecay }, { params: [bias], weightDecay: 0 }], { lr });
  const steps = Math.max(1, Math.floor(n / batchSize));
  const bx = new Float32Array(batchSize * D);
  const by = new Int32Array(batchSize);
  const x = T.keep(T.zeros([batchSize, D]));
  const y = T.keep(T.zeros([batchSize], 'int32'));
  try {
    for (let e = 0; e < epochs; e++) {
      const order = permutation(n, seed * 1000 + e);
      for (let s = 0; s < steps; s++) {
        for (let b = 0; b < batchSize; b++) {
          const i = order[s * batchSize + b]!;
          bx.set(xs.subarray(i * D, (i + 1) * D), b * D);
          by[b] = trainY[i]!;
        }
        T.upload(x, bx);
        T.upload(y, by);
        opt.lr = warmupCosine(e * steps + s, epochs * steps, lr, steps, 0);
        T.scope(() => {
          T.crossEntropy(T.linear(x, weight, bias), y).backward();
          opt.step();
          opt.zeroGrad();
        });
      }
      await T.sync();
    }
    const logits = T.noGrad(() => T.scope(() => T.linear(T.tensor(xt, [xt.length / D, D]), weight, bias)));
    const l = (await logits.data()) as Float32Array;
    logits.dispose();
    const pred = new Int32Array(xt.length / D);
    for (let i = 0; i < pred.length; i++) {
      let best = 0;
      for (let c = 1; c < classes; c++) if (l[i * classes + c]! > l[i * classes + best]!) best = c;
      pred[i] = best;
    }
    return pred;
  } finally {
    for (const t of [weight, bias, x, y]) t.dispose();
    opt.dispose();
  }
}

export function accuracyOf(pred: Int32Array, labels: Int32Array): number {
  let correct = 0;
  for (let i = 0; i < pred.length; i++) if (pred[i] === labels[i]) correct++;
  return correct / pred.length;
}
