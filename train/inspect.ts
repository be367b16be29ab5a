// What a trained ViT attends to: mean attention distance per layer and head (the ViT paper's
// Fig. 7, Raghu et al. 2021 §4) and attention rollout of the class token (Abnar & Zuidema 2020),
// from the softmax attention each block hands back while the model runs.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as T from '../engine/index.js';
import { type VisionTransformer } from '../models/vit.js';
import { BatchLoader, type Dataset } from './data.js';
import { writeImageGrid } from './image.js';
import { renderPng, type Spec } from './plot.js';

/** Pixel distance between the centres of patches i and j of a g×g grid of p-pixel patches. */
function patchDistance(i: number, j: number, g: number, p: number): number {
  return p * Math.hypot(Math.floor(i / g) - Math.floor(j / g), (i % g) - (j % g));
}

/** Σ over images and patch queries of Σ_j A_ij ‖p_i − p_j‖ for each head, from attention
 * probabilities (B, nh, N, N) whose first `prefix` tokens are not patches. Rows are restricted
 * to the patch columns and renormalised over them (the class token's share is left out, not
 * counted as distance 0). Returns per-head sums and the number of (image, query) rows. */
export function attentionDistanceSums(probs: Float32Array, B: number, nh: number, N: number, prefix: number, grid: number, patch: number): { sums: Float64Array; rows: number } {
  const L = N - prefix;
  if (L !== grid * grid) throw new Error(`attention distance: ${L} patch tokens do not form a ${grid}×${grid} grid`);
  const dist = new Float64Array(L * L);
  for (let i = 0; i < L; i++) for (let j = 0; j < L; j++) dist[i * L + j] = patchDistance(i, j, grid, patch);
  const sums = new Float64Array(nh);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < nh; h++) {
      const base = (b * nh + h) * N * N;
      for (let i = 0; i < L; i++) {
        const row = base + (prefix + i) * N + prefix;
        let [mass, d] = [0, 0];
        for (let j = 0; j < L; j++) {
          mass += probs[row + j]!;
          d += probs[row + j]! * dist[i * L + j]!;
        }
        sums[h]! += mass > 0 ? d / mass : 0;
      }
    }
  }
  return { sums, rows: B * L };
}

/** Mean distance between two patch centres under uniform attention: the reference for "global". */
export function uniformAttentionDistance(grid: number, patch: number): number {
  const L = grid * grid;
  let s = 0;
  for (let i = 0; i < L; i++) for (let j = 0; j < L; j++) s += patchDistance(i, j, grid, patch);
  return s / (L * L);
}

/** Attention rollout for one image: layers' (nh, N, N) probabilities averaged over heads, each
 * mixed with the identity for the residual (0.5·W + 0.5·I), multiplied from the first layer up;
 * returns the class token's row over the patch tokens, scaled to a maximum of 1. */
export function classTokenRollout(layers: Float32Array[], nh: number, N: number, prefix: number): Float64Array {
  let R: Float64Array | null = null;
  for (const probs of layers) {
    const A = new Float64Array(N * N);
    for (let h = 0; h < nh; h++) for (let k = 0; k < N * N; k++) A[k]! += probs[h * N * N + k]! / nh;
    for (let i = 0; i < N; i++) {
      let s = 0;
      for (let j = 0; j < N; j++) {
        A[i * N + j] = 0.5 * A[i * N + j]! + (i === j ? 0.5 : 0);
        s += A[i * N + j]!;
      }
      for (let j = 0; j < N; j++) A[i * N + j]! /= s;
    }
    if (!R) R = A;
    else {
      const next = new Float64Array(N * N);
      for (let i = 0; i < N; i++) for (let k = 0; k < N; k++) {
        const a = A[i * N + k]!;
        if (a === 0) continue;
        for (let j = 0; j < N; j++) next[i * N + j]! += a * R[k * N + j]!;
      }
      R = next;
    }
  }
  const out = Float64Array.from(R!.subarray(prefix, N));
  const max = Math.max(...out);
  return out.map((v) => v / (max || 1));
}

export interface InspectResult {
  /** Mean attention distance in pixels, [layer][head]. */
  distance: number[][];
  uniform: number;
  images: number;
}

