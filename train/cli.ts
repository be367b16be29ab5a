// tessera's command line. Subcommands: train, pretrain, eval, augment, profile, kernels, info.
import { writeFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { AugPipeline, GridKind } from './augment.js';
import { SIGNAL_EXIT } from './interrupt.js';
import { relaunchWithHugePages } from './relaunch.js';
import { runSettings } from './run-settings.js';
import type { TestTimeAugmentation } from './trainer.js';

const HELP = `tessera — a small WebGPU tensor engine that trains Vision Transformers

Usage: tessera <command> [options]

Commands:
  train      train a ViT on Fashion-MNIST (npm start runs this with the default preset)
  pretrain   pre-train a ViT's encoder without labels: tessera pretrain mae (masked autoencoder) or
             tessera pretrain dino (self-distillation)
  eval       accuracy, NLL, ECE and confusion matrix of a checkpoint
  probe      k-NN and linear-probe accuracy of a checkpoint's frozen encoder (classifier, MAE or DINO)
  inspect    attention of a trained ViT: mean attention distance per layer and head, class-token rollout
  augment    a PNG grid of GPU-augmented images, to look at an augmentation
  profile    per-kernel GPU time of a step (Chrome trace), and \`profile attention\` throughput sweep
  kernels    print the WGSL of a kernel family: tessera kernels matmul --trans-b
  info       show the WebGPU adapter, its features and limits

Run \`tessera <command> --help\` for the options of each command.`;

async function info(argv: string[]): Promise<void> {
  const { values } = parseFlags({ args: argv, options: { help: { type: 'boolean', short: 'h' } } });
  if (values.help) return console.log('tessera info: prints the adapter tessera uses, its features and the limits kernels size tiles from.');
  const T = await import('../engine/index.js');
  const dev = await T.init();
  const l = dev.limits;
  console.log(`adapter:  ${dev.adapterName}`);
  console.log(`features: ${[...dev.features].sort().join(', ')}`);
  console.log(`limits:   workgroup storage ${l.maxComputeWorkgroupStorageSize} B, invocations ${l.maxComputeInvocationsPerWorkgroup}, ` +
    `storage buffers/stage ${l.maxStorageBuffersPerShaderStage}, max buffer ${l.maxBufferSize} B, workgroups/dim ${l.maxComputeWorkgroupsPerDimension}`);
  process.exit(0);
}

async function kernels(argv: string[]): Promise<void> {
  const { values, positionals } = parseFlags({
    args: argv,
    allowPositionals: true,
    options: {
      help: { type: 'boolean', short: 'h' },
      'trans-a': { type: 'boolean' },
      'trans-b': { type: 'boolean' },
      rank: { type: 'string', default: '2' },
      shape: { type: 'string' },
      impl: { type: 'string' },
    },
  });
  const name = positionals[0];
  if (name && name in RUN_KERNELS && !values.help) return printRunKernels(name as keyof typeof RUN_KERNELS, values.shape, values.impl);
  const K = {
    common: await import('../kernels/common.js'),
    elementwise: await import('../kernels/elementwise.js'),
    reduce: await import('../kernels/reduce.js'),
    movement: await import('../kernels/movement.js'),
    matmul: await import('../kernels/matmul.js'),
    softmax: await import('../kernels/softmax.js'),
    layernorm: await import('../kernels/layernorm.js'),
    conv: await import('../kernels/conv.js'),
    random: await import('../kernels/random.js'),
    optimizer: await import('../kernels/optimizer.js'),
  };
  const rank = Number(values.rank);
  const table: Record<string, () => { code: string }> = {
    matmul: () => K.matmul.matmulKernel(!!values['trans-a'], !!values['trans-b'], false),
    gelu: () => K.elementwise.elementwiseKernel('gelu', 'gelu_(a)', ['same'], 1, 1),
    add: () => K.elementwise.elementwiseKernel('add', 'a + b', ['same', 'strided'], rank, 1),
    sum: () => K.reduce.rowReduceKernel('sum'),
    max: () => K.reduce.rowReduceKernel('max'),
    var: () => K.reduce.rowReduceKernel('var'),
    copy: () => K.movement.stridedCopyKernel(rank, false),
    gather: () => K.movement.gatherKernel(rank),
    softmax: () => K.softmax.softmaxKernel(false),
    'log-softmax': () => K.softmax.softmaxKernel(true),
    'cross-entropy': () => K.softmax.crossEntropyKernel(false),
    layernorm: () => K.layernorm.layerNormKernel(true),
    'layernorm-grad': () => K.layernorm.layerNormGradKernel(true),
    'patch-embed': () => K.conv.patchEmbedKernel(),
    rand: () => K.random.randomKernel('uniform'),
    randn: () => K.random.randomKernel('normal'),
    dropout: () => K.random.dropoutKernel(),
    adamw: () => K.optimizer.adamwMultiKernel(3),
    sgd: () => K.optimizer.sgdKernel(),
  };
  if (values.help || !name || !table[name]) {
    console.log(`tessera kernels <name> [--trans-a] [--trans-b] [--rank N]\n\nPrints a kernel's WGSL in its portable form (what adapters without subgroups run). Names: ${Object.keys(table).join(', ')}\n\n` +
      `tessera kernels attention|linear [--shape …] [--impl flash|unfused]\n\nRuns the op forward and backward on this machine's adapter and prints every kernel it compiles, as chosen for\n` +
      `the adapter and the shape (the subgroup matmuls, the one-pass flash kernels on CPU adapters, …), each once:\n` +
      Object.entries(RUN_KERNELS).map(([k, v]) => `  ${k.padEnd(10)} --shape ${v.shape} [${v.defaults.join(',')}]`).join('\n') + '\n\n' +
      'Set TESSERA_PRINT_KERNELS=1 on any command to print every kernel as it is compiled.');
    process.exit(name && !values.help ? 2 : 0);
  }
  console.log(table[name]!().code);
}

/** Ops whose kernels `tessera kernels` shows by running them: which kernel runs depends on the
 * adapter (subgroups, CPU or GPU) and the shape, so the op chooses as it does in training. */
const RUN_KERNELS = {
  attention: { shape: 'B,N,HEADS,HEAD_DIM', defaults: [2, 50, 4, 16] },
  linear: { shape: 'ROWS,IN,OUT', defaults: [2176, 64, 192] },
} as const;

async function printRunKernels(name: keyof typeof RUN_KERNELS, shapeFlag: string | undefined, impl: string | undefined): Promise<void> {
  const spec = RUN_KERNELS[name];
  const dims = shapeFlag === undefined ? [...spec.defaults] : shapeFlag.split(',').map(Number);
  if (dims.length !== spec.defaults.length || dims.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new UsageError(`--shape for ${name} is ${spec.shape}, positive integers (e.g. ${spec.defaults.join(',')}), got '${shapeFlag}'`);
  }
  if (impl !== undefined && (name !== 'attention' || !['flash', 'unfused'].includes(impl))) throw new UsageError(`--impl is flash or unfused, for attention only`);
  const T = await import('../engine/index.js');
  await T.init();
  T.scope(() => {
    // Inputs and the output's gradient are made before printing starts: only the op's kernels show.
    const leaf = (shape: number[], seed: number) => {
      const t = T.randn(shape, { seed });
      t.requiresGrad = true;
      return t;
    };
    let run: () => ReturnType<typeof T.attention>;
    let outShape: number[];
    if (name === 'attention') {
      const [B, N, heads, hd] = dims as [number, number, number, number];
      const qkv = leaf([B, N, 3 * heads * hd], 0);
      run = () => T.attention(qkv, heads, impl ? { impl: impl as 'flash' | 'unfused' } : {});
      outShape = [B, N, heads * hd];
    } else {
      const [M, K, N] = dims as [number, number, number];
      const [x, w, b] = [leaf([M, K], 0), leaf([N, K], 1), leaf([N], 2)];
      run = () => T.linear(x, w, b);
      outShape = [M, N];
    }
    const grad = T.randn(outShape, { seed: 3 });
    T.rt().printKernels = true;
    run().backward(grad);
  });
  await T.sync();
}

const TRAIN_HELP = `tessera train — train a ViT / DeiT on Fashion-MNIST, MNIST or CIFAR-10

Options (defaults in brackets):
  --preset NAME        model preset [vit-fmnist-convstem16-d4]; presets: ${'${PRESET_NAMES}'}
  --data NAME          fashion-mnist | mnist | cifar10 [fashion-mnist]
  --data-dir DIR       dataset folder (also TESSERA_DATA) [the Debian package's folder]
  --epochs N           epochs of the schedule [3]
  --max-steps N        stop after N optimizer steps
  --time-budget MIN    fit the whole run (compilation and evaluations included) into MIN minutes:
                       the first steps are timed and the schedule set to the steps that fit
  --schedule-steps N   schedule length in steps instead of whole epochs (repeats a budgeted run)
  --batch-size N       [128]
  --lr X               peak learning rate [3e-3]
  --min-lr X           final learning rate of the cosine [1e-5]
  --warmup-steps N     linear warmup [100]
  --weight-decay X     AdamW decay of weights (not biases, norms, tokens) [0.05]
  --label-smoothing X  [0]
  --clip-grad X        global-norm clipping, 0 = off [1]
  --ema X              also keep an EMA of the weights with this decay, e.g. 0.999 [off]; evaluated
                       each epoch, kept in last.safetensors for --resume, written as ema.safetensors
  --seed N             [0]
  --out DIR            run folder [runs/<timestamp>]
  --resume             continue the run in DIR from last.safetensors with the settings in its
                       config.json (flags given replace them)
  --teacher FILE       DeiT hard distillation from a classifier checkpoint (distilled presets)
  --init FILE          fine-tune: start from FILE's weights and model (not its optimizer, schedule
                       or step count; --preset is ignored)
  --train-limit N      use the first N training images
  --eval-limit N       use the first N test images
Augmentation on the GPU (see tessera augment to look at it):
  --aug NAME           none | basic (pad-crop + flip) | randaugment | trivialaugment | augmix [none]
  --ra-layers N        RandAugment ops per image [2]
  --ra-magnitude M     RandAugment magnitude out of 10 [9]
  --jsd-weight X       AugMix Jensen–Shannon weight [12]
  --crop-pad N         pad-and-crop padding in pixels [4; H/4 with --soft-aug]
  --mixup A            Mixup Beta(A, A), 0 = off [0]
  --cutmix A           CutMix Beta(A, A), 0 = off [0]
  --random-erasing P   random erasing probability per image [0]
  --soft-aug           soft augmentation: target confidence falls with the hidden fraction of the crop,
                       p = 1 - (1 - MIN)·(1 - visible)^POWER
  --soft-aug-min MIN   confidence when nothing is visible [0]
  --soft-aug-power K   [2]
Writes config.json, metrics.jsonl, last/best.safetensors, curves.png and report.md to the run folder.`;

/** A numeric flag's value, or undefined when absent; a malformed one is a usage error. */
function numberFlag(name: string, v: string | undefined, integer = false): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) throw new UsageError(`--${name} expects ${integer ? 'an integer' : 'a number'}, got '${v}'`);
  return n;
}

