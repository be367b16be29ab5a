// safetensors, written and read by our own code (huggingface/safetensors "Format"):
//   8 bytes   N, u64 little-endian: header length
//   N bytes   UTF-8 JSON {name: {dtype, shape, data_offsets: [begin, end)}, __metadata__: {str: str}}
//             padded with spaces to a multiple of 8 so the data starts 8-byte aligned
//   rest      the tensors' bytes, little-endian, row-major, packed in header order
// Writes are atomic: a temporary file in the same folder, fsync, rename (then fsync the folder).
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import * as T from '../engine/index.js';
import { type DINOConfig, vitConfigFromDino } from '../models/dino.js';
import { type ParamInfo } from '../models/layers.js';
import { type MAEConfig, vitConfigFromMae } from '../models/mae.js';
import { presetConfig, type ViTConfig, VisionTransformer } from '../models/vit.js';

export type STDtype = 'F32' | 'I32' | 'F64' | 'I64' | 'U8' | 'F16' | 'BF16' | 'I8' | 'I16' | 'U16' | 'U32' | 'U64' | 'BOOL';
const DTYPE_BYTES: Record<STDtype, number> = { F32: 4, I32: 4, F64: 8, I64: 8, U8: 1, F16: 2, BF16: 2, I8: 1, I16: 2, U16: 2, U32: 4, U64: 8, BOOL: 1 };
/** The reference implementation refuses headers over 100 MB (a DoS guard); so do we. */
export const MAX_HEADER_BYTES = 100_000_000;

export interface StoredTensor {
  dtype: STDtype;
  shape: number[];
  data: Float32Array | Int32Array | Uint8Array;
}

export interface SafeTensors {
  tensors: Map<string, StoredTensor>;
  metadata: Record<string, string>;
}

export class CheckpointError extends Error {}

function dtypeOf(data: StoredTensor['data'], dtype?: STDtype): STDtype {
  if (dtype) return dtype;
  if (data instanceof Float32Array) return 'F32';
  if (data instanceof Int32Array) return 'I32';
  return 'U8';
}

/** Serialises tensors (in the given order) and string metadata. */
export function encodeSafetensors(tensors: Map<string, StoredTensor>, metadata: Record<string, string> = {}): Buffer {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) {
    for (const [k, v] of Object.entries(metadata)) if (typeof v !== 'string') throw new CheckpointError(`__metadata__.${k} must be a string`);
    header.__metadata__ = metadata;
  }
  let offset = 0;
  for (const [name, t] of tensors) {
    if (name === '__metadata__') throw new CheckpointError('a tensor may not be named __metadata__');
    const count = t.shape.reduce((a, b) => a * b, 1);
    const bytes = count * DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== bytes) throw new CheckpointError(`tensor '${name}': ${t.data.byteLength} bytes of data for ${t.dtype} [${t.shape.join(', ')}] (${bytes} expected)`);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  const pad = (8 - (Buffer.byteLength(json) % 8)) % 8;
  json += ' '.repeat(pad);
  const headerBytes = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + headerBytes.length + offset);
  out.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  headerBytes.copy(out, 8);
  let at = 8 + headerBytes.length;
  for (const t of tensors.values()) {
    // Typed arrays are little-endian on every platform Node runs on.
    Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).copy(out, at);
    at += t.data.byteLength;
  }
  return out;
}

