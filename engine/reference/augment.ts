// CPU twins of the augmentation kernels (kernels/augment-*.ts), in float64, driven by the same
// per-image uniforms so the tests can compare image by image. Written for clarity.
import { AUGMENT_OPS } from '../../kernels/augment-ops.js';
import { COLOR_ORDERS, COLOR_PARAMS, COLOR_UNIFORMS, MAX_BLUR_RADIUS } from '../../kernels/augment-color.js';
import { GEOMETRY_MODES, GEOMETRY_UNIFORMS, THETA_SIZE } from '../../kernels/augment-geometry.js';
import { ERASE_UNIFORMS, MIX_PARAMS } from '../../kernels/augment-mix.js';
import { type Nd } from './nd.js';

/** WGSL's round(): halves go to the even neighbour (as Python's round in torchvision). */
export function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
const clamp = (v: number, lo: number, hi: number) => Math.min(Math.max(v, lo), hi);
const mix = (a: number, b: number, t: number) => a + (b - a) * t;

export interface GeometryRefOptions {
  mode: keyof typeof GEOMETRY_MODES;
  scale: [number, number];
  ratio: [number, number];
  pad: number;
  flipProb: number;
  /** Output [height, width] (default the input's). */
  size?: [number, number];
}

export function geometryParams(u: ArrayLike<number>, B: number, H: number, W: number, o: GeometryRefOptions): Float64Array {
  const theta = new Float64Array(B * THETA_SIZE);
  const [lrLo, lrHi] = [Math.log(o.ratio[0]), Math.log(o.ratio[1])];
  for (let b = 0; b < B; b++) {
    const at = (k: number) => u[b * GEOMETRY_UNIFORMS + k]!;
    const flip = at(20) < o.flipProb;
    let [top, left, ch, cw, visible] = [0, 0, H, W, 1];
    if (o.mode === 'resizedCrop') {
      let found = false;
      for (let k = 0; k < 10 && !found; k++) {
        const target = H * W * mix(o.scale[0], o.scale[1], at(2 * k));
        const ratio = Math.exp(mix(lrLo, lrHi, at(2 * k + 1)));
        const w = roundHalfEven(Math.sqrt(target * ratio));
        const h = roundHalfEven(Math.sqrt(target / ratio));
        if (w > 0 && h > 0 && w <= W && h <= H) [cw, ch, found] = [w, h, true];
      }
      if (!found) {
        const inRatio = W / H;
        if (inRatio < o.ratio[0]) [cw, ch] = [W, roundHalfEven(W / o.ratio[0])];
        else if (inRatio > o.ratio[1]) [ch, cw] = [H, roundHalfEven(H * o.ratio[1])];
        top = Math.floor((H - ch) / 2);
        left = Math.floor((W - cw) / 2);
      } else {
        top = Math.min(Math.floor(at(21) * (H - ch + 1)), H - ch);
        left = Math.min(Math.floor(at(22) * (W - cw + 1)), W - cw);
      }
      visible = (ch * cw) / (H * W);
    } else if (o.mode === 'padCrop') {
      const span = 2 * o.pad + 1;
      top = Math.min(Math.floor(at(21) * span), span - 1) - o.pad;
      left = Math.min(Math.floor(at(22) * span), span - 1) - o.pad;
      visible = ((H - Math.abs(top)) * (W - Math.abs(left))) / (H * W);
    }
    const [outH, outW] = o.size ?? [H, W];
    const sx = cw / outW;
    const sy = ch / outH;
    theta.set([flip ? -sx : sx, 0, flip ? sx * (outW - 0.5) - 0.5 + left : sx * 0.5 - 0.5 + left, 0, sy, sy * 0.5 - 0.5 + top, visible, flip ? 1 : 0], b * THETA_SIZE);
  }
  return theta;
}

