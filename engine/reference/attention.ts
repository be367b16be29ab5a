// CPU reference for multi-head attention from a packed qkv (B, N, 3D), composed from the
// reference matmul and softmax: the oracle for the attention op and its backward.
import { matmul, matmulVjp } from './matmul.js';
import { permute, permuteVjp } from './movement.js';
import { type Nd, zerosNd } from './nd.js';
import { softmax, softmaxVjp } from './softmax.js';

function split(qkv: Nd, nh: number): [Nd, Nd, Nd] {
  const [B, N, threeD] = qkv.shape as [number, number, number];
  const D = threeD / 3;
  const five = { data: qkv.data, shape: [B, N, 3, nh, D / nh] };
  const p = permute(five, [2, 0, 3, 1, 4]); // (3, B, nh, N, hd)
  const size = p.data.length / 3;
  const part = (i: number): Nd => ({ data: p.data.slice(i * size, (i + 1) * size), shape: [B, nh, N, D / nh] });
  return [part(0), part(1), part(2)];
}

function scaleNd(x: Nd, s: number): Nd {
  return { data: x.data.map((v) => v * s), shape: [...x.shape] };
}

export function attention(qkv: Nd, nh: number): Nd {
  const [B, N, threeD] = qkv.shape as [number, number, number];
  const hd = threeD / 3 / nh;
  const [q, k, v] = split(qkv, nh);
  const probs = softmax(scaleNd(matmul(q, k, false, true), hd ** -0.5));
  const o = matmul(probs, v); // (B, nh, N, hd)
  return { data: permute(o, [0, 2, 1, 3]).data, shape: [B, N, threeD / 3] };
}

export function attentionVjp(qkv: Nd, nh: number, g: Nd): Nd {
  const [B, N, threeD] = qkv.shape as [number, number, number];
  const D = threeD / 3;
  const hd = D / nh;
  const [q, k, v] = split(qkv, nh);
  const s = scaleNd(matmul(q, k, false, true), hd ** -0.5);
  const probs = softmax(s);
  const go = permuteVjp({ data: g.data, shape: [B, N, nh, hd] }, [0, 2, 1, 3]);
  const [dp, dv] = matmulVjp(probs, v, go);
  const ds = scaleNd(softmaxVjp(s, dp), hd ** -0.5);
  const [dq, dk] = matmulVjp(q, k, ds, false, true);
  const stacked = zerosNd([3, B, nh, N, hd]);
  [dq, dk, dv].forEach((t, i) => stacked.data.set(t.data, i * t.data.length));
  return { data: permuteVjp(stacked, [2, 0, 3, 1, 4]).data, shape: [B, N, threeD] };
}