/** The options `train` and `pretrain` share: model, data, schedule, run folder. */
const RUN_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  preset: { type: 'string' },
  data: { type: 'string' },
  'data-dir': { type: 'string' },
  epochs: { type: 'string' },
  'max-steps': { type: 'string' },
  'batch-size': { type: 'string' },
  lr: { type: 'string' },
  'min-lr': { type: 'string' },
  'warmup-steps': { type: 'string' },
  'weight-decay': { type: 'string' },
  'train-limit': { type: 'string' },
  seed: { type: 'string' },
  out: { type: 'string' },
  resume: { type: 'boolean' },
} as const;

type RunOptionValues = { [K in keyof typeof RUN_OPTIONS]?: (typeof RUN_OPTIONS)[K]['type'] extends 'boolean' ? boolean : string };

/** RUN_OPTIONS' values as config fields (absent flags left out). */
function runFlags(values: RunOptionValues) {
  return {
    preset: values.preset,
    dataDir: values['data-dir'],
    epochs: numberFlag('epochs', values.epochs, true),
    maxSteps: numberFlag('max-steps', values['max-steps'], true),
    batchSize: numberFlag('batch-size', values['batch-size'], true),
    lr: numberFlag('lr', values.lr),
    minLr: numberFlag('min-lr', values['min-lr']),
    warmupSteps: numberFlag('warmup-steps', values['warmup-steps'], true),
    weightDecay: numberFlag('weight-decay', values['weight-decay']),
    trainLimit: numberFlag('train-limit', values['train-limit'], true),
    seed: numberFlag('seed', values.seed, true),
    out: values.out,
    resume: values.resume,
  };
}