/** Bilinear read of plane `p` (H × W) at (xs, ys); neighbours outside read `fill`. */
function bilinear(x: Float64Array, p: number, H: number, W: number, xs: number, ys: number, fill: number): number {
  const x0 = Math.floor(xs);
  const y0 = Math.floor(ys);
  const fx = xs - x0;
  const fy = ys - y0;
  const at = (xi: number, yi: number) => (xi < 0 || yi < 0 || xi >= W || yi >= H ? fill : x[p + yi * W + xi]!);
  const top = mix(at(x0, y0), at(x0 + 1, y0), fx);
  const bottom = mix(at(x0, y0 + 1), at(x0 + 1, y0 + 1), fx);
  return mix(top, bottom, fy);
}

export function affineSample(x: Nd, theta: ArrayLike<number>, fill: number, size?: [number, number]): Nd {
  const [B, C, H, W] = x.shape as [number, number, number, number];
  const [outH, outW] = size ?? [H, W];
  const out = new Float64Array(B * C * outH * outW);
  for (let b = 0; b < B; b++) {
    const t = Array.from({ length: 6 }, (_, k) => theta[b * THETA_SIZE + k]!);
    for (let c = 0; c < C; c++) {
      const p = (b * C + c) * H * W;
      const q = (b * C + c) * outH * outW;
      for (let yo = 0; yo < outH; yo++) {
        for (let xo = 0; xo < outW; xo++) {
          out[q + yo * outW + xo] = bilinear(x.data, p, H, W, t[0]! * xo + t[1]! * yo + t[2]!, t[3]! * xo + t[4]! * yo + t[5]!, fill);
        }
      }
    }
  }
  return { data: out, shape: [B, C, outH, outW] };
}

/** The uniform record of engine/ops/augment.ts augmentLayerUniforms (names as in the kernel). */
export type AugmentUniforms = Record<string, number>;

const NUM_OPS = AUGMENT_OPS.length;

function chooseOp(u: ArrayLike<number>, ub: number, P: AugmentUniforms): number {
  if (u[ub + 4]! >= P.prob!) return 0;
  if (P.forceOp! >= 0) return P.forceOp!;
  const allowed = Array.from({ length: NUM_OPS }, (_, i) => i).filter((i) => (P.opMask! >>> i) & 1);
  return allowed[Math.min(Math.floor(u[ub]! * allowed.length), allowed.length - 1)]!;
}

function level(u: ArrayLike<number>, ub: number, P: AugmentUniforms): number {
  if (P.policy === 1) return Math.min(Math.floor(u[ub + 1]! * 31), 30) / 30;
  let m = P.magnitude!;
  if (P.magnitudeStd! > 0) m += P.magnitudeStd! * Math.sqrt(-2 * Math.log(Math.max(u[ub + 1]!, 1e-7))) * Math.cos(2 * Math.PI * u[ub + 2]!);
  return clamp(m, 0, 10) / 10;
}

interface PlaneStats {
  lo: number;
  hi: number;
  greyMean: number;
  lut: Float64Array;
}

/** min, max, grey mean and PIL's equalize table of plane (b, c). */
function planeStats(x: Nd, b: number, c: number): PlaneStats {
  const [, C, H, W] = x.shape as [number, number, number, number];
  const hw = H * W;
  const p = (b * C + c) * hw;
  const hist = new Array<number>(256).fill(0);
  let [lo, hi, total] = [Infinity, -Infinity, 0];
  for (let i = 0; i < hw; i++) {
    const v = x.data[p + i]!;
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
    hist[roundHalfEven(clamp(v, 0, 1) * 255)]!++;
  }
  for (let i = 0; i < hw; i++) {
    if (C === 3) {
      const q = b * 3 * hw + i;
      total += 0.299 * x.data[q]! + 0.587 * x.data[q + hw]! + 0.114 * x.data[q + 2 * hw]!;
    } else total += x.data[p + i]!;
  }
  const used = hist.filter((h) => h > 0);
  const step = used.length > 1 ? Math.floor((hw - used[used.length - 1]!) / 255) : 0;
  const lut = new Float64Array(256);
  let acc = Math.floor(step / 2);
  for (let i = 0; i < 256; i++) {
    lut[i] = (step > 0 ? Math.min(Math.floor(acc / step), 255) : i) / 255;
    acc += hist[i]!;
  }
  return { lo, hi, greyMean: total / hw, lut };
}

