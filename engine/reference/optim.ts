// CPU reference for one optimizer step, as torch.optim.AdamW and torch.optim.SGD.

export function adamw(p: Float64Array, g: Float64Array, m: Float64Array, v: Float64Array, t: number, o: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number }): void {
  const bc1 = 1 - o.beta1 ** t;
  const bc2 = 1 - o.beta2 ** t;
  for (let i = 0; i < p.length; i++) {
    m[i] = o.beta1 * m[i]! + (1 - o.beta1) * g[i]!;
    v[i] = o.beta2 * v[i]! + (1 - o.beta2) * g[i]! * g[i]!;
    p[i] = p[i]! * (1 - o.lr * o.weightDecay) - (o.lr * (m[i]! / bc1)) / (Math.sqrt(v[i]! / bc2) + o.eps);
  }
}

export function sgd(p: Float64Array, g: Float64Array, buf: Float64Array, first: boolean, o: { lr: number; momentum: number; weightDecay: number }): void {
  for (let i = 0; i < p.length; i++) {
    const d = g[i]! + o.weightDecay * p[i]!;
    buf[i] = first ? d : o.momentum * buf[i]! + d;
    p[i] = p[i]! - o.lr * (o.momentum === 0 ? d : buf[i]!);
  }
}
