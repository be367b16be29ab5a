// A resumed run continues with the settings it was started with: `tessera train --out runs/a
// --resume` reads runs/a/config.json, and only the flags given again replace what it holds
// (`--resume --epochs 12` extends a run). Without this, every flag had to be repeated, and a
// forgotten one silently continued the run with the default instead (and rewrote config.json).

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** Settings of one invocation rather than of the run: never taken from config.json. */
const PER_INVOCATION = ['out', 'resume', 'progress', 'maxSteps'];

/** A run folder whose settings cannot be taken up; the command line prints its message alone. */
export class RunSettingsError extends Error {}

export interface RunSettings<C> {
  config: C;
  /** What was taken from where, and each flag that replaces a setting of the run: for the log. */
  notes: string[];
}

const flagName = (key: string) => '--' + key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
const show = (v: unknown) => (Array.isArray(v) ? v.join(',') : String(v));

/**
 * The configuration a command runs with: the defaults, then (with `resume`) the settings in the
 * run folder's config.json under `section`, then the flags given. `derived` names settings the
 * run records but computes itself (e.g. the trainer's schedule length), which are not restored;
 * `fixed` those its checkpoint's model was built from (the preset, a head's sizes), which a flag
 * may repeat but not change. A config.json that cannot be read is refused with its path and the
 * reason.
 */
export function runSettings<C extends { out: string; resume: boolean }>(
  defaults: C,
  flags: Partial<C>,
  section: 'train' | 'pretrain',
  derived: readonly string[] = [],
  fixed: readonly string[] = [],
): RunSettings<C> {
  const given = { ...defaults, ...flags };
  if (!given.resume) return { config: given, notes: [] };
  if (!given.out) throw new RunSettingsError('--resume needs --out DIR, the folder of the run to continue');
  const path = join(given.out, 'config.json');
  if (!existsSync(path)) {
    const orphan = existsSync(join(given.out, 'last.safetensors'));
    return { config: given, notes: orphan ? [`--resume: ${path} is missing; continuing with the flags given and the defaults`] : [] };
  }
  let saved: unknown;
  try {
    saved = (JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>)[section];
  } catch (e) {
    throw new RunSettingsError(`--resume: cannot read the run's settings from ${path}: ${(e as Error).message}. Repair or delete it, and give the run's flags again`);
  }
  if (saved === null || typeof saved !== 'object' || Array.isArray(saved)) {
    const other = section === 'train' ? '`tessera pretrain`' : '`tessera train`';
    throw new RunSettingsError(`--resume: ${path} holds no "${section}" settings (a run of ${other}?); resume a run with the command that started it`);
  }
  const skip = new Set([...PER_INVOCATION, ...derived]);
  const restored = Object.fromEntries(Object.entries(saved).filter(([k]) => !skip.has(k))) as Partial<C>;
  const notes = [`--resume: the run's settings from ${path}`];
  for (const [key, value] of Object.entries(flags)) {
    if (skip.has(key) || value === undefined) continue;
    const before = (restored as Record<string, unknown>)[key];
    if (before === undefined || JSON.stringify(before) === JSON.stringify(value)) continue;
    if (fixed.includes(key)) {
      throw new RunSettingsError(`--resume: ${flagName(key)} ${show(value)} differs from the run's ${show(before)}, which its checkpoint's model was built with; a resumed run keeps its model — leave the flag out, or start a new run in another --out`);
    }
    notes.push(`--resume: ${flagName(key)} ${show(value)} replaces the run's ${show(before)}`);
  }
  return { config: { ...defaults, ...restored, ...flags }, notes };
}
