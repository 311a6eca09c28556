// Charts: uPlot line charts that follow their container's width, a stacked load-time bar,
// the size-vs-quality scatter of a model's variants (SVG), and the routing heatmap (canvas:
// one column per generated token, one row per MoE layer).

import uPlot from './vendor/uPlot.esm.js';
import { fmtBytes } from './format.js';

export const PALETTE = ['#3b6fd8', '#d8793b', '#2f9e6e', '#b543a8', '#c9a227', '#5a5a8c', '#c0392b', '#16a2b8'];

// A line chart; `series` are names, data is [[x...], [y1...], ...].
export function lineChart(el, { xLabel, yLabel, series, bars = false, yFormat = null }) {
  const opts = {
    width: el.clientWidth || 320,
    height: 200,
    legend: { show: series.length > 1 },
    // Bars sit on whole-number runs, half a run of room either side.
    scales: { x: bars ? { time: false, range: (u, min, max) => [Math.min(min, 1) - 0.5, Math.max(max, 1) + 0.5] } : { time: false } },
    axes: [bars ? { label: xLabel, incrs: [1], values: (u, vals) => vals.map((v) => (Number.isInteger(v) ? String(v) : '')) } : { label: xLabel }, { label: yLabel, size: yFormat ? 70 : 50, values: yFormat ? (u, vals) => vals.map(yFormat) : undefined }],
    series: [{ label: xLabel }, ...series.map((label, i) => ({
      label,
      stroke: PALETTE[i % PALETTE.length],
      width: 2,
      fill: bars ? PALETTE[i % PALETTE.length] + '66' : undefined,
      paths: bars ? uPlot.paths.bars({ size: [0.6, 80] }) : undefined,
      points: { show: bars ? false : undefined },
    }))],
  };
  const empty = [[], ...series.map(() => [])];
  const plot = new uPlot(opts, empty, el);
  new ResizeObserver(() => plot.setSize({ width: el.clientWidth, height: 200 })).observe(el);
  return {
    set(data) { plot.setData(data); },
    plot,
  };
}

// Stacked horizontal bar of named durations (ms), with a legend.
// A stacked bar of named durations; `parts.end` (default: their sum) is the headline figure,
// `parts.title` its label.
export function loadBreakdown(el, parts) {
  const total = parts.reduce((s, p) => s + p.ms, 0) || 1;
  const end = parts.end ?? total;
  el.replaceChildren();
  const bar = document.createElement('div');
  bar.className = 'stack';
  const legend = document.createElement('ul');
  legend.className = 'legend';
  parts.forEach((p, i) => {
    const seg = document.createElement('div');
    seg.style.width = `${(100 * p.ms) / total}%`;
    seg.style.background = PALETTE[i % PALETTE.length];
    seg.title = `${p.name}: ${p.ms.toFixed(0)} ms`;
    bar.append(seg);
    const item = document.createElement('li');
    const swatch = document.createElement('i');
    swatch.style.background = PALETTE[i % PALETTE.length];
    item.append(swatch, `${p.name} ${p.ms.toFixed(0)} ms`);
    legend.append(item);
  });
  const sum = document.createElement('p');
  sum.className = 'total';
  sum.textContent = `${parts.title ?? 'page load → first token'}: ${end.toFixed(0)} ms`;
  el.append(sum, bar, legend);
}

