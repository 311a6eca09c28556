// What the Fine-tune and Distill tabs share: the view of a training job run by
// train-worker.js — its progress, notes and errors, the storage it uses, the live charts
// (loss; for a distillation also CE and KL, and the expert load with each MoE layer's
// load-balancing loss), held-out bits per byte, samples, and the card for the finished model
// (Use this model, Download .safetensors, two stories side by side). Each view builds its
// elements under one id prefix (`ft-…`, `ds-…`) inside its tab.

import { lineChart, PALETTE } from './charts.js';

const $ = (id) => document.getElementById(id);

export const fmtBytes = (n) => (n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1e3))} KB`);
export const fmtInt = (n) => Math.round(n).toLocaleString('en-US');
export const fmtTime = (s) => (s >= 60 ? `${Math.floor(s / 60)}:${String(Math.round(s % 60)).padStart(2, '0')}` : `${s.toFixed(0)} s`);

const WORDS = { starting: 'Starting', writing: 'Writing the corpus', running: 'Training', paused: 'Paused', stopped: 'Stopped', done: 'Done', failed: 'Stopped by an error', idle: 'Ready' };

// The job area's elements, ids under `p`.
function template(p, distill) {
  const chart = (id, title, label, caption = '') => `<article class="card"><h2>${title}</h2><div id="${p}-${id}" class="chart" role="img" aria-label="${label}"></div>${caption}</article>`;
  return `
    <article class="card">
      <div class="progress big" aria-hidden="true"><div id="${p}-progress"></div></div>
      <p id="${p}-status" class="ft-status" role="status" aria-live="polite">Press Start.</p>
      <p id="${p}-note" class="note" role="status" hidden></p>
      <p id="${p}-error" class="note error" role="alert" hidden></p>
      <p id="${p}-storage" class="caption"></p>
      <div class="actions">
        <button id="${p}-download-checkpoint" type="button" disabled>Download checkpoint</button>
        ${distill ? '' : `<label class="file-button">Resume from a checkpoint file…
          <input id="${p}-checkpoint-file" type="file" accept=".safetensors">
        </label>
        <span class="caption">A checkpoint continues here or natively:
          <code>cargo xtask train --resume-from FILE --text YOUR.txt --tokenizer weights/tokenizer.json --out-dir DIR</code></span>`}
      </div>
    </article>
    <div class="grid2">
      ${chart('loss-chart', distill ? 'Loss: total, cross-entropy, KL' : 'Training loss', 'Training loss per step')}
      ${chart('bpb-chart', distill ? 'Held-out bits per byte: student and teacher' : 'Held-out bits per byte', 'Held-out bits per byte at each evaluation', `<p id="${p}-eval-cap" class="caption"></p>`)}
      ${distill ? chart('load-chart', 'Expert load <small>share of routed slots per expert, this step</small>', 'Expert load per MoE layer') : ''}
      ${distill ? chart('aux-chart', 'Load-balancing loss per MoE layer', 'Switch aux loss per MoE layer per step') : ''}
      ${chart('lr-chart', 'Learning rate', 'Learning rate per step')}
      ${chart('tps-chart', 'Tokens per second', 'Training tokens per second')}
    </div>
    <article class="card">
      <h2>${distill ? 'Teacher and student, same prompt and seed' : 'Samples from the current weights'}</h2>
      <ol id="${p}-samples" class="samples" aria-live="polite"></ol>
    </article>
    <article id="${p}-done" class="card" hidden>
      <h2>Your model</h2>
      <p id="${p}-done-text" role="status"></p>
      <div class="actions">
        <label id="${p}-weights-label" hidden>Weights
          <select id="${p}-weights"></select>
        </label>
        <button id="${p}-use" type="button" class="primary">Use this model</button>
        <label>Precision
          <select id="${p}-precision"></select>
        </label>
        <button id="${p}-download" type="button">Download .safetensors</button>
      </div>
      <p class="caption">The file loads with <code>cargo xtask eval --model FILE --tokenizer weights/tokenizer.json</code>
        and with Python <code>safetensors</code>.</p>
      <h3>${distill ? 'Teacher and student' : 'Before and after'} <small id="${p}-compare-caption"></small></h3>
      <div class="columns">
        <article class="card column"><h3 id="${p}-before-title"></h3><p id="${p}-before" class="text"></p></article>
        <article class="card column"><h3 id="${p}-after-title"></h3><p id="${p}-after" class="text"></p></article>
      </div>
    </article>`;
}

export class JobView {
  // `trainer()`: the training worker ({call, rpc}); `app`: the page (models, picker, stories);
  // `family(info, n)`: the name the finished model gets in the picker; `prompt()`: the tab's
  // sample prompt.
  // `onState()`: called on every state change (the tab enables its buttons).
  constructor({ prefix, container, trainer, app, distill = false, family, prompt, onState }) {
    this.p = prefix;
    this.prompt = prompt;
    this.trainer = trainer;
    this.app = app;
    this.distill = distill;
    this.family = family; // (info) → {family, label, about}
    this.state = 'idle';
    this.info = null;
    this.exports = null;
    this.runs = 0;
    container.insertAdjacentHTML('beforeend', template(prefix, distill));
    const id = (s) => `${prefix}-${s}`;
    this.el = (s) => $(id(s));
    this.charts = {
      loss: lineChart(this.el('loss-chart'), { xLabel: 'step', yLabel: 'loss', series: distill ? ['total', 'CE', 'KL'] : ['loss'] }),
      bpb: null,
      aux: null,
      lr: lineChart(this.el('lr-chart'), { xLabel: 'step', yLabel: 'learning rate', series: ['lr'], yFormat: (v) => v.toExponential(0) }),
      tps: lineChart(this.el('tps-chart'), { xLabel: 'step', yLabel: 'tokens/s', series: ['tokens/s'] }),
    };
    this.resetCurves(null, []);
    // The download's precisions: the core's list (q8 chosen: the picker's default precision).
    this.el('precision').replaceChildren(...app.precisions().map((v) => new Option(v, v, false, v === 'q8')));
    this.onState = onState;
    this.el('use').addEventListener('click', () => this.app.use(`${this.chosen().family}-q8`));
    this.el('download').addEventListener('click', () => this.download());
    this.el('download-checkpoint').addEventListener('click', () => this.downloadCheckpoint());
  }

  note(what, text) {
    const el = this.el(what);
    el.textContent = text ? `${what === 'error' ? '⚠ ' : ''}${text}` : '';
    el.hidden = !text;
  }

  // ---- curves -------------------------------------------------------------------------------
  resetCurves(history, evalNames) {
    this.curves = { step: [], loss: [], ce: [], kl: [], lr: [], tps: [], aux: [], evals: new Map(evalNames.map((n) => [n, new Map()])) };
    this.teacherBpb = new Map((this.info?.teacher_bpb ?? []).map((r) => [r.name, r.bits_per_byte]));
    if (history) {
      for (let i = 0; i < history.loss.length; i++) {
        this.pushStep({ step: i + 1, loss: history.loss[i], ce: history.ce[i], kl: history.kl[i], lr: history.lr[i], tokens_per_s: history.tokens_per_s[i], aux_layers: [] });
      }
      for (const e of history.evals) this.pushEval(e.step, e.name, e.bits_per_byte);
    }
    const series = [...evalNames.map((n) => (this.distill ? `student · ${n}` : n)), ...[...this.teacherBpb.keys()].map((n) => `teacher · ${n}`)];
    if (this.charts.bpb) { this.charts.bpb.plot.destroy(); this.el('bpb-chart').replaceChildren(); }
    this.charts.bpb = lineChart(this.el('bpb-chart'), { xLabel: 'step', yLabel: 'bits/byte', series });
    this.draw();
  }

  pushStep(e) {
    const c = this.curves;
    c.step.push(e.step);
    c.loss.push(e.loss);
    c.ce.push(e.ce ?? null);
    c.kl.push(e.kl ?? null);
    c.lr.push(e.lr);
    c.tps.push(e.tokens_per_s || null);
    c.aux.push(e.aux_layers ?? []);
    if (e.expert_load?.length) this.expertLoad = e.expert_load;
  }

  pushEval(step, name, bpb) {
    if (!this.curves.evals.has(name)) this.curves.evals.set(name, new Map());
    this.curves.evals.get(name).set(step, bpb);
  }

  truncate(step) {
    const c = this.curves;
    const n = c.step.findIndex((s) => s > step);
    if (n >= 0) for (const k of ['step', 'loss', 'ce', 'kl', 'lr', 'tps', 'aux']) c[k].length = n;
    for (const m of c.evals.values()) for (const s of [...m.keys()]) if (s > step) m.delete(s);
  }

  draw() {
    const c = this.curves;
    this.charts.loss.set(this.distill ? [c.step, c.loss, c.ce, c.kl] : [c.step, c.loss]);
    this.charts.lr.set([c.step, c.lr]);
    this.charts.tps.set([c.step, c.tps]);
    const steps = [...new Set([...c.evals.values()].flatMap((m) => [...m.keys()]))].sort((a, b) => a - b);
    const student = [...c.evals.values()].map((m) => steps.map((s) => m.get(s) ?? null));
    const teacher = [...this.teacherBpb.values()].map((b) => steps.map(() => b));
    this.charts.bpb?.set([steps, ...student, ...teacher]);
    if (this.distill) this.drawRouting();
    // What the charts show, for the page's end-to-end tests.
    this.el('loss-chart').dataset.points = c.step.length;
    this.el('loss-chart').dataset.loss = JSON.stringify(c.loss);
    if (this.distill) this.el('loss-chart').dataset.kl = JSON.stringify(c.kl);
    this.el('bpb-chart').dataset.points = steps.length;
    this.el('bpb-chart').dataset.evals = JSON.stringify(Object.fromEntries([...c.evals].map(([n, m]) => [n, [...m]])));
  }

  // The expert load (bars: one group per MoE layer, one bar per expert) and each layer's aux
  // loss over the steps.
  drawRouting() {
    const layers = this.expertLoad?.length ?? 0;
    const el = this.el('load-chart');
    if (layers === 0) {
      const noExperts = this.info?.family === 'transformer';
      el.textContent = !this.curves.step.length ? ''
        : noExperts ? 'The student is a Transformer: it has no experts to route.'
          : 'This backend does not report routing (WebGPU keeps it on the device).';
      return;
    }
    let canvas = el.querySelector('canvas');
    if (!canvas) { el.replaceChildren(); canvas = document.createElement('canvas'); canvas.className = 'heatmap'; el.append(canvas); }
    const experts = this.expertLoad[0].length;
    const width = el.clientWidth || 480;
    const height = 180;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = width * dpr;
    canvas.height = height * dpr;
    canvas.style.height = `${height}px`;
    const g = canvas.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, width, height);
    g.font = '12px system-ui, sans-serif';
    const group = width / layers;
    const bar = Math.max(4, (group - 24) / experts);
    this.expertLoad.forEach((fractions, l) => {
      fractions.forEach((f, e) => {
        const h = (height - 36) * Math.min(1, f * experts / 2); // an even split fills half the height
        g.fillStyle = PALETTE[e % PALETTE.length];
        g.fillRect(l * group + 12 + e * bar, height - 20 - h, bar - 2, h);
      });
      g.fillStyle = '#556';
      g.fillText(`MoE layer ${l + 1}`, l * group + 12, height - 4);
    });
    g.strokeStyle = '#99a';
    g.setLineDash([4, 4]);
    g.beginPath();
    g.moveTo(0, height - 20 - (height - 36) / 2);
    g.lineTo(width, height - 20 - (height - 36) / 2);
    g.stroke();
    el.dataset.layers = layers;
    if (!this.charts.aux || this.charts.auxLayers !== layers) {
      this.el('aux-chart').replaceChildren();
      this.charts.aux = lineChart(this.el('aux-chart'), { xLabel: 'step', yLabel: 'aux loss', series: this.expertLoad.map((_, l) => `MoE layer ${l + 1}`) });
      this.charts.auxLayers = layers;
    }
    const c = this.curves;
    this.charts.aux.set([c.step, ...this.expertLoad.map((_, l) => c.aux.map((a) => a[l] ?? null))]);
  }

  // ---- state --------------------------------------------------------------------------------
  setState(state) {
    this.state = state;
    document.body.dataset[`${this.p}State`] = state;
    this.onState?.();
  }

  showProgress(lastStep = null) {
    const i = this.info;
    if (!i) return;
    // The evaluations' token cap (the core's TrainSpec::eval_tokens), said once the job is known.
    this.el('eval-cap').textContent = `Each evaluation scores the first ${fmtInt(i.eval_tokens)} tokens (at most) of each set, `
      + 'the same ones every time, so evaluating costs at most a tenth of the training between two.';
    const done = lastStep?.step ?? i.completed;
    this.el('progress').style.width = `${(100 * done) / i.end}%`;
    // A run that stopped early says of how many steps, and why (the done card says more).
    const of = i.stopped_early ? `${i.spec.steps} (stopped early: no better held-out figure in ${i.stopped_early.patience} evaluations)` : i.end;
    const tps = lastStep?.tokens_per_s;
    const eta = tps > 0 ? ` · ETA ${fmtTime(((i.end - done) * i.spec.batch * i.spec.seq_len) / tps)}` : '';
    const speed = tps > 0 ? ` · ${fmtInt(tps)} tokens/s` : '';
    const loss = lastStep ? ` · loss ${lastStep.loss.toFixed(3)}${this.distill && i.mode === 'logits' ? `, KL ${lastStep.kl.toFixed(3)}` : ''}` : '';
    this.el('status').textContent = `${WORDS[this.state]}: step ${done} of ${of}${speed}${this.state === 'running' ? eta : ''}${loss}`;
    document.body.dataset[`${this.p}Step`] = done;
  }

  status(text) {
    this.el('status').textContent = text;
  }

  async showStorage(storage) {
    const s = storage ?? (await this.trainer().rpc('storage'));
    const el = this.el('storage');
    el.replaceChildren(`Saved in this browser: ${fmtBytes(s.bytes)}${s.quotaBytes ? ` (this site uses ${fmtBytes(s.originBytes)} of ${fmtBytes(s.quotaBytes)} allowed)` : ''}. `);
    const clear = document.createElement('button');
    clear.type = 'button';
    clear.id = `${this.p}-clear`;
    clear.textContent = 'Clear saved data';
    clear.disabled = this.busy();
    clear.addEventListener('click', async () => {
      try {
        await this.trainer().rpc('clear');
      } catch (e) {
        // Another tab's job is not this tab's to clear: said, nothing removed.
        this.note('error', e.message);
        return;
      }
      this.setState('idle');
      this.info = null;
      this.status('Saved data cleared.');
      document.dispatchEvent(new Event('saved-job-changed'));
      this.showStorage();
    });
    el.append(clear);
  }

  busy() {
    return ['running', 'starting', 'writing'].includes(this.state);
  }

  // ---- a run --------------------------------------------------------------------------------
  // Shows a job just started or restored: `r` = {info, history}.
  show(r) {
    this.info = r.info;
    this.tuned = null;
    this.el('samples').replaceChildren();
    this.el('done').hidden = true;
    this.resetCurves(r.history, [...new Set(r.history.evals.map((e) => e.name))]);
  }

  // Starts a job: says `what` while `begin()` (the worker's start call) runs, then shows the
  // job; one that could not start says why. Resolves to whether it started.
  async start(what, begin) {
    this.setState('starting');
    this.status(what);
    try {
      this.show(await begin());
      return true;
    } catch (e) {
      this.notStarted(e);
      return false;
    }
  }

  // A job that could not start: says why, and the form stays as it was.
  notStarted(e) {
    this.setState('failed');
    this.note('error', e.message);
    this.status('Not started: see the message below.');
  }

  // Shows a restored job (`r` as for show) and runs it on with `run`, or shows its result when
  // it had finished; `setButtons` follows the state.
  async resume(r, setButtons, run) {
    this.show(r);
    this.setState(r.info.done ? 'done' : 'paused');
    this.showProgress();
    setButtons();
    if (r.info.done) await this.finish();
    else await run();
  }

  onEvent(ev) {
    if (ev.type === 'events') {
      let last = null;
      for (const e of ev.events) {
        if (e.type === 'step') { this.pushStep(e); last = e; }
        else if (e.type === 'eval') for (const r of e.results) this.pushEval(e.step, r.name, r.bits_per_byte);
      }
      this.draw();
      if (last) this.showProgress(last);
      // A slice ends before each evaluation: the next one runs it, and Stop stops before it.
      const next = ev.events.at(-1);
      if (next?.type === 'evaluating') {
        this.status(`${WORDS[this.state]}: step ${next.step} of ${this.info.end} · evaluating held-out bits per byte `
          + `(${next.sets} ${next.sets === 1 ? 'set' : 'sets'}, at most ${fmtInt(next.tokens)} tokens each)…`);
      }
    } else if (ev.type === 'sample') {
      this.addSample(ev);
    } else if (ev.type === 'note' || ev.type === 'rollback') {
      if (ev.type === 'rollback') { this.truncate(ev.step); this.draw(); }
      this.note('note', ev.message);
    } else if (ev.type === 'saved') {
      this.showStorage(ev.storage);
    }
  }

  addSample(ev) {
    const li = document.createElement('li');
    const head = document.createElement('b');
    head.textContent = `Step ${ev.step}:`;
    li.append(head, ' ');
    const part = (who, text) => {
      const span = document.createElement('span');
      span.className = 'sample';
      if (who) { const w = document.createElement('em'); w.textContent = `${who}: `; span.append(w); }
      const prompt = document.createElement('i');
      prompt.textContent = ev.prompt;
      span.append(prompt, text.trimEnd());
      return span;
    };
    if (ev.teacher != null) li.append(part('teacher', ev.teacher), part('student', ev.text));
    else li.append(part(null, ev.text));
    this.el('samples').prepend(li);
  }

  // Advances the loaded job until it is done, paused or stopped (`backend`: auto/cpu/webgpu).
  async run(backend, workers) {
    this.note('error', null);
    this.setState('running');
    this.showProgress();
    try {
      const r = await this.trainer().call('run', { backend, workers }, (ev) => this.onEvent(ev)).promise;
      this.info = r.info;
      this.setState(r.state);
      this.showProgress();
      if (r.state === 'done' || r.state === 'stopped') await this.finish();
    } catch (e) {
      this.setState('failed');
      this.note('error', e.message);
      const h = await this.trainer().rpc('history').catch(() => null);
      if (h?.info.completed > 0) await this.finish();
    }
  }

  // Every precision of the run's `weights` ('last' | 'best') as model files: {bytes, info}.
  async exportAll(weights) {
    const bytes = {};
    let info = null;
    for (const p of this.app.precisions()) {
      const r = await this.trainer().rpc('export', { precision: p, weights });
      bytes[p] = r.bytes.buffer;
      info = r.info;
    }
    return { bytes, info };
  }

  // The weights the done card's Use and Download act on: the last ones, or the best ones.
  chosen() {
    return this.el('weights').value === 'best' && this.best ? this.best : this.tuned;
  }

  // What the run's best held-out figure says, for the done card (null when nothing was judged).
  bestText(info) {
    const b = info.best;
    if (!b) return null;
    const set = info.judged_set;
    if (b.step === 0) return `No step beat the starting weights on ${set} (${b.bits_per_byte.toFixed(3)} bits/byte at step 0): the base model is still the best there.`;
    if (b.step === info.completed) return `The last weights are the best on ${set} (${b.bits_per_byte.toFixed(3)} bits/byte).`;
    return `Best on ${set}: ${b.bits_per_byte.toFixed(3)} bits/byte at step ${b.step}, kept as "${this.best?.label ?? 'best'}" beside the last weights (step ${info.completed}).`;
  }

  // The job ended: every precision of its last (and best) weights exported into the picker,
  // two stories side by side.
  async finish() {
    const { bytes, info } = await this.exportAll('last');
    this.runs += 1;
    this.tuned = { ...this.family(info, this.runs), kind: info.family ?? 'itera' };
    this.app.addTuned({ ...this.tuned, bytes });
    this.exports = bytes;
    this.best = null;
    const b = info.best;
    if (b && b.step > 0 && b.step < info.completed) {
      try {
        const best = await this.exportAll('best');
        const f = this.tuned;
        this.best = { family: `${f.family}-best`, label: `${f.label} · best (step ${b.step})`, about: `${f.about}; its best held-out weights, step ${b.step}`, kind: f.kind, exports: best.bytes };
        this.app.addTuned({ ...this.best, bytes: best.bytes });
      } catch (e) {
        this.note('note', `The best weights could not be read back (${e.message}); the last ones are in the picker.`);
      }
    }
    const weights = this.el('weights');
    weights.replaceChildren(new Option(`last (step ${info.completed})`, 'last'), ...(this.best ? [new Option(`best held-out (step ${b.step}, ${b.bits_per_byte.toFixed(3)} bits/byte)`, 'best')] : []));
    this.el('weights-label').hidden = !this.best;
    const evals = [...this.curves.evals.entries()].map(([name, m]) => {
      const steps = [...m.keys()].sort((a, b) => a - b);
      return steps.length > 1 ? `${name} ${m.get(steps[0]).toFixed(3)} → ${m.get(steps[steps.length - 1]).toFixed(3)} bits/byte` : null;
    }).filter(Boolean);
    const teacher = [...this.teacherBpb].map(([n, b]) => `the teacher: ${b.toFixed(3)} on ${n}`);
    const what = this.distill ? 'Distillation' : 'Fine-tune';
    const early = info.stopped_early;
    const how = early
      ? `${what} stopped early at step ${info.completed} of ${info.spec.steps}: ${early.patience} evaluations in a row did not lower ${early.set} below ${early.best.bits_per_byte.toFixed(3)} bits/byte (step ${early.best.step})`
      : this.state === 'done' ? `${what} finished` : `${what} stopped at step ${info.completed} (its last good weights are kept)`;
    this.el('done-text').textContent = `${how}: ${info.completed} steps in ${fmtTime(info.seconds)}. ${[...evals, ...teacher].join(' · ')}. `
      + `"${this.tuned.label}" is in the model picker in every precision. ${this.bestText(info) ?? ''}`;
    document.body.dataset[`${this.p}Best`] = this.best ? this.best.family : '';
    this.el('done').hidden = false;
    document.body.dataset[`${this.p}Family`] = this.tuned.family;
    await this.compare();
  }

  // Before/after (a fine-tune) or teacher/student (a distillation) for the same prompt and seed.
  async compare() {
    const request = { ...this.app.generateSettings(), prompt: this.prompt(), max_tokens: 120 };
    this.el('compare-caption').textContent = `prompt "${request.prompt}", seed ${request.seed}, temperature ${request.temperature}`;
    const after = `${this.tuned.family}-q8`;
    const story = async (key) => request.prompt + (await this.app.story(key, request).catch((e) => ` ⚠ ${e.message}`));
    this.el('after-title').textContent = `${this.tuned.label} · q8`;
    if (this.distill) {
      this.el('before-title').textContent = `${this.info.teacher} (teacher)`;
      const t = await this.trainer().rpc('teacherSample', { request }).catch((e) => `⚠ ${e.message}`);
      this.el('before').textContent = request.prompt + (t ?? '');
    } else {
      const base = this.info.base;
      this.el('before-title').textContent = base;
      const known = this.app.models().some((m) => m.key === base);
      this.el('before').textContent = known ? await story(base) : 'The base model is not loaded in this session.';
    }
    this.el('after').textContent = await story(after);
    document.body.dataset[`${this.p}Compared`] = 'true';
  }

  download() {
    const p = this.el('precision').value;
    const which = this.chosen();
    const exports = which === this.best ? this.best.exports : this.exports;
    this.save(new Blob([exports[p]]), `${which.family.replace('tuned:', '')}-${p}.safetensors`);
  }

  async downloadCheckpoint() {
    const { bytes } = await this.trainer().rpc('checkpointBytes');
    this.save(new Blob([bytes]), `${this.p === 'ds' ? 'distill' : 'fine-tune'}-step-${this.info?.completed ?? 0}.checkpoint.safetensors`);
  }

  save(blob, name) {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = name;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }

  // Enables what the state allows; `extra` are the tab's own inputs, off while a job runs.
  setButtons(extra = []) {
    const busy = this.busy();
    const s = this.state;
    this.el('start').disabled = busy;
    this.el('pause').disabled = s !== 'running';
    this.el('resume').disabled = s !== 'paused';
    this.el('stop').disabled = !(s === 'running' || s === 'paused');
    for (const el of extra) el.disabled = busy;
    if (this.el('clear')) this.el('clear').disabled = busy;
    this.el('download-checkpoint').disabled = busy || !this.info;
    if (this.el('checkpoint-file')) this.el('checkpoint-file').disabled = busy;
  }
}
