// CPU twin of kernels/corrupt.ts in float64 (noise from the Philox twin, same counters).
import { CORRUPTIONS, ZOOM_STEPS } from '../../kernels/corrupt.js';
import { type Nd } from './nd.js';
import { philox, toUnit } from './random.js';

const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v, lo), hi);

export function corrupt(x: Nd, P: Record<string, number>): Nd {
  const [B, C, H, W] = x.shape as [number, number, number, number];
  const kind = CORRUPTIONS[P.kind!]!;
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