const defined = <V>(o: Record<string, V | undefined>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Record<string, V>;

/** The defaults, a resumed run's own settings, then the flags given (train/run-settings.ts). */
function resumable<C extends { out: string; resume: boolean }>(defaults: C, flags: Partial<C>, section: 'train' | 'pretrain', derived: readonly string[] = [], fixed: readonly string[] = []): C {
  const { config, notes } = runSettings(defaults, flags, section, derived, fixed);
  for (const note of notes) console.log(note);
  return config;
}

async function train(argv: string[]): Promise<void> {
  const { PRESETS } = await import('../models/vit.js');
  const { values } = parseFlags({
    args: argv,
    options: {
      ...RUN_OPTIONS,
      'time-budget': { type: 'string' },
      'schedule-steps': { type: 'string' },
      'label-smoothing': { type: 'string' },
      'clip-grad': { type: 'string' },
      ema: { type: 'string' },
      teacher: { type: 'string' },
      init: { type: 'string' },
      'eval-limit': { type: 'string' },
      aug: { type: 'string' },
      'ra-layers': { type: 'string' },
      'ra-magnitude': { type: 'string' },
      'jsd-weight': { type: 'string' },
      'crop-pad': { type: 'string' },
      mixup: { type: 'string' },
      cutmix: { type: 'string' },
      'random-erasing': { type: 'string' },
      'soft-aug': { type: 'boolean' },
      'soft-aug-min': { type: 'string' },
      'soft-aug-power': { type: 'string' },
    },
  });
  if (values.help) return console.log(TRAIN_HELP.replace('${PRESET_NAMES}', Object.keys(PRESETS).join(', ')));
  const num = numberFlag;
  const { train: run, TRAIN_DEFAULTS } = await import('./trainer.js');
  const { DATASETS } = await import('./data.js');
  if (values.data && !(values.data in DATASETS)) throw new UsageError(`--data: unknown dataset '${values.data}'; choose ${Object.keys(DATASETS).join(', ')}`);
  if (values.preset && values.init) throw new UsageError(`--preset and --init both choose the model; --init takes it from the checkpoint, drop one of them`);
  if (values.preset && !(values.preset in PRESETS)) throw new UsageError(`--preset: unknown preset '${values.preset}'; presets: ${Object.keys(PRESETS).join(', ')}`);
  const { AUG_PIPELINES } = await import('./augment.js');
  if (values.aug && !(AUG_PIPELINES as readonly string[]).includes(values.aug)) throw new UsageError(`--aug: unknown pipeline '${values.aug}'; choose ${AUG_PIPELINES.join(', ')}`);
  const flags = defined({
    ...runFlags(values),
    data: values.data as keyof typeof DATASETS | undefined,
    timeBudget: num('time-budget', values['time-budget']),
    scheduleSteps: num('schedule-steps', values['schedule-steps'], true),
    labelSmoothing: num('label-smoothing', values['label-smoothing']),
    clipGrad: num('clip-grad', values['clip-grad']),
    ema: num('ema', values.ema),
    teacher: values.teacher,
    init: values.init,
    evalLimit: num('eval-limit', values['eval-limit'], true),
    aug: values.aug as AugPipeline | undefined,
    raLayers: num('ra-layers', values['ra-layers'], true),
    raMagnitude: num('ra-magnitude', values['ra-magnitude']),
    jsdWeight: num('jsd-weight', values['jsd-weight']),
    cropPad: num('crop-pad', values['crop-pad'], true),
    mixup: num('mixup', values.mixup),
    cutmix: num('cutmix', values.cutmix),
    randomErasing: num('random-erasing', values['random-erasing']),
    softAug: values['soft-aug'],
    softAugMin: num('soft-aug-min', values['soft-aug-min']),
    softAugPower: num('soft-aug-power', values['soft-aug-power']),
  });
  const r = await run(resumable(TRAIN_DEFAULTS, flags, 'train', ['scheduleSteps'], ['preset']));
  if (r.interrupted) process.exit(SIGNAL_EXIT[r.interrupted]);
  console.log(`done: test accuracy ${(100 * r.finalAccuracy).toFixed(2)}% (best ${(100 * r.bestAccuracy).toFixed(2)}%) in ${r.seconds.toFixed(0)} s, ` +
    `${r.imagesPerSecond.toFixed(0)} images/s; report: ${r.out}/report.md`);
  process.exit(0);
}

const PRETRAIN_HELP = `tessera pretrain mae — masked-autoencoder pre-training (He et al. 2021, facebookresearch/mae)

The encoder sees a quarter of the patches; a small decoder predicts the pixels of the rest, each
patch normalised by its own mean and spread. The run folder gets config.json, loss.jsonl,
metrics.jsonl (test loss on fixed masks), last.safetensors after every epoch, reconstructions.png,
curves.png and report.md; fine-tune with \`tessera train --init RUN/last.safetensors\`.

Options:
  --preset NAME        the ViT whose encoder is pre-trained (a patchifying preset) [vit-fmnist-p4]
  --data NAME          fashion-mnist | mnist | cifar10 [fashion-mnist]
  --data-dir DIR       dataset folder (also TESSERA_DATA)
  --epochs N           [10]
  --max-steps N        stop after N steps (the schedule still spans --epochs)
  --batch-size N       [128]
  --lr X               peak learning rate after warmup [1.5e-3]
  --min-lr X           [0]
  --warmup-steps N     [470]
  --weight-decay X     AdamW weight decay on weights (not biases, norms, tokens) [0.05]
  --mask-ratio X       fraction of the patches masked [0.75]
  --no-norm-pix-loss   predict raw (normalised-image) pixels instead of per-patch normalised ones
  --decoder-dim N      decoder width [the encoder's]
  --decoder-depth N    decoder blocks [2]
  --decoder-heads N    [the encoder's]
  --crop-scale A,B     random resized crop area range; 1,1 turns crops off [0.2,1]
  --flip X             probability of a horizontal flip [0.5]
  --train-limit N      only the first N training images
  --seed N             [0]
  --out DIR            run folder [runs/mae-<time>]
  --resume             continue the run in DIR from last.safetensors with the settings in its
                       config.json (flags given replace them)`;

async function pretrain(argv: string[]): Promise<void> {
  if (argv[0] === 'dino') return pretrainDino(argv.slice(1));
  const { values, positionals } = parseFlags({
    args: argv,
    allowPositionals: true,
    options: {
      ...RUN_OPTIONS,
      'mask-ratio': { type: 'string' },
      'no-norm-pix-loss': { type: 'boolean' },
      'decoder-dim': { type: 'string' },
      'decoder-depth': { type: 'string' },
      'decoder-heads': { type: 'string' },
      'crop-scale': { type: 'string' },
      flip: { type: 'string' },
    },
  });
  if (values.help) return console.log(PRETRAIN_HELP);
  if (positionals[0] !== 'mae' || positionals.length > 1) throw new UsageError(`tessera pretrain: give the method first, 'mae' or 'dino' (got '${positionals.join(' ')}')`);
  const num = numberFlag;
  const { PRESETS } = await import('../models/vit.js');
  const { DATASETS } = await import('./data.js');
  if (values.preset && !(values.preset in PRESETS)) throw new UsageError(`--preset: unknown preset '${values.preset}'; presets: ${Object.keys(PRESETS).join(', ')}`);
  if (values.data && !(values.data in DATASETS)) throw new UsageError(`--data: unknown dataset '${values.data}'; choose ${Object.keys(DATASETS).join(', ')}`);
  const cropScale = scaleFlag('crop-scale', values['crop-scale']);
  const maskRatio = num('mask-ratio', values['mask-ratio']);
  if (maskRatio !== undefined && !(maskRatio >= 0 && maskRatio < 1)) throw new UsageError(`--mask-ratio must be in [0, 1), got ${maskRatio}`);
  const flipProb = num('flip', values.flip);
  if (flipProb !== undefined && !(flipProb >= 0 && flipProb <= 1)) throw new UsageError(`--flip is a probability, got ${flipProb}`);
  const { pretrainMae, PRETRAIN_DEFAULTS } = await import('./pretrain.js');
  const flags = defined({
    ...runFlags(values),
    data: values.data as keyof typeof DATASETS | undefined,
    maskRatio,
    normPixLoss: values['no-norm-pix-loss'] ? false : undefined,
    decoderDim: num('decoder-dim', values['decoder-dim'], true),
    decoderDepth: num('decoder-depth', values['decoder-depth'], true),
    decoderHeads: num('decoder-heads', values['decoder-heads'], true),
    cropScale,
    flipProb,
  });
  const r = await pretrainMae(resumable(PRETRAIN_DEFAULTS, flags, 'pretrain', [], ['preset', 'maskRatio', 'normPixLoss', 'decoderDim', 'decoderDepth', 'decoderHeads']));
  if (r.interrupted) process.exit(SIGNAL_EXIT[r.interrupted]);
  const last = r.metrics.at(-1);
  console.log(`done: ${last ? `test loss ${last.test_loss.toFixed(4)}` : 'no epoch finished'} in ${r.seconds.toFixed(0)} s, ${r.imagesPerSecond.toFixed(0)} images/s; report: ${r.out}/report.md`);
  process.exit(0);
}

const PRETRAIN_DINO_HELP = `tessera pretrain dino — self-distillation with no labels (Caron et al. 2021, facebookresearch/dino)

A student ViT learns to match, from every crop of an image, what its teacher (the EMA of the
student) outputs for the two global crops, centred and sharpened. Crops and colour changes are
made on the GPU: 2 global crops at the image size and N local crops at 12/28 of it, flips,
ColorJitter, grayscale, Gaussian blur, solarisation (DataAugmentationDINO). Each epoch measures
the teacher's weighted k-NN accuracy and writes last.safetensors (teacher under timm's names,
student, centre, optimizer), views.png (the crops and the teacher's class-token attention),
curves.png and report.md. Probe with \`tessera probe --checkpoint RUN/last.safetensors\`,
fine-tune with \`tessera train --init RUN/last.safetensors\`.

Options:
  --preset NAME             the ViT whose encoder is pre-trained (a patchifying preset) [vit-fmnist-p4]
  --data NAME               fashion-mnist | mnist | cifar10 [fashion-mnist]
  --data-dir DIR            dataset folder (also TESSERA_DATA)
  --epochs N                [10]
  --max-steps N             stop after N steps (the schedules still span --epochs)
  --batch-size N            [128]
  --lr X                    peak learning rate after warmup [1e-3]
  --min-lr X                [1e-6]
  --warmup-epochs N         linear warmup of the learning rate [1]
  --weight-decay X          AdamW weight decay at the start, on weights only [0.04]
  --weight-decay-end X      weight decay at the end (cosine) [0.4]
  --momentum-teacher X      teacher EMA momentum, cosine to 1 [0.996]
  --teacher-temp X          [0.04]
  --warmup-teacher-temp X   teacher temperature at the start [0.04]
  --warmup-teacher-temp-epochs N   linear warmup of the teacher temperature [0]
  --clip-grad X             global gradient-norm clip, 0 = off [3]
  --freeze-last-layer N     epochs in which the prototypes are not trained [1]
  --local-crops N           local crops per image [6]
  --local-crop-size PX      [12/28 of the image, a multiple of the patch]
  --global-crop-scale A,B   [0.4,1]
  --local-crop-scale A,B    [0.05,0.4]
  --out-dim N               prototypes [4096]
  --hidden-dim N            head MLP width [1024]
  --bottleneck-dim N        [128]
  --no-norm-last-layer      train the prototypes' norms (weight_g) too
  --knn-train N             k-NN bank: the first N training images [10000]
  --eval-images N           k-NN queries: the first N test images, 0 = no evaluation [2000]
  --train-limit N           only the first N training images
  --seed N                  [0]
  --out DIR                 run folder [runs/dino-<time>]
  --resume                  continue the run in DIR from last.safetensors with the settings in
                            its config.json (flags given replace them)`;

/** "A,B" → [A, B] with 0 < A ≤ B ≤ 1, or a usage error naming the flag. */
function scaleFlag(name: string, v: string | undefined): [number, number] | undefined {
  if (v === undefined) return undefined;
  const parts = v.split(',').map(Number);
  if (parts.length !== 2 || parts.some((x) => !Number.isFinite(x))) throw new UsageError(`--${name} expects two numbers like 0.4,1, got '${v}'`);
  if (!(parts[0]! > 0 && parts[0]! <= parts[1]! && parts[1]! <= 1)) throw new UsageError(`--${name} ${v}: need 0 < min ≤ max ≤ 1`);
  return parts as [number, number];
}

async function pretrainDino(argv: string[]): Promise<void> {
  const { values, positionals } = parseFlags({
    args: argv,
    allowPositionals: true,
    options: {
      ...RUN_OPTIONS,
      'warmup-epochs': { type: 'string' },
      'weight-decay-end': { type: 'string' },
      'momentum-teacher': { type: 'string' },
      'teacher-temp': { type: 'string' },
      'warmup-teacher-temp': { type: 'string' },
      'warmup-teacher-temp-epochs': { type: 'string' },
      'clip-grad': { type: 'string' },
      'freeze-last-layer': { type: 'string' },
      'local-crops': { type: 'string' },
      'local-crop-size': { type: 'string' },
      'global-crop-scale': { type: 'string' },
      'local-crop-scale': { type: 'string' },
      'out-dim': { type: 'string' },
      'hidden-dim': { type: 'string' },
      'bottleneck-dim': { type: 'string' },
      'no-norm-last-layer': { type: 'boolean' },
      'knn-train': { type: 'string' },
      'eval-images': { type: 'string' },
    },
  });
  if (values.help) return console.log(PRETRAIN_DINO_HELP);
  if (positionals.length) throw new UsageError(`tessera pretrain dino: unexpected '${positionals.join(' ')}'`);
  if (values['warmup-steps'] !== undefined) throw new UsageError('tessera pretrain dino: the warmup is in epochs, as DINO\'s: use --warmup-epochs');
  const num = numberFlag;
  const { PRESETS } = await import('../models/vit.js');
  const { DATASETS } = await import('./data.js');
  if (values.preset && !(values.preset in PRESETS)) throw new UsageError(`--preset: unknown preset '${values.preset}'; presets: ${Object.keys(PRESETS).join(', ')}`);
  if (values.data && !(values.data in DATASETS)) throw new UsageError(`--data: unknown dataset '${values.data}'; choose ${Object.keys(DATASETS).join(', ')}`);
  const momentumTeacher = num('momentum-teacher', values['momentum-teacher']);
  if (momentumTeacher !== undefined && !(momentumTeacher >= 0 && momentumTeacher <= 1)) throw new UsageError(`--momentum-teacher must be in [0, 1], got ${momentumTeacher}`);
  for (const name of ['teacher-temp', 'warmup-teacher-temp'] as const) {
    const v = num(name, values[name]);
    if (v !== undefined && !(v > 0)) throw new UsageError(`--${name} must be positive, got ${v}`);
  }
  const { pretrainDino: run, DINO_DEFAULTS } = await import('./pretrain-dino.js');
  const { warmupSteps: _warmupSteps, ...shared } = runFlags(values);
  const flags = defined({
    ...shared,
    data: values.data as keyof typeof DATASETS | undefined,
    warmupEpochs: num('warmup-epochs', values['warmup-epochs']),
    weightDecayEnd: num('weight-decay-end', values['weight-decay-end']),
    momentumTeacher,
    teacherTemp: num('teacher-temp', values['teacher-temp']),
    warmupTeacherTemp: num('warmup-teacher-temp', values['warmup-teacher-temp']),
    warmupTeacherTempEpochs: num('warmup-teacher-temp-epochs', values['warmup-teacher-temp-epochs'], true),
    clipGrad: num('clip-grad', values['clip-grad']),
    freezeLastLayer: num('freeze-last-layer', values['freeze-last-layer'], true),
    localCrops: num('local-crops', values['local-crops'], true),
    localCropSize: num('local-crop-size', values['local-crop-size'], true),
    globalCropScale: scaleFlag('global-crop-scale', values['global-crop-scale']),
    localCropScale: scaleFlag('local-crop-scale', values['local-crop-scale']),
    outDim: num('out-dim', values['out-dim'], true),
    hiddenDim: num('hidden-dim', values['hidden-dim'], true),
    bottleneckDim: num('bottleneck-dim', values['bottleneck-dim'], true),
    normLastLayer: values['no-norm-last-layer'] ? false : undefined,
    knnTrain: num('knn-train', values['knn-train'], true),
    evalImages: num('eval-images', values['eval-images'], true),
  });
  const r = await run(resumable(DINO_DEFAULTS, flags, 'pretrain', [], ['preset', 'outDim', 'hiddenDim', 'bottleneckDim', 'normLastLayer', 'localCrops', 'localCropSize', 'globalCropScale', 'localCropScale']));
  if (r.interrupted) process.exit(SIGNAL_EXIT[r.interrupted]);
  const last = r.metrics.at(-1);
  console.log(`done: ${last ? `teacher k-NN accuracy ${last.knn_acc.toFixed(2)}%` : 'no epoch finished'} in ${r.seconds.toFixed(0)} s, ${r.imagesPerSecond.toFixed(0)} images/s; report: ${r.out}/report.md`);
  process.exit(0);
}

const PROBE_HELP = `tessera probe — how good a frozen encoder's features are

Class-token features of every training and test image, then
  k-NN: each test image takes the weighted vote of its k most cosine-similar training images
        (weights exp(sim / 0.07), as DINO's eval_knn.py);
  linear probe: a linear classifier trained on the standardised frozen features (AdamW, cosine).

Options:
  --checkpoint FILE    a classifier, MAE or DINO pre-training checkpoint (DINO: its teacher) (required)
  --data NAME          fashion-mnist | mnist | cifar10 [the checkpoint's dataset or fashion-mnist]
  --data-dir DIR       dataset folder (also TESSERA_DATA)
  --k N                neighbours [20]
  --linear-epochs N    epochs of the linear probe; 0 skips it [30]
  --train-limit N      only the first N training images (the k-NN bank and the probe's data)
  --limit N            only the first N test images`;

async function probeCmd(argv: string[]): Promise<void> {
  const { values } = parseFlags({
    args: argv,
    options: {
      help: { type: 'boolean', short: 'h' },
      checkpoint: { type: 'string' },
      data: { type: 'string' },
      'data-dir': { type: 'string' },
      k: { type: 'string' },
      'linear-epochs': { type: 'string' },
      'train-limit': { type: 'string' },
      limit: { type: 'string' },
    },
  });
  if (values.help) return console.log(PROBE_HELP);
  if (!values.checkpoint) throw new UsageError('tessera probe needs --checkpoint FILE');
  const count = (name: string, v: string | undefined, d: number, min = 1) => {
    const n = v === undefined ? d : Number(v);
    if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} expects an integer ≥ ${min}, got '${v}'`);
    return n;
  };
  const k = count('k', values.k, 20);
  const epochs = count('linear-epochs', values['linear-epochs'], 30, 0);
  const T = await import('../engine/index.js');
  const { loadDataset, normalize, subset, DATASETS } = await import('./data.js');
  const { readCheckpoint } = await import('./checkpoint.js');
  const { accuracyOf, encoderFromCheckpoint, extractFeatures, knnPredict, linearProbe } = await import('./probe.js');
  await T.init();
  const info = readCheckpoint(values.checkpoint);
  const dataName = (values.data ?? info.metadata.dataset ?? 'fashion-mnist') as keyof typeof DATASETS;
  if (!(dataName in DATASETS)) throw new UsageError(`--data: unknown dataset '${dataName}'`);
  const model = encoderFromCheckpoint(values.checkpoint);
  let [train, test] = [loadDataset(dataName, 'train', values['data-dir']), loadDataset(dataName, 'test', values['data-dir'])];
  if (values['train-limit']) train = subset(train, count('train-limit', values['train-limit'], 0));
  if (values.limit) test = subset(test, count('limit', values.limit, 0));
  normalize(train, model.config.mean, model.config.std);
  normalize(test, model.config.mean, model.config.std);
  const t0 = performance.now();
  const [trainF, testF] = [await extractFeatures(model, train, 500, 'train features'), await extractFeatures(model, test, 500, 'test features')];
  const D = model.config.embed_dim;
  console.log(`${values.checkpoint}: ${D}-dim class-token features of ${train.count} train and ${test.count} test ${dataName} images in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const t1 = performance.now();
  const knn = accuracyOf(await knnPredict(trainF, train.labels, testF, D, train.classes, k), test.labels);
  console.log(`k-NN (k = ${k}, T = 0.07): ${(100 * knn).toFixed(2)}% (${((performance.now() - t1) / 1000).toFixed(1)} s)`);
  if (epochs > 0) {
    const t2 = performance.now();
    const lin = accuracyOf(await linearProbe(trainF, train.labels, testF, D, train.classes, { epochs }), test.labels);
    console.log(`linear probe (${epochs} epochs): ${(100 * lin).toFixed(2)}% (${((performance.now() - t2) / 1000).toFixed(1)} s)`);
  }
  model.dispose();
  process.exit(0);
}

const INSPECT_HELP = `tessera inspect — what a trained ViT attends to

Writes into --out: inspect.md (mean attention distance in pixels for every layer and head,
against uniform attention), attention-distance.png (one dot per head against the layer, as the
ViT paper's Fig. 7), rollout.png (attention rollout of the class token over 8 test images), and
cka.md / cka.png (linear CKA between layers, Kornblith et al. 2019).

Options:
  --checkpoint FILE    a classifier checkpoint with patch tokens, or an MAE or DINO checkpoint (required)
  --data NAME          fashion-mnist | mnist | cifar10 [the checkpoint's dataset or fashion-mnist]
  --data-dir DIR       dataset folder (also TESSERA_DATA)
  --images N           test images averaged over [256]
  --compare FILE       the linear CKA between every layer of --checkpoint and of this
                       checkpoint (same image size) on the first 256 test images: cka.png, cka.md;
                       without it, the checkpoint's layers against each other
  --out DIR            [the checkpoint's folder]`;

async function inspectCmd(argv: string[]): Promise<void> {
  const { values } = parseFlags({
    args: argv,
    options: {
      help: { type: 'boolean', short: 'h' },
      checkpoint: { type: 'string' },
      data: { type: 'string' },
      'data-dir': { type: 'string' },
      images: { type: 'string' },
      compare: { type: 'string' },
      out: { type: 'string' },
    },
  });
  if (values.help) return console.log(INSPECT_HELP);
  if (!values.checkpoint) throw new UsageError('tessera inspect needs --checkpoint FILE');
  const images = Number(values.images ?? 256);
  if (!Number.isInteger(images) || images < 1) throw new UsageError(`--images expects a positive integer, got '${values.images}'`);
  const { dirname } = await import('node:path');
  const { mkdirSync } = await import('node:fs');
  const T = await import('../engine/index.js');
  const { loadDataset, normalize, subset, DATASETS } = await import('./data.js');
  const { readCheckpoint } = await import('./checkpoint.js');
  const { encoderFromCheckpoint } = await import('./probe.js');
  const { ckaMatrix, inspectModel, writeCkaPng } = await import('./inspect.js');
  await T.init();
  const info = readCheckpoint(values.checkpoint);
  const dataName = (values.data ?? info.metadata.dataset ?? 'fashion-mnist') as keyof typeof DATASETS;
  if (!(dataName in DATASETS)) throw new UsageError(`--data: unknown dataset '${dataName}'`);
  const model = encoderFromCheckpoint(values.checkpoint);
  const test = subset(loadDataset(dataName, 'test', values['data-dir']), images);
  const raw = test.images.slice();
  normalize(test, model.config.mean, model.config.std);
  const out = values.out ?? dirname(values.checkpoint);
  mkdirSync(out, { recursive: true });
  const r = await inspectModel(model, test, { images, out, title: values.checkpoint, rawImages: raw });
  console.log(`mean attention distance (pixels) over ${r.images} images; uniform attention: ${r.uniform.toFixed(2)}`);
  r.distance.forEach((heads, l) => console.log(`  layer ${l}: ${heads.map((d) => d.toFixed(2)).join('  ')}`));
  // CKA of layer representations (all tokens, flattened) on the first 256 test images.
  const other = values.compare ? encoderFromCheckpoint(values.compare) : model;
  const c = model.config;
  if (other.config.img_size !== c.img_size || other.config.in_chans !== c.in_chans) throw new UsageError(`--compare: ${values.compare} takes ${other.config.in_chans}×${other.config.img_size}² images, ${values.checkpoint} ${c.in_chans}×${c.img_size}²`);
  const m = Math.min(256, test.count);
  const batch = T.tensor(test.images.subarray(0, m * c.in_chans * c.img_size ** 2), [m, c.in_chans, c.img_size, c.img_size]);
  const cka = await ckaMatrix(model, other, batch);
  batch.dispose();
  const names = [values.checkpoint, values.compare ?? values.checkpoint];
  await writeCkaPng(cka, `${out}/cka.png`, `linear CKA on ${m} test images (layer 0: tokens before the first block)`, names[0]!, names[1]!);
  const { writeFileSync } = await import('node:fs');
  writeFileSync(`${out}/cka.md`, [`# Linear CKA: rows ${names[0]}, columns ${names[1]} (${m} test images, all tokens of a layer flattened)`, '',
    `| layer | ${cka[0]!.map((_, j) => j).join(' | ')} |`, `|---:|${cka[0]!.map(() => '---:').join('|')}|`,
    ...cka.map((row, i) => `| ${i} | ${row.map((v) => v.toFixed(3)).join(' | ')} |`), '', '![cka](cka.png)', ''].join('\n'));
  if (values.compare) console.log(`linear CKA, layer by layer against ${values.compare}: ${cka.map((row, i) => (row[i] ?? NaN).toFixed(3)).join('  ')}`);
  console.log(`wrote ${out}/inspect.md, attention-distance.png, rollout.png, cka.md, cka.png`);
  if (other !== model) other.dispose();
  model.dispose();
  process.exit(0);
}

const EVAL_HELP = `tessera eval — evaluate a checkpoint

Options:
  --checkpoint FILE   a tessera classifier checkpoint (required)
  --data NAME         fashion-mnist | mnist | cifar10 [the checkpoint's dataset or fashion-mnist]
  --data-dir DIR      dataset folder (also TESSERA_DATA)
  --limit N           only the first N test images
  --batch-size N      [500]
  --logits FILE       write logits [N, classes] F32 and labels [N] I32 as safetensors
  --tta MODE          test-time augmentation, averaging class probabilities over views of each image
                      (logits written are then log-probabilities): flip = the image and its mirror
                      image; flip-shift = those two each also moved one pixel left/right/up/down
                      (10 views) [none]
  --corruptions       accuracy under each common corruption at severities 1–5 (GPU, ImageNet-C style):
                      gaussian/shot/impulse noise, gaussian/defocus/zoom blur, contrast, brightness, pixelate,
                      JPEG compression
  --baseline FILE     with --corruptions: also the baseline checkpoint's errors, CE per corruption and mCE
  --report FILE       with --corruptions: write the table as markdown
Prints top-1 accuracy, NLL, ECE (15 bins) and the confusion matrix.`;

async function evalCmd(argv: string[]): Promise<void> {
  const { values } = parseFlags({
    args: argv,
    options: {
      help: { type: 'boolean', short: 'h' },
      checkpoint: { type: 'string' },
      data: { type: 'string' },
      'data-dir': { type: 'string' },
      limit: { type: 'string' },
      'batch-size': { type: 'string' },
      logits: { type: 'string' },
      tta: { type: 'string' },
      corruptions: { type: 'boolean' },
      baseline: { type: 'string' },
      report: { type: 'string' },
    },
  });
  if (values.help) return console.log(EVAL_HELP);
  if ((values.baseline || values.report) && !values.corruptions) throw new UsageError('--baseline and --report go with --corruptions');
  if (!values.checkpoint) throw new UsageError('tessera eval needs --checkpoint FILE');
  const tta = values.tta ?? 'none';
  if (tta !== 'none' && values.corruptions) throw new UsageError('--tta does not go with --corruptions');
  const T = await import('../engine/index.js');
  const { modelFromCheckpoint, saveSafetensors } = await import('./checkpoint.js');
  const { loadDataset, normalize, subset, DATASETS } = await import('./data.js');
  const { evaluate, confusionTable, TTA_MODES } = await import('./trainer.js');
  const isTta = (m: string): m is TestTimeAugmentation => (TTA_MODES as readonly string[]).includes(m);
  if (!isTta(tta)) throw new UsageError(`--tta: '${tta}' is not one of ${TTA_MODES.join(', ')}`);
  await T.init();
  const { model, info } = modelFromCheckpoint(values.checkpoint);
  const dataName = (values.data ?? info.metadata.dataset ?? 'fashion-mnist') as keyof typeof DATASETS;
  if (!(dataName in DATASETS)) throw new UsageError(`--data: unknown dataset '${dataName}'`);
  let ds = loadDataset(dataName, 'test', values['data-dir']);
  if (values.limit) ds = subset(ds, Number(values.limit));
  if (values.corruptions) {
    const { corruptionAccuracy, corruptionSummary } = await import('./robustness.js');
    const { CORRUPTIONS } = await import('../kernels/corrupt.js');
    const batchSize = Number(values['batch-size'] ?? 500);
    const evalRows = async (m: typeof model, name: string) => {
      console.log(`${name}: clean and ${CORRUPTIONS.length} corruptions × 5 severities on ${Math.floor(ds.count / Math.min(batchSize, ds.count)) * Math.min(batchSize, ds.count)} ${dataName} test images`);
      return corruptionAccuracy(m, ds, { batchSize, onRow: (r) => console.log(`  ${r.corruption}${r.severity ? ` ${r.severity}` : ''}: ${(100 * r.accuracy).toFixed(2)}%`) });
    };
    const rows = await evalRows(model, values.checkpoint);
    const baseline = values.baseline ? await evalRows(modelFromCheckpoint(values.baseline).model, values.baseline) : undefined;
    const summary = corruptionSummary(rows, baseline);
    const md = `# Corruption robustness of ${values.checkpoint}${values.baseline ? ` (baseline ${values.baseline})` : ''}\n\n${summary.table}\n`;
    console.log(`\n${md}`);
    if (values.report) {
      writeFileSync(values.report, md);
      console.log(`wrote ${values.report}`);
    }
    process.exit(0);
  }
  normalize(ds, model.config.mean, model.config.std);
  const t0 = performance.now();
  const r = await evaluate(model, ds, Number(values['batch-size'] ?? 500), { tta });
  const s = (performance.now() - t0) / 1000;
  console.log(`${values.checkpoint} on ${dataName} (${r.count} images${tta === 'flip' ? ' and their mirror images' : tta === 'flip-shift' ? ', 10 views each' : ''}, ${(r.count / s).toFixed(0)} images/s):`);
  console.log(`  top-1 accuracy ${(100 * r.accuracy).toFixed(2)}%   NLL ${r.nll.toFixed(4)}   ECE ${r.ece.toFixed(4)}`);
  console.log(`\nconfusion matrix (rows: true class, columns: predicted)\n${confusionTable(r.confusion, ds.classNames)}`);
  if (values.logits) {
    const C = model.config.num_classes;
    saveSafetensors(values.logits, new Map([
      ['logits', { dtype: 'F32', shape: [r.count, C], data: r.logits }],
      ['labels', { dtype: 'I32', shape: [r.count], data: Int32Array.from(r.labels) }],
    ]), { checkpoint: values.checkpoint, dataset: dataName });
    console.log(`wrote ${values.logits}`);
  }
  process.exit(0);
}

class UsageError extends Error {}

/** `parseArgs`, with an unknown option answered by the known one it most likely meant
 * (`--eval-limit` on eval: "did you mean --limit?"). */
function parseFlags<C extends ParseArgsConfig>(config: C): ReturnType<typeof parseArgs<C>> {
  try {
    return parseArgs(config);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const given = /Unknown option '(-{1,2}[^']+)'/.exec(err.message)?.[1];
    const guess = err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && given ? closestOption(given.replace(/^-+/, ''), Object.keys(config.options ?? {})) : undefined;
    if (guess) err.message = `Unknown option '${given}' (did you mean --${guess}?)`;
    throw err;
  }
}

