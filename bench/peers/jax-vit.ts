// The same ViT as tessera's patchify presets (timm math: pre-norm blocks, exact-erf GELU, class
// token, learned position embedding), written with jax-js: the whole training step (forward,
// value-and-grad, Adam with bias correction) under one `jit`, on a chosen jax-js device.
// jax-js arrays are reference-counted and every function consumes its arguments: each array is
// used once, or `.ref` is taken first (see the jax-js README).
import type { ViTConfig } from '../../models/vit.js';
import type { Jax } from './env.js';

type JArray = ReturnType<Jax['numpy']['zeros']>;

const BETA1 = 0.9;
const BETA2 = 0.999;
const EPS = 1e-8;

export function jaxVit(jax: Jax, c: ViTConfig, device: string, lr = 1e-3) {
  const np = jax.numpy;
  const D = c.embed_dim;
  const P = c.patch_size;
  const C = c.in_chans;
  const g = c.img_size / P;
  const N = g * g;
  const T = N + 1;
  const H = c.num_heads;
  const hd = D / H;
  const hidden = Math.round(D * c.mlp_ratio);
  let seed = 0;
  const normal = (shape: number[]): JArray => jax.random.normal(jax.random.key(seed++), shape).mul(0.02);
  // Parameters as one flat list (a jax-js JsTree), in this order per block:
  const PER_BLOCK = 12; // n1g n1b qkvW qkvB projW projB n2g n2b fc1W fc1B fc2W fc2B
  const shapes: [number[], 'normal' | 'zeros' | 'ones'][] = [
    [[C * P * P, D], 'normal'], [[D], 'zeros'], [[1, 1, D], 'normal'], [[1, T, D], 'normal'],
  ];
  for (let i = 0; i < c.depth; i++) {
    shapes.push([[D], 'ones'], [[D], 'zeros'], [[D, 3 * D], 'normal'], [[3 * D], 'zeros'], [[D, D], 'normal'], [[D], 'zeros'],
      [[D], 'ones'], [[D], 'zeros'], [[D, hidden], 'normal'], [[hidden], 'zeros'], [[hidden, D], 'normal'], [[D], 'zeros']);
  }
  shapes.push([[D], 'ones'], [[D], 'zeros'], [[D, c.num_classes], 'normal'], [[c.num_classes], 'zeros']);
  const init = (): JArray[] => shapes.map(([s, kind]) => (kind === 'normal' ? normal(s) : kind === 'zeros' ? np.zeros(s) : np.ones(s)));

  const layerNorm = (x: JArray, gamma: JArray, beta: JArray): JArray => {
    const mean = np.mean(x.ref, -1, { keepdims: true });
    const xc = x.sub(mean);
    const variance = np.mean(np.square(xc.ref), -1, { keepdims: true });
    return xc.div(np.sqrt(variance.add(c.norm_eps))).mul(gamma).add(beta);
  };
  const dense = (x: JArray, w: JArray, b: JArray): JArray => np.matmul(x, w).add(b);

  const forward = (p: JArray[], x: JArray): JArray => {
    const B = x.shape[0]!;
    let at = 0;
    const next = () => p[at++]!;
    let h = x.reshape([B, C, g, P, g, P]).transpose([0, 2, 4, 1, 3, 5]).reshape([B * N, C * P * P]);
    h = dense(h, next(), next()).reshape([B, N, D]);
    const cls = np.broadcastTo(next(), [B, 1, D]);
    h = np.concatenate([cls, h], 1).add(next());
    for (let i = 0; i < c.depth; i++) {
      const [n1g, n1b, qkvW, qkvB, projW, projB, n2g, n2b, fc1W, fc1B, fc2W, fc2B] = Array.from({ length: PER_BLOCK }, next);
      const qkv = dense(layerNorm(h.ref, n1g!, n1b!).reshape([B * T, D]), qkvW!, qkvB!).reshape([B, T, 3, H, hd]).transpose([2, 0, 3, 1, 4]);
      const q = qkv.ref.slice(0);
      const k = qkv.ref.slice(1);
      const v = qkv.slice(2);
      const att = jax.nn.softmax(np.matmul(q, k.transpose([0, 1, 3, 2])).mul(hd ** -0.5), -1);
      const o = np.matmul(att, v).transpose([0, 2, 1, 3]).reshape([B * T, D]);
      h = h.add(dense(o, projW!, projB!).reshape([B, T, D]));
      const f = jax.nn.gelu(dense(layerNorm(h.ref, n2g!, n2b!).reshape([B * T, D]), fc1W!, fc1B!), { approximate: false });
      h = h.add(dense(f, fc2W!, fc2B!).reshape([B, T, D]));
    }
    const ng = next();
    const nb = next();
    const tok = layerNorm(h, ng, nb).slice([], 0);
    return dense(tok, next(), next());
  };

  const lossFn = (p: JArray[], x: JArray, onehot: JArray): JArray => {
    const logp = jax.nn.logSoftmax(forward(p, x), -1);
    return np.sum(onehot.mul(logp)).mul(-1 / x.shape[0]!);
  };

  // [loss, params, m, v] ← step(params, m, v, x, onehot, lr_t) with lr_t = lr·sqrt(1 − β2^t)/(1 − β1^t).
  const step = jax.jit((p: JArray[], m: JArray[], v: JArray[], x: JArray, onehot: JArray, lrt: JArray) => {
    const [loss, grads] = jax.valueAndGrad(lossFn)(jax.tree.ref(p), x, onehot) as unknown as [JArray, JArray[]];
    const m2 = m.map((mi, i) => mi.mul(BETA1).add(grads[i]!.ref.mul(1 - BETA1)));
    const v2 = v.map((vi, i) => vi.mul(BETA2).add(np.square(grads[i]!).mul(1 - BETA2)));
    const p2 = p.map((pi, i) => pi.sub(m2[i]!.ref.div(np.sqrt(v2[i]!.ref).add(EPS)).mul(lrt.ref)));
    lrt.dispose();
    return [loss, p2, m2, v2] as JArray[] | JArray[][] as never;
  });

  let params = init();
  let m = params.map((t) => np.zerosLike(t.ref));
  let v = params.map((t) => np.zerosLike(t.ref));
  let t = 0;

  return {
    /** Moves the parameters and optimizer state to the device (call once before stepping). */
    async ready(): Promise<void> {
      params = (await jax.devicePut(params, device as never)) as JArray[];
      m = (await jax.devicePut(m, device as never)) as JArray[];
      v = (await jax.devicePut(v, device as never)) as JArray[];
    },
    /** One training step on (x [B, C, H, W], one-hot labels); resolves with the loss. */
    async step(x: JArray, onehot: JArray): Promise<number> {
      t++;
      const lrt = np.array([(lr * Math.sqrt(1 - BETA2 ** t)) / (1 - BETA1 ** t)], { device } as never).reshape([]);
      const [loss, p2, m2, v2] = step(params, m, v, x.ref, onehot.ref, lrt) as unknown as [JArray, JArray[], JArray[], JArray[]];
      params = p2;
      m = m2;
      v = v2;
      return (await loss.data())[0]!;
    },
    dispose(): void {
      for (const a of [...params, ...m, ...v]) a.dispose();
    },
  };
}
