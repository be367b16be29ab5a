import { defineConfig } from 'vitest/config';

// One process for all files: they share the GPU device and its compiled pipelines (lavapipe
// compiles a shader on first dispatch, 15-130 ms each), and the machine has 2 cores.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    poolOptions: { forks: { singleFork: true } },
    isolate: false,
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
