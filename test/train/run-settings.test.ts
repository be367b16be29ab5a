import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RunSettingsError, runSettings } from '../../train/run-settings.js';

interface Settings {
  out: string;
  resume: boolean;
  progress: boolean;
  epochs: number;
  lr: number;
  teacherTemp: number;
  cropScale: [number, number];
  maxSteps?: number;
  scheduleSteps?: number;
}
const defaults: Settings = { out: '', resume: false, progress: true, epochs: 10, lr: 1e-3, teacherTemp: 0.04, cropScale: [0.4, 1] };

function runFolder(config: unknown): string {
  const out = mkdtempSync(join(tmpdir(), 'tessera-settings-'));
  writeFileSync(join(out, 'config.json'), typeof config === 'string' ? config : JSON.stringify(config));
  return out;
}

describe('a resumed run keeps its own settings', () => {
  const saved = { out: 'elsewhere', resume: false, progress: false, epochs: 6, lr: 5e-4, teacherTemp: 0.02, cropScale: [0.3, 0.9], maxSteps: 40, scheduleSteps: 2808 };

  it('takes config.json under the command\'s section, then the flags given; not what belongs to one invocation or is derived', () => {
    const out = runFolder({ pretrain: saved, model: { depth: 2 } });
    const { config, notes } = runSettings(defaults, { out, resume: true, epochs: 12 }, 'pretrain', ['scheduleSteps']);
    expect(config).toEqual({ out, resume: true, progress: true, epochs: 12, lr: 5e-4, teacherTemp: 0.02, cropScale: [0.3, 0.9] });
    expect(notes).toEqual([`--resume: the run's settings from ${join(out, 'config.json')}`, '--resume: --epochs 12 replaces the run\'s 6']);
    // A flag equal to the run's setting is no news.
    expect(runSettings(defaults, { out, resume: true, lr: 5e-4 }, 'pretrain').notes).toHaveLength(1);
    expect(runSettings(defaults, { out, resume: true, cropScale: [0.2, 1] }, 'pretrain').notes[1]).toBe('--resume: --crop-scale 0.2,1 replaces the run\'s 0.3,0.9');
  });

  it('refuses a flag that would change what the checkpoint\'s model was built with, and takes it repeated', () => {
    const out = runFolder({ pretrain: saved });
    expect(() => runSettings(defaults, { out, resume: true, cropScale: [0.2, 1] }, 'pretrain', [], ['cropScale'])).toThrow(
      /--resume: --crop-scale 0\.2,1 differs from the run's 0\.3,0\.9, which its checkpoint's model was built with; a resumed run keeps its model/,
    );
    expect(() => runSettings(defaults, { out, resume: true, cropScale: [0.2, 1] }, 'pretrain', [], ['cropScale'])).toThrow(RunSettingsError);
    expect(runSettings(defaults, { out, resume: true, cropScale: [0.3, 0.9] }, 'pretrain', [], ['cropScale']).config.cropScale).toEqual([0.3, 0.9]);
  });

  it('without --resume, or with a folder that holds no run yet, the flags go over the defaults alone', () => {
    const out = runFolder({ pretrain: saved });
    expect(runSettings(defaults, { out, epochs: 3 }, 'pretrain')).toEqual({ config: { ...defaults, out, epochs: 3 }, notes: [] });
    const empty = mkdtempSync(join(tmpdir(), 'tessera-settings-'));
    expect(runSettings(defaults, { out: empty, resume: true }, 'pretrain')).toEqual({ config: { ...defaults, out: empty, resume: true }, notes: [] });
    // A checkpoint without its config.json: said, and the run goes on with what was given.
    writeFileSync(join(empty, 'last.safetensors'), '');
    expect(runSettings(defaults, { out: empty, resume: true }, 'pretrain').notes[0]).toMatch(/config\.json is missing; continuing with the flags given and the defaults/);
  });

  it('refuses a config.json it cannot read, or one of another command, naming the file', () => {
    const corrupt = runFolder('{"pretrain": {"epochs": 6,');
    expect(() => runSettings(defaults, { out: corrupt, resume: true }, 'pretrain')).toThrow(
      new RegExp(`--resume: cannot read the run's settings from ${join(corrupt, 'config.json')}: .*JSON.*Repair or delete it`),
    );
    const pretraining = runFolder({ pretrain: saved });
    expect(() => runSettings(defaults, { out: pretraining, resume: true }, 'train')).toThrow(/holds no "train" settings \(a run of `tessera pretrain`\?\); resume a run with the command that started it/);
    // Its own class: the command line prints the message without a stack trace.
    expect(() => runSettings(defaults, { out: corrupt, resume: true }, 'pretrain')).toThrow(RunSettingsError);
    expect(() => runSettings(defaults, { resume: true }, 'train')).toThrow(/--resume needs --out DIR, the folder of the run to continue/);
    const listed = runFolder({ train: [1, 2] });
    expect(() => runSettings(defaults, { out: listed, resume: true }, 'train')).toThrow(/holds no "train" settings/);
  });
});