/** One RandAugment / TrivialAugment layer, as kernels/augment-ops.ts. */
export function augmentLayer(x: Nd, u: ArrayLike<number>, P: AugmentUniforms): Nd {
  const [B, C, H, W] = x.shape as [number, number, number, number];
  const hw = H * W;
  const out = new Float64Array(x.data.length);
  const [cx, cy] = [(W - 1) / 2, (H - 1) / 2];
  for (let b = 0; b < B; b++) {
    const ub = (b * P.layers! + P.layer!) * 8;
    const op = chooseOp(u, ub, P);
    const f = level(u, ub, P);
    const sgn = u[ub + 3]! < 0.5 ? -1 : 1;
    const factor = 1 + sgn * f * P.enhanceMax!;
    const enhance = (v: number, d: number) => clamp(d + factor * (v - d), 0, 1);
    for (let c = 0; c < C; c++) {
      const p = (b * C + c) * hw;
      const stats = op === 1 || op === 2 || op === 9 ? planeStats(x, b, c) : null;
      const sample = (xs: number, ys: number) => bilinear(x.data, p, H, W, xs, ys, P.fill!);
      for (let yo = 0; yo < H; yo++) {
        for (let xo = 0; xo < W; xo++) {
          const v = x.data[p + yo * W + xo]!;
          let r = v;
          switch (AUGMENT_OPS[op]) {
            case 'autocontrast':
              if (stats!.hi > stats!.lo) r = (v - stats!.lo) / (stats!.hi - stats!.lo);
              break;
            case 'equalize':
              r = stats!.lut[roundHalfEven(clamp(v, 0, 1) * 255)]!;
              break;
            case 'invert':
              r = 1 - v;
              break;
            case 'rotate': {
              const a = (sgn * f * P.rotateMax! * Math.PI) / 180;
              const [dx, dy] = [xo - cx, yo - cy];
              r = sample(cx + Math.cos(a) * dx + Math.sin(a) * dy, cy - Math.sin(a) * dx + Math.cos(a) * dy);
              break;
            }
            case 'posterize': {
              const bits = 8 - roundHalfEven(f * P.posterizeMax!);
              r = (roundHalfEven(clamp(v, 0, 1) * 255) & ((0xff << (8 - bits)) & 0xff)) / 255;
              break;
            }
            case 'solarize':
              if (v >= (256 - 256 * f) / 255) r = 1 - v;
              break;
            case 'solarize_add':
              if (v < 128 / 255) r = Math.min(v + f * P.solarizeAddMax!, 1);
              break;
            case 'color':
              if (C === 3) {
                const q = b * 3 * hw + yo * W + xo;
                r = enhance(v, 0.299 * x.data[q]! + 0.587 * x.data[q + hw]! + 0.114 * x.data[q + 2 * hw]!);
              }
              break;
            case 'contrast':
              r = enhance(v, stats!.greyMean);
              break;
            case 'brightness':
              r = clamp(v * factor, 0, 1);
              break;
            case 'sharpness':
              if (xo > 0 && yo > 0 && xo < W - 1 && yo < H - 1) {
                let sum = 4 * v;
                for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) sum += x.data[p + (yo + dy) * W + xo + dx]!;
                r = enhance(v, sum / 13);
              }
              break;
            case 'shear_x':
              r = sample(xo + sgn * f * P.shearMax! * (yo - cy), yo);
              break;
            case 'shear_y':
              r = sample(xo, yo + sgn * f * P.shearMax! * (xo - cx));
              break;
            case 'translate_x':
              r = sample(xo - sgn * f * P.translateMaxX!, yo);
              break;
            case 'translate_y':
              r = sample(xo, yo - sgn * f * P.translateMaxY!);
              break;
            default:
          }
          out[p + yo * W + xo] = r;
        }
      }
    }
  }
  return { data: out, shape: [...x.shape] };
}

