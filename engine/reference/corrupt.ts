// CPU twin of kernels/corrupt.ts in float64 (noise from the Philox twin, same counters).
import { CORRUPTIONS, JPEG_CHROMA_TABLE, JPEG_LUMA_TABLE, jpegDctBasis, jpegQuantStep, ZOOM_STEPS } from '../../kernels/corrupt.js';
import { type Nd } from './nd.js';
import { philox, toUnit } from './random.js';

const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v, lo), hi);

/** JPEG-like compression of kernels/corrupt.ts's jpegKernel, in float64, with `margins`: for each
 * block (image-major, then rows of blocks), how close any quantity it rounds came to a rounding
 * boundary (in units of that quantity's step; 0.5 is the farthest). A float32 computation can
 * round differently from this one only in a block whose margin is below its own error. */
export function jpeg(x: Nd, P: Record<string, number>): Nd & { margins: Float64Array } {
  const [B, C, H, W] = x.shape as [number, number, number, number];
  const [bx, by, scale] = [P.blocksX!, P.blocksY!, P.scale!];
  const basis = jpegDctBasis();
  const out = new Float64Array(x.data.length);
  const margins = new Float64Array(B * bx * by).fill(0.5);
  let block = 0;
  const roundUp = (v: number) => {
    const r = Math.floor(v + 0.5);
    margins[block] = Math.min(margins[block]!, Math.abs(v - (r - 0.5)), Math.abs(r + 0.5 - v));
    return r;
  };
  const code = (s: Float64Array, table: readonly number[]) => {
    const g = new Float64Array(64);
    const f = new Float64Array(64);
    for (let y = 0; y < 8; y++) for (let u = 0; u < 8; u++) {
      let acc = 0;
      for (let x = 0; x < 8; x++) acc += basis[u * 8 + x]! * s[y * 8 + x]!;
      g[y * 8 + u] = acc;
    }
    for (let v = 0; v < 8; v++) for (let u = 0; u < 8; u++) {
      let acc = 0;
      for (let y = 0; y < 8; y++) acc += basis[v * 8 + y]! * g[y * 8 + u]!;
      const q = jpegQuantStep(table[v * 8 + u]!, scale);
      f[v * 8 + u] = roundUp(acc / q) * q;
    }
    for (let y = 0; y < 8; y++) for (let u = 0; u < 8; u++) {
      let acc = 0;
      for (let v = 0; v < 8; v++) acc += basis[v * 8 + y]! * f[v * 8 + u]!;
      g[y * 8 + u] = acc;
    }
    for (let y = 0; y < 8; y++) for (let x = 0; x < 8; x++) {
      let acc = 0;
      for (let u = 0; u < 8; u++) acc += basis[u * 8 + x]! * g[y * 8 + u]!;
      s[y * 8 + x] = acc;
    }
  };
  // Inputs are rounded to 8 bits too, but test images lie on that grid already; their margins
  // (0.5 up to float32's error in v·255) are left out.
  const sample = (b: number, c: number, xi: number, yi: number) =>
    clamp(Math.floor(x.data[((b * C + c) * H + Math.min(yi, H - 1)) * W + Math.min(xi, W - 1)]! * 255 + 0.5), 0, 255);
  // Rounded and clamped to 8 bits (a value clamped anyway has no rounding to get wrong).
  const level = (v: number) => clamp(v < -0.5 || v > 255.5 ? v : roundUp(v), 0, 255);
  const store = (b: number, c: number, xi: number, yi: number, v: number) => {
    if (xi < W && yi < H) out[((b * C + c) * H + yi) * W + xi] = level(v) / 255;
  };
  for (let b = 0; b < B; b++) {
    for (let k = 0; k < bx * by; k++, block++) {
      const [x0, y0] = [(k % bx) * 8, Math.floor(k / bx) * 8];
      const at = (i: number) => [x0 + (i % 8), y0 + Math.floor(i / 8)] as const;
      if (C === 3) {
        const [lum, cb, cr] = [new Float64Array(64), new Float64Array(64), new Float64Array(64)];
        for (let i = 0; i < 64; i++) {
          const [r, g, bl] = [0, 1, 2].map((c) => sample(b, c, ...at(i))) as [number, number, number];
          lum[i] = level(0.299 * r + 0.587 * g + 0.114 * bl) - 128;
          cb[i] = level(-0.168736 * r - 0.331264 * g + 0.5 * bl + 128) - 128;
          cr[i] = level(0.5 * r - 0.418688 * g - 0.081312 * bl + 128) - 128;
        }
        code(lum, JPEG_LUMA_TABLE);
        code(cb, JPEG_CHROMA_TABLE);
        code(cr, JPEG_CHROMA_TABLE);
        for (let i = 0; i < 64; i++) {
          const l = level(lum[i]! + 128);
          const [u, v] = [level(cb[i]! + 128) - 128, level(cr[i]! + 128) - 128];
          store(b, 0, ...at(i), l + 1.402 * v);
          store(b, 1, ...at(i), l - 0.344136 * u - 0.714136 * v);
          store(b, 2, ...at(i), l + 1.772 * u);
        }
      } else {
        for (let c = 0; c < C; c++) {
          const s = Float64Array.from({ length: 64 }, (_, i) => sample(b, c, ...at(i)) - 128);
          code(s, JPEG_LUMA_TABLE);
          for (let i = 0; i < 64; i++) store(b, c, ...at(i), s[i]! + 128);
        }
      }
    }
  }
  return { data: out, shape: [...x.shape], margins };
}