/** Runs `images` test images through the model, capturing every block's attention. */
export async function inspectModel(model: VisionTransformer, ds: Dataset, opts: { images?: number; batchSize?: number; out: string; title: string; rawImages: Float32Array }): Promise<InspectResult> {
  const c = model.config;
  if (c.conv_stem?.length) throw new Error('inspect: attention distances need patch tokens on a grid of patches; a conv stem has no patch size');
  const prefix = model.numPrefixTokens;
  const grid = c.img_size / c.patch_size;
  const N = grid * grid + prefix;
  const nh = c.num_heads;
  const count = Math.min(opts.images ?? 256, ds.count);
  const batch = Math.min(opts.batchSize ?? 64, count);
  const sums = model.blocks.map(() => new Float64Array(nh));
  let rows = 0;
  const rollouts: Float64Array[] = [];
  const captured: T.Tensor[] = [];
  // Kept past the forward pass's scope until read.
  model.blocks.forEach((blk, i) => (blk.attn.capture = (p) => (captured[i] = T.keep(p))));
  const loader = new BatchLoader(ds, batch);
  const order = Int32Array.from({ length: ds.count }, (_, i) => i);
  try {
    for (let start = 0; start + batch <= count; start += batch) {
      loader.load(order, start);
      T.noGrad(() => T.scope(() => void model.forward(loader.x, { training: false })));
      const layers: Float32Array[] = [];
      for (let l = 0; l < model.blocks.length; l++) {
        layers.push((await captured[l]!.data()) as Float32Array);
        captured[l]!.dispose();
      }
      layers.forEach((p, l) => {
        const r = attentionDistanceSums(p, batch, nh, N, prefix, grid, c.patch_size);
        for (let h = 0; h < nh; h++) sums[l]![h]! += r.sums[h]!;
        if (l === 0) rows += r.rows;
      });
      for (let b = 0; start + b < 8 && b < batch; b++) rollouts.push(classTokenRollout(layers.map((p) => p.subarray(b * nh * N * N, (b + 1) * nh * N * N)), nh, N, prefix));
    }
  } finally {
    model.blocks.forEach((blk) => (blk.attn.capture = null));
    loader.dispose();
  }
  const images = Math.floor(count / batch) * batch;
  const distance = sums.map((s) => Array.from(s, (v) => v / rows));
  const uniform = uniformAttentionDistance(grid, c.patch_size);
  await writeInspectFiles(distance, uniform, images, rollouts, opts, c.in_chans, c.img_size, c.patch_size);
  return { distance, uniform, images };
}

async function writeInspectFiles(distance: number[][], uniform: number, images: number, rollouts: Float64Array[], opts: { out: string; title: string; rawImages: Float32Array }, C: number, S: number, P: number): Promise<void> {
  const points = distance.flatMap((heads, l) => heads.map((d, h) => ({ layer: l, head: `head ${h}`, distance: d })));
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: `${opts.title}: mean attention distance (${images} images; uniform attention ${uniform.toFixed(1)} px)`,
    width: 420,
    height: 240,
    layer: [
      { data: { values: points }, mark: { type: 'point', filled: true, size: 60 }, encoding: { x: { field: 'layer', type: 'quantitative', axis: { tickMinStep: 1 } }, y: { field: 'distance', type: 'quantitative', title: 'mean attention distance (pixels)', scale: { domain: [0, Math.ceil(uniform * 1.2)] } }, color: { field: 'head', type: 'nominal' } } },
      { data: { values: [{ y: uniform }] }, mark: { type: 'rule', strokeDash: [4, 4] }, encoding: { y: { field: 'y', type: 'quantitative' } } },
    ],
  } as unknown as Spec;
  await renderPng(spec, join(opts.out, 'attention-distance.png'));
  const g = S / P;
  const plane = C * S * S;
  const cells = rollouts.map((r, b) => {
    // The image in grey with the rollout as a red overlay, patch by patch.
    const img = opts.rawImages.subarray(b * plane, (b + 1) * plane);
    const original = new Float32Array(3 * S * S);
    const rgb = new Float32Array(3 * S * S);
    for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) {
      const at = y * S + x;
      for (let k = 0; k < 3; k++) original[k * S * S + at] = img[(C === 3 ? k : 0) * S * S + at]!;
      const v = (original[at]! + original[S * S + at]! + original[2 * S * S + at]!) / 3;
      const a = r[Math.floor(y / P) * g + Math.floor(x / P)]!;
      rgb[at] = Math.min(1, 0.5 * v + a);
      rgb[S * S + at] = 0.5 * v;
      rgb[2 * S * S + at] = 0.5 * v;
    }
    return { original: { pixels: original }, overlay: { pixels: rgb } };
  });
  writeImageGrid({
    title: `${opts.title}: attention rollout of the class token`,
    columns: cells.map((_, b) => `test ${b}`),
    rows: [{ label: 'image', cells: cells.map((c) => c.original) }, { label: 'rollout (red)', cells: cells.map((c) => c.overlay) }],
    channels: 3,
    height: S,
    width: S,
    zoom: 4,
  }, join(opts.out, 'rollout.png'));
  const md = [
    `# ${opts.title}`,
    '',
    `Mean attention distance in pixels over ${images} test images (patch queries, attention restricted to patch keys and renormalised); uniform attention would give ${uniform.toFixed(2)} px.`,
    '',
    `| layer | ${distance[0]!.map((_, h) => `head ${h}`).join(' | ')} | mean |`,
    `|---:|${distance[0]!.map(() => '---:').join('|')}|---:|`,
    ...distance.map((heads, l) => `| ${l} | ${heads.map((d) => d.toFixed(2)).join(' | ')} | ${(heads.reduce((a, b) => a + b, 0) / heads.length).toFixed(2)} |`),
    '',
    '![attention distance](attention-distance.png)',
    '',
    '![rollout](rollout.png)',
    '',
  ].join('\n');
  writeFileSync(join(opts.out, 'inspect.md'), md);
}