/** Marsaglia–Tsang gamma from the uniforms at `base` (10 attempts × 3) and a boost uniform. */
function gamma(alpha: number, u: ArrayLike<number>, base: number, boost: number): number {
  const a = alpha < 1 ? alpha + 1 : alpha;
  const d = a - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  let g = d;
  for (let k = 0; k < 10; k++) {
    const i = base + 3 * k;
    const z = Math.sqrt(-2 * Math.log(Math.max(u[i]!, 1e-7))) * Math.cos(2 * Math.PI * u[i + 1]!);
    const v = (1 + c * z) ** 3;
    if (v > 0 && Math.log(Math.max(u[i + 2]!, 1e-30)) < 0.5 * z * z + d - d * v + d * Math.log(v)) {
      g = d * v;
      break;
    }
  }
  return alpha < 1 ? g * u[boost]! ** (1 / alpha) : g;
}

export interface MixRefOptions {
  mixupAlpha: number;
  cutmixAlpha: number;
  switchProb: number;
  prob: number;
}

export function mixParams(u: ArrayLike<number>, H: number, W: number, o: MixRefOptions): Float64Array {
  const cutmix = o.cutmixAlpha > 0 && (o.mixupAlpha <= 0 || u[1]! < o.switchProb);
  const alpha = cutmix ? o.cutmixAlpha : o.mixupAlpha;
  let lam = 1;
  if (u[0]! < o.prob && alpha > 0) {
    const ga = gamma(alpha, u, 2, 64);
    const gb = gamma(alpha, u, 32, 65);
    lam = ga + gb > 0 ? ga / (ga + gb) : 0.5;
  }
  let [y0, y1, x0, x1] = [0, 0, 0, 0];
  let mode = cutmix ? 2 : 1;
  if (lam >= 1) [mode, lam] = [0, 1];
  else if (cutmix) {
    const ratio = Math.sqrt(1 - lam);
    const [ch, cw] = [Math.floor(H * ratio), Math.floor(W * ratio)];
    const cy = Math.min(Math.floor(u[62]! * H), H - 1);
    const cx = Math.min(Math.floor(u[63]! * W), W - 1);
    y0 = clamp(cy - Math.floor(ch / 2), 0, H);
    y1 = clamp(cy + Math.floor(ch / 2), 0, H);
    x0 = clamp(cx - Math.floor(cw / 2), 0, W);
    x1 = clamp(cx + Math.floor(cw / 2), 0, W);
    lam = 1 - ((y1 - y0) * (x1 - x0)) / (H * W);
  }
  const params = new Float64Array(MIX_PARAMS);
  params.set([lam, mode, y0, y1, x0, x1]);
  return params;
}

export function mixApply(x: Nd, params: ArrayLike<number>): Nd {
  const [B, C, H, W] = x.shape as [number, number, number, number];
  const per = C * H * W;
  const out = Float64Array.from(x.data);
  const [lam, mode, y0, y1, x0, x1] = Array.from(params) as number[];
  for (let t = 0; t < out.length; t++) {
    const mirror = (B - 1 - Math.floor(t / per)) * per + (t % per);
    const [xi, yi] = [t % W, Math.floor(t / W) % H];
    if (mode === 1) out[t] = lam! * x.data[t]! + (1 - lam!) * x.data[mirror]!;
    else if (mode === 2 && yi >= y0! && yi < y1! && xi >= x0! && xi < x1!) out[t] = x.data[mirror]!;
  }
  return { data: out, shape: [...x.shape] };
}

export interface SoftTargetRefOptions {
  smoothing: number;
  /** Visible fraction per image (soft augmentation on) or null. */
  visible: ArrayLike<number> | null;
  softMin: number;
  softPower: number;
}

export function softTargets(labels: ArrayLike<number>, K: number, lam: number, o: SoftTargetRefOptions): Nd {
  const B = labels.length;
  const target = (i: number, k: number) => {
    const onehot = o.smoothing / K + (labels[i] === k ? 1 - o.smoothing : 0);
    if (!o.visible) return onehot;
    const p = 1 - (1 - o.softMin) * (1 - clamp(o.visible[i]!, 0, 1)) ** o.softPower;
    return p * onehot + (1 - p) / K;
  };
  const out = new Float64Array(B * K);
  for (let b = 0; b < B; b++) for (let k = 0; k < K; k++) out[b * K + k] = lam * target(b, k) + (1 - lam) * target(B - 1 - b, k);
  return { data: out, shape: [B, K] };
}