// Routing heatmap. `tokens` are {text, routing: [{layer, experts, weights}]} per generated token.
export class RoutingHeatmap {
  constructor(canvas, caption) {
    this.canvas = canvas;
    this.caption = caption;
    this.tokens = [];
    this.layers = [];
    this.experts = 1;
    canvas.addEventListener('mousemove', (e) => this.describe(e));
    this.frame = null;
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  reset(moeLayers, nExperts) {
    this.layers = moeLayers;
    this.experts = nExperts;
    this.tokens = [];
    this.draw();
  }

  // Streaming pushes many times a second; redraw at most once per frame, or a long story
  // (every column redrawn per push) would keep the page's main thread busy.
  push(tokens) {
    this.tokens.push(...tokens);
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.draw();
    });
  }

  geometry() {
    const rows = Math.max(1, this.layers.length);
    const labelWidth = 56;
    const width = this.canvas.clientWidth || 600;
    const cell = Math.max(2, Math.min(14, (width - labelWidth) / Math.max(1, this.tokens.length)));
    return { rows, labelWidth, cell, rowHeight: 22, width };
  }

  draw() {
    const { rows, labelWidth, cell, rowHeight, width } = this.geometry();
    const dpr = window.devicePixelRatio || 1;
    const height = rows * rowHeight + 4;
    this.canvas.width = Math.round(width * dpr);
    this.canvas.height = Math.round(height * dpr);
    this.canvas.style.height = `${height}px`;
    const g = this.canvas.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, width, height);
    g.font = '12px system-ui, sans-serif';
    g.fillStyle = '#556';
    this.layers.forEach((layer, r) => g.fillText(`layer ${layer}`, 2, r * rowHeight + 15));
    this.tokens.forEach((t, x) => {
      t.routing.forEach((route, r) => {
        // Top expert's colour; opacity = its weight.
        const best = route.weights.indexOf(Math.max(...route.weights));
        g.globalAlpha = 0.35 + 0.65 * route.weights[best];
        g.fillStyle = PALETTE[route.experts[best] % PALETTE.length];
        g.fillRect(labelWidth + x * cell, r * rowHeight + 2, Math.max(1, cell - 1), rowHeight - 3);
      });
    });
    g.globalAlpha = 1;
  }

  describe(e) {
    const { labelWidth, cell, rowHeight } = this.geometry();
    const rect = this.canvas.getBoundingClientRect();
    const x = Math.floor((e.clientX - rect.left - labelWidth) / cell);
    const r = Math.floor((e.clientY - rect.top - 2) / rowHeight);
    const t = this.tokens[x];
    const route = t?.routing[r];
    if (!route) return;
    const parts = route.experts.map((ex, i) => `expert ${ex} (${route.weights[i].toFixed(2)})`);
    this.caption.textContent = `token ${x + 1} “${t.text}” · layer ${route.layer} → ${parts.join(', ')}`;
  }

  legend() {
    return Array.from({ length: this.experts }, (_, i) => ({ name: `expert ${i}`, color: PALETTE[i % PALETTE.length] }));
  }
}

// The variants of a model on the Pareto front of size against quality: each is smaller than
// every variant with lower (better) bits per byte. Sorted by size.
export function paretoFront(variants) {
  const bySize = [...variants].sort((a, b) => a.bytes - b.bytes || a.bitsPerByte - b.bitsPerByte);
  // From the largest down: a variant is on the front if no smaller one scores at least as well.
  return bySize.filter((v, i) => bySize.slice(0, i).every((s) => s.bitsPerByte > v.bitsPerByte));
}

