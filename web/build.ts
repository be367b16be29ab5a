// Browser build: bundles the engine (and the small page script) with esbuild into web/dist/.
// Node-only imports are left out: in a page, engine/device.ts takes navigator.gpu.
import { build } from 'esbuild';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

export async function buildWeb(outdir = join(here, 'dist')): Promise<string> {
  await build({
    entryPoints: { tessera: join(here, '../engine/index.ts'), page: join(here, 'page.ts') },
    outdir,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    sourcemap: true,
    external: ['webgpu', 'node:*'],
    logLevel: 'warning',
  });
  return outdir;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const out = await buildWeb();
  console.log(`built ${out}/tessera.js and ${out}/page.js; serve web/ from 127.0.0.1 and open index.html`);
}