export interface EraseRefOptions {
  prob: number;
  area: [number, number];
  ratio: [number, number];
}

export function eraseParams(u: ArrayLike<number>, B: number, H: number, W: number, o: EraseRefOptions): Float64Array {
  const boxes = new Float64Array(B * 4);
  const [lrLo, lrHi] = [Math.log(o.ratio[0]), Math.log(o.ratio[1])];
  for (let b = 0; b < B; b++) {
    const ub = b * ERASE_UNIFORMS;
    if (u[ub]! >= o.prob) continue;
    for (let k = 0; k < 10; k++) {
      const i = ub + 1 + 4 * k;
      const target = mix(o.area[0], o.area[1], u[i]!) * H * W;
      const ratio = Math.exp(mix(lrLo, lrHi, u[i + 1]!));
      const h = roundHalfEven(Math.sqrt(target * ratio));
      const w = roundHalfEven(Math.sqrt(target / ratio));
      if (w < W && h < H) {
        boxes.set([Math.min(Math.floor(u[i + 2]! * (H - h + 1)), H - h), Math.min(Math.floor(u[i + 3]! * (W - w + 1)), W - w), h, w], b * 4);
        break;
      }
    }
  }
  return boxes;
}

export function eraseApply(x: Nd, boxes: ArrayLike<number>, noise: ArrayLike<number>): Nd {
  const [, C, H, W] = x.shape as [number, number, number, number];
  const out = Float64Array.from(x.data);
  for (let t = 0; t < out.length; t++) {
    const b = Math.floor(t / (C * H * W));
    const [xi, yi] = [t % W, Math.floor(t / W) % H];
    const [top, left, h, w] = [boxes[b * 4]!, boxes[b * 4 + 1]!, boxes[b * 4 + 2]!, boxes[b * 4 + 3]!];
    if (yi >= top && yi < top + h && xi >= left && xi < left + w) out[t] = noise[t]!;
  }
  return { data: out, shape: [...x.shape] };
}

// ---- DINO's photometric augmentation (kernels/augment-color.ts)

export interface ColorRefOptions {
  jitterProb: number;
  brightness: number;
  contrast: number;
  saturation: number;
  hue: number;
  grayProb: number;
  blurProb: number;
  blurSigma: [number, number];
  solarizeProb: number;
}

const LUMA = [0.299, 0.587, 0.114] as const;
const grey = (rgb: number[]) => rgb[0]! * LUMA[0] + rgb[1]! * LUMA[1] + rgb[2]! * LUMA[2];

function rgbAt(x: Nd, b: number, i: number): number[] {
  const [, C, H, W] = x.shape as [number, number, number, number];
  const base = b * C * H * W;
  return C === 3 ? [0, 1, 2].map((c) => x.data[base + c * H * W + i]!) : [x.data[base + i]!, x.data[base + i]!, x.data[base + i]!];
}

const fract = (v: number) => v - Math.floor(v);

/** torchvision's _rgb2hsv, the hue shifted by hf modulo 1, _hsv2rgb. */
function shiftHue([r, g, b]: number[], hf: number): number[] {
  const maxc = Math.max(r!, g!, b!);
  const minc = Math.min(r!, g!, b!);
  const eqc = maxc === minc;
  const cr = maxc - minc;
  const s = cr / (eqc ? 1 : maxc);
  const [rc, gc, bc] = [r!, g!, b!].map((v) => (maxc - v) / (eqc ? 1 : cr)) as [number, number, number];
  const h0 = maxc === r ? bc - gc : maxc === g ? 2 + rc - bc : 4 + gc - rc;
  const h = fract(fract(h0 / 6 + 1) + hf);
  const i6 = Math.floor(h * 6);
  const f = h * 6 - i6;
  const v = maxc;
  const p = clamp(v * (1 - s), 0, 1);
  const q = clamp(v * (1 - s * f), 0, 1);
  const t = clamp(v * (1 - s * (1 - f)), 0, 1);
  return [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i6 % 6]!;
}

