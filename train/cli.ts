// tessera's command line. Subcommands: train, kernels, info (more arrive with their issues).
import { parseArgs } from 'node:util';

const HELP = `tessera — a small WebGPU tensor engine that trains Vision Transformers

Usage: tessera <command> [options]

Commands:
  train      train a ViT on Fashion-MNIST (npm start runs this with the default preset)
  kernels    print the WGSL of a kernel family: tessera kernels matmul --trans-b
  info       show the WebGPU adapter, its features and limits

Run \`tessera <command> --help\` for the options of each command.`;

async function info(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { help: { type: 'boolean', short: 'h' } } });
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
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      help: { type: 'boolean', short: 'h' },
      'trans-a': { type: 'boolean' },
      'trans-b': { type: 'boolean' },
      rank: { type: 'string', default: '2' },
    },
  });
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
    gelu: () => K.elementwise.elementwiseKernel('gelu', 'gelu_(a)', ['same'], 1),
    add: () => K.elementwise.elementwiseKernel('add', 'a + b', ['same', 'strided'], rank),
    sum: () => K.reduce.rowReduceKernel('sum'),
    max: () => K.reduce.rowReduceKernel('max'),
    var: () => K.reduce.rowReduceKernel('var'),
    copy: () => K.movement.stridedCopyKernel(rank),
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
    adamw: () => K.optimizer.adamwKernel(),
    sgd: () => K.optimizer.sgdKernel(),
  };
  const name = positionals[0];
  if (values.help || !name || !table[name]) {
    console.log(`tessera kernels <name> [--trans-a] [--trans-b] [--rank N]\n\nPrints the WGSL tessera generates. Names: ${Object.keys(table).join(', ')}\n` +
      'Set TESSERA_PRINT_KERNELS=1 on any command to print every kernel as it is compiled.');
    process.exit(name && !values.help ? 2 : 0);
  }
  console.log(table[name]!().code);
}

async function train(argv: string[]): Promise<void> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log('tessera train: trains a Vision Transformer on Fashion-MNIST (models and training loop: see README "Status").');
    return;
  }
  console.error('tessera train: the ViT models and training loop are not built yet (see README "Status"); the engine is ready: `npm test` exercises it.');
  process.exit(1);
}

const commands: Record<string, (argv: string[]) => Promise<void>> = { train, kernels, info };
const [cmd, ...rest] = process.argv.slice(2);
if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') console.log(HELP);
else if (!commands[cmd]) {
  console.error(`tessera: unknown command '${cmd}'\n\n${HELP}`);
  process.exit(2);
} else await commands[cmd]!(rest);