/** The known option a mistyped one most likely meant: the same words in another order (`lr-min`
 * and `min-lr`), one name containing the other (`limit` and `train-limit`), else the nearest by edit distance when it is at most a third of the name. */
function closestOption(given: string, known: string[]): string | undefined {
  const candidates = known.filter((k) => k !== 'help');
  const words = (name: string) => name.split('-').sort().join('-');
  const reordered = candidates.find((k) => words(k) === words(given));
  if (reordered) return reordered;
  const containing = candidates.filter((k) => (k.length >= 3 && given.includes(k)) || (given.length >= 3 && k.includes(given)));
  if (containing.length) return containing.sort((a, b) => editDistance(given, a) - editDistance(given, b))[0];
  let best: string | undefined;
  let bestDistance = Math.max(1, Math.floor(given.length / 3));
  for (const k of candidates) {
    const d = editDistance(given, k);
    if (d <= bestDistance) (best = k), (bestDistance = d);
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    row = next;
  }
  return row[b.length]!;
}

const AUGMENT_HELP = `tessera augment — look at the GPU augmentation: a labelled PNG grid

Usage: tessera augment [--aug KIND] [--data NAME] [--data-dir DIR] [--rows N] [--cols N] [--magnitude M] [--severity S] [--seed N] [--out FILE]
  --aug KIND     basic | crop | randaugment | trivialaugment | augmix | mixup | cutmix | erasing | dino | ops |
                 corruptions [randaugment] (dino: DINO's global view 1, global view 2 and local view in
                 turn; ops: one row per RandAugment op at --magnitude; corruptions: one row per
                 corruption at --severity; both applied to every image)
  --severity S   corruption severity 1–5 [3]
  --rows N       images, one per class first [8]
  --cols N       augmented versions of each [6]
  --magnitude M  RandAugment magnitude out of 10 [9]
The first column holds the originals (the first row, for ops). Writes --out [augment.png].`;