function jitterStep(rgb: number[], step: number, f: number[], mean: number, C: number): number[] {
  if (step === 0) return rgb.map((v) => clamp(v * f[0]!, 0, 1));
  if (step === 1) return rgb.map((v) => clamp(f[1]! * v + (1 - f[1]!) * mean, 0, 1));
  if (C === 1) return rgb;
  if (step === 3) return f[3] === 0 ? rgb : shiftHue(rgb, f[3]!);
  const g = grey(rgb);
  return rgb.map((v) => clamp(f[2]! * v + (1 - f[2]!) * g, 0, 1));
}

export function colorParams(x: Nd, u: ArrayLike<number>, o: ColorRefOptions): Float64Array {
  const [B, C, H, W] = x.shape as [number, number, number, number];
  const out = new Float64Array(B * COLOR_PARAMS);
  for (let b = 0; b < B; b++) {
    const at = (k: number) => u[b * COLOR_UNIFORMS + k]!;
    const jitter = at(0) < o.jitterProb;
    const f = [mix(Math.max(0, 1 - o.brightness), 1 + o.brightness, at(1)), mix(Math.max(0, 1 - o.contrast), 1 + o.contrast, at(2)), mix(Math.max(0, 1 - o.saturation), 1 + o.saturation, at(3)), mix(-o.hue, o.hue, at(9))];
    const order = Math.min(Math.floor(at(4) * COLOR_ORDERS.length), COLOR_ORDERS.length - 1);
    let mean = 0;
    if (jitter) {
      const before = COLOR_ORDERS[order]!.slice(0, COLOR_ORDERS[order]!.indexOf(1));
      for (let i = 0; i < H * W; i++) mean += grey(before.reduce((rgb, step) => jitterStep(rgb, step, f, 0, C), rgbAt(x, b, i)));
      mean /= H * W;
    }
    out.set([f[0]!, f[1]!, f[2]!, jitter ? order : -1, mean, at(5) < o.grayProb ? 1 : 0, at(6) < o.blurProb ? mix(o.blurSigma[0], o.blurSigma[1], at(7)) : 0, at(8) < o.solarizeProb ? 1 : 0, f[3]!], b * COLOR_PARAMS);
  }
  return out;
}

export function colorApply(x: Nd, params: ArrayLike<number>): Nd {
  const [B, C, H, W] = x.shape as [number, number, number, number];
  const out = new Float64Array(x.data.length);
  for (let b = 0; b < B; b++) {
    const k = Array.from({ length: COLOR_PARAMS }, (_, i) => params[b * COLOR_PARAMS + i]!);
    const [f, order, mean, gray, sigma, solarize] = [[...k.slice(0, 3), k[8]!], k[3]!, k[4]!, k[5]!, k[6]!, k[7]!];
    const colored = (i: number, c: number) => {
      let rgb = rgbAt(x, b, i);
      if (order >= 0) for (const step of COLOR_ORDERS[order]!) rgb = jitterStep(rgb, step, f, mean, C);
      return gray > 0 && C === 3 ? grey(rgb) : rgb[c]!;
    };
    for (let c = 0; c < C; c++) {
      for (let yi = 0; yi < H; yi++) {
        for (let xi = 0; xi < W; xi++) {
          let v: number;
          if (sigma > 0) {
            const r = Math.min(Math.ceil(3 * sigma), MAX_BLUR_RADIUS);
            let [acc, wsum] = [0, 0];
            for (let dy = -r; dy <= r; dy++) {
              for (let dx = -r; dx <= r; dx++) {
                const w = Math.exp((-(dy * dy) - dx * dx) / (2 * sigma * sigma));
                acc += w * colored(clamp(yi + dy, 0, H - 1) * W + clamp(xi + dx, 0, W - 1), c);
                wsum += w;
              }
            }
            v = acc / wsum;
          } else v = colored(yi * W + xi, c);
          if (solarize > 0 && v >= 128 / 255) v = 1 - v;
          out[((b * C + c) * H + yi) * W + xi] = v;
        }
      }
    }
  }
  return { data: out, shape: [...x.shape] };
}