// ---- CKA (Kornblith et al. 2019, as Raghu et al. use it) ----------------------------------------

/** Linear CKA from two Gram matrices of column-centred representations of the same m examples,
 * K = X̃X̃ᵀ and L = ỸỸᵀ (m × m, row-major): tr(KL) / √(tr(KK) · tr(LL)), which equals
 * ‖ỸᵀX̃‖²_F / (‖X̃ᵀX̃‖_F · ‖ỸᵀỸ‖_F). */
export function linearCka(K: Float64Array, L: Float64Array): number {
  let [kl, kk, ll] = [0, 0, 0];
  for (let i = 0; i < K.length; i++) {
    kl += K[i]! * L[i]!;
    kk += K[i]! * K[i]!;
    ll += L[i]! * L[i]!;
  }
  return kl / Math.sqrt(kk * ll);
}

/** The centred Gram matrix of rows x [m, p] (each column's mean removed), on the GPU. */
export function centredGram(x: T.Tensor): T.Tensor {
  const c = T.sub(x, T.mean(x, 0, { keepdim: true }));
  return T.matmul(c, c, { transB: true });
}

/** Gram matrices of every layer's tokens (flattened, [m, N·D]) for m images in one batch. */
export async function layerGrams(model: VisionTransformer, images: T.Tensor): Promise<Float64Array[]> {
  const grams: T.Tensor[] = [];
  const m = images.shape[0]!;
  T.noGrad(() => T.scope(() => void model.forwardFeatures(images, { training: false }, (layer, h) => (grams[layer] = T.keep(centredGram(T.reshape(h, [m, h.size / m])))))));
  const out: Float64Array[] = [];
  for (const g of grams) {
    out.push(Float64Array.from(await g.data()));
    g.dispose();
  }
  return out;
}

/** CKA between every layer of model a (rows) and of model b (columns) on the same images. */
export async function ckaMatrix(a: VisionTransformer, b: VisionTransformer, images: T.Tensor): Promise<number[][]> {
  const ga = await layerGrams(a, images);
  const gb = a === b ? ga : await layerGrams(b, images);
  return ga.map((K) => gb.map((L) => linearCka(K, L)));
}

/** A heatmap of the CKA matrix (layer 0 = the embedded tokens before the first block). */
export async function writeCkaPng(cka: number[][], path: string, title: string, rowsName: string, colsName: string): Promise<void> {
  const values = cka.flatMap((row, i) => row.map((v, j) => ({ a: i, b: j, cka: v })));
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    width: 24 * cka[0]!.length,
    height: 24 * cka.length,
    data: { values },
    mark: 'rect',
    encoding: {
      x: { field: 'b', type: 'ordinal', title: `${colsName} layer` },
      y: { field: 'a', type: 'ordinal', title: `${rowsName} layer`, sort: 'descending' },
      color: { field: 'cka', type: 'quantitative', scale: { domain: [0, 1], scheme: 'magma' }, title: 'CKA' },
    },
  } as unknown as Spec;
  await renderPng(spec, path);
}
