// Plots as Vega-Lite specs, rendered to SVG by vega and to PNG by resvg: one spec serves the PNG
// files and could be embedded in an HTML report as is.
import { Resvg } from '@resvg/resvg-js';
import { writeFileSync } from 'node:fs';
import * as vega from 'vega';
import * as vl from 'vega-lite';

export type Spec = vl.TopLevelSpec;

export async function renderPng(spec: Spec, path: string): Promise<void> {
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  writeFileSync(path, new Resvg(svg, { background: 'white', fitTo: { mode: 'zoom', value: 2 } }).render().asPng());
}

export interface CurvePoint {
  step: number;
  value: number;
  series: string;
}

/** Training curves: loss on one panel, accuracy (or `secondTitle`) on another, against the step. */
export function curvesSpec(loss: CurvePoint[], accuracy: CurvePoint[], title: string, secondTitle = 'accuracy', firstTitle = 'loss'): Spec {
  const panel = (values: CurvePoint[], y: string) => ({
    width: 520,
    height: 180,
    data: { values },
    mark: { type: 'line' as const, point: values.length < 40 },
    encoding: {
      x: { field: 'step', type: 'quantitative' as const, title: 'step' },
      y: { field: 'value', type: 'quantitative' as const, title: y, scale: { zero: false } },
      color: { field: 'series', type: 'nominal' as const, title: null, legend: { labelLimit: 320 } },
    },
  });
  return { $schema: 'https://vega.github.io/schema/vega-lite/v6.json', title, vconcat: [panel(loss, firstTitle), panel(accuracy, secondTitle)] } as Spec;
}

/** Per-step values averaged over windows (at most 200 points), by default the "train loss" series. */
export function smoothedLoss(losses: readonly number[], series = 'train loss (batch mean)'): CurvePoint[] {
  const points: CurvePoint[] = [];
  const win = Math.max(1, Math.floor(losses.length / 200));
  for (let i = 0; i + win <= losses.length; i += win) {
    points.push({ step: i + win, value: losses.slice(i, i + win).reduce((a, b) => a + b, 0) / win, series });
  }
  return points;
}

/** Renders a run's curves; a failure is reported, not thrown: the run's results are already saved. */
export async function renderCurves(spec: Spec, path: string): Promise<void> {
  try {
    await renderPng(spec, path);
  } catch (e) {
    console.error(`tessera: could not render ${path} (${(e as Error).message})`);
  }
}
