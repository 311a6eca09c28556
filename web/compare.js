// The Compare models tab: the size-vs-quality chart of the current model's variants and its
// Transformer twin's (from the manifest), and two to ten models of the picker side by side —
// variants of one model, or the two families — each writing a story with the Generate tab's settings, scored
// on the built-in stories and the visitor's text, measured against the first (the reference)
// token by token where they share a tokenizer, and run to a chosen position to chart decode
// speed and decode-state memory against position. All model work is the model worker's.

import { lineChart, sizeQualityChart } from './charts.js';
import { fmtBytes, fmtFlops, fmtParams } from './format.js';

const $ = (id) => document.getElementById(id);
const MAX_MODELS = 10;


// Replaces a chart in `el` with a fresh one of these series (uPlot fixes its series when made).
function freshChart(el, opts) {
  el.replaceChildren();
  return lineChart(el, opts);
}

// Series that share one x axis: the union of their xs, each series null where it has no point.
function alignSeries(series) {
  const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p.x)))].sort((a, b) => a - b);
  const ys = series.map((s) => {
    const at = new Map(s.points.map((p) => [p.x, p.y]));
    return xs.map((x) => at.get(x) ?? null);
  });
  return [xs, ...ys];
}

export function setupCompare(app) {
  const rows = $('compare-models');
  const status = (text) => { $('compare-status').textContent = text; };
  let stop = null; // cancels the worker call in progress, while a comparison runs
  let stopped = false;

  const chosen = () => [...rows.querySelectorAll('select')].map((s) => s.value);

  function fillOptions(select, value) {
    select.replaceChildren(...app.models().map((m) => new Option(m.label, m.key)));
    select.value = value;
    if (select.value !== value) select.selectedIndex = 0;
  }

  function renumber() {
    [...rows.children].forEach((row, i) => {
      row.querySelector('.name').textContent = i === 0 ? 'Model 1 (reference)' : `Model ${i + 1}`;
      row.querySelector('button').hidden = rows.children.length <= 2;
    });
    $('compare-add').disabled = rows.children.length >= MAX_MODELS;
  }

  function addRow(key) {
    const row = document.createElement('div');
    row.className = 'row';
    row.innerHTML = '<label><span class="name"></span><select></select></label><button type="button" aria-label="Remove this model">Remove</button>';
    fillOptions(row.querySelector('select'), key);
    row.querySelector('button').addEventListener('click', () => { row.remove(); renumber(); });
    rows.append(row);
    renumber();
  }

  function setModels(keys) {
    rows.replaceChildren();
    for (const k of keys.slice(0, MAX_MODELS)) addRow(k);
  }

  // The picker changed (a fine-tune or a local file joined it): keep what each row shows.
  document.addEventListener('models-changed', () => {
    if (rows.children.length === 0) return;
    for (const s of rows.querySelectorAll('select')) fillOptions(s, s.value);
  });

  $('compare-add').addEventListener('click', () => addRow(app.current()));
  $('compare-families').addEventListener('click', () => setModels(app.familyPair(app.current())));
  $('compare-variants').addEventListener('click', () => setModels(app.variantsOf(app.current())));
  // The chart follows the current model (its variants and its twin's, as shipped).
  const drawSizeQuality = () => sizeQualityChart($('size-quality-chart'), app.sizeQuality(app.current()));
  document.addEventListener('models-changed', drawSizeQuality);
  $('compare-file').addEventListener('change', async (e) => {
    const file = e.target.files[0];
    e.target.value = '';
    if (file) $('compare-text').value = await file.text();
  });
  $('compare-stop').addEventListener('click', () => stop?.());

  const charts = { kl: null, speed: null, memory: null };

  // One model's column: its story streams in, then its table fills.
  function column(key, info) {
    const col = document.createElement('article');
    col.className = 'card column';
    col.dataset.key = key;
    col.innerHTML = '<h3></h3><p class="text" aria-live="polite"><b class="prompt-echo"></b><span></span></p><table class="metrics"><tbody></tbody></table>';
    col.querySelector('h3').textContent = `${key} · ${info.description}`;
    col.querySelector('.prompt-echo').textContent = app.generateSettings().prompt;
    $('compare-columns').append(col);
    return col;
  }

  function addRows(col, rowsToAdd) {
    const tbody = col.querySelector('tbody');
    for (const [name, value, na] of rowsToAdd) {
      const tr = document.createElement('tr');
      tr.innerHTML = '<th></th><td></td>';
      tr.cells[0].textContent = name;
      tr.cells[1].textContent = value;
      if (na) tr.cells[1].className = 'na';
      tbody.append(tr);
    }
  }

  // Runs one worker call so that Stop can cancel it; resolves to its result.
  async function cancellable(op, args, onEvent) {
    const handle = app.call(op, args, onEvent);
    stop = () => { stopped = true; app.call('cancel', { target: handle.id }); };
    try {
      return await handle.promise;
    } finally {
      stop = () => { stopped = true; };
    }
  }

  async function run() {
    const keys = chosen();
    if (new Set(keys).size !== keys.length) throw new Error('pick a different model in each row (the same model twice compares nothing)');
    const request = app.generateSettings();
    const ownText = $('compare-text').value.trim();
    const withPositions = $('compare-positions').checked;
    const length = Number($('compare-length').value);
    const maxLength = app.generationBounds().settings.find((l) => l.name === 'max_tokens').max;
    if (withPositions && !(Number.isInteger(length) && length >= 16 && length <= maxLength)) {
      throw new Error(`run each model to a position from 16 to ${maxLength}`);
    }
    stopped = false;
    stop = () => { stopped = true; };
    $('compare-stop').disabled = false;
    $('compare-columns').replaceChildren();
    $('kl-caption').textContent = '';
    const builtin = await app.builtinEvalText();
    const results = [];
    for (const [i, key] of keys.entries()) {
      if (stopped) break;
      const n = `${i + 1}/${keys.length} ${key}`;
      status(`${n}: loading…`);
      const l = await app.loadModel(key);
      const col = column(key, l.info);
      const text = col.querySelector('.text span');
      status(`${n}: writing the story…`);
      const gen = await cancellable('generate', { key, request }, (ev) => { if (ev.type === 'tokens') text.textContent += ev.text; });
      status(`${n}: bits per byte on the built-in stories…`);
      const evBuiltin = await app.rpc('eval', { key, text: builtin });
      let evOwn = null;
      if (ownText) {
        status(`${n}: bits per byte on your text…`);
        evOwn = await app.rpc('eval', { key, text: ownText });
      }
      let positions = null;
      if (withPositions && !stopped) {
        positions = await cancellable('positionRun', { key, length }, (ev) => {
          if (ev.type === 'progress') status(`${n}: running to position ${length}: ${Math.round((100 * ev.produced) / ev.length)} % …`);
        });
      }
      const cost = await app.rpc('cost', { key, positions: [withPositions ? length : gen.sequence.length] });
      results.push({ key, l, gen, evBuiltin, evOwn, positions, cost: cost[0] });
    }
    const ref = results[0];
    status(results.length > 1 ? 'measuring each model against the reference…' : '');
    const klSeries = [];
    for (const [i, r] of results.entries()) {
      let agreement;
      if (i === 0) {
        agreement = [['against the reference', 'this is the reference', true]];
      } else if (r.l.info.tokenizer !== ref.l.info.tokenizer) {
        agreement = [['mean KL vs reference', `not defined: another tokenizer than ${ref.key}`, true]];
      } else {
        const c = await app.rpc('compare', { reference: ref.key, other: r.key, sequence: ref.gen.sequence, from: ref.gen.promptLen });
        r.cmp = c;
        klSeries.push({ label: r.key, points: c.kl.map((y, x) => ({ x: x + 1, y })) });
        agreement = [
          ['mean KL vs reference', c.mean_kl.toExponential(2)],
          ['top-1 agreement', `${(100 * c.top1_agreement).toFixed(1)}%`],
          c.routing_agreement == null
            ? ['routing agreement', [ref, r].some((x) => x.l.info.moe_layers.length === 0)
              ? 'none: a model without experts'
              : ref.l.info.n_experts !== r.l.info.n_experts
                ? `not defined: ${ref.l.info.n_experts} experts against ${r.l.info.n_experts} (a pruned model numbers its experts afresh)`
                : 'not defined: their MoE layers differ', true]
            : ['routing agreement', `${(100 * c.routing_agreement).toFixed(1)}%`],
        ];
      }
      const i2 = r.l.info;
      const at = r.cost.position;
      const lastSpeed = r.positions?.points.at(-1);
      addRows(document.querySelector(`#compare-columns [data-key="${CSS.escape(r.key)}"]`), [
        ['family', i2.description],
        ['parameters', i2.active_params === i2.params ? fmtParams(i2.params) : `${fmtParams(i2.params)} (${fmtParams(i2.active_params)} active)`],
        ['file size', fmtBytes(r.l.bytes)],
        ['tokens/s (story)', r.gen.tokensPerSecond ? r.gen.tokensPerSecond.toFixed(0) : '–'],
        [`FLOPs/token at ${at}`, fmtFlops(r.cost.flops)],
        [`decode state at ${at}`, fmtBytes(r.cost.state_bytes)],
        ...(lastSpeed ? [[`tokens/s at ${lastSpeed.position}`, lastSpeed.tokensPerSecond.toFixed(0)]] : []),
        ['built-in bits/byte', r.evBuiltin.bits_per_byte.toFixed(4)],
        ...(r.evOwn ? [['your text bits/byte', r.evOwn.bits_per_byte.toFixed(4)]] : []),
        ...agreement,
      ]);
      app.recordRun({ kind: 'compare', model: r.key, reference: ref.key, family: i2.family, bytes: r.l.bytes, tokensPerSecond: r.gen.tokensPerSecond, bitsPerByte: r.evBuiltin.bits_per_byte, ownTextBitsPerByte: r.evOwn?.bits_per_byte ?? null, meanKl: r.cmp?.mean_kl ?? null, top1: r.cmp?.top1_agreement ?? null, routing: r.cmp?.routing_agreement ?? null, cost: r.cost, positions: r.positions?.points ?? null });
    }
    charts.kl = freshChart($('kl-chart'), { xLabel: 'generated token', yLabel: 'KL (nats)', series: klSeries.map((s) => s.label), yFormat: (v) => (v === 0 ? '0' : v.toExponential(0)) });
    charts.kl.set(alignSeries(klSeries));
    const otherTokenizer = results.filter((r) => r.l.info.tokenizer !== ref.l.info.tokenizer).map((r) => r.key);
    $('kl-caption').textContent = results.length < 2 ? ''
      : otherTokenizer.length > 0 ? `${otherTokenizer.join(', ')} tokenize differently from ${ref.key}: their predictions cannot be compared token by token, so they are not on this chart.`
        : `Each line: KL(${ref.key} ‖ model) at each token of ${ref.key}'s story.`;
    const ran = results.filter((r) => r.positions);
    if (ran.length > 0) {
      const series = (f) => ran.map((r) => ({ label: r.key, points: r.positions.points.map((p) => ({ x: p.position, y: f(p) })) }));
      charts.speed = freshChart($('position-speed-chart'), { xLabel: 'position', yLabel: 'tokens/s', series: ran.map((r) => r.key) });
      charts.speed.set(alignSeries(series((p) => p.tokensPerSecond)));
      charts.memory = freshChart($('position-memory-chart'), { xLabel: 'position', yLabel: 'bytes', series: ran.map((r) => r.key), yFormat: (v) => (v >= 1e6 ? `${(v / 1e6).toFixed(1)} MB` : `${(v / 1e3).toFixed(0)} KB`) });
      charts.memory.set(alignSeries(series((p) => p.state_bytes)));
      $('position-speed-chart').dataset.points = ran.map((r) => r.positions.points.length).join(',');
    }
    status(stopped ? `stopped after ${results.length} of ${keys.length} models` : `compared ${results.length} models`);
  }

  $('compare-form').addEventListener('submit', (e) => {
    e.preventDefault();
    if (app.busy()) return;
    app.showError(null);
    app.setBusy(true);
    run().catch((err) => { app.showError(err); status('the comparison stopped with an error (see above)'); }).finally(() => {
      stop = null;
      $('compare-stop').disabled = true;
      app.setBusy(false);
    });
  });

  return {
    // The rows a first visit shows: the current model against its same-size Transformer.
    ready() {
      if (rows.children.length === 0) setModels(app.familyPair(app.current()));
      drawSizeQuality();
    },
  };
}
