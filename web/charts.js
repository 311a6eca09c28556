// Charts: uPlot line charts that follow their container's width, a stacked load-time bar,
// and the routing heatmap (canvas: one column per generated token, one row per MoE layer).

import uPlot from './vendor/uPlot.esm.js';

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