/** Parses and validates a safetensors buffer; `path` names the file in every error. */
export function decodeSafetensors(buf: Buffer, path: string): SafeTensors {
  const fail = (why: string): never => {
    throw new CheckpointError(`${path}: ${why}`);
  };
  if (buf.length < 8) fail(`${buf.length} bytes is too short for a safetensors file (8-byte header length missing)`);
  const n = buf.readBigUInt64LE(0);
  if (n > BigInt(MAX_HEADER_BYTES)) fail(`header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit${n > BigInt(buf.length) ? `, and the file's ${buf.length} bytes: not a safetensors file (it starts ${JSON.stringify(buf.subarray(0, 8).toString('latin1'))})` : ''}`);
  const headerLen = Number(n);
  if (8 + headerLen > buf.length) fail(`header length ${headerLen} runs past the end of the file (${buf.length} bytes): truncated?`);
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8')) as Record<string, unknown>;
  } catch (e) {
    return fail(`header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('header is not a JSON object');
  const dataStart = 8 + headerLen;
  const dataLen = buf.length - dataStart;
  const metadata: Record<string, string> = {};
  if (header.__metadata__ !== undefined) {
    const m = header.__metadata__;
    if (typeof m !== 'object' || m === null) fail('__metadata__ is not an object');
    for (const [k, v] of Object.entries(m as Record<string, unknown>)) {
      if (typeof v !== 'string') fail(`__metadata__.${k} is not a string`);
      metadata[k] = v as string;
    }
  }
  const entries: [string, { dtype: STDtype; shape: number[]; begin: number; end: number }][] = [];
  for (const [name, raw] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e !== 'object' || e === null) fail(`tensor '${name}': entry is not an object`);
    if (typeof e.dtype !== 'string' || !(e.dtype in DTYPE_BYTES)) fail(`tensor '${name}': unknown dtype ${JSON.stringify(e.dtype)}`);
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isInteger(d) && d >= 0)) fail(`tensor '${name}': shape ${JSON.stringify(e.shape)} is not a list of non-negative integers`);
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isInteger(d) && d >= 0)) fail(`tensor '${name}': data_offsets ${JSON.stringify(off)} is not [begin, end]`);
    const [begin, end] = off as [number, number];
    const dtype = e.dtype as STDtype;
    const shape = e.shape as number[];
    const bytes = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
    if (end < begin || end > dataLen) fail(`tensor '${name}': data_offsets [${begin}, ${end}] are out of range (data section is ${dataLen} bytes)`);
    if (end - begin !== bytes) fail(`tensor '${name}': ${end - begin} bytes for ${dtype} [${shape.join(', ')}] (${bytes} expected)`);
    entries.push([name, { dtype, shape, begin, end }]);
  }
  // Offsets must not overlap (and, as the reference reader requires, cover the data with no holes).
  const sorted = [...entries].sort((a, b) => a[1].begin - b[1].begin);
  let cursor = 0;
  for (const [name, e] of sorted) {
    if (e.begin < cursor) fail(`tensor '${name}' overlaps the tensor before it (offset ${e.begin} < ${cursor})`);
    if (e.begin > cursor) fail(`a hole of ${e.begin - cursor} bytes precedes tensor '${name}'`);
    cursor = e.end;
  }
  if (cursor !== dataLen) fail(`${dataLen - cursor} trailing bytes after the last tensor`);
  const tensors = new Map<string, StoredTensor>();
  for (const [name, e] of entries) {
    const bytes = buf.subarray(dataStart + e.begin, dataStart + e.end);
    const copy = new Uint8Array(bytes); // aligned copy
    const data = e.dtype === 'F32' ? new Float32Array(copy.buffer) : e.dtype === 'I32' ? new Int32Array(copy.buffer) : copy;
    tensors.set(name, { dtype: e.dtype, shape: e.shape, data });
  }
  return { tensors, metadata };
}

/** Writes atomically: temp file beside the target, fsync, rename, fsync the folder. */
export function writeFileAtomic(path: string, data: Buffer): void {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  const fd = openSync(tmp, 'w');
  try {
    let at = 0;
    while (at < data.length) at += writeSync(fd, data, at, data.length - at);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    if (existsSync(tmp)) unlinkSync(tmp);
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
  try {
    const dfd = openSync(dirname(path), 'r');
    fsyncSync(dfd);
    closeSync(dfd);
  } catch {
    // Some filesystems refuse fsync on a directory; the rename is still atomic.
  }
}

export function saveSafetensors(path: string, tensors: Map<string, StoredTensor>, metadata: Record<string, string> = {}): void {
  writeFileAtomic(path, encodeSafetensors(tensors, metadata));
}

export function loadSafetensors(path: string): SafeTensors {
  if (!existsSync(path)) throw new CheckpointError(`${path}: no such checkpoint`);
  return decodeSafetensors(readFileSync(path), path);
}

export function storedF32(shape: number[], data: Float32Array): StoredTensor {
  return { dtype: dtypeOf(data), shape, data };
}

// ---- model checkpoints --------------------------------------------------------------------------

/** Optimizer state names follow torch.optim.AdamW's state_dict: exp_avg, exp_avg_sq. */
const STATE_NAMES = { adamw: ['exp_avg', 'exp_avg_sq'], sgd: ['momentum_buffer'] } as const;

/** What checkpoints hold of a model (a ViT, an MAE): its config, parameters and saved state by name. */
export interface Checkpointable {
  readonly config: object;
  readonly params: Map<string, ParamInfo>;
  state(): Map<string, T.Tensor>;
}

export interface CheckpointInfo<C = ViTConfig> {
  config: C;
  step: number;
  epoch: number;
  metadata: Record<string, string>;
  tensors: Map<string, StoredTensor>;
}

/** Writes model weights (timm names), optimizer state (`optim.` names, the weight EMA as
 * `optim.ema.` names) and metadata, atomically. */
export async function saveCheckpoint(
  path: string,
  model: Checkpointable,
  opts: { optimizer?: T.AdamW; ema?: T.WeightEma; step: number; epoch: number; extra?: Record<string, string> },
): Promise<void> {
  const tensors = new Map<string, StoredTensor>();
  for (const [name, t] of model.state()) tensors.set(name, storedF32([...t.shape], (await t.data()) as Float32Array));
  if (opts.optimizer) {
    for (const [name, p] of model.params) {
      const state = opts.optimizer.stateOf(p.tensor);
      if (!state) continue;
      for (const [i, s] of state.entries()) tensors.set(`optim.${name}.${STATE_NAMES.adamw[i]}`, storedF32([...s.shape], (await s.data()) as Float32Array));
    }
  }
  if (opts.ema) {
    for (const [name, t] of model.state()) {
      const shadow = opts.ema.shadowOf(t);
      if (shadow) tensors.set(`optim.ema.${name}`, storedF32([...shadow.shape], (await shadow.data()) as Float32Array));
    }
  }
  const metadata: Record<string, string> = {
    format: 'pt',
    producer: 'tessera',
    config: JSON.stringify(model.config),
    step: String(opts.step),
    epoch: String(opts.epoch),
    ...(opts.optimizer ? { optim_step: String(opts.optimizer.stepCount), optim_group_steps: JSON.stringify(opts.optimizer.groupStepCounts) } : {}),
    ...(opts.ema ? { ema_decay: String(opts.ema.decay), ema_updates: String(opts.ema.updates) } : {}),
    ...opts.extra,
  };
  saveSafetensors(path, tensors, metadata);
}

export function readCheckpoint<C = ViTConfig>(path: string): CheckpointInfo<C> {
  const st = loadSafetensors(path);
  const cfg = st.metadata.config;
  if (!cfg) throw new CheckpointError(`${path}: no 'config' in __metadata__ (not a tessera checkpoint?)`);
  let config: C;
  try {
    config = JSON.parse(cfg) as C;
  } catch {
    throw new CheckpointError(`${path}: __metadata__.config is not valid JSON`);
  }
  return { config, step: Number(st.metadata.step ?? 0), epoch: Number(st.metadata.epoch ?? 0), metadata: st.metadata, tensors: st.tensors };
}

/** Copies stored weights into the model; lists every missing, unexpected or mismatched tensor. */
export function loadWeights(model: Checkpointable, ckpt: CheckpointInfo<unknown>, path: string): void {
  const problems: string[] = [];
  const state = model.state();
  for (const [name, t] of state) {
    const s = ckpt.tensors.get(name);
    if (!s) problems.push(`missing '${name}' ${JSON.stringify(t.shape)}`);
    else if (s.dtype !== 'F32') problems.push(`'${name}' is ${s.dtype}, expected F32`);
    else if (s.shape.length !== t.rank || s.shape.some((d, i) => d !== t.shape[i])) problems.push(`'${name}' has shape [${s.shape.join(', ')}], the model expects [${t.shape.join(', ')}]`);
  }
  for (const name of ckpt.tensors.keys()) if (!name.startsWith('optim.') && !state.has(name)) problems.push(`unexpected '${name}'`);
  if (problems.length) throw new CheckpointError(`${path} does not match the model:\n  ${problems.join('\n  ')}`);
  for (const [name, t] of state) T.upload(t, ckpt.tensors.get(name)!.data as Float32Array);
}

export type CheckpointArch = 'vit' | 'mae' | 'dino';

/** The architecture a checkpoint's config describes: 'mae' / 'dino' for pre-training, 'vit' otherwise. */
export function checkpointArch(ckpt: CheckpointInfo<unknown>): CheckpointArch {
  const arch = ckpt.metadata.arch;
  return arch === 'mae' || arch === 'dino' ? arch : 'vit';
}

/** The ViT a pre-training checkpoint's encoder fits: its encoder fields over `base` (the preset
 * the run named, or `fallback`: head, pooling, regularisation). */
export function encoderConfig(ckpt: CheckpointInfo<unknown>, fallback: string): ViTConfig {
  const base = presetConfig(ckpt.metadata.preset ?? fallback);
  switch (checkpointArch(ckpt)) {
    case 'mae':
      return vitConfigFromMae(base, ckpt.config as MAEConfig);
    case 'dino':
      return vitConfigFromDino(base, ckpt.config as DINOConfig);
    case 'vit':
      return ckpt.config as ViTConfig;
  }
}

/** Initialises a ViT from a pre-training checkpoint's encoder, whose names are the ViT's
 * (models_mae.py keeps timm's; a DINO checkpoint holds its teacher under them); the
 * classification head is not in it and keeps its fresh initialisation. Returns the names left
 * as initialised. */
export function loadEncoderWeights(model: VisionTransformer, ckpt: CheckpointInfo<unknown>, path: string): string[] {
  const problems: string[] = [];
  const fresh: string[] = [];
  const state = model.state();
  for (const [name, t] of state) {
    const s = ckpt.tensors.get(name);
    if (!s && /^head(_dist)?\./.test(name)) fresh.push(name);
    else if (!s) problems.push(`missing '${name}' ${JSON.stringify(t.shape)}`);
    else if (s.dtype !== 'F32') problems.push(`'${name}' is ${s.dtype}, expected F32`);
    else if (s.shape.length !== t.rank || s.shape.some((d, i) => d !== t.shape[i])) problems.push(`'${name}' has shape [${s.shape.join(', ')}], the model expects [${t.shape.join(', ')}]`);
  }
  if (problems.length) throw new CheckpointError(`${path}: its encoder does not match the model:\n  ${problems.join('\n  ')}`);
  for (const [name, t] of state) if (!fresh.includes(name)) T.upload(t, ckpt.tensors.get(name)!.data as Float32Array);
  return fresh;
}

/** Restores AdamW moments and step count saved by saveCheckpoint. */
export function loadOptimizerState(optimizer: T.AdamW, model: Checkpointable, ckpt: CheckpointInfo<unknown>, path: string): void {
  const step = Number(ckpt.metadata.optim_step);
  if (!Number.isFinite(step)) throw new CheckpointError(`${path}: no optimizer state (optim_step missing in __metadata__)`);
  for (const [name, p] of model.params) {
    const parts = STATE_NAMES.adamw.map((s) => ckpt.tensors.get(`optim.${name}.${s}`));
    if (parts.some((t) => !t)) {
      if (parts.every((t) => !t)) continue;
      throw new CheckpointError(`${path}: optimizer state for '${name}' is incomplete`);
    }
    optimizer.setState(p.tensor, parts.map((t) => t!.data as Float32Array));
  }
  optimizer.stepCount = step;
  // Checkpoints from before per-group counts: every group was updated at every step.
  const groups = ckpt.metadata.optim_group_steps ? (JSON.parse(ckpt.metadata.optim_group_steps) as number[]) : optimizer.groups.map(() => step);
  if (groups.length !== optimizer.groups.length) throw new CheckpointError(`${path}: optimizer state for ${groups.length} parameter groups, the optimizer has ${optimizer.groups.length}`);
  optimizer.groupStepCounts = groups;
}

/** Restores the weight EMA saved by saveCheckpoint, after loadWeights. A checkpoint without one
 * (a run that had no EMA) restarts the average from the loaded weights; one whose EMA lacks the
 * BatchNorm running statistics restarts just those. Returns the names restarted. */
export function loadEmaState(ema: T.WeightEma, model: VisionTransformer, ckpt: CheckpointInfo, path: string): string[] {
  const found = [...model.state()].filter(([, t]) => ema.shadowOf(t)).map(([name, t]) => ({ name, t, s: ckpt.tensors.get(`optim.ema.${name}`) }));
  if (found.every((f) => !f.s)) {
    ema.reset(found.map((f) => f.t));
    ema.updates = 0;
    return found.map((f) => f.name);
  }
  const problems: string[] = [];
  for (const { name, t, s } of found) {
    if (!s) {
      if (model.params.has(name)) problems.push(`missing 'optim.ema.${name}'`);
    } else if (s.dtype !== 'F32' || s.shape.length !== t.rank || s.shape.some((d, i) => d !== t.shape[i])) {
      problems.push(`'optim.ema.${name}' is ${s.dtype} [${s.shape.join(', ')}], expected F32 [${t.shape.join(', ')}]`);
    }
  }
  if (problems.length) throw new CheckpointError(`${path}: the weight EMA does not match the model:\n  ${problems.join('\n  ')}`);
  const restarted = found.filter((f) => !f.s);
  for (const { t, s } of found) if (s) T.upload(ema.shadowOf(t)!, s.data as Float32Array);
  ema.reset(restarted.map((f) => f.t));
  ema.updates = Number(ckpt.metadata.ema_updates ?? ckpt.metadata.optim_step ?? ckpt.step);
  return restarted.map((f) => f.name);
}

/** Builds a model from a checkpoint's config and weights. */
export function modelFromCheckpoint(path: string): { model: VisionTransformer; info: CheckpointInfo } {
  const info = readCheckpoint(path);
  const arch = checkpointArch(info);
  if (arch !== 'vit') throw new CheckpointError(`${path} is ${arch === 'mae' ? 'an MAE' : 'a DINO'} pre-training checkpoint, not a classifier: fine-tune its encoder first (tessera train --init ${path})`);
  const model = new VisionTransformer(info.config, 0);
  loadWeights(model, info, path);
  return { model, info };
}
