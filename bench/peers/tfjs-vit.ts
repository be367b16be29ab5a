// The same ViT as tessera's preset (timm math: pre-norm blocks, exact-erf GELU, class token,
// learned position embedding), written with TensorFlow.js ops for the training-step race.
import type * as TfNs from '@tensorflow/tfjs';
import type { Tf as TfModule } from './env.js';
import type { ViTConfig } from '../../models/vit.js';

type Tf = TfModule;
type Tensor = TfNs.Tensor;

export function tfjsVit(tf: Tf, c: ViTConfig) {
  const D = c.embed_dim;
  const P = c.patch_size;
  const g = c.img_size / P;
  const N = g * g;
  const H = c.num_heads;
  const hd = D / H;
  const hidden = Math.round(D * c.mlp_ratio);
  const v = (shape: number[], init: 'normal' | 'zeros' | 'ones' = 'normal') =>
    tf.variable(init === 'normal' ? tf.truncatedNormal(shape, 0, 0.02) : init === 'zeros' ? tf.zeros(shape) : tf.ones(shape));
  const params = {
    patchW: v([c.in_chans * P * P, D]), patchB: v([D], 'zeros'),
    cls: v([1, 1, D]), pos: v([1, N + 1, D]),
    blocks: Array.from({ length: c.depth }, () => ({
      n1g: v([D], 'ones'), n1b: v([D], 'zeros'), qkvW: v([D, 3 * D]), qkvB: v([3 * D], 'zeros'), projW: v([D, D]), projB: v([D], 'zeros'),
      n2g: v([D], 'ones'), n2b: v([D], 'zeros'), fc1W: v([D, hidden]), fc1B: v([hidden], 'zeros'), fc2W: v([hidden, D]), fc2B: v([D], 'zeros'),
    })),
    ng: v([D], 'ones'), nb: v([D], 'zeros'), headW: v([D, c.num_classes]), headB: v([c.num_classes], 'zeros'),
  };
  const dense = (x: Tensor, w: Tensor, b: Tensor) => {
    const s = x.shape;
    return tf.add(tf.matMul(tf.reshape(x, [-1, s[s.length - 1]!]) as TfNs.Tensor2D, w as TfNs.Tensor2D), b).reshape([...s.slice(0, -1), w.shape[1]!]);
  };
  const layerNorm = (x: Tensor, gamma: Tensor, beta: Tensor) => {
    const { mean, variance } = tf.moments(x, -1, true);
    return tf.add(tf.mul(tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, c.norm_eps))), gamma), beta);
  };
  const gelu = (x: Tensor) => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2))));
  const forward = (x: Tensor) => {
    const B = x.shape[0]!;
    // (B, C, H, W) → patches (B, N, C·P·P) in the conv weight's (c, u, v) order
    let h = tf.reshape(tf.transpose(tf.reshape(x, [B, c.in_chans, g, P, g, P]), [0, 2, 4, 1, 3, 5]), [B, N, c.in_chans * P * P]);
    h = dense(h, params.patchW, params.patchB);
    h = tf.add(tf.concat([tf.tile(params.cls, [B, 1, 1]), h], 1), params.pos);
    const T_ = N + 1;
    for (const p of params.blocks) {
      const qkv = tf.transpose(tf.reshape(dense(layerNorm(h, p.n1g, p.n1b), p.qkvW, p.qkvB), [B, T_, 3, H, hd]), [2, 0, 3, 1, 4]);
      const [q, k, vv] = tf.unstack(qkv, 0).map((t) => tf.reshape(t, [B * H, T_, hd]) as TfNs.Tensor3D);
      const att = tf.softmax(tf.mul(tf.matMul(q!, k!, false, true), hd ** -0.5));
      const o = tf.reshape(tf.transpose(tf.reshape(tf.matMul(att, vv!), [B, H, T_, hd]), [0, 2, 1, 3]), [B, T_, D]);
      h = tf.add(h, dense(o, p.projW, p.projB));
      h = tf.add(h, dense(gelu(dense(layerNorm(h, p.n2g, p.n2b), p.fc1W, p.fc1B)), p.fc2W, p.fc2B));
    }
    const cls = tf.reshape(tf.slice(layerNorm(h, params.ng, params.nb), [0, 0, 0], [B, 1, D]), [B, D]);
    return dense(cls, params.headW, params.headB);
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
