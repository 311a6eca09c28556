// The playground page: model picker, generation, benchmarks; comparison (compare.js),
// fine-tuning (fine-tune.js) and distillation (distill.js) get what they need of it here. All model work happens in workers (worker.js for the models,
// train-worker.js for training); these modules only drive the UI.

import { lineChart, loadBreakdown, RoutingHeatmap } from './charts.js';
import { detectWebGpu, deviceInfo } from './device.js';
import { setupCompare } from './compare.js';
import { setupDistill } from './distill.js';
import { setupFineTune } from './fine-tune.js';
import { fmtBytes, fmtFlops, fmtParams } from './format.js';
import { connect } from './rpc.js';

const $ = (id) => document.getElementById(id);
// The shipped models, their files, sizes and held-out BPB, and the default: written by
// `cargo xtask export` (URLs are relative, so the page works under any path).
const MANIFEST_URL = 'weights/manifest.json';
// The precisions a fine-tune exports (a shipped model's come from the manifest).
// Every precision a model file may have: the core's list (`Precision::ALL`), which the
// manifest carries (`cargo xtask manifest`).
const precisions = () => state.manifest?.precisions ?? [];
const TOKENIZER_URL = 'weights/tokenizer.json';

// ---- worker RPC -------------------------------------------------------------------------
// A model worker that dies is replaced (rpc.js); the page then reloads the model it was using.
const { call, rpc } = connect(() => new Worker(new URL('./worker.js', import.meta.url), { type: 'module' }), 'model worker', (message) => {
  recoverModelWorker(message).catch(showError);
});

// ---- state ------------------------------------------------------------------------------
const state = {
  manifest: { default: null, models: [], baselines: [] },
  requestDefaults: null, // the core's, once the model worker's wasm is up
  current: null,
  loaded: new Map(), // key → load info
  // Models that are not files on the server: key → weight file bytes (a local file, a
  // fine-tune's precisions), kept so they can be reloaded and fine-tuned further.
  bytes: new Map(),
  // Fine-tuned families in the picker: {family, label} (keys are `${family}-${precision}`).
  tuned: [],
  // mode: what the user picked; webgpu: adapter info (null without WebGPU); calibration:
  // key → {cpu, gpu} tokens/s measured here; failure: why WebGPU was given up, if it was.
  backend: { mode: 'auto', webgpu: null, calibration: new Map(), calibrating: null, failure: null },
  runs: [],
  busy: false,
  generation: null,
  timings: { wasmMs: 0 },
};

function showError(e) {
  const note = $('error-note');
  note.textContent = e ? `⚠ ${e.message ?? e}` : '';
  note.hidden = !e;
}

function setBusy(busy) {
  state.busy = busy;
  for (const id of ['generate', 'compare', 'bench', 'bench-variants', 'model-select', 'model-file']) $(id).disabled = busy;
  $('stop').disabled = !busy || !state.generation;
}

