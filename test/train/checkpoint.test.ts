import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import * as T from '../../engine/index.js';
import { presetConfig, VisionTransformer } from '../../models/vit.js';
import {
  modelFromCheckpoint,
  decodeSafetensors, encodeSafetensors, loadEmaState, loadOptimizerState, loadSafetensors, loadWeights, readCheckpoint, saveCheckpoint, saveSafetensors, type StoredTensor,
} from '../../train/checkpoint.js';

beforeAll(async () => {
  await T.init();
});

const tmp = () => mkdtempSync(join(tmpdir(), 'tessera-ckpt-'));

function sample(): Map<string, StoredTensor> {
  return new Map<string, StoredTensor>([
    ['a.weight', { dtype: 'F32', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6.5]) }],
    ['labels', { dtype: 'I32', shape: [3], data: Int32Array.from([7, -1, 2]) }],
    ['empty', { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) }],
  ]);
}

describe('safetensors', () => {
  it('round-trips tensors and metadata; the header is padded to 8 bytes with spaces', () => {
    const buf = encodeSafetensors(sample(), { step: '12', config: '{"a":1}' });
    const n = Number(buf.readBigUInt64LE(0));
    expect(n % 8).toBe(0);
    expect(buf.subarray(8, 8 + n).toString().endsWith('}') || buf[8 + n - 1] === 0x20).toBe(true);
    const back = decodeSafetensors(buf, 'mem');
    expect(back.metadata).toEqual({ step: '12', config: '{"a":1}' });
    expect([...back.tensors.get('a.weight')!.data]).toEqual([1, 2, 3, 4, 5, 6.5]);
    expect([...back.tensors.get('labels')!.data]).toEqual([7, -1, 2]);
    expect(back.tensors.get('empty')!.shape).toEqual([0, 4]);
  });

  it('refuses corrupt, truncated, oversized and overlapping files with path and reason', () => {
    const good = encodeSafetensors(sample());
    expect(() => decodeSafetensors(good.subarray(0, 5), 'f.st')).toThrow(/f\.st: 5 bytes is too short/);
    expect(() => decodeSafetensors(good.subarray(0, good.length - 4), 'f.st')).toThrow(/f\.st: .*(out of range|trailing|hole)/);
    const huge = Buffer.from(good);
    huge.writeBigUInt64LE(200_000_000n, 0);
    expect(() => decodeSafetensors(huge, 'f.st')).toThrow(/exceeds the 100000000-byte limit/);
    // Another kind of file given as a checkpoint: its first 8 bytes read as an absurd length.
    const json = Buffer.from(JSON.stringify({ train: { epochs: 3 } }, null, 2));
    expect(() => decodeSafetensors(json, 'config.json')).toThrow(/config\.json: .*not a safetensors file \(it starts "\{\\n {2}\\"tra"\)/);
    const past = Buffer.from(good);
    past.writeBigUInt64LE(BigInt(good.length), 0);
    expect(() => decodeSafetensors(past, 'f.st')).toThrow(/runs past the end of the file/);
    const notJson = Buffer.from(good);
    notJson[9] = 0x7b;
    notJson[8] = 0x5b;
    expect(() => decodeSafetensors(notJson, 'f.st')).toThrow(/header is not valid JSON|not a JSON object/);
    const header = (h: object, data: number) => {
      const j = Buffer.from(JSON.stringify(h));
      const b = Buffer.alloc(8 + j.length + data);
      b.writeBigUInt64LE(BigInt(j.length), 0);
      j.copy(b, 8);
      return b;
    };
    expect(() => decodeSafetensors(header({ x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, y: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, 12), 'o.st')).toThrow(/'y' overlaps/);
    expect(() => decodeSafetensors(header({ x: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, 8), 'o.st')).toThrow(/8 bytes for F32 \[3\] \(12 expected\)/);
    expect(() => decodeSafetensors(header({ x: { dtype: 'Q8', shape: [1], data_offsets: [0, 1] } }, 1), 'o.st')).toThrow(/unknown dtype "Q8"/);
    expect(() => decodeSafetensors(header({ __metadata__: { a: 1 } }, 0), 'o.st')).toThrow(/__metadata__\.a is not a string/);
  });

  it('an atomic save killed mid-write leaves the old file intact', async () => {
    const dir = tmp();
    const path = join(dir, 'last.safetensors');
    saveSafetensors(path, sample(), { step: 'old' });
    const before = readFileSync(path);
    // A child process writes a 256 MiB checkpoint to the same path; it is killed once its
    // temporary file exists, i.e. in the middle of the save.
    const module = new URL('../../train/checkpoint.ts', import.meta.url).pathname;
    const script = `import { saveSafetensors } from ${JSON.stringify(module)};
      const big = new Float32Array(64 * 1024 * 1024);
      saveSafetensors(${JSON.stringify(path)}, new Map([['w', { dtype: 'F32', shape: [big.length], data: big }]]), { step: 'new' });`;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: 'ignore' });
    const tmpFile = () => readdirSync(dir).find((f) => f.endsWith('.tmp'));
    const deadline = Date.now() + 60_000;
    while (!tmpFile() && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 5));
    expect(tmpFile(), 'the child started writing its temporary file').toBeTruthy();
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(readFileSync(path).equals(before)).toBe(true);
    expect(loadSafetensors(path).metadata.step).toBe('old');
  });

  it('model checkpoints round-trip weights and optimizer state; mismatches are all listed', async () => {
    const dir = tmp();
    const cfg = { ...presetConfig('vit-fmnist-tiny'), depth: 1, embed_dim: 16, num_heads: 2 };
    const a = new VisionTransformer(cfg, 1);
    const opt = new T.AdamW(a.paramGroups(0.05), { lr: 1e-3 });
    const x = T.randn([2, 1, 28, 28], { seed: 3 });
    const y = T.tensor(Int32Array.from([1, 2]), [2]);
    T.scope(() => {
      T.crossEntropy(a.forward(x, { training: true }).logits, y).backward();
      opt.step();
      opt.zeroGrad();
    });
    const path = join(dir, 'm.safetensors');
    await saveCheckpoint(path, a, { optimizer: opt, step: 1, epoch: 0 });
    const info = readCheckpoint(path);
    expect(info.config.embed_dim).toBe(16);
    expect(info.metadata.step).toBe('1');
    expect([...info.tensors.keys()]).toContain('blocks.0.attn.qkv.weight');
    expect([...info.tensors.keys()]).toContain('optim.blocks.0.attn.qkv.weight.exp_avg_sq');
    expect(info.tensors.get('blocks.0.attn.qkv.weight')!.shape).toEqual([48, 16]);
    const b = new VisionTransformer(cfg, 2);
    loadWeights(b, info, path);
    const opt2 = new T.AdamW(b.paramGroups(0.05), { lr: 1e-3 });
    loadOptimizerState(opt2, b, info, path);
    expect(opt2.stepCount).toBe(1);
    for (const [name, p] of a.params) expect([...(await b.params.get(name)!.tensor.data())]).toEqual([...(await p.tensor.data())]);
    const qa = opt.stateOf(a.params.get('head.weight')!.tensor)![1]!;
    const qb = opt2.stateOf(b.params.get('head.weight')!.tensor)![1]!;
    expect([...(await qb.data())]).toEqual([...(await qa.data())]);

    const other = new VisionTransformer({ ...cfg, embed_dim: 32, num_heads: 2 }, 0);
    expect(() => loadWeights(other, info, path)).toThrow(/does not match the model:\n {2}'patch_embed\.proj\.weight' has shape \[16, 1, 7, 7\], the model expects \[32, 1, 7, 7\]/);
    info.tensors.delete('norm.bias');
    info.tensors.set('extra.weight', { dtype: 'F32', shape: [1], data: new Float32Array(1) });
    expect(() => loadWeights(b, info, path)).toThrow(/missing 'norm\.bias'[\s\S]*unexpected 'extra\.weight'/);
    for (const m of [a, b, other]) m.dispose();
    opt.dispose();
    opt2.dispose();
    expect(existsSync(path)).toBe(true);
    writeFileSync(join(dir, 'junk.safetensors'), 'not a checkpoint at all');
    expect(() => readCheckpoint(join(dir, 'junk.safetensors'))).toThrow(/junk\.safetensors: header length/);
  });

  it('the weight EMA round-trips under optim.ema. names with the BatchNorm statistics; a partial or misshapen one is refused', async () => {
    const dir = tmp();
    const cfg = { ...presetConfig('vit-fmnist-convstem'), depth: 1, embed_dim: 16, num_heads: 2 };
    const a = new VisionTransformer(cfg, 1);
    const ema = new T.WeightEma([...a.state().values()], 0.5);
    T.upload(a.params.get('head.bias')!.tensor, Float32Array.from({ length: 10 }, (_, i) => i));
    const runningVar = 'patch_embed.backbone.0.bn.running_var';
    T.upload(a.buffers.get(runningVar)!, new Float32Array(24).fill(3));
    ema.update();
    const path = join(dir, 'e.safetensors');
    await saveCheckpoint(path, a, { ema, step: 1, epoch: 0 });
    const info = readCheckpoint(path);
    expect(info.metadata.ema_decay).toBe('0.5');
    expect(info.metadata.ema_updates).toBe('1');
    expect([...info.tensors.get('optim.ema.head.bias')!.data]).toEqual(Array.from({ length: 10 }, (_, i) => i / 2));
    expect([...info.tensors.get(`optim.ema.${runningVar}`)!.data]).toEqual(new Array(24).fill(2));
    const b = new VisionTransformer(cfg, 2);
    loadWeights(b, info, path);
    const emaB = new T.WeightEma([...b.state().values()], 0.5);
    expect(loadEmaState(emaB, b, info, path)).toEqual([]);
    expect(emaB.updates).toBe(1);
    for (const [name, t] of a.state()) expect([...(await emaB.shadowOf(b.state().get(name)!)!.data())], name).toEqual([...(await ema.shadowOf(t)!.data())]);
    // An EMA saved without the running statistics restarts just those from the loaded values.
    info.tensors.delete(`optim.ema.${runningVar}`);
    expect(loadEmaState(emaB, b, info, path)).toEqual([runningVar]);
    expect([...(await emaB.shadowOf(b.buffers.get(runningVar)!)!.data())]).toEqual(new Array(24).fill(3));
    info.tensors.delete('optim.ema.norm.bias');
    info.tensors.set('optim.ema.head.bias', { dtype: 'F32', shape: [3], data: new Float32Array(3) });
    expect(() => loadEmaState(emaB, b, info, path)).toThrow(/e\.safetensors: the weight EMA does not match the model:\n {2}missing 'optim\.ema\.norm\.bias'[\s\S]*'optim\.ema\.head\.bias' is F32 \[3\], expected F32 \[10\]/);
    // A checkpoint of a run without EMA: the average starts from the loaded weights.
    for (const name of [...info.tensors.keys()]) if (name.startsWith('optim.ema.')) info.tensors.delete(name);
    expect(loadEmaState(emaB, b, info, path)).toHaveLength(b.state().size);
    expect(emaB.updates).toBe(0);
    expect([...(await emaB.shadowOf(b.params.get('head.bias')!.tensor)!.data())]).toEqual(Array.from({ length: 10 }, (_, i) => i));
    for (const t of [ema, emaB, a, b]) t.dispose();
  });

  it('a conv-stem model saves and restores its BatchNorm running statistics', async () => {
    const dir = tmp();
    const cfg = { ...presetConfig('vit-fmnist-convstem'), depth: 1 };
    const a = new VisionTransformer(cfg, 1);
    T.scope(() => void a.forward(T.randn([4, 1, 28, 28], { seed: 2 }), { training: true }));
    const path = join(dir, 'c.safetensors');
    await saveCheckpoint(path, a, { step: 1, epoch: 0 });
    const info = readCheckpoint(path);
    expect(JSON.parse(info.metadata.config!).conv_stem).toEqual([24, 48]);
    const { model: b } = modelFromCheckpoint(path);
    for (const [name, t] of a.state()) expect([...(await b.state().get(name)!.data())], name).toEqual([...(await t.data())]);
    const rv = [...(await b.buffers.get('patch_embed.backbone.1.bn.running_var')!.data())];
    expect(rv.some((v) => v !== 1)).toBe(true);
    a.dispose();
    b.dispose();
  });
});
