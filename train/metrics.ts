// Classification metrics on host logits: top-1 accuracy, NLL, expected calibration error
// (Guo et al. 2017, equal-width confidence bins) and the confusion matrix.

export interface ClassificationMetrics {
  accuracy: number;
  nll: number;
  ece: number;
  /** confusion[true][predicted] counts. */
  confusion: number[][];
  count: number;
}

export function classificationMetrics(logits: Float32Array, labels: Int32Array, classes: number, bins = 15): ClassificationMetrics {
  const n = labels.length;
  if (logits.length !== n * classes) throw new Error(`metrics: ${logits.length} logits for ${n} labels × ${classes} classes`);
  const confusion = Array.from({ length: classes }, () => new Array<number>(classes).fill(0));
  const binConf = new Float64Array(bins);
  const binAcc = new Float64Array(bins);
  const binCount = new Float64Array(bins);
  let correct = 0;
  let nll = 0;
  for (let i = 0; i < n; i++) {
    let mx = -Infinity;
    let arg = 0;
    for (let c = 0; c < classes; c++) {
      const v = logits[i * classes + c]!;
      if (v > mx) (mx = v), (arg = c);
    }
    let s = 0;
    for (let c = 0; c < classes; c++) s += Math.exp(logits[i * classes + c]! - mx);
    const lse = mx + Math.log(s);
    const y = labels[i]!;
    nll += lse - logits[i * classes + y]!;
    const conf = 1 / s; // softmax probability of the argmax
    const hit = arg === y ? 1 : 0;
    correct += hit;
    confusion[y]![arg] = confusion[y]![arg]! + 1;
    const b = Math.min(bins - 1, Math.floor(conf * bins));
    binConf[b] = binConf[b]! + conf;
    binAcc[b] = binAcc[b]! + hit;
    binCount[b] = binCount[b]! + 1;
  }
  let ece = 0;
  for (let b = 0; b < bins; b++) if (binCount[b]) ece += Math.abs(binAcc[b]! - binConf[b]!) / n;
  return { accuracy: n ? correct / n : 0, nll: n ? nll / n : 0, ece, confusion, count: n };
}

export function confusionTable(m: number[][], names: string[]): string {
  const w = Math.max(5, ...names.map((s) => s.length));
  const head = ' '.repeat(w) + ' ' + names.map((_, i) => String(i).padStart(5)).join('');
  const rows = m.map((r, i) => `${names[i]!.padStart(w)} ${r.map((v) => String(v).padStart(5)).join('')}`);
  return [head, ...rows].join('\n');
}