export function corrupt(x: Nd, P: Record<string, number>): Nd {
  const [B, C, H, W] = x.shape as [number, number, number, number];
  const kind = CORRUPTIONS[P.kind!]!;
  if (kind === 'jpeg_compression') throw new Error('corrupt reference: jpeg_compression takes jpeg() with jpegUniforms');
  const s = P.strength!;
  const out = new Float64Array(x.data.length);
  const hw = H * W;
  const means = Array.from({ length: B }, (_, b) => {
    let sum = 0;
    for (let i = 0; i < C * hw; i++) sum += x.data[b * C * hw + i]!;
    return sum / (C * hw);
  });
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < C; c++) {
      const plane = (b * C + c) * hw;
      const at = (xi: number, yi: number) => x.data[plane + clamp(yi, 0, H - 1) * W + clamp(xi, 0, W - 1)]!;
      const bilinear = (xs: number, ys: number) => {
        const [x0, y0] = [Math.floor(xs), Math.floor(ys)];
        const [fx, fy] = [xs - x0, ys - y0];
        const top = at(x0, y0) + (at(x0 + 1, y0) - at(x0, y0)) * fx;
        const bottom = at(x0, y0 + 1) + (at(x0 + 1, y0 + 1) - at(x0, y0 + 1)) * fx;
        return top + (bottom - top) * fy;
      };
      for (let yi = 0; yi < H; yi++) {
        for (let xi = 0; xi < W; xi++) {
          const t = plane + yi * W + xi;
          const v = x.data[t]!;
          const r = philox([t >>> 0, 0, 0, 0], [P.seed! >>> 0, P.stream! >>> 0]);
          const z = Math.sqrt(-2 * Math.log(toUnit(r[0]) + 1 / 16777216)) * Math.cos(2 * Math.PI * toUnit(r[1]));
          let o = v;
          switch (kind) {
            case 'gaussian_noise':
              o = v + s * z;
              break;
            case 'shot_noise':
              o = v + Math.sqrt(Math.max(v, 0) / s) * z;
              break;
            case 'impulse_noise': {
              const u = toUnit(r[2]);
              if (u < 0.5 * s) o = 0;
              else if (u < s) o = 1;
              break;
            }
            case 'gaussian_blur':
            case 'defocus_blur': {
              const gaussian = kind === 'gaussian_blur';
              const radius = Math.ceil(gaussian ? 3 * s : s);
              let [sum, weight] = [0, 0];
              for (let dy = -radius; dy <= radius; dy++) {
                for (let dx = -radius; dx <= radius; dx++) {
                  const d2 = dx * dx + dy * dy;
                  const w = gaussian ? Math.exp((-0.5 * d2) / (s * s)) : d2 <= s * s ? 1 : 0;
                  sum += w * at(xi + dx, yi + dy);
                  weight += w;
                }
              }
              o = sum / weight;
              break;
            }
            case 'zoom_blur': {
              const [cx, cy] = [(W - 1) / 2, (H - 1) / 2];
              let sum = 0;
              for (let k = 0; k < ZOOM_STEPS; k++) {
                const zoom = 1 + ((s - 1) * k) / (ZOOM_STEPS - 1);
                sum += bilinear(cx + (xi - cx) / zoom, cy + (yi - cy) / zoom);
              }
              o = sum / ZOOM_STEPS;
              break;
            }
            case 'contrast':
              o = (v - means[b]!) * s + means[b]!;
              break;
            case 'brightness':
              o = v + s;
              break;
            case 'pixelate': {
              const [mx, my] = [P.cellsX!, P.cellsY!];
              const [jx, jy] = [Math.floor((xi * mx) / W), Math.floor((yi * my) / H)];
              const x0 = Math.floor((jx * W) / mx);
              const x1 = Math.max(Math.floor(((jx + 1) * W) / mx), x0 + 1);
              const y0 = Math.floor((jy * H) / my);
              const y1 = Math.max(Math.floor(((jy + 1) * H) / my), y0 + 1);
              let sum = 0;
              for (let yy = y0; yy < y1; yy++) for (let xx = x0; xx < x1; xx++) sum += x.data[plane + yy * W + xx]!;
              o = sum / ((y1 - y0) * (x1 - x0));
              break;
            }
          }
          out[t] = clamp(o, 0, 1);
        }
      }
    }
  }
  return { data: out, shape: [...x.shape] };
}