async function augmentCmd(argv: string[]): Promise<void> {
  const { values } = parseFlags({
    args: argv,
    options: {
      help: { type: 'boolean', short: 'h' },
      aug: { type: 'string' },
      data: { type: 'string' },
      'data-dir': { type: 'string' },
      rows: { type: 'string' },
      cols: { type: 'string' },
      magnitude: { type: 'string' },
      severity: { type: 'string' },
      seed: { type: 'string' },
      out: { type: 'string' },
    },
  });
  if (values.help) return console.log(AUGMENT_HELP);
  const severity = Number(values.severity ?? 3);
  if (!Number.isInteger(severity) || severity < 1 || severity > 5) throw new UsageError(`--severity must be an integer from 1 to 5, got '${values.severity}'`);
  const { GRID_KINDS, augmentGrid } = await import('./augment.js');
  const kind = (values.aug ?? 'randaugment') as GridKind;
  if (!GRID_KINDS.includes(kind)) throw new UsageError(`--aug: unknown kind '${kind}'; choose ${GRID_KINDS.join(', ')}`);
  const count = (name: string, v: string | undefined, d: number) => {
    const n = v === undefined ? d : Number(v);
    if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name} expects a positive integer, got '${v}'`);
    return n;
  };
  const rows = count('rows', values.rows, 8);
  const cols = count('cols', values.cols, 6);
  const magnitude = Number(values.magnitude ?? 9);
  if (!(magnitude >= 0 && magnitude <= 10)) throw new UsageError(`--magnitude must be in [0, 10], got '${values.magnitude}'`);
  const T = await import('../engine/index.js');
  const { loadDataset, DATASETS } = await import('./data.js');
  const { writeImageGrid } = await import('./image.js');
  await T.init();
  const dataName = (values.data ?? 'fashion-mnist') as keyof typeof DATASETS;
  if (!(dataName in DATASETS)) throw new UsageError(`--data: unknown dataset '${dataName}'`);
  const ds = loadDataset(dataName, 'test', values['data-dir']);
  // One image of each class first, so the grid shows the whole dataset.
  const picks: number[] = [];
  for (let k = 0; picks.length < Math.min(rows, ds.count); k++) {
    const cls = k % ds.classes;
    const i = Array.from(ds.labels).findIndex((l, j) => l === cls && !picks.includes(j));
    if (i >= 0) picks.push(i);
    if (k > rows * ds.classes) break;
  }
  const per = ds.channels * ds.height * ds.width;
  const host = new Float32Array(picks.length * per);
  picks.forEach((i, r) => host.set(ds.images.subarray(i * per, (i + 1) * per), r * per));
  const images = T.tensor(host, [picks.length, ds.channels, ds.height, ds.width]);
  const labels = picks.map((i) => ds.classNames[ds.labels[i]!]!);
  const seed = Number(values.seed ?? 0);
  const grid = await augmentGrid({ kind, images, labels, columns: cols, seed, magnitude, severity });
  const out = values.out ?? 'augment.png';
  writeImageGrid({
    title: `${kind} on ${dataName}${kind === 'ops' || kind === 'randaugment' ? `, magnitude ${magnitude}` : kind === 'corruptions' ? `, severity ${severity}` : ''}, seed ${seed}`,
    columns: grid.columns,
    rows: grid.rows.map((r) => ({ label: r.label, cells: r.cells.map((pixels) => ({ pixels })) })),
    channels: ds.channels,
    height: ds.height,
    width: ds.width,
  }, out);
  console.log(`wrote ${out} (${grid.rows.length} rows × ${grid.rows[0]!.cells.length} columns)`);
  process.exit(0);
}

const PROFILE_HELP = `tessera profile — where a ViT step spends its GPU time

Usage:
  tessera profile [--preset NAME | --checkpoint FILE] [--batch-size N] [--steps N] [--mode train|infer] [--out DIR]
      writes DIR/profile.md (kernels, phases, GPU-busy fraction, compiles), DIR/trace.json (Chrome
      trace: chrome://tracing or Perfetto) and DIR/kernels.png
  tessera profile attention [--seq-lens 17,65,197,...] [--head-dims 16,32,64] [--heads N] [--batch N] [--repeats N]
                           [--flash-kernels auto,subgroup,workgroup,vec4,scalar] [--out DIR]
      fused (flash) vs unfused attention, forward and forward+backward: DIR/attention.md, .json, .png;
      --flash-kernels times each named family of flash kernels (default: the adapter's choice)
Defaults: preset vit-fmnist-tiny, batch 128, 3 steps, train, out profile/.`;

const FLASH_FAMILIES = ['auto', 'subgroup', 'workgroup', 'vec4', 'scalar'] as const;
type FlashFamilyArg = (typeof FLASH_FAMILIES)[number];

/** `--flash-kernels a,b`: flash kernel families, each one of FLASH_FAMILIES. */
function flashKernelList(s: string | undefined): FlashFamilyArg[] {
  if (!s) return ['auto'];
  return s.split(',').map((v) => {
    if (!(FLASH_FAMILIES as readonly string[]).includes(v)) throw new UsageError(`--flash-kernels: '${v}' is not one of ${FLASH_FAMILIES.join(', ')}`);
    return v as FlashFamilyArg;
  });
}

async function profileCmd(argv: string[]): Promise<void> {
  const attentionMode = argv[0] === 'attention';
  const { values } = parseFlags({
    args: attentionMode ? argv.slice(1) : argv,
    options: {
      help: { type: 'boolean', short: 'h' },
      preset: { type: 'string' },
      checkpoint: { type: 'string' },
      'batch-size': { type: 'string' },
      steps: { type: 'string' },
      mode: { type: 'string' },
      out: { type: 'string' },
      'seq-lens': { type: 'string' },
      'head-dims': { type: 'string' },
      heads: { type: 'string' },
      batch: { type: 'string' },
      repeats: { type: 'string' },
      'flash-kernels': { type: 'string' },
    },
  });
  if (values.help) return console.log(PROFILE_HELP);
  const list = (s: string | undefined, d: number[]) => (s ? s.split(',').map((v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new UsageError(`expected a comma-separated list of positive integers, got '${s}'`);
    return n;
  }) : d);
  const P = await import('./profile.js');
  const out = values.out ?? 'profile';
  if (attentionMode) {
    const points = await P.profileAttention({
      seqLens: list(values['seq-lens'], [17, 50, 65, 129, 197, 257, 513]),
      headDims: list(values['head-dims'], [16, 32, 64]),
      heads: Number(values.heads ?? 4),
      batch: Number(values.batch ?? 8),
      repeats: Number(values.repeats ?? 5),
      flashKernels: flashKernelList(values['flash-kernels']),
      out,
    }, (s) => console.log(s));
    const best = points.filter((p) => p.impl !== 'unfused').map((p) => {
      const u = points.find((q) => q.impl === 'unfused' && q.pass === p.pass && q.N === p.N && q.hd === p.hd)!;
      return { ...p, ratio: u.ms / p.ms };
    }).sort((a, b) => b.ratio - a.ratio)[0];
    if (best) console.log(`best fused/unfused speed-up: ${best.ratio.toFixed(2)}x (${best.impl}, ${best.pass}, N=${best.N}, hd=${best.hd}); tables in ${out}/attention.md`);
    process.exit(0);
  }
  const mode = (values.mode ?? 'train') as 'train' | 'infer';
  if (mode !== 'train' && mode !== 'infer') throw new UsageError(`--mode must be train or infer, got '${values.mode}'`);
  const r = await P.profileStep({
    preset: values.preset, checkpoint: values.checkpoint, batchSize: Number(values['batch-size'] ?? 128), steps: Number(values.steps ?? 3), mode, out,
  });
  console.log(r.markdown.split('\n').slice(0, 3).join('\n'));
  console.log('top kernels:');
  for (const row of r.rows.slice(0, 5)) console.log(`  ${(100 * row.share).toFixed(1).padStart(5)}%  ${row.label}`);
  console.log(`wrote ${out}/profile.md, ${out}/trace.json, ${out}/kernels.png`);
  process.exit(0);
}

const commands: Record<string, (argv: string[]) => Promise<void>> = { train, pretrain, probe: probeCmd, inspect: inspectCmd, eval: evalCmd, augment: augmentCmd, profile: profileCmd, kernels, info };
const [cmd, ...rest] = process.argv.slice(2);
if (cmd && commands[cmd] && relaunchWithHugePages()) {
  // The relaunched process runs the command; this one waits and exits with its status.
} else if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') console.log(HELP);
else if (!commands[cmd]) {
  console.error(`tessera: unknown command '${cmd}'\n\n${HELP}`);
  process.exit(2);
} else {
  try {
    await commands[cmd]!(rest);
  } catch (e) {
    // Usage mistakes, bad data and bad checkpoints end with their message, not a stack trace.
    const err = e as Error;
    const known = err instanceof UsageError || ['DataError', 'CheckpointError', 'RunSettingsError'].includes(err.constructor.name) || (err as NodeJS.ErrnoException).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION';
    const unknownOption = (err as NodeJS.ErrnoException).code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION';
    console.error(`tessera ${cmd}: ${known ? err.message : err.stack ?? err.message}${unknownOption ? `; \`tessera ${cmd} --help\` lists the options` : ''}`);
    process.exit(known ? 2 : 1);
  }
}