// Size (bytes, log scale) against held-out bits per byte for every variant of one or more
// models: one colour per model, the Pareto front of each joined by a line with filled
// markers, dominated variants hollow, each point labelled with its variant. SVG, so it scales
// with the card; `data-front` lists each model's front for tests ("itera-tiny: q2 auto5 …").
export function sizeQualityChart(el, models) {
  const ns = 'http://www.w3.org/2000/svg';
  const all = models.flatMap((m) => m.variants);
  el.replaceChildren();
  if (all.length === 0) return;
  const [w, h, left, right, top, bottom] = [640, 300, 58, 16, 14, 40];
  const lx = all.map((v) => Math.log10(v.bytes));
  const [x0, x1] = [Math.min(...lx) - 0.04, Math.max(...lx) + 0.04];
  const ys = all.map((v) => v.bitsPerByte);
  const pad = (Math.max(...ys) - Math.min(...ys)) * 0.08 || 0.01;
  const [y0, y1] = [Math.min(...ys) - pad, Math.max(...ys) + pad];
  const px = (bytes) => left + ((Math.log10(bytes) - x0) / (x1 - x0)) * (w - left - right);
  const py = (bpb) => top + ((y1 - bpb) / (y1 - y0)) * (h - top - bottom);
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  svg.setAttribute('class', 'size-quality');
  const add = (name, attrs, text) => {
    const e = document.createElementNS(ns, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text != null) e.textContent = text;
    svg.append(e);
    return e;
  };
  // Axes: bytes at 1, 2 and 5 × each power of ten in range, bits per byte at 5 ticks.
  add('line', { x1: left, y1: h - bottom, x2: w - right, y2: h - bottom, stroke: '#888' });
  add('line', { x1: left, y1: top, x2: left, y2: h - bottom, stroke: '#888' });
  for (let e = Math.floor(x0); e <= x1; e++) {
    for (const m of [1, 2, 5]) {
      const bytes = m * 10 ** e;
      if (Math.log10(bytes) < x0 || Math.log10(bytes) > x1) continue;
      add('line', { x1: px(bytes), y1: h - bottom, x2: px(bytes), y2: h - bottom + 4, stroke: '#888' });
      add('text', { x: px(bytes), y: h - bottom + 16, 'text-anchor': 'middle', 'font-size': 11, fill: 'currentColor' }, fmtBytes(bytes));
    }
  }
  for (let i = 0; i <= 4; i++) {
    const bpb = y0 + ((y1 - y0) * i) / 4;
    add('text', { x: left - 6, y: py(bpb) + 4, 'text-anchor': 'end', 'font-size': 11, fill: 'currentColor' }, bpb.toFixed(3));
  }
  add('text', { x: (left + w - right) / 2, y: h - 6, 'text-anchor': 'middle', 'font-size': 12, fill: 'currentColor' }, 'file size (log scale)');
  add('text', { x: 12, y: (top + h - bottom) / 2, 'text-anchor': 'middle', 'font-size': 12, fill: 'currentColor', transform: `rotate(-90 12 ${(top + h - bottom) / 2})` }, 'held-out bits per byte (lower is better)');
  // A point's label beside it, on the first side where it covers no point and no label placed
  // before (boxes: x, y of the bottom-left corner, width, height).
  const placed = all.map((v) => ({ x: px(v.bytes) - 5, y: py(v.bitsPerByte) + 5, w: 10, h: 10 }));
  const label = (x, y, text, colour) => {
    const [width, height] = [6 * text.length, 11];
    const sides = [[6, -6], [6, 14], [-6 - width, -6], [-6 - width, 14], [-width / 2, -10], [-width / 2, 20]];
    const free = ([dx, dy]) => placed.every((b) => x + dx > b.x + b.w || x + dx + width < b.x || y + dy - height > b.y || y + dy < b.y - b.h);
    const [dx, dy] = sides.find(free) ?? sides[0];
    placed.push({ x: x + dx, y: y + dy, w: width, h: height });
    add('text', { x: x + dx, y: y + dy, 'font-size': 10, fill: colour }, text);
  };
  const fronts = [];
  models.forEach((m, i) => {
    const colour = PALETTE[i % PALETTE.length];
    const front = paretoFront(m.variants);
    fronts.push(`${m.name}: ${front.map((v) => v.variant).join(' ')}`);
    add('polyline', { points: front.map((v) => `${px(v.bytes)},${py(v.bitsPerByte)}`).join(' '), fill: 'none', stroke: colour, 'stroke-width': 2 });
    for (const v of m.variants) {
      const on = front.includes(v);
      const dot = add('circle', { cx: px(v.bytes), cy: py(v.bitsPerByte), r: 4.5, fill: on ? colour : 'white', stroke: colour, 'stroke-width': 2 });
      dot.append(Object.assign(document.createElementNS(ns, 'title'), { textContent: `${m.name} ${v.label}: ${fmtBytes(v.bytes)}, ${v.bitsPerByte.toFixed(4)} bits/byte${on ? ' (Pareto front)' : ''}` }));
      label(px(v.bytes), py(v.bitsPerByte), v.variant, colour);
    }
    add('text', { x: w - right - 4, y: top + 12 + 14 * i, 'text-anchor': 'end', 'font-size': 12, fill: colour }, `● ${m.name} (${m.family})`);
  });
  el.dataset.front = fronts.join('; ');
  el.append(svg);
}
