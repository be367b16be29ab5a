// Pictures people look at: a minimal PNG encoder (8-bit RGB, zlib from Node) and labelled image
// grids composed as SVG and rendered by resvg, as the plots are.
import { Resvg } from '@resvg/resvg-js';
import { writeFileSync } from 'node:fs';
import { crc32, deflateSync } from 'node:zlib';

function chunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'ascii');
  out.set(data, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** PNG bytes of an RGB image (row-major, 3 bytes per pixel). */
export function encodePng(rgb: Uint8Array, width: number, height: number): Buffer {
  if (rgb.length !== width * height * 3) throw new Error(`encodePng: ${rgb.length} bytes for a ${width}×${height} RGB image`);
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8 bits, truecolour, deflate, no filter set, no interlace
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (width * 3 + 1)] = 0; // filter: none
    raw.set(rgb.subarray(y * width * 3, (y + 1) * width * 3), y * (width * 3 + 1) + 1);
  }
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([signature, chunk('IHDR', header), chunk('IDAT', deflateSync(raw)), chunk('IEND', new Uint8Array(0))]);
}

/** One image [C, H, W] in [0, 1] (C = 1 or 3) as RGB bytes, enlarged `zoom` times (nearest). */
export function toRgb(chw: Float32Array | Float64Array, C: number, H: number, W: number, zoom = 1): { rgb: Uint8Array; width: number; height: number } {
  const [w, h] = [W * zoom, H * zoom];
  const rgb = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const src = Math.floor(y / zoom) * W + Math.floor(x / zoom);
      for (let k = 0; k < 3; k++) {
        const v = chw[(C === 3 ? k : 0) * H * W + src]!;
        rgb[(y * w + x) * 3 + k] = Math.round(Math.min(Math.max(v, 0), 1) * 255);
      }
    }
  }
  return { rgb, width: w, height: h };
}

export interface GridCell {
  /** [C, H, W] in [0, 1]. */
  pixels: Float32Array;
}

export interface ImageGrid {
  title: string;
  columns: string[];
  rows: { label: string; cells: GridCell[] }[];
  channels: number;
  height: number;
  width: number;
  zoom?: number;
}

const escapeXml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Renders a labelled grid (row labels on the left, column titles on top) to a PNG file. */
export function writeImageGrid(grid: ImageGrid, path: string): void {
  const zoom = grid.zoom ?? 3;
  const [cw, ch] = [grid.width * zoom, grid.height * zoom];
  const [left, top, gap] = [130, 56, 6];
  const cols = Math.max(...grid.rows.map((r) => r.cells.length));
  const W = left + cols * (cw + gap) + gap;
  const H = top + grid.rows.length * (ch + gap) + gap;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${gap}" y="20" font-size="16" font-weight="bold">${escapeXml(grid.title)}</text>`,
  ];
  grid.columns.forEach((c, j) => parts.push(`<text x="${left + j * (cw + gap) + cw / 2}" y="${top - 10}" font-size="12" text-anchor="middle">${escapeXml(c)}</text>`));
  grid.rows.forEach((row, i) => {
    const y = top + i * (ch + gap);
    parts.push(`<text x="${left - 8}" y="${y + ch / 2 + 4}" font-size="12" text-anchor="end">${escapeXml(row.label)}</text>`);
    row.cells.forEach((cell, j) => {
      const img = toRgb(cell.pixels, grid.channels, grid.height, grid.width, zoom);
      const png = encodePng(img.rgb, img.width, img.height).toString('base64');
      parts.push(`<image x="${left + j * (cw + gap)}" y="${y}" width="${cw}" height="${ch}" href="data:image/png;base64,${png}"/>`);
    });
  });
  parts.push('</svg>');
  writeFileSync(path, new Resvg(parts.join('\n'), { background: 'white' }).render().asPng());
}
