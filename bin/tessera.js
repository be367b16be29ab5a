#!/usr/bin/env node
// Runs the TypeScript CLI through tsx (installed by `npm run setup`).
import { register } from 'tsx/esm/api';

register();
await import('../train/cli.ts');
