// The tape, micrograd-style: every op records its inputs and a backward closure on its output;
// backward() sorts the graph topologically and walks it in reverse, adding gradients on fan-out.
import { keep, scope } from './memory.js';
import { type GradNode, shapeStr, Tensor } from './tensor.js';

let gradEnabled = true;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs `fn` without recording the tape; restores the previous state even when `fn` throws. */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Whether an op on these inputs records its backward now. */
export function recording(inputs: readonly Tensor[]): boolean {
  return gradEnabled && inputs.some((t) => t.requiresGrad);
}

/** Attaches a backward rule to `out` when any input requires a gradient. `saved` are tensors the
 * op made for its backward alone (statistics, probabilities, pre-activations): they belong to the
 * tape node, which releases them once its backward has run or when `out` is disposed, and they
 * are released at once when nothing is recorded, so an op called outside a scope leaves only its
 * result behind. Returns `out`. */
export function record(op: string, out: Tensor, inputs: Tensor[], backward: GradNode['backward'], saved: Tensor[] = []): Tensor {
  if (recording(inputs)) {
    out.requiresGrad = true;
    out.gradFn = { op, inputs, backward, saved };
  } else for (const t of saved) t.dispose();
  return out;
}

/** Runs an op composed of other ops. When no gradient is recorded its intermediate tensors are
 * released before it returns (a scope around it); when one is, they are the tape's and live until
 * the enclosing scope ends, like the intermediates of any expression. */
export function composite<T>(inputs: readonly (Tensor | null | undefined)[], fn: () => T): T {
  return recording(inputs.filter((t): t is Tensor => !!t)) ? fn() : scope(fn);
}

// Gradients a backward rule returned with the pending gradient of their input already added in.
const foldedGrads = new WeakSet<Tensor>();

/** Marks a gradient a backward rule computed as (its own part + the `pending` gradient the tape
 * handed it for that input): the tape then takes it as the input's whole gradient so far. */
export function folded(t: Tensor): Tensor {
  foldedGrads.add(t);
  return t;
}

/** Same storage, no history. */
export function detach(t: Tensor): Tensor {
  return Tensor.view(t, t.shape);
}

// Accumulation needs `add` and a fill of ones; the ops module installs them to keep this file
// free of kernel imports (and the import graph acyclic).
interface TapeOps {
  add(a: Tensor, b: Tensor): Tensor;
  onesLike(t: Tensor): Tensor;
  copy(t: Tensor): Tensor;
}
let ops: TapeOps | undefined;
export function installTapeOps(o: TapeOps): void {
  ops = o;
}

function topoSort(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  // Iterative DFS: ViT graphs are deep enough to make recursion a risk.
  const stack: [Tensor, number][] = [[root, 0]];
  seen.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1]!;
    const [t, i] = top;
    const inputs = t.gradFn?.inputs ?? [];
    if (i < inputs.length) {
      top[1]++;
      const child = inputs[i]!;
      if (child.requiresGrad && !seen.has(child)) {
        seen.add(child);
        stack.push([child, 0]);
      }
    } else {
      stack.pop();
      order.push(t);
    }
  }
  return order;
}

/** Reverse-mode differentiation from `root` (a scalar unless `grad` is given). Gradients of
 * leaves accumulate into `.grad`; intermediate gradients are freed as soon as they are used. */
export function backward(root: Tensor, grad?: Tensor, opts: { retainGraph?: boolean } = {}): void {
  if (!ops) throw new Error('backward(): engine ops are not loaded (import from engine/index.ts)');
  if (!root.requiresGrad) throw new Error(`backward(): ${root.describe()} does not require grad (no input of its graph has requiresGrad)`);
  if (!grad && root.size !== 1) throw new Error(`backward(): ${root.describe()} is not a scalar; pass the gradient of the output`);
  if (grad && grad.size !== root.size) throw new Error(`backward(): gradient ${shapeStr(grad.shape)} does not match ${root.describe()}`);
  const order = topoSort(root);
  const grads = new Map<Tensor, Tensor>();
  // How many pending slots (map entries) hold each gradient tensor: one tensor may flow to
  // several inputs (add's backward passes the same gradient to both sides).
  const holders = new Map<Tensor, number>();
  const hold = (g: Tensor) => holders.set(g, (holders.get(g) ?? 0) + 1);
  const drop = (g: Tensor, owned: Set<Tensor>) => {
    const n = (holders.get(g) ?? 0) - 1;
    holders.set(g, n);
    if (n <= 0 && !owned.has(g) && g !== grad) g.dispose();
  };
  const owned = new Set<Tensor>();
  const seed = grad ?? ops.onesLike(root);
  grads.set(root, seed);
  hold(seed);

  for (let k = order.length - 1; k >= 0; k--) {
    const t = order[k]!;
    const g = grads.get(t);
    if (!g) continue;
    grads.delete(t);
    const node = t.gradFn;
    if (!node) {
      // A leaf: its gradient is kept (owned by the tensor, outside any scope).
      let acc: Tensor;
      if (t.grad) {
        acc = ops.add(t.grad, g);
        t.grad.dispose();
      } else acc = (holders.get(g) ?? 0) > 1 || g === grad ? ops.copy(g) : g;
      t.grad = keep(acc);
      owned.add(acc);
      drop(g, owned);
      continue;
    }
    // Temporaries of the rule are freed at once; only the returned gradients survive. The rule sees
    // what each input has received so far, to add it in where its kernel can.
    const pending = node.inputs.map((input) => (input.requiresGrad ? grads.get(input) : undefined));
    const inputGrads = scope(() => node.backward(g, pending));
    const taken = new Set<Tensor>();
    node.inputs.forEach((input, i) => {
      if (!input.requiresGrad) return;
      const gi = inputGrads[i];
      if (!gi) throw new Error(`no backward for ${node.op} on input ${i} (${input.describe()})`);
      if (gi.size !== input.size) {
        throw new Error(`backward of ${node.op}: gradient ${shapeStr(gi.shape)} for input ${i} does not match ${input.describe()}`);
      }
      taken.add(gi);
      const prev = grads.get(input);
      if (foldedGrads.delete(gi)) {
        // gi already includes prev, the gradient the rule was handed for this input.
        if (!prev || prev !== pending[i]) throw new Error(`backward of ${node.op}: input ${i}'s gradient was folded into one the tape did not hand it`);
        grads.set(input, gi);
        hold(gi);
        drop(prev, owned);
      } else if (prev) {
        const sum = ops!.add(prev, gi);
        grads.set(input, sum);
        hold(sum);
        drop(prev, owned);
        if (!holders.get(gi)) gi !== g && gi.dispose();
      } else {
        grads.set(input, gi);
        hold(gi);
      }
    });
    // Gradients a rule computed for inputs that want none (a layer norm's γ outside training).
    for (const gi of inputGrads) {
      if (!gi) continue;
      foldedGrads.delete(gi);
      if (!taken.has(gi) && gi !== g && !holders.get(gi)) gi.dispose();
    }
    drop(g, owned);
    if (!opts.retainGraph) {
      for (const saved of node.saved ?? []) saved.dispose();
      t.gradFn = null;
    }
  }
}
