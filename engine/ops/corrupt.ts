// Common corruptions (kernels/corrupt.ts) as an engine op: a data op like the augmentations, with
// noise from the GPU Philox generator (explicit seed or the global generator's next stream).
import { pixelGrid } from '../../kernels/augment-geometry.js';
import { CORRUPTIONS, type Corruption, corruptKernel, jpegKernel, jpegQualityScale, SEVERITY } from '../../kernels/corrupt.js';
import { grid1d } from '../../kernels/common.js';
import { rt } from '../dispatch.js';
import { shapeStr, Tensor } from '../tensor.js';
import { nextKey } from './random.js';
import { mean } from './reduce.js';

export { CORRUPTIONS, type Corruption, SEVERITY };

/** The kernel's uniform values for one corruption and severity (shared with the reference). */
export function corruptUniforms(shape: readonly number[], kind: Corruption, severity: number, key: { seed: number; stream: number }): Record<string, number> {
  const index = CORRUPTIONS.indexOf(kind);
  if (index < 0) throw new Error(`corrupt: unknown corruption '${kind}'; corruptions: ${CORRUPTIONS.join(', ')}`);
  if (!Number.isInteger(severity) || severity < 1 || severity > 5) throw new Error(`corrupt: severity ${severity} must be an integer from 1 to 5`);
  const [B, C, H, W] = shape as [number, number, number, number];
  const strength = SEVERITY[kind][severity - 1]!;
  return { B, C, H, W, kind: index, strength, seed: key.seed, stream: key.stream, cellsX: Math.max(1, Math.round(strength * W)), cellsY: Math.max(1, Math.round(strength * H)) };
}

/** The JPEG kernel's uniform values: the quality's table scale and the 8×8 blocks per image. */
export function jpegUniforms(shape: readonly number[], severity: number): Record<string, number> {
  const u = corruptUniforms(shape, 'jpeg_compression', severity, { seed: 0, stream: 0 });
  const [B, C, H, W] = shape as [number, number, number, number];
  return { B, C, H, W, scale: jpegQualityScale(u.strength!), blocksX: Math.ceil(W / 8), blocksY: Math.ceil(H / 8) };
}

/** Corrupts a batch [B, C, H, W] of images in [0, 1] at severity 1–5; the result is in [0, 1]
 * (for jpeg_compression, on the 8-bit grid: multiples of 1/255). */
export function corrupt(x: Tensor, kind: Corruption, severity: number, opts: { seed?: number } = {}): Tensor {
  if (x.rank !== 4 || x.dtype !== 'float32') throw new Error(`corrupt: expects a float32 image batch [B, C, H, W], got ${x.describe()}`);
  if (x.requiresGrad) throw new Error(`corrupt: ${x.describe()} requires grad; corruptions take data (detach() it first)`);
  const [B, C, H, W] = x.shape as [number, number, number, number];
  const uniforms = corruptUniforms(x.shape, kind, severity, nextKey(opts.seed));
  const y = Tensor.empty(x.shape, 'float32', `corrupt ${kind}`);
  if (y.size === 0) return y;
  if (kind === 'jpeg_compression') {
    const u = jpegUniforms(x.shape, severity);
    rt().run({
      source: jpegKernel(),
      uniforms: u,
      buffers: [x.buffer, y.buffer],
      grid: grid1d(B * u.blocksX! * u.blocksY!, 64),
      bytes: 8 * y.size,
      label: `corrupt ${kind} s${severity} ${shapeStr(x.shape)}`,
    });
    return y;
  }
  const means = kind === 'contrast' ? mean(x, [1, 2, 3]) : null;
  rt().run({
    source: corruptKernel(),
    uniforms,
    buffers: [x.buffer, (means ?? x).buffer, y.buffer],
    grid: pixelGrid(B * C, H, W),
    bytes: 8 * y.size,
    label: `corrupt ${kind} s${severity} ${shapeStr(x.shape)}`,
  });
  means?.dispose();
  return y;
}