const fmtRate = (r) => (r == null ? '–' : r.toFixed(r < 10 ? 1 : 0));
const fmtMs = (ms) => (ms == null ? '–' : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`);

// ---- model picker -----------------------------------------------------------------------
// The shipped models: the SSM + MoE models, then the Transformer baselines they are compared with.
const shippedModels = () => [...state.manifest.models, ...(state.manifest.baselines ?? [])];
const FAMILY_NAMES = { itera: 'SSM + MoE', transformer: 'Transformer' };

function fillPicker() {
  const select = $('model-select');
  select.replaceChildren();
  for (const m of shippedModels()) {
    const group = document.createElement('optgroup');
    group.label = `${m.name} (${FAMILY_NAMES[m.family ?? 'itera']})`;
    for (const v of m.precisions) group.append(new Option(`${m.name} · ${variantLabel(v)} · ${fmtBytes(v.bytes)}`, v.key));
    select.append(group);
  }
  for (const { family, label } of state.tuned) {
    const group = document.createElement('optgroup');
    group.label = label;
    for (const p of precisions()) {
      const bytes = state.bytes.get(`${family}-${p}`);
      group.append(new Option(`${label} · ${p}${bytes ? ` · ${fmtBytes(bytes.byteLength)}` : ''}`, `${family}-${p}`));
    }
    select.append(group);
  }
  for (const key of state.bytes.keys()) {
    if (key.startsWith('local:')) select.append(new Option(`${key.slice(6)} (local)`, key));
    if (isLlama2(key)) select.append(new Option(`${key.slice(7)} (llama2.c, local)`, key));
  }
  select.value = state.current;
  document.dispatchEvent(new Event('models-changed'));
}

// A shipped variant in one line: its precision, a mixed file's bound and precisions
// ("auto ≤ +1 % (q4 · 4 q8 · 10 q3)"), a pruned file's experts ("q4 · 3 of 4 experts (healed)").
const variantLabel = (v) => (v.bound_bpb_change_pct == null ? v.summary ?? v.precision : `auto ≤ +${v.bound_bpb_change_pct} % (${v.summary})`);
// A shipped model's file entry by key, from any model's variants.
const shippedFile = (key) => shippedModels().flatMap((m) => m.precisions).find((v) => v.key === key);
// A model key's variant (itera-tiny-q8 → q8, itera-tiny-auto1 → auto1): the manifest's for a
// shipped file, a precision's name for a fine-tuned one; null for a key of neither.
const variantOf = (key) => shippedFile(key)?.variant ?? precisions().find((p) => key.endsWith(`-${p}`)) ?? null;
// A model key without its variant: itera-tiny-q8 → itera-tiny (a key of none: itself).
const familyOf = (key) => { const v = variantOf(key); return v ? key.slice(0, -v.length - 1) : key; };
// A shipped model's manifest entry (`familyOf(key)`).
const shippedModel = (family) => shippedModels().find((m) => m.name === family);
const urlOf = (key) => {
  const f = shippedFile(key);
  if (!f) throw new Error(`${key} is not a shipped model (weights/manifest.json)`);
  return `weights/${f.file}`;
};

const isLlama2 = (key) => key.startsWith('llama2:');
// The positions at which the page states a token's cost: the manifest's (`cargo xtask export`).
const costPositions = () => shippedModels()[0]?.per_token?.map((p) => p.context) ?? [512];
// 'itera', 'transformer' or 'llama2': from the model once loaded, else the manifest's family.
const kindOf = (key) => state.loaded.get(key)?.info.kind ?? (isLlama2(key) ? 'llama2'
  : shippedModel(familyOf(key))?.family ?? state.tuned.find((t) => t.family === familyOf(key))?.kind ?? 'itera');

async function loadModel(key, bytes = null) {
  if (state.loaded.has(key)) return state.loaded.get(key);
  // The worker gets a copy: the page keeps the bytes (once they load) for a later reload,
  // a fine-tune or a distillation.
  const kept = bytes ?? state.bytes.get(key);
  const bar = $('download-progress');
  bar.style.width = '0%';
  let args;
  let transfer = [];
  if (isLlama2(key)) {
    const llama2 = { checkpoint: kept.checkpoint.slice(0), tokenizer: kept.tokenizer.slice(0) };
    args = { key, llama2, positions: costPositions() };
    transfer = [llama2.checkpoint, llama2.tokenizer];
  } else if (kept) {
    args = { key, bytes: kept.slice(0), tokenizerUrl: TOKENIZER_URL, positions: costPositions() };
    transfer = [args.bytes];
  } else {
    args = { key, url: urlOf(key), tokenizerUrl: TOKENIZER_URL, positions: costPositions() };
  }
  const info = await call('load', args, (ev) => {
    if (ev.type === 'progress' && ev.total) bar.style.width = `${(100 * ev.received) / ev.total}%`;
  }, transfer).promise;
  if (bytes) state.bytes.set(key, bytes);
  bar.style.width = '100%';
  state.loaded.set(key, info);
  return info;
}

// After the model worker was replaced: nothing is loaded in the new one, and nothing runs.
async function recoverModelWorker(message) {
  state.loaded.clear();
  state.generation = null;
  setBusy(true);
  const key = state.current;
  showError(new Error(`${message}; reloading ${key}…`));
  document.body.dataset.workerRestarts = String(Number(document.body.dataset.workerRestarts ?? 0) + 1);
  try {
    await loadModel(key);
    showError(new Error(`${message}; ${key} was reloaded and is ready.`));
  } finally {
    setBusy(false);
  }
}

// What a token costs at the stated positions: a fixed state, or a KV cache that grows.
function describeCost(l) {
  const c = l.costs ?? [];
  if (c.length === 0) return '';
  if (c.every((x) => x.state_bytes === c[0].state_bytes && x.flops === c[0].flops)) {
    return ` · per token ${fmtFlops(c[0].flops)}, decode state ${fmtBytes(c[0].state_bytes)} at any position`;
  }
  const at = (x) => `${fmtFlops(x.flops)} + ${fmtBytes(x.state_bytes)} KV cache at ${x.position}`;
  return ` · per token ${at(c[0])}, ${at(c[c.length - 1])}`;
}

function describeModel(key, l) {
  const i = l.info;
  const cost = describeCost(l);
  const cpuOnly = i.webgpu ? '' : ' · decodes on the CPU';
  if (i.kind === 'llama2') {
    $('model-meta').textContent = `${key.slice(7)}: a llama2.c checkpoint (Transformer), ${fmtParams(i.params)} parameters, `
      + `${i.n_layers} layers, dim ${i.d_model}, vocabulary ${i.vocab_size}, ${fmtBytes(l.bytes)}${cost}${cpuOnly}`;
    return;
  }
  const family = familyOf(key);
  const card = shippedFile(key);
  const tuned = state.tuned.find((t) => t.family === family);
  const bpb = card ? ` · held-out ${card.bits_per_byte.toFixed(3)} bits/byte` : tuned ? ` · ${tuned.about}` : '';
  const shape = i.kind === 'transformer'
    ? `${fmtParams(i.params)} parameters, ${i.n_layers} layers, dim ${i.d_model}, ${i.n_heads} heads (${i.n_kv_heads} key/value)`
    : `${fmtParams(i.params)} parameters (${fmtParams(i.active_params)} active per token), `
      + `${i.n_layers} layers, ${i.n_experts} experts (top-${i.top_k}) on layers ${i.moe_layers.join(', ')}`;
  $('model-meta').textContent = `${key}: ${i.description}, ${shape}, `
    + `${fmtBytes(l.bytes)} ${l.fromCache ? '(from cache)' : 'downloaded'}${mixedText(i)}${bpb}${cost}${cpuOnly}`;
}

// A mixed file's precisions in one line: " · q4, embed q8, layers.0.in_proj f16 (and 3 more)".
function mixedText(i) {
  const entries = Object.entries(i.precision_map ?? {});
  if (entries.length === 0) return '';
  const shown = entries.slice(0, 3).map(([name, p]) => `${name} ${p}`).join(', ');
  return ` · ${i.precision}, ${shown}${entries.length > 3 ? ` (and ${entries.length - 3} more)` : ''}`;
}

async function selectModel(key, bytes = null) {
  showError(null);
  setBusy(true);
  try {
    const l = await loadModel(key, bytes);
    state.current = key;
    fillPicker();
    describeModel(key, l);
    return l;
  } catch (e) {
    showError(e);
    $('model-select').value = state.current;
    throw e;
  } finally {
    setBusy(false);
  }
}

// ---- generation -------------------------------------------------------------------------
// The Generate tab's values and bounds, from the core (the wasm's generation_defaults).
// Settings are f32 in the core: 0.8 arrives as 0.800000011920929, shown (and checked against
// the input's step) as the 7 digits an f32 holds.
const asF32 = (v) => (Number.isInteger(v) ? v : Number(v.toPrecision(7)));
function fillGenerateSettings(d) {
  const bounds = new Map(d.settings.map((l) => [l.name, l]));
  for (const input of $('generate-form').querySelectorAll('[data-request]')) {
    const name = input.dataset.request;
    if (input.type === 'checkbox') input.checked = d.request[name];
    else input.value = asF32(d.request[name]);
    const b = bounds.get(name);
    if (b) { input.min = b.min; input.max = b.max; }
  }
  $('prompt').maxLength = d.max_prompt_bytes;
}

function settings() {
  const num = (id) => Number($(id).value);
  return {
    prompt: $('prompt').value,
    temperature: num('temperature'),
    top_k: num('top-k'),
    top_p: num('top-p'),
    max_tokens: num('max-tokens'),
    seed: num('seed'),
    stop_at_end_of_text: $('stop-at-end').checked,
  };
}

const tpsChart = lineChart($('tps-chart'), { xLabel: 'seconds', yLabel: 'tokens/s', series: ['tokens/s'] });
const heatmap = new RoutingHeatmap($('routing-heatmap'), $('routing-caption'));

async function generate({ onStart } = {}) {
  if (state.busy) return null;
  showError(null);
  setBusy(true);
  const key = state.current;
  const info = state.loaded.get(key).info;
  const out = $('output');
  out.querySelector('.prompt-echo').textContent = $('prompt').value;
  const generated = out.querySelector('.generated');
  generated.textContent = '';
  out.setAttribute('aria-busy', 'true');
  for (const id of ['stat-count', 'stat-tps', 'stat-ttft']) $(id).textContent = id === 'stat-count' ? '0' : '–';
  heatmap.reset(info.moe_layers, info.n_experts);
  const xs = [];
  const ys = [];
  tpsChart.set([xs, ys]);
  $('tps-chart').dataset.points = 0;
  let last = null; // the first token's arrival starts the rate measurement
  let latest = null;
  const plotRate = (ev) => {
    xs.push(ev.elapsedMs / 1000);
    ys.push((ev.produced - last.n) / ((ev.elapsedMs - last.t) / 1000));
    tpsChart.set([xs, ys]);
    $('tps-chart').dataset.points = xs.length;
    $('stat-tps').textContent = ys[ys.length - 1].toFixed(0);
    last = { t: ev.elapsedMs, n: ev.produced };
  };
  // A shared stop flag where the page is cross-origin isolated, else a `cancel` message.
  const stopFlag = self.crossOriginIsolated ? new Int32Array(new SharedArrayBuffer(4)) : null;
  state.stop = () => (stopFlag ? Atomics.store(stopFlag, 0, 1) : call('cancel', { target: handle.id }));
  const backend = backendFor(key);
  const handle = call('generate', { key, request: settings(), stopFlag, backend }, (ev) => {
    if (ev.type === 'fallback') {
      // WebGPU failed mid-run: the worker restarts the request on the CPU.
      state.backend.failure = ev.message;
      backendNote();
      generated.textContent = '';
      heatmap.reset(info.moe_layers, info.n_experts);
      return;
    }
    if (ev.produced > 0) state.firstTokenAt ??= performance.now();
    generated.textContent += ev.text;
    heatmap.push(ev.tokens.map((_, i) => ({ text: ev.pieces[i], routing: ev.routing[i] })));
    $('stat-count').textContent = ev.produced;
    last ??= { t: ev.elapsedMs, n: ev.produced };
    latest = ev;
    // A short story (a tenth of a second on a fast CPU) still gets several points.
    if (ev.elapsedMs - last.t > 20) plotRate(ev);
  });
  state.generation = handle.id;
  setBusy(true);
  onStart?.();
  try {
    const r = await handle.promise;
    if (latest && latest.elapsedMs > last.t) plotRate(latest); // the tokens since the last point
    $('stat-tps').textContent = r.tokensPerSecond ? r.tokensPerSecond.toFixed(0) : '–';
    $('stat-ttft').textContent = fmtMs(r.firstTokenMs);
    $('routing-caption').textContent = info.moe_layers.length === 0
      ? `${r.produced} tokens; this model has no experts to route.`
      : `${r.produced} tokens × ${info.moe_layers.length} MoE layers. Hover a cell for the token and its experts.`;
    state.runs.push({ kind: 'generate', model: key, backend: state.backend.failure ? 'cpu' : backend, ...pick(r, ['produced', 'firstTokenMs', 'totalMs', 'tokensPerSecond', 'stopped']) });
    return r;
  } catch (e) {
    showError(e);
    return null;
  } finally {
    state.generation = null;
    out.setAttribute('aria-busy', 'false');
    setBusy(false);
  }
}

const pick = (o, keys) => Object.fromEntries(keys.map((k) => [k, o[k]]));

// ---- benchmarks -------------------------------------------------------------------------
const benchChart = lineChart($('bench-chart'), { xLabel: 'run', yLabel: 'tokens/s', series: ['CPU (wasm)', 'WebGPU'], bars: true });
const benchRows = []; // per run: {cpu, gpu} tokens/s (gpu null without WebGPU)

// One benchmark row per backend for the model `key` (loaded first if it is not).
async function benchModel(key) {
  await loadModel(key);
  const request = { prompt: 'Once upon a time', max_tokens: 128, temperature: 0, stop_at_end_of_text: false };
  const tbody = $('bench-table').querySelector('tbody');
  const row = { cpu: null, gpu: null };
  const backends = [['cpu', 'CPU (wasm SIMD)']];
  if (state.backend.webgpu && !state.backend.failure && !cpuOnly(key)) backends.push(['webgpu', 'WebGPU']);
  for (const [backend, label] of backends) {
    let fellBack = false;
    // At most 128 tokens or 5 s per backend: a software WebGPU adapter may do 1 token/s.
    const r = await call('generate', { key, request, backend, timeLimitMs: 5000 }, (ev) => { if (ev.type === 'fallback') { fellBack = true; state.backend.failure = ev.message; backendNote(); } }).promise;
    if (fellBack) continue;
    row[backend === 'cpu' ? 'cpu' : 'gpu'] = r.tokensPerSecond;
    state.runs.push({ kind: 'bench', model: key, backend, tokensPerSecond: r.tokensPerSecond, firstTokenMs: r.firstTokenMs });
    tbody.insertAdjacentHTML('beforeend', `<tr><td>${key}</td><td>${label}</td><td>${fmtRate(r.tokensPerSecond)}</td><td>${fmtMs(r.firstTokenMs)}</td></tr>`);
  }
  if (!state.backend.webgpu && !state.backend.gpuRowShown) {
    tbody.insertAdjacentHTML('beforeend', `<tr><td>${key}</td><td>WebGPU</td><td colspan="2">not available in this browser</td></tr>`);
    state.backend.gpuRowShown = true;
  }
  benchRows.push(row);
  const xs = benchRows.map((_, i) => i + 1);
  benchChart.set([xs, benchRows.map((b) => b.cpu), benchRows.map((b) => b.gpu)]);
}

// Benchmarks `keys` in turn, saying which one runs ("timing itera-tiny-q3 (5 of 8)…").
async function runBench(keys) {
  showError(null);
  setBusy(true);
  try {
    for (const [i, key] of keys.entries()) {
      $('bench-status').textContent = keys.length > 1 ? `timing ${key} (${i + 1} of ${keys.length})…` : `timing ${key}…`;
      await benchModel(key);
    }
    $('bench-status').textContent = `timed ${keys.length === 1 ? keys[0] : `${keys.length} variants`}`;
  } catch (e) {
    showError(e);
    $('bench-status').textContent = 'the benchmark stopped with an error (see above)';
  } finally {
    setBusy(false);
  }
}

async function exportBench() {
  const report = { generatedAt: new Date().toISOString(), device: await deviceInfo(), backend: { mode: state.backend.mode, calibration: Object.fromEntries(state.backend.calibration), failure: state.backend.failure }, loads: Object.fromEntries(state.loaded), timings: state.timings, runs: state.runs };
  const blob = new Blob([JSON.stringify(report, null, 2)], { type: 'application/json' });
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = 'itera-benchmark.json';
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

// ---- backend ----------------------------------------------------------------------------
// Auto is measured, not assumed: once per model, `calibrate` times greedy decoding on both
// backends in the worker and the faster one runs from then on. The user can pin either.
function backendFor(key) {
  const b = state.backend;
  if (cpuOnly(key)) return 'cpu';
  if (!b.webgpu || b.failure || b.mode === 'cpu') return 'cpu';
  if (b.mode === 'webgpu') return 'webgpu';
  const c = b.calibration.get(key);
  return c && c.gpu > c.cpu ? 'webgpu' : 'cpu';
}

// A model that decodes on the CPU only (a llama2.c checkpoint: the GPU generation reads the
// page's tokenizer).
const cpuOnly = (key) => state.loaded.get(key)?.info.webgpu === false;

const BACKEND_NAMES = { cpu: 'the CPU (wasm SIMD)', webgpu: 'WebGPU' };

function backendNote() {
  const b = state.backend;
  const gpu = b.webgpu;
  const key = state.current;
  const chosen = BACKEND_NAMES[backendFor(key)];
  let text;
  if (!gpu) {
    text = 'WebGPU is not available in this browser: the model runs on the CPU (wasm SIMD).';
  } else if (b.failure) {
    text = `WebGPU failed (${b.failure}); the model runs on the CPU (wasm SIMD). Pick a backend again to retry with a new device.`;
  } else {
    const found = `WebGPU adapter found (${[gpu.vendor, gpu.architecture].filter(Boolean).join(' ') || 'unnamed'}).`;
    const c = b.calibration.get(key);
    if (cpuOnly(key)) text = `${found} ${key} is a llama2.c checkpoint: it decodes on the CPU (wasm SIMD), with its own tokenizer.`;
    else if (b.mode !== 'auto') text = `${found} Running on ${chosen}, as selected.`;
    else if (c) text = `${found} Auto measured ${key}: CPU ${fmtRate(c.cpu)} tokens/s, WebGPU ${fmtRate(c.gpu)} tokens/s → ${chosen}.`;
    else if (b.calibrating === key) text = `${found} Auto is measuring CPU and WebGPU speed for ${key}…`;
    else text = `${found} Auto runs on the CPU until it has measured both for ${key}.`;
  }
  const note = $('backend-note');
  note.textContent = text;
  note.hidden = false;
}

async function calibrate(key) {
  const b = state.backend;
  if (b.mode !== 'auto' || !b.webgpu || b.failure || b.calibration.has(key) || state.busy || cpuOnly(key)) return;
  b.calibrating = key;
  setBusy(true);
  backendNote();
  try {
    const c = await rpc('calibrate', { key });
    b.calibration.set(key, c);
    const el = $('gpu-breakdown');
    el.hidden = false;
    loadBreakdown(el, Object.assign(c.setup.filter((p) => p.ms > 0.5), { title: `WebGPU setup for ${key}` }));
    state.runs.push({ kind: 'calibration', model: key, cpuTokensPerSecond: c.cpu, webgpuTokensPerSecond: c.gpu, adapter: c.adapter });
  } catch (e) {
    b.failure = e.message ?? String(e);
  } finally {
    b.calibrating = null;
    setBusy(false);
    backendNote();
  }
}

// ---- tabs -------------------------------------------------------------------------------
function setupTabs() {
  const tabs = [...document.querySelectorAll('[role=tab]')];
  const activate = (tab) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute('aria-selected', String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute('aria-controls')).hidden = !on;
    }
    tab.focus();
    window.dispatchEvent(new Event('resize'));
  };
  tabs.forEach((t, i) => {
    t.addEventListener('click', () => activate(t));
    t.addEventListener('keydown', (e) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (step) activate(tabs[(i + step + tabs.length) % tabs.length]);
      if (e.key === 'Home') activate(tabs[0]);
      if (e.key === 'End') activate(tabs[tabs.length - 1]);
    });
  });
  return (id) => activate($(id));
}

// What the Fine-tune and Distill tabs need of the page: the models they can start from, a way
// to add the models they make to the picker, and generation for their side-by-side stories.
function fineTuneApp(showTab) {
  return {
    precisions,
    familyOf,
    // [{key, label, kind: 'itera' | 'transformer' | 'llama2'}] of every model in the picker.
    models: () => [...$('model-select').options].map((o) => ({ key: o.value, label: o.textContent, kind: kindOf(o.value) })),
    current: () => state.current,
    // Where the training worker gets a model: shipped files by URL, the rest as bytes (a
    // llama2.c checkpoint with its tokenizer.bin).
    source(key) {
      const b = state.bytes.get(key);
      if (isLlama2(key)) return { name: key.slice(7), llama2: { checkpoint: b.checkpoint.slice(0), tokenizer: b.tokenizer.slice(0) } };
      return b ? { name: key, bytes: b.slice(0) } : { name: key, url: urlOf(key) };
    },
    // {family, label, about, kind, bytes: {f32, f16, q8, q4}} → four entries in the picker.
    addTuned(t) {
      for (const [p, bytes] of Object.entries(t.bytes)) state.bytes.set(`${t.family}-${p}`, bytes);
      state.tuned = state.tuned.filter((x) => x.family !== t.family).concat([{ family: t.family, label: t.label, about: t.about, kind: t.kind }]);
      fillPicker();
    },
    async use(key) {
      await selectModel(key);
      backendNote();
      showTab('tab-generate');
      calibrate(key);
    },
    // A story from `key` for `request` (Generate-tab settings), on the CPU.
    async story(key, request) {
      await loadModel(key);
      let text = '';
      await call('generate', { key, request }, (ev) => { if (ev.type === 'tokens') text += ev.text; }).promise;
      return text;
    },
    generateSettings: settings,
    recordRun: (run) => state.runs.push(run),
    // Parameters of `key`, when known (loaded, or a shipped model's card).
    params: (key) => state.loaded.get(key)?.info.params ?? shippedModel(familyOf(key))?.parameters?.total ?? null,
    // The shipped model `key` belongs to and its architecture twin, each with every variant's
    // size and held-out bits per byte (the size-vs-quality chart): [{name, family, variants}].
    sizeQuality(key) {
      const models = this.familyPair(key).map((k) => shippedModel(familyOf(k))).filter(Boolean);
      return [...new Set(models)].map((m) => ({
        name: m.name,
        family: FAMILY_NAMES[m.family ?? 'itera'],
        variants: m.precisions.filter((v) => v.bits_per_byte != null).map((v) => ({ key: v.key, variant: v.variant ?? v.precision, label: variantLabel(v), bytes: v.bytes, bitsPerByte: v.bits_per_byte })),
      }));
    },
    // The model the page opens with (the manifest's default).
    defaultModel: () => state.manifest.default,
    // The core's generation request defaults (temperature, top-p, …; generation_defaults).
    generationDefaults: () => state.requestDefaults,
    // The same call's bounds: `{settings: [{name, min, max}], …}`.
    generationBounds: () => state.generationBounds,
    // For the Compare tab: the model worker, loading, the page's busy state and error line.
    call,
    rpc,
    loadModel,
    busy: () => state.busy,
    setBusy,
    showError,
    async builtinEvalText() {
      state.evalText ??= await (await fetch('eval-stories.txt')).text();
      return state.evalText;
    },
    // Every variant of the model `key` is one of (shipped: each precision and the mixed files;
    // fine-tuned: each precision), `key` alone else.
    variantsOf(key) {
      const m = shippedModel(familyOf(key));
      if (m) return m.precisions.map((v) => v.key);
      if (state.tuned.some((t) => t.family === familyOf(key))) return precisions().map((p) => `${familyOf(key)}-${p}`);
      return [key];
    },
    // `key` and the shipped model of the other family with the same size and variant
    // (itera-tiny-q8 → transformer-tiny-q8); the default model and the first baseline else.
    familyPair(key) {
      const variant = variantOf(key);
      const size = variant && /^(?:itera|transformer)-(.+)$/.exec(familyOf(key))?.[1];
      const other = { itera: 'transformer', transformer: 'itera' }[kindOf(key)];
      const twin = other && shippedFile(`${other}-${size}-${variant}`);
      if (twin) return [key, twin.key];
      const baseline = state.manifest.baselines?.[0]?.precisions.find((v) => v.variant === (variant ?? 'q8')) ?? state.manifest.baselines?.[0]?.precisions[0];
      return baseline ? [key, baseline.key] : [key, state.manifest.default];
    },
  };
}

// ---- start ------------------------------------------------------------------------------
async function main() {
  const showTab = setupTabs();
  const init = rpc('init'); // the wasm compiles while the manifest downloads
  const manifest = await fetch(MANIFEST_URL).then((r) => {
    if (!r.ok) throw new Error(`${MANIFEST_URL}: HTTP ${r.status}`);
    return r.json();
  });
  state.manifest = manifest;
  state.current = manifest.default;
  fillPicker();
  const app = fineTuneApp(showTab);
  const fineTune = setupFineTune(app);
  setupDistill(app);
  const compare = setupCompare(app);
  $('generate-form').addEventListener('submit', (e) => { e.preventDefault(); generate(); });
  $('stop').addEventListener('click', () => { if (state.generation) state.stop(); });
  $('bench').addEventListener('click', () => runBench([state.current]));
  $('bench-variants').addEventListener('click', () => runBench(app.variantsOf(state.current)));
  $('export-bench').addEventListener('click', exportBench);
  $('backend-select').addEventListener('change', (e) => {
    state.backend.mode = e.target.value;
    // Picking a backend again tries WebGPU afresh after a failure (the worker asks for a new device).
    state.backend.failure = null;
    backendNote();
    calibrate(state.current);
  });
  $('model-select').addEventListener('change', (e) => selectModel(e.target.value).then(() => { backendNote(); calibrate(e.target.value); }).catch(() => {}));
  $('model-file').addEventListener('change', async (e) => {
    const files = [...e.target.files];
    e.target.value = '';
    if (files.length === 0) return;
    const bins = files.filter((f) => f.name.endsWith('.bin'));
    if (bins.length > 0) {
      // A llama2.c checkpoint comes with its tokenizer.bin: the larger file is the checkpoint.
      if (bins.length !== 2) {
        showError(new Error('open a llama2.c checkpoint together with its tokenizer.bin (e.g. stories260K.bin and tok512.bin: select both)'));
        return;
      }
      const [tokenizer, checkpoint] = bins.sort((a, b) => a.size - b.size);
      const bytes = { checkpoint: await checkpoint.arrayBuffer(), tokenizer: await tokenizer.arrayBuffer() };
      await selectModel(`llama2:${checkpoint.name}`, bytes).then(() => backendNote()).catch(() => {});
      return;
    }
    const file = files[0];
    await selectModel(`local:${file.name}`, await file.arrayBuffer()).catch(() => {});
  });
  $('prompt').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); generate(); }
  });

  const webgpuDetected = detectWebGpu().then((g) => { state.backend.webgpu = g; backendNote(); });
  deviceInfo().then((info) => {
    const dl = $('device-info');
    for (const [k, v] of Object.entries(info)) dl.insertAdjacentHTML('beforeend', `<dt>${k}</dt><dd></dd>`), dl.lastElementChild.textContent = typeof v === 'object' ? JSON.stringify(v) : String(v);
  });

  const tStart = performance.now();
  const l = await selectModel(manifest.default); // downloads while the wasm compiles
  const ready = await init;
  state.requestDefaults = ready.generation.request;
  state.generationBounds = ready.generation;
  compare.ready();
  fillGenerateSettings(ready.generation);
  state.timings.wasmMs = ready.wasmMs;
  const tModel = performance.now();
  state.firstTokenAt = null;
  await generate();
  // Page load (navigation start) → first token on screen, and the parts it is made of.
  const firstTokenAt = state.firstTokenAt ?? performance.now();
  const parts = [
    { name: 'page + scripts', ms: tStart },
    { name: 'wasm compile', ms: state.timings.wasmMs },
    { name: 'download (during compile)', ms: l.downloadMs },
    { name: 'parse weights + tokenizer', ms: l.parseMs },
    { name: 'prompt + first token', ms: firstTokenAt - tModel },
  ];
  state.timings = { ...state.timings, parts, pageToFirstTokenMs: firstTokenAt, fromCache: l.fromCache };
  loadBreakdown($('load-breakdown'), Object.assign(parts.filter((p) => p.ms > 0.5), { end: firstTokenAt }));
  document.body.dataset.firstTokenMs = firstTokenAt.toFixed(1);
  document.body.dataset.modelFromCache = String(l.fromCache);
  document.body.dataset.loadParts = JSON.stringify(parts);
  // The first story ran on the CPU (ready first); now measure WebGPU against it.
  await webgpuDetected;
  await calibrate(state.current);
  document.body.dataset.backendSettled = 'true';
  // The training worker starts once the first story is out (it would slow the first load).
  fineTune.ready().catch(showError);
}

main().catch(showError);
