// The Fine-tune tab: the visitor's text (pasted, opened from .txt files, or the sample set),
// the base model and settings (defaults and bounds from the core), Start / Pause / Resume /
// Stop; the job itself — progress, charts, samples, the finished model — is a JobView over
// the training worker. A job's checkpoint is kept in the browser, so a reload offers to
// resume it. Also the Benchmarks tab's training benchmark, which uses the same worker.

import { fmtBytes, fmtInt, JobView } from './job-view.js';
import { defaultWorkers, fillSettings, MAX_WORKERS, readSettings, trainer } from './trainer.js';

const $ = (id) => document.getElementById(id);
const SAMPLE_URL = 'finetune-stories.txt';

export function setupFineTune(app) {
  let t = null; // the training worker, once the tab is used
  const ui = { files: [] };
  const view = new JobView({
    prefix: 'ft',
    container: $('ft-job'),
    trainer: () => t,
    app,
    onState: () => setButtons(),
    prompt: () => $('ft-prompt').value,
    // "itera-tiny" from itera-tiny-q8, local:my-model.safetensors or weights/itera-tiny-q8.safetensors.
    family: (info, n) => {
      const base = app.familyOf(info.base.replace(/^tuned:|^local:/, '').split('/').pop().replace(/\.safetensors$/, ''));
      return { family: `tuned:${base}-ft${n}`, label: `${base} fine-tuned #${n}`, about: `fine-tuned from ${info.base} for ${info.completed} steps` };
    },
  });
  const form = $('ft-form');
  const own = () => [...form.querySelectorAll('[data-setting]'), $('ft-base'), $('ft-text'), $('ft-files'), $('ft-sample'), $('ft-restore'), $('ft-discard')];
  const setButtons = () => view.setButtons(own());

  async function ready() {
    if (t) return t;
    t = await trainer();
    fillSettings(form, t.defaults.defaults, t.defaults.limits);
    const limits = new Map(t.defaults.limits.settings.map((l) => [l.name, l]));
    const range = (n) => `${n.replace('_', ' ')} ${limits.get(n).min}–${fmtInt(limits.get(n).max)}`;
    $('ft-bounds').textContent = `Bounds: ${['steps', 'batch', 'seq_len', 'lr'].map(range).join(', ')}; `
      + `batch × sequence length ≤ ${fmtInt(t.defaults.limits.max_tokens_per_step)} tokens. Defaults finish in about a minute on a laptop CPU.`;
    $('ft-workers').value = defaultWorkers(t.defaults.cores, t.defaults.defaults.batch);
    $('ft-workers').max = MAX_WORKERS;
    await showSaved();
    return t;
  }

  // ---- text -------------------------------------------------------------------------------
  const texts = () => {
    const pasted = $('ft-text').value;
    return [...(pasted.trim() ? [{ name: 'the pasted text', text: pasted }] : []), ...ui.files];
  };

  let inspectTimer = null;
  const inspectSoon = () => { clearTimeout(inspectTimer); inspectTimer = setTimeout(inspectNow, 250); };

  // Progress of the worker reading and tokenizing the texts ({phase, done, total} in bytes).
  const showPreparing = (el) => (ev) => {
    if (ev.type !== 'progress') return;
    const mb = (n) => (n / 1e6).toFixed(1);
    el.textContent = ev.phase === 'reading'
      ? `Reading ${fmtBytes(ev.total)} of text…`
      : `Tokenizing: ${Math.floor((100 * ev.done) / ev.total)} % (${mb(ev.done)} of ${mb(ev.total)} MB)…`;
    document.body.dataset.ftPreparing = ev.phase;
  };

  // The texts' documents and tokens (the core's TextInfo), as the job will train on them.
  const showTextInfo = (i) => {
    const info = $('ft-text-info');
    info.classList.remove('error');
    info.textContent = `${i.documents} ${i.documents === 1 ? 'story' : 'stories'} to learn from (${fmtInt(i.bytes)} bytes, ${fmtInt(i.tokens)} tokens); `
      + (i.heldout_documents > 0
        ? `${i.heldout_documents} held out to measure progress (${fmtInt(i.heldout_bytes)} bytes, ${fmtInt(i.heldout_tokens)} tokens).`
        : 'none held out (give two or more stories, or a longer one, to measure progress on unseen text).');
  };

  let inspecting = 0; // the latest inspection: an older one's answer is not shown
  async function inspectNow() {
    const info = $('ft-text-info');
    const given = texts();
    $('ft-files-list').textContent = ui.files.map((f) => `${f.name} (${fmtBytes(f.bytes)})`).join(', ');
    info.classList.remove('error');
    if (given.length === 0) { info.textContent = 'No text yet.'; return; }
    const mine = ++inspecting;
    try {
      const i = await (await ready()).call('prepare', { texts: given }, (ev) => mine === inspecting && showPreparing(info)(ev)).promise;
      if (mine !== inspecting) return;
      showTextInfo(i);
      document.body.dataset.ftPreparing = 'done';
    } catch (e) {
      if (mine !== inspecting) return;
      info.classList.add('error');
      info.textContent = `⚠ ${e.message}`;
      document.body.dataset.ftPreparing = 'failed';
    }
  }

  // Files are read in the training worker (a File passes there without being read here); one
  // over the page's limit is refused before the texts already given are replaced.
  async function openFiles(list) {
    await ready();
    const max = t.defaults.limits.max_text_bytes;
    const total = list.reduce((n, f) => n + f.size, 0);
    if (total > max) {
      const mib = (n) => `${(n / 2 ** 20).toFixed(1).replace(/\.0$/, '')} MiB`;
      view.note('error', `${list.map((f) => f.name).join(', ')}: ${mib(total)} of text, more than the ${mib(max)} the page trains on `
        + '(the text, its tokens and the model share this tab\'s memory, and a copy is kept in the browser to resume). '
        + 'The texts given before are kept. Train on larger texts natively: cargo xtask train --text FILE.');
      return;
    }
    view.note('error', null);
    ui.files = list.map((f) => ({ name: f.name, file: f, bytes: f.size }));
    inspectNow();
  }

  // ---- jobs -------------------------------------------------------------------------------
  // A sample story after each evaluation: the core's sampling defaults, 60 tokens, seed 1.
  const sampleRequest = () => ({ ...app.generationDefaults(), prompt: $('ft-prompt').value, max_tokens: 60, seed: 1 });
  const workers = () => Number($('ft-workers').value) || 1;

  async function start() {
    await ready();
    view.note('error', null);
    view.note('note', null);
    const given = texts();
    if (given.length === 0) { view.note('error', 'Give a text to learn from: paste stories, open .txt files or use the sample stories.'); return; }
    const settings = readSettings(form, t.defaults.defaults);
    settings.shards = Math.min(workers(), MAX_WORKERS, Number(settings.batch) || 1);
    const baseKey = $('ft-base').value;
    const begin = () => t.call('start', { base: app.source(baseKey), texts: given, settings, sample: sampleRequest() }, showPreparing($('ft-status'))).promise;
    if (await view.start(`Starting a fine-tune of ${baseKey}…`, begin)) await runView();
  }

  async function runView() {
    setButtons();
    await view.run($('ft-backend').value, workers());
    setButtons();
  }

  // Loads a saved job (`op` 'restore': the browser's; 'restoreFrom': a checkpoint file) and runs it on.
  async function restore(op = 'restore', args = {}, transfer = []) {
    await ready();
    view.note('error', null);
    try {
      const r = await t.call(op, args, showPreparing($('ft-status')), transfer).promise;
      fillSettings(form, { ...t.defaults.defaults, ...r.meta.settings }, t.defaults.limits);
      // The job's texts as given: a paste back in the box, files in the list.
      $('ft-text').value = r.texts.filter((x) => !x.file).map((x) => x.text).join('\n\n');
      ui.files = r.texts.filter((x) => x.file).map((x) => ({ name: x.name, file: x.file, bytes: x.file.size }));
      // The job has the texts tokenized already: their figures come with it.
      inspecting += 1;
      $('ft-files-list').textContent = ui.files.map((f) => `${f.name} (${fmtBytes(f.bytes)})`).join(', ');
      showTextInfo(r.info.text);
      $('ft-prompt').value = r.meta.sample?.prompt ?? $('ft-prompt').value;
      $('ft-saved').hidden = true;
      await view.resume(r, setButtons, runView);
    } catch (e) {
      view.note('error', e.message);
    }
  }

  async function showSaved() {
    const saved = await t.rpc('saved');
    document.body.dataset.ftInUse = saved?.inUse ? 'true' : '';
    if (saved?.inUse) {
      // Another tab has the browser's one job: said here, and nothing here can replace it.
      $('ft-saved').hidden = false;
      $('ft-saved-text').textContent = `⚠ Training is off in this tab: ${saved.inUse}. `;
      $('ft-restore').hidden = true;
      $('ft-discard').hidden = true;
      await view.showStorage(saved.storage);
      return;
    }
    $('ft-discard').hidden = false;
    if (saved?.unreadable) {
      // A job saved by another version: said, kept, and only Discard offered.
      $('ft-saved').hidden = false;
      $('ft-saved-text').textContent = `⚠ ${saved.unreadable}. `;
      $('ft-restore').hidden = true;
      await view.showStorage(saved.storage);
      return;
    }
    $('ft-restore').hidden = false;
    $('ft-saved').hidden = !saved || saved.kind !== 'fine-tune';
    document.dispatchEvent(new CustomEvent('saved-job', { detail: saved }));
    if (saved?.kind === 'fine-tune') {
      const steps = saved.settings?.steps ?? saved.end;
      const ended = saved.end < steps ? ' (stopped early)' : ' (finished)';
      $('ft-saved-text').textContent = `A fine-tune of ${saved.base.name} is saved in this browser: step ${saved.step} of ${steps}`
        + `${saved.done ? ended : ''}, ${saved.documents} ${saved.documents === 1 ? 'text' : 'texts'}, saved ${new Date(saved.savedAt).toLocaleString()}, ${fmtBytes(saved.storage.bytes)}. `;
      document.body.dataset.ftSaved = saved.step;
    }
    await view.showStorage(saved?.storage);
  }

  // ---- training benchmark (Benchmarks tab) -------------------------------------------------
  async function benchmark() {
    await ready();
    const status = $('train-bench-status');
    const tbody = $('train-bench-table').querySelector('tbody');
    $('train-bench').disabled = true;
    tbody.replaceChildren();
    const n = defaultWorkers(t.defaults.cores, t.defaults.defaults.batch);
    const counts = n > 1 ? [1, n] : [1];
    status.textContent = `Running: a fine-tune, the teacher writing stories and a distillation, each on ${counts.join(' and ')} worker${n > 1 ? 's' : ''}, then WebGPU…`;
    const key = app.current();
    const ones = {}; // each job's 1-worker speed
    try {
      const sample = await (await fetch(SAMPLE_URL)).text();
      const llama2 = app.models().find((m) => m.kind === 'llama2');
      const args = { base: app.source(key), teacher: app.source(app.defaultModel()), llama2: llama2 && app.source(llama2.key), texts: [{ name: 'sample stories', text: sample }], workers: counts };
      const rows = await t.call('benchmark', args, (ev) => {
        if (ev.type !== 'row') return;
        const r = ev.row;
        if (r.backend === 'cpu' && r.workers === 1) ones[r.job] = r.tokensPerSecond;
        const one = ones[r.job];
        const tr = document.createElement('tr');
        const teacher = app.defaultModel();
        const label = { 'fine-tune': `fine-tune ${key}`, corpus: `${teacher} writes stories`, 'corpus-llama2': `${llama2?.key.slice(7)} writes stories`, distill: `distil ${teacher} → fresh micro` }[r.job];
        const cells = r.error
          ? [label, r.backend === 'webgpu' ? 'WebGPU' : 'CPU', '–', `unavailable: ${r.error}`, '', '']
          : [label, r.backend === 'webgpu' ? `WebGPU (${r.adapter})` : 'CPU (wasm SIMD)', r.workers ?? '–', fmtInt(r.tokensPerSecond),
            one && r.backend === 'cpu' ? `${(r.tokensPerSecond / one).toFixed(2)}×` : '', r.firstLoss?.toFixed(6) ?? ''];
        for (const c of cells) {
          const td = document.createElement('td');
          td.textContent = c;
          tr.append(td);
        }
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

  function fillBases() {
    const select = $('ft-base');
    const before = select.value;
    // Either family fine-tunes; a llama2.c checkpoint can teach (the Distill tab) but not be
    // fine-tuned here (its tokenizer is not the page's).
    const models = app.models().filter((m) => m.kind !== 'llama2');
    select.replaceChildren(...models.map((m) => new Option(m.label, m.key)));
    const pick = [before, app.current()].find((k) => models.some((m) => m.key === k));
    select.value = pick ?? models[0]?.key;
  }

  // ---- wiring -----------------------------------------------------------------------------
  document.addEventListener('models-changed', fillBases);
  document.addEventListener('saved-job-changed', () => t && showSaved());
  // The training worker was replaced: the job it ran is gone, the one saved here can resume.
  document.addEventListener('trainer-restarted', () => t && showSaved().catch(() => {}));
  fillBases();
  $('tab-finetune').addEventListener('click', () => { fillBases(); ready().catch((e) => view.note('error', e.message)); });
  $('ft-text').addEventListener('input', inspectSoon);
  $('ft-files').addEventListener('change', (e) => { openFiles([...e.target.files]); e.target.value = ''; });
  $('ft-sample').addEventListener('click', async () => {
    $('ft-text').value = await (await fetch(SAMPLE_URL)).text();
    ui.files = [];
    inspectNow();
  });
  form.addEventListener('submit', (e) => { e.preventDefault(); start(); });
  $('ft-pause').addEventListener('click', () => t.rpc('pause'));
  $('ft-resume').addEventListener('click', () => runView());
  $('ft-stop').addEventListener('click', async () => {
    if (view.state !== 'paused') { t.rpc('stop'); return; }
    view.setState('stopped');
    view.showProgress();
    setButtons();
    await view.finish();
  });
  $('ft-restore').addEventListener('click', () => restore());
  $('ft-discard').addEventListener('click', async () => {
    await t.rpc('clear');
    $('ft-saved').hidden = true;
    view.showStorage();
  });
  $('ft-checkpoint-file').addEventListener('change', async (e) => {
    const file = e.target.files[0];
    e.target.value = '';
    if (!file) return;
    if (texts().length === 0) { view.note('error', 'Give the texts this checkpoint trained on first (paste them, open them or use the sample stories).'); return; }
    const checkpoint = await file.arrayBuffer();
    await restore('restoreFrom', { checkpoint, texts: texts(), sample: sampleRequest() }, [checkpoint]);
  });
  $('train-bench').addEventListener('click', benchmark);
  return { ready };
}
