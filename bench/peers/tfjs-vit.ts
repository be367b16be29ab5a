// The same ViT as tessera's preset (timm math: pre-norm blocks, exact-erf GELU, class token,
// learned position embedding), written with TensorFlow.js ops for the training-step race.
import type * as TfNs from '@tensorflow/tfjs';
import type { Tf as TfModule } from './env.js';
import type { ViTConfig } from '../../models/vit.js';

type Tf = TfModule;
type Tensor = TfNs.Tensor;

function variable(tf: Tf, shape: number[], init: 'normal' | 'zeros' | 'ones' = 'normal'): TfNs.Variable {
  return tf.variable(init === 'normal' ? tf.truncatedNormal(shape, 0, 0.02) : init === 'zeros' ? tf.zeros(shape) : tf.ones(shape));
}

function dense(tf: Tf, x: Tensor, w: Tensor, b: Tensor): Tensor {
  const s = x.shape;
  return tf.add(tf.matMul(tf.reshape(x, [-1, s[s.length - 1]!]) as TfNs.Tensor2D, w as TfNs.Tensor2D), b).reshape([...s.slice(0, -1), w.shape[1]!]);
}

function layerNorm(tf: Tf, x: Tensor, gamma: Tensor, beta: Tensor, eps: number): Tensor {
  const { mean, variance } = tf.moments(x, -1, true);
  return tf.add(tf.mul(tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, eps))), gamma), beta);
}

/** timm's pre-norm Block `x + attn(norm1(x))`, `x + mlp(norm2(x))` on (B, N, D) tensors. */
export function tfjsBlock(tf: Tf, D: number, H: number, hidden: number, eps: number) {
  const hd = D / H;
  const v = (shape: number[], init: 'normal' | 'zeros' | 'ones' = 'normal') => variable(tf, shape, init);
  const p = {
    n1g: v([D], 'ones'), n1b: v([D], 'zeros'), qkvW: v([D, 3 * D]), qkvB: v([3 * D], 'zeros'), projW: v([D, D]), projB: v([D], 'zeros'),
    n2g: v([D], 'ones'), n2b: v([D], 'zeros'), fc1W: v([D, hidden]), fc1B: v([hidden], 'zeros'), fc2W: v([hidden, D]), fc2B: v([D], 'zeros'),
  };
  const gelu = (x: Tensor) => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2))));
  const forward = (h: Tensor): Tensor => {
    const [B, N] = h.shape as [number, number, number];
    const qkv = tf.transpose(tf.reshape(dense(tf, layerNorm(tf, h, p.n1g, p.n1b, eps), p.qkvW, p.qkvB), [B, N, 3, H, hd]), [2, 0, 3, 1, 4]);
    const [q, k, vv] = tf.unstack(qkv, 0).map((t) => tf.reshape(t, [B * H, N, hd]) as TfNs.Tensor3D);
    const att = tf.softmax(tf.mul(tf.matMul(q!, k!, false, true), hd ** -0.5));
    const o = tf.reshape(tf.transpose(tf.reshape(tf.matMul(att, vv!), [B, H, N, hd]), [0, 2, 1, 3]), [B, N, D]);
    const x = tf.add(h, dense(tf, o, p.projW, p.projB));
    return tf.add(x, dense(tf, gelu(dense(tf, layerNorm(tf, x, p.n2g, p.n2b, eps), p.fc1W, p.fc1B)), p.fc2W, p.fc2B));
  };
  return { params: p, variables: Object.values(p), forward };
}

export function tfjsVit(tf: Tf, c: ViTConfig) {
  const D = c.embed_dim;
  const P = c.patch_size;
  const g = c.img_size / P;
  const N = g * g;
  const H = c.num_heads;
  const hidden = Math.round(D * c.mlp_ratio);
  const v = (shape: number[], init: 'normal' | 'zeros' | 'ones' = 'normal') => variable(tf, shape, init);
  const params = {
    patchW: v([c.in_chans * P * P, D]), patchB: v([D], 'zeros'),
    cls: v([1, 1, D]), pos: v([1, N + 1, D]),
    blocks: Array.from({ length: c.depth }, () => tfjsBlock(tf, D, H, hidden, c.norm_eps)),
    ng: v([D], 'ones'), nb: v([D], 'zeros'), headW: v([D, c.num_classes]), headB: v([c.num_classes], 'zeros'),
  };
  const forward = (x: Tensor) => {
    const B = x.shape[0]!;
    // (B, C, H, W) → patches (B, N, C·P·P) in the conv weight's (c, u, v) order
    let h = tf.reshape(tf.transpose(tf.reshape(x, [B, c.in_chans, g, P, g, P]), [0, 2, 4, 1, 3, 5]), [B, N, c.in_chans * P * P]);
    h = dense(tf, h, params.patchW, params.patchB);
    h = tf.add(tf.concat([tf.tile(params.cls, [B, 1, 1]), h], 1), params.pos);
    for (const block of params.blocks) h = block.forward(h);
    const cls = tf.reshape(tf.slice(layerNorm(tf, h, params.ng, params.nb, c.norm_eps), [0, 0, 0], [B, 1, D]), [B, D]);
    return dense(tf, cls, params.headW, params.headB);
  };
  const optimizer = tf.train.adam(1e-3);
  /** One AdamW-like step (tf's Adam; decay omitted) on a batch; resolves with the loss. */
  const step = async (x: Tensor, onehot: Tensor): Promise<number> => {
    const cost = optimizer.minimize(() => tf.losses.softmaxCrossEntropy(onehot, forward(x)) as TfNs.Scalar, true);
    const value = (await cost!.data())[0]!;
    cost!.dispose();
    return value;
  };
  return { params, forward, step };
}
