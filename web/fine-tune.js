// The Fine-tune tab: the visitor's text, settings (defaults and bounds from the core), Start /
// Pause / Resume / Stop, live charts of the training job run by train-worker.js, samples, and
// when it ends: Use this model, Download .safetensors, before / after stories. The job's
// checkpoint is kept in the browser, so a reload offers to resume it.

import { lineChart } from '/charts.js';
import { connect } from '/rpc.js';

const $ = (id) => document.getElementById(id);
const PRECISIONS = ['f32', 'f16', 'q8', 'q4'];
const SAMPLE_URL = '/finetune-stories.txt';
const MAX_WORKERS = 8;

const fmtBytes = (n) => (n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1e3))} KB`);
const fmtInt = (n) => Math.round(n).toLocaleString('en-US');
const fmtTime = (s) => (s >= 60 ? `${Math.floor(s / 60)}:${String(Math.round(s % 60)).padStart(2, '0')}` : `${s.toFixed(0)} s`);

export async function setupFineTune(app) {
  let worker = null; // {call, rpc}, made when the tab is first used
  let defaults = null; // {defaults, limits, cores}
  const ui = {
    files: [], // [{name, text}] opened .txt files
    texts: null, // the sources the running job trains on
    info: null, // the job's info
    state: 'idle', // idle | running | paused | stopped | done | failed
    family: null, // the fine-tuned family once exported
    runs: 0,
  };
  const curves = { step: [], loss: [], lr: [], tps: [], evals: new Map() }; // name → Map(step → bpb)
  const charts = {
    loss: lineChart($('ft-loss-chart'), { xLabel: 'step', yLabel: 'loss', series: ['loss'] }),
    bpb: null, // made when the evaluation sets are known
    lr: lineChart($('ft-lr-chart'), { xLabel: 'step', yLabel: 'learning rate', series: ['lr'], yFormat: (v) => v.toExponential(0) }),
    tps: lineChart($('ft-tps-chart'), { xLabel: 'step', yLabel: 'tokens/s', series: ['tokens/s'] }),
  };

  const note = (id, text) => {
    $(id).textContent = text ? `${id === 'ft-error' ? '⚠ ' : ''}${text}` : '';
    $(id).hidden = !text;
  };

  async function ensureWorker() {
    if (worker) return worker;
    worker = connect(new Worker('/train-worker.js', { type: 'module' }), 'training worker');
    defaults = await worker.rpc('defaults');
    fillSettings(defaults.defaults);
    showBounds();
    $('ft-workers').value = Math.max(1, Math.min(defaults.cores, MAX_WORKERS, defaults.defaults.batch));
    $('ft-workers').max = MAX_WORKERS;
    await showSaved();
    return worker;
  }

  // ---- settings ---------------------------------------------------------------------------
  const settingInputs = () => [...document.querySelectorAll('[data-setting]')];

  function fillSettings(values) {
    for (const input of settingInputs()) input.value = values[input.dataset.setting];
  }

  function showBounds() {
    const limits = new Map(defaults.limits.settings.map((l) => [l.name, l]));
    for (const input of settingInputs()) {
      const l = limits.get(input.dataset.setting);
      if (l) { input.min = l.min; input.max = l.max; }
    }
    const range = (n) => { const l = limits.get(n); return `${n.replace('_', ' ')} ${l.min}–${fmtInt(l.max)}`; };
    $('ft-bounds').textContent = `Bounds: ${['steps', 'batch', 'seq_len', 'lr'].map(range).join(', ')}; `
      + `batch × sequence length ≤ ${fmtInt(defaults.limits.max_tokens_per_step)} tokens. Defaults finish in about a minute on a laptop CPU.`;
  }

  function readSettings() {
    const s = { ...defaults.defaults };
    for (const input of settingInputs()) {
      const v = input.value.trim();
      // An empty or unreadable number goes through as text: the job names the setting.
      s[input.dataset.setting] = v !== '' && Number.isFinite(Number(v)) ? Number(v) : v;
    }
    const workers = Number($('ft-workers').value);
    s.shards = Number.isInteger(workers) && workers >= 1 ? Math.min(workers, MAX_WORKERS, s.batch || 1) : 1;
    return s;
  }

  // ---- text -------------------------------------------------------------------------------
  const texts = () => {
    const pasted = $('ft-text').value;
    return [...(pasted.trim() ? [{ name: 'the pasted text', text: pasted }] : []), ...ui.files];
  };

  let inspectTimer = null;
  function inspectSoon() {
    clearTimeout(inspectTimer);
    inspectTimer = setTimeout(inspectNow, 250);
  }

  async function inspectNow() {
    const info = $('ft-text-info');
    const t = texts();
    $('ft-files-list').textContent = ui.files.map((f) => `${f.name} (${fmtBytes(f.bytes)})`).join(', ');
    if (t.length === 0) {
      info.textContent = 'No text yet.';
      info.classList.remove('error');
      return null;
    }
    try {
      const i = await (await ensureWorker()).rpc('inspect', { texts: t });
      info.classList.remove('error');
      info.textContent = `${i.documents} ${i.documents === 1 ? 'story' : 'stories'} to learn from (${fmtInt(i.bytes)} bytes, ${fmtInt(i.tokens)} tokens); `
        + (i.heldout_documents > 0
          ? `${i.heldout_documents} held out to measure progress (${fmtInt(i.heldout_bytes)} bytes, ${fmtInt(i.heldout_tokens)} tokens).`
          : 'none held out (give two or more stories, or a longer one, to measure progress on unseen text).');
      return i;
    } catch (e) {
      info.classList.add('error');
      info.textContent = `⚠ ${e.message}`;
      return null;
    }
  }

  async function openFiles(list) {
    const decoder = new TextDecoder('utf-8', { fatal: true });
    const files = [];
    for (const f of list) {
      try {
        files.push({ name: f.name, text: decoder.decode(await f.arrayBuffer()), bytes: f.size });
      } catch {
        note('ft-error', `${f.name} is not UTF-8 text: save it as UTF-8 (plain text) and open it again.`);
        return;
      }
    }
    note('ft-error', null);
    ui.files = files;
    inspectNow();
  }

  // ---- charts -----------------------------------------------------------------------------
  function resetCurves(history, evalNames) {
    curves.step = [];
    curves.loss = [];
    curves.lr = [];
    curves.tps = [];
    curves.evals = new Map(evalNames.map((n) => [n, new Map()]));
    if (history) {
      for (let i = 0; i < history.loss.length; i++) pushStep({ step: i + 1, loss: history.loss[i], lr: history.lr[i], tokens_per_s: history.tokens_per_s[i] });
      for (const e of history.evals) pushEval(e.step, e.name, e.bits_per_byte);
    }
    if (charts.bpb) { charts.bpb.plot.destroy(); $('ft-bpb-chart').replaceChildren(); }
    charts.bpb = lineChart($('ft-bpb-chart'), { xLabel: 'step', yLabel: 'bits/byte', series: evalNames });
    draw();
  }

  function pushStep(e) {
    curves.step.push(e.step);
    curves.loss.push(e.loss);
    curves.lr.push(e.lr);
    curves.tps.push(e.tokens_per_s || null);
  }

  function pushEval(step, name, bpb) {
    if (!curves.evals.has(name)) curves.evals.set(name, new Map());
    curves.evals.get(name).set(step, bpb);
  }

  function truncate(step) {
    const n = curves.step.findIndex((s) => s > step);
    if (n >= 0) for (const k of ['step', 'loss', 'lr', 'tps']) curves[k].length = n;
    for (const m of curves.evals.values()) for (const s of [...m.keys()]) if (s > step) m.delete(s);
  }

  function draw() {
    charts.loss.set([curves.step, curves.loss]);
    charts.lr.set([curves.step, curves.lr]);
    charts.tps.set([curves.step, curves.tps]);
    const steps = [...new Set([...curves.evals.values()].flatMap((m) => [...m.keys()]))].sort((a, b) => a - b);
    charts.bpb?.set([steps, ...[...curves.evals.values()].map((m) => steps.map((s) => m.get(s) ?? null))]);
    // What the charts show, for the page's end-to-end test.
    $('ft-loss-chart').dataset.points = curves.step.length;
    $('ft-loss-chart').dataset.loss = JSON.stringify(curves.loss);
    $('ft-bpb-chart').dataset.points = steps.length;
    $('ft-bpb-chart').dataset.evals = JSON.stringify(Object.fromEntries([...curves.evals].map(([n, m]) => [n, [...m]])));
  }

  // ---- progress ---------------------------------------------------------------------------
  function showProgress(lastStep = null) {
    const i = ui.info;
    if (!i) return;
    const done = lastStep?.step ?? i.completed;
    $('ft-progress').style.width = `${(100 * done) / i.end}%`;
    const tps = lastStep?.tokens_per_s;
    const tokensLeft = (i.end - done) * i.spec.batch * i.spec.seq_len;
    const eta = tps > 0 ? ` · ETA ${fmtTime(tokensLeft / tps)}` : '';
    const speed = tps > 0 ? ` · ${fmtInt(tps)} tokens/s` : '';
    const words = { starting: 'Starting', running: 'Training', paused: 'Paused', stopped: 'Stopped', done: 'Done', failed: 'Stopped by an error', idle: 'Ready' };
    $('ft-status').textContent = `${words[ui.state]}: step ${done} of ${i.end}${speed}${ui.state === 'running' ? eta : ''}`
      + (lastStep ? ` · loss ${lastStep.loss.toFixed(3)}` : '');
    document.body.dataset.fineTuneState = ui.state;
    document.body.dataset.fineTuneStep = done;
  }

  function setButtons() {
    const s = ui.state;
    const busy = s === 'running' || s === 'starting';
    $('ft-start').disabled = busy;
    $('ft-pause').disabled = s !== 'running';
    $('ft-resume').disabled = s !== 'paused';
    $('ft-stop').disabled = !(s === 'running' || s === 'paused');
    for (const el of [...settingInputs(), $('ft-base'), $('ft-text'), $('ft-files'), $('ft-sample'), $('ft-restore'), $('ft-discard')]) {
      el.disabled = busy;
    }
    if ($('ft-clear')) $('ft-clear').disabled = busy;
    $('ft-download-checkpoint').disabled = busy || !ui.info;
    $('ft-checkpoint-file').disabled = busy;
  }

  async function showStorage(storage) {
    const s = storage ?? (await worker.rpc('storage'));
    $('ft-storage').innerHTML = '';
    $('ft-storage').append(`Saved in this browser: ${fmtBytes(s.bytes)}${s.quotaBytes ? ` (this site uses ${fmtBytes(s.originBytes)} of ${fmtBytes(s.quotaBytes)} allowed)` : ''}. `);
    const clear = document.createElement('button');
    clear.type = 'button';
    clear.id = 'ft-clear';
    clear.textContent = 'Clear saved data';
    clear.disabled = ui.state === 'running' || ui.state === 'starting';
    clear.addEventListener('click', async () => {
      await worker.rpc('clear');
      ui.state = 'idle';
      ui.info = null;
      $('ft-saved').hidden = true;
      $('ft-status').textContent = 'Saved data cleared.';
      setButtons();
      showStorage();
    });
    $('ft-storage').append(clear);
  }

  async function showSaved() {
    const saved = await worker.rpc('saved');
    if (!saved) {
      $('ft-saved').hidden = true;
      await showStorage();
      return;
    }
    const when = new Date(saved.savedAt).toLocaleString();
    $('ft-saved-text').textContent = `A fine-tune of ${saved.base.name} is saved in this browser: step ${saved.step} of ${saved.end}`
      + `${saved.done ? ' (finished)' : ''}, ${saved.documents} ${saved.documents === 1 ? 'text' : 'texts'}, saved ${when}, ${fmtBytes(saved.storage.bytes)}. `;
    $('ft-saved').hidden = false;
    document.body.dataset.fineTuneSaved = saved.step;
    await showStorage(saved.storage);
  }

  // ---- the run ----------------------------------------------------------------------------
  function onEvent(ev) {
    if (ev.type === 'events') {
      let last = null;
      for (const e of ev.events) {
        if (e.type === 'step') { pushStep(e); last = e; }
        else if (e.type === 'eval') for (const r of e.results) pushEval(e.step, r.name, r.bits_per_byte);
      }
      draw();
      if (last) showProgress(last);
    } else if (ev.type === 'sample') {
      const li = document.createElement('li');
      li.innerHTML = '<b></b> <i></i><span></span>';
      li.querySelector('b').textContent = `Step ${ev.step}:`;
      li.querySelector('i').textContent = $('ft-prompt').value;
      li.querySelector('span').textContent = ev.text.trimEnd();
      $('ft-samples').prepend(li);
    } else if (ev.type === 'note') {
      note('ft-note', ev.message);
    } else if (ev.type === 'rollback') {
      truncate(ev.step);
      draw();
      note('ft-note', ev.message);
    } else if (ev.type === 'saved') {
      showStorage(ev.storage);
    }
  }

  async function run() {
    note('ft-error', null);
    ui.state = 'running';
    setButtons();
    showProgress();
    try {
      const r = await worker.call('run', { backend: $('ft-backend').value, workers: Number($('ft-workers').value) || 1 }, onEvent).promise;
      ui.info = r.info;
      ui.state = r.state;
      showProgress();
      if (r.state === 'done' || r.state === 'stopped') await finish();
    } catch (e) {
      ui.state = 'failed';
      note('ft-error', e.message);
      const h = await worker.rpc('history').catch(() => null);
      if (h?.info.completed > 0) await finish();
    } finally {
      setButtons();
    }
  }

  async function start() {
    await ensureWorker();
    note('ft-error', null);
    note('ft-note', null);
    const t = texts();
    if (t.length === 0) { note('ft-error', 'Give a text to learn from: paste stories, open .txt files or use the sample stories.'); return; }
    const settings = readSettings();
    const baseKey = $('ft-base').value;
    ui.state = 'starting';
    document.body.dataset.fineTuneState = ui.state;
    setButtons();
    $('ft-status').textContent = `Starting a fine-tune of ${baseKey}…`;
    const prompt = $('ft-prompt').value;
    const sample = { prompt, max_tokens: 60, temperature: 0.8, top_p: 0.9, seed: 1, stop_at_end_of_text: true };
    try {
      const r = await worker.rpc('start', { base: app.source(baseKey), texts: t, settings, sample });
      ui.info = r.info;
      ui.texts = t;
      ui.base = baseKey;
      ui.family = null;
      $('ft-samples').replaceChildren();
      $('ft-done').hidden = true;
      $('ft-saved').hidden = true;
      resetCurves(r.history, evalNames(r.history));
    } catch (e) {
      ui.state = 'failed';
      document.body.dataset.fineTuneState = ui.state;
      note('ft-error', e.message);
      $('ft-status').textContent = 'Not started: see the message below.';
      setButtons();
      return;
    }
    await run();
  }

  const evalNames = (history) => [...new Set(history.evals.map((e) => e.name))];

  // Loads a saved job (`op`: 'restore', the browser's; 'restoreFrom', a file) and runs it on.
  async function restore(op = 'restore', args = {}, transfer = []) {
    await ensureWorker();
    note('ft-error', null);
    try {
      const r = await worker.call(op, args, null, transfer).promise;
      ui.info = r.info;
      ui.texts = r.meta.texts;
      ui.base = r.meta.base.name;
      ui.family = null;
      fillSettings(r.meta.settings);
      $('ft-text').value = r.meta.texts.map((t) => t.text).join('\n\n');
      ui.files = [];
      inspectNow();
      $('ft-prompt').value = r.meta.sample?.prompt ?? $('ft-prompt').value;
      $('ft-saved').hidden = true;
      resetCurves(r.history, evalNames(r.history));
      ui.state = r.info.done ? 'done' : 'paused';
      showProgress();
      setButtons();
      if (r.info.done) await finish();
      else await run();
    } catch (e) {
      note('ft-error', e.message);
    }
  }

  // The job ended (done or stopped): export every precision, put the model in the picker, and
  // write a story with the base and with the fine-tuned model for the same prompt and seed.
  async function finish() {
    const bytes = {};
    let info = null;
    for (const p of PRECISIONS) {
      const r = await worker.rpc('export', { precision: p });
      bytes[p] = r.bytes.buffer;
      info = r.info;
    }
    ui.runs += 1;
    // "itera-tiny" from itera-tiny-q8, local:my-model.safetensors or weights/itera-tiny-q8.safetensors.
    const baseFamily = ui.base.replace(/^tuned:|^local:/, '').split('/').pop().replace(/\.safetensors$/, '').replace(/-(f32|f16|q8|q4)$/, '');
    ui.family = `tuned:${baseFamily}-ft${ui.runs}`;
    const label = `${baseFamily} fine-tuned #${ui.runs}`;
    app.addTuned({ family: ui.family, label, about: `fine-tuned from ${ui.base} for ${info.completed} steps`, bytes });
    ui.exports = bytes;
    ui.label = label;
    const evals = [...curves.evals.entries()].map(([name, m]) => {
      const steps = [...m.keys()].sort((a, b) => a - b);
      return steps.length > 1 ? `${name} ${m.get(steps[0]).toFixed(3)} → ${m.get(steps[steps.length - 1]).toFixed(3)} bits/byte` : null;
    }).filter(Boolean);
    const how = ui.state === 'done' ? 'Fine-tune finished' : `Fine-tune stopped at step ${info.completed} (its last good weights are kept)`;
    $('ft-done-text').textContent = `${how}: ${info.completed} steps in ${fmtTime(info.seconds)}. ${evals.join(' · ')}. `
      + `"${label}" is in the model picker in every precision.`;
    $('ft-done').hidden = false;
    document.body.dataset.fineTuneFamily = ui.family;
    await beforeAfter();
  }

  async function beforeAfter() {
    const request = { ...app.generateSettings(), prompt: $('ft-prompt').value, max_tokens: 120 };
    $('ft-compare-caption').textContent = `prompt "${request.prompt}", seed ${request.seed}, temperature ${request.temperature}`;
    $('ft-before-title').textContent = ui.base;
    $('ft-after-title').textContent = `${ui.label} · q8`;
    const known = app.models().some((m) => m.key === ui.base);
    const story = async (key) => request.prompt + (await app.story(key, request).catch((e) => ` ⚠ ${e.message}`));
    $('ft-before').textContent = known ? await story(ui.base) : 'The base model is not loaded in this session.';
    $('ft-after').textContent = await story(`${ui.family}-q8`);
    document.body.dataset.fineTuneCompared = 'true';
  }

  function download() {
    const p = $('ft-precision').value;
    const blob = new Blob([ui.exports[p]], { type: 'application/octet-stream' });
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = `${ui.family.replace('tuned:', '')}-${p}.safetensors`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }

  function fillBases() {
    const select = $('ft-base');
    const before = select.value;
    // A llama2.c checkpoint can teach (the Distill tab) but not be fine-tuned here.
    const models = app.models().filter((m) => m.kind === 'itera');
    select.replaceChildren(...models.map((m) => new Option(m.label, m.key)));
    select.value = models.some((m) => m.key === before) ? before : models.some((m) => m.key === app.current()) ? app.current() : models[0]?.key;
  }

  // ---- training benchmark (Benchmarks tab) -------------------------------------------------
  async function benchmark() {
    const w = await ensureWorker();
    const status = $('train-bench-status');
    const tbody = $('train-bench-table').querySelector('tbody');
    $('train-bench').disabled = true;
    tbody.replaceChildren();
    const n = Math.max(1, Math.min(defaults.cores, MAX_WORKERS, defaults.defaults.batch));
    const counts = n > 1 ? [1, n] : [1];
    status.textContent = `Running (${counts.join(' and ')} worker${n > 1 ? 's' : ''}, then WebGPU)…`;
    const key = app.current();
    let one = null;
    try {
      const sample = await (await fetch(SAMPLE_URL)).text();
      const rows = await w.call('benchmark', { base: app.source(key), texts: [{ name: 'sample stories', text: sample }], workers: counts }, (ev) => {
        if (ev.type !== 'row') return;
        const r = ev.row;
        if (r.backend === 'cpu' && r.workers === 1) one = r.tokensPerSecond;
        const tr = document.createElement('tr');
        const cells = r.error
          ? [r.backend === 'webgpu' ? 'WebGPU' : 'CPU', '–', `unavailable: ${r.error}`, '', '']
          : [r.backend === 'webgpu' ? `WebGPU (${r.adapter})` : 'CPU (wasm SIMD)', r.workers ?? '–', fmtInt(r.tokensPerSecond),
            one ? `${(r.tokensPerSecond / one).toFixed(2)}×` : '', r.firstLoss.toFixed(6)];
        for (const c of cells) tr.insertAdjacentHTML('beforeend', '<td></td>'), tr.lastElementChild.textContent = c;
        tbody.append(tr);
      }).promise;
      app.recordRun({ kind: 'train-bench', model: key, rows });
      document.body.dataset.trainBench = JSON.stringify(rows);
      status.textContent = 'Done.';
    } catch (e) {
      status.textContent = `⚠ ${e.message}`;
    } finally {
      $('train-bench').disabled = false;
    }
  }

  // ---- wiring -----------------------------------------------------------------------------
  $('train-bench').addEventListener('click', benchmark);
  document.addEventListener('models-changed', fillBases);
  fillBases();
  $('tab-finetune').addEventListener('click', () => { fillBases(); ensureWorker().catch((e) => note('ft-error', e.message)); });
  $('ft-text').addEventListener('input', inspectSoon);
  $('ft-files').addEventListener('change', (e) => { openFiles([...e.target.files]); e.target.value = ''; });
  $('ft-sample').addEventListener('click', async () => {
    $('ft-text').value = await (await fetch(SAMPLE_URL)).text();
    ui.files = [];
    inspectNow();
  });
  $('ft-form').addEventListener('submit', (e) => { e.preventDefault(); start(); });
  $('ft-pause').addEventListener('click', () => worker.rpc('pause'));
  $('ft-resume').addEventListener('click', () => run());
  $('ft-stop').addEventListener('click', async () => {
    if (ui.state === 'paused') {
      ui.state = 'stopped';
      showProgress();
      setButtons();
      await finish();
    } else {
      worker.rpc('stop');
    }
  });
  $('ft-restore').addEventListener('click', () => restore());
  $('ft-checkpoint-file').addEventListener('change', async (e) => {
    const file = e.target.files[0];
    e.target.value = '';
    if (!file) return;
    const t = texts();
    if (t.length === 0) { note('ft-error', 'Give the texts this checkpoint trained on first (paste them, open them or use the sample stories).'); return; }
    const checkpoint = await file.arrayBuffer();
    const sample = { prompt: $('ft-prompt').value, max_tokens: 60, temperature: 0.8, top_p: 0.9, seed: 1, stop_at_end_of_text: true };
    await restore('restoreFrom', { checkpoint, texts: t, sample }, [checkpoint]);
  });
  $('ft-download-checkpoint').addEventListener('click', async () => {
    const { bytes } = await worker.rpc('checkpointBytes');
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
    a.download = `fine-tune-step-${ui.info?.completed ?? 0}.checkpoint.safetensors`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  });
  $('ft-discard').addEventListener('click', async () => {
    await worker.rpc('clear');
    $('ft-saved').hidden = true;
    showStorage();
  });
  $('ft-use').addEventListener('click', () => app.use(`${ui.family}-q8`));
  $('ft-download').addEventListener('click', download);
  return { ensureWorker };
}
