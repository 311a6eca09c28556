// The Distill tab: a teacher (any model in the picker, a llama2.c checkpoint included) and a
// student of either family — SSM + MoE or Transformer — (a fresh model of a preset shape, or
// for SSM + MoE a custom one, with its size shown as it is edited, or any loaded model of the
// family). The mode follows from the two and the page says which: logit distillation when they
// share the tokenizer (a teacher of either family from the picker), sequence-level when they
// do not (a llama2.c teacher). Either way the teacher first writes a corpus in the page — its
// stories stream into the Corpus card, seeded, and a reload continues it — then the student
// trains on it (and on the visitor's text, if given). The job's view is a JobView.

import { fmtBytes, fmtInt, JobView } from './job-view.js';
import { defaultWorkers, fillSettings, MAX_WORKERS, readSettings, trainer } from './trainer.js';

const $ = (id) => document.getElementById(id);
const SHAPE_FIELDS = ['d_model', 'n_layers', 'n_experts', 'top_k', 'd_ff'];

export function setupDistill(app) {
  let t = null;
  const view = new JobView({
    prefix: 'ds',
    container: $('ds-job'),
    trainer: () => t,
    app,
    onState: () => setButtons(),
    distill: true,
    prompt: () => $('ds-prompt').value,
    family: (info, n) => ({
      family: `tuned:student-${n}`,
      label: `student #${n} of ${info.teacher}`,
      about: `distilled from ${info.teacher} (${info.mode === 'logits' ? 'logits' : 'its stories'}) for ${info.completed} steps`,
    }),
  });
  const form = $('ds-form');
  const own = () => [...form.querySelectorAll('input, select, textarea')].filter((el) => !['ds-start', 'ds-pause', 'ds-resume', 'ds-stop'].includes(el.id));
  const setButtons = () => view.setButtons([...own(), $('ds-restore'), $('ds-discard')]);
  // presets: family → preset → config (the core's, `distill_defaults().students`).
  const shape = { presets: {}, current: null };

  async function ready() {
    if (t) return t;
    t = await trainer();
    const d = t.defaults.distill;
    fillSettings(form, d.settings, t.defaults.limits);
    for (const input of form.querySelectorAll('[data-corpus]')) input.value = d.corpus[input.dataset.corpus];
    for (const p of d.students) (shape.presets[p.family] ??= {})[p.preset] = p.config;
    $('ds-workers').value = defaultWorkers(t.defaults.cores, d.settings.batch);
    $('ds-workers').max = MAX_WORKERS;
    fillTeachers();
    await showStudent();
    await showSaved();
    return t;
  }

  // ---- teacher and student ----------------------------------------------------------------
  const teacherKey = () => $('ds-teacher').value;
  const teacherKind = () => app.models().find((m) => m.key === teacherKey())?.kind;

  function fillTeachers() {
    const keep = (select, models, fallback) => {
      const before = select.value;
      select.replaceChildren(...models);
      select.value = [...select.options].some((o) => o.value === before) ? before : fallback;
    };
    const models = app.models();
    keep($('ds-teacher'), models.map((m) => new Option(m.label, m.key)), models.find((m) => m.key === app.defaultModel())?.key ?? models[0]?.key);
    fillStudents();
    showMode();
  }

  // The students of the chosen family: fresh presets (and, for SSM + MoE, a custom shape), then
  // the loaded models of the family.
  function fillStudents() {
    const family = studentFamily();
    const select = $('ds-student');
    const before = select.value;
    const what = family === 'transformer' ? 'Transformer' : 'SSM + MoE model';
    const fresh = Object.keys(shape.presets[family] ?? {}).map((p) => new Option(`a fresh ${p}-sized ${what} (preset ${p})`, `fresh:${p}`));
    if (family === 'itera') fresh.push(new Option('a fresh SSM + MoE model of a custom shape…', 'fresh:custom'));
    const loaded = app.models().filter((m) => m.kind === family).map((m) => new Option(`${m.label} (continue training it)`, m.key));
    select.replaceChildren(...fresh, ...loaded);
    select.value = [...select.options].some((o) => o.value === before) ? before : 'fresh:micro';
  }

  function showMode() {
    const llama2 = teacherKind() === 'llama2';
    $('ds-mode').textContent = llama2
      ? 'Sequence-level distillation: this llama2.c teacher has its own tokenizer, so the student cannot match its next-token probabilities; '
        + 'it writes stories into the corpus below and the student learns them (cross-entropy only; β and T do not apply).'
      : 'Logit distillation: teacher and student share the tokenizer, so the student learns the teacher\'s stories and matches its '
        + 'next-token probabilities at temperature T: β·T²·KL(teacher ‖ student) + (1 − β)·CE.';
    for (const id of ['ds-beta', 'ds-temperature']) $(id).disabled = llama2 || view.busy();
    document.body.dataset.dsMode = llama2 ? 'sequence' : 'logits';
  }

  const studentFamily = () => $('ds-student-family').value;

  // The student's shape (a fresh one) or null (a loaded model).
  function studentConfig() {
    const pick = $('ds-student').value;
    if (!pick.startsWith('fresh:')) return null;
    const name = pick.slice(6);
    if (name !== 'custom') return shape.presets[studentFamily()][name];
    const c = { ...(shape.current ?? shape.presets.itera.micro) };
    for (const input of form.querySelectorAll('[data-shape]')) c[input.dataset.shape] = Number(input.value);
    c.dt_rank = Math.ceil(c.d_model / 16);
    return c;
  }

  async function showStudent() {
    const custom = $('ds-student').value === 'fresh:custom';
    $('ds-shape').hidden = !custom;
    const c = studentConfig();
    if (custom && !shape.current) {
      shape.current = { ...shape.presets.itera.micro };
      for (const input of form.querySelectorAll('[data-shape]')) input.value = shape.current[input.dataset.shape];
    }
    const note = $('ds-student-note');
    note.textContent = '';
    if (!c) {
      $('ds-student-size').textContent = `${$('ds-student').selectedOptions[0]?.textContent ?? ''}: its own shape.`;
      return;
    }
    try {
      const s = await t.rpc('modelSize', { config: { ...c, vocab_size: 4096 }, family: studentFamily() });
      const sizes = app.precisions().map((p) => `${p} ≈ ${fmtBytes(s.bytes[p])}`).join(' · ');
      const active = s.active_params === s.params ? '' : ` (${(s.active_params / 1e6).toFixed(2)}M active per token)`;
      $('ds-student-size').textContent = `${(s.params / 1e6).toFixed(2)}M parameters${active}; files: ${sizes}`;
      $('ds-student-size').classList.remove('error');
      const teacher = app.models().find((m) => m.key === teacherKey());
      const tp = teacher ? await teacherParams(teacher) : null;
      if (tp && s.params > tp) {
        note.textContent = `The student (${fmtInt(s.params)} parameters) is larger than the teacher (${fmtInt(tp)}): `
          + 'allowed, though distillation usually makes a model smaller.';
      }
    } catch (e) {
      $('ds-student-size').textContent = `⚠ ${e.message}`;
      $('ds-student-size').classList.add('error');
    }
  }

  async function teacherParams(teacher) {
    return app.params?.(teacher.key) ?? null;
  }

  // ---- corpus -----------------------------------------------------------------------------
  const corpusSettings = () => Object.fromEntries([...form.querySelectorAll('[data-corpus]')].map((i) => [i.dataset.corpus, Number(i.value)]));

  function addStory(ev) {
    const li = document.createElement('li');
    li.textContent = ev.text;
    $('ds-corpus').append(li);
    $('ds-corpus-status').textContent = `${ev.index + 1} stories, ${fmtInt(ev.tokens)} of ${fmtInt(ev.target)} teacher tokens`;
    view.el('progress').style.width = `${Math.min(100, (100 * ev.tokens) / ev.target)}%`;
    view.status(`Writing the corpus: ${ev.index + 1} stories, ${fmtInt(ev.tokens)} of ${fmtInt(ev.target)} teacher tokens`);
    document.body.dataset.dsStories = ev.index + 1;
  }

  // ---- the job ----------------------------------------------------------------------------
  // A sample story after each evaluation: the core's sampling defaults, 60 tokens, seed 1.
  const sampleRequest = () => ({ ...app.generationDefaults(), prompt: $('ds-prompt').value, max_tokens: 60, seed: 1 });
  const workers = () => Number($('ds-workers').value) || 1;
  const visitorTexts = () => ($('ds-text').value.trim() ? [{ name: 'your text', text: $('ds-text').value }] : []);

  async function start() {
    await ready();
    view.note('error', null);
    view.note('note', null);
    const teacher = app.source(teacherKey());
    const config = studentConfig();
    const student = config ? { family: studentFamily(), config: { ...config, vocab_size: 4096 } } : app.source($('ds-student').value);
    const settings = readSettings(form, t.defaults.distill.settings);
    settings.shards = Math.min(workers(), MAX_WORKERS, Number(settings.batch) || 1);
    if (teacherKind() === 'llama2') settings.distill = null;
    const corpus = corpusSettings();
    view.setState('writing');
    setButtons();
    $('ds-corpus').replaceChildren();
    $('ds-saved').hidden = true;
    let written;
    try {
      written = await t.call('writeCorpus', { teacher, settings: corpus, workers: workers() }, (ev) => { if (ev.type === 'story') addStory(ev); }).promise;
    } catch (e) {
      view.notStarted(e);
      return;
    }
    if (!written.complete) {
      view.setState('paused');
      view.status(`Corpus paused at ${written.stories} stories (${fmtInt(written.tokens)} teacher tokens); Start continues it.`);
      return;
    }
    if (written.stories === 0) {
      view.notStarted(new Error('the teacher wrote no stories: the corpus cannot be made with these settings'));
      return;
    }
    $('ds-corpus-status').textContent = `${written.stories} stories, ${fmtInt(written.tokens)} teacher tokens: complete`;
    const begin = () => t.rpc('startDistill', { student, teacher, corpus: written.text, texts: visitorTexts(), settings, sample: sampleRequest(), corpusSettings: corpus });
    if (await view.start('Starting the distillation…', begin)) await runView();
  }

  async function runView() {
    setButtons();
    await view.run($('ds-backend').value, workers());
    setButtons();
    showMode();
  }

  async function restore() {
    await ready();
    view.note('error', null);
    try {
      const r = await t.rpc('restore');
      fillSettings(form, { ...t.defaults.distill.settings, ...r.meta.settings }, t.defaults.limits);
      $('ds-saved').hidden = true;
      $('ds-corpus-status').textContent = `${r.info.text.documents} stories (kept in this browser)`;
      await view.resume(r, setButtons, runView);
    } catch (e) {
      view.note('error', e.message);
    }
  }

  async function showSaved() {
    const saved = await t.rpc('saved');
    if (saved?.unreadable) {
      // Said in the Fine-tune tab, which owns the saved job's notice.
      $('ds-saved').hidden = true;
      await view.showStorage(saved.storage);
      return;
    }
    $('ds-saved').hidden = saved?.kind !== 'distill';
    if (saved?.kind === 'distill') {
      $('ds-saved-text').textContent = `A distillation of ${saved.teacher.name} is saved in this browser: step ${saved.step} of ${saved.settings?.steps ?? saved.end}`
        + `${saved.done ? ' (finished)' : ''}, saved ${new Date(saved.savedAt).toLocaleString()}, ${fmtBytes(saved.storage.bytes)}. `;
      document.body.dataset.dsSaved = saved.step;
    }
    await view.showStorage(saved?.storage);
  }

  // ---- wiring -----------------------------------------------------------------------------
  document.addEventListener('models-changed', () => t && fillTeachers());
  document.addEventListener('saved-job-changed', () => t && showSaved());
  // The training worker was replaced: the job it ran is gone, the one saved here can resume.
  document.addEventListener('trainer-restarted', () => t && showSaved().catch(() => {}));
  $('tab-distill').addEventListener('click', () => ready().catch((e) => view.note('error', e.message)));
  $('ds-teacher').addEventListener('change', () => { showMode(); showStudent(); });
  $('ds-student').addEventListener('change', showStudent);
  $('ds-student-family').addEventListener('change', () => { fillStudents(); showStudent(); });
  for (const input of form.querySelectorAll('[data-shape]')) input.addEventListener('input', showStudent);
  form.addEventListener('submit', (e) => { e.preventDefault(); start(); });
  $('ds-pause').addEventListener('click', () => t.rpc('pause'));
  $('ds-resume').addEventListener('click', () => (view.info ? runView() : start()));
  $('ds-stop').addEventListener('click', async () => {
    if (view.state !== 'paused') { t.rpc('stop'); return; }
    if (!view.info) { view.setState('idle'); setButtons(); return; }
    view.setState('stopped');
    view.showProgress();
    setButtons();
    await view.finish();
  });
  $('ds-restore').addEventListener('click', restore);
  $('ds-discard').addEventListener('click', async () => {
    await t.rpc('clear');
    $('ds-saved').hidden = true;
    view.showStorage();
  });
  return { ready };
}
