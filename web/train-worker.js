// The training worker: one fine-tune (itera-web's TrainingJob, itera-core's training job) run
// in slices, its steps on a pool of CPU workers (shard-worker.js, data-parallel: the shards of
// every step are computed there and averaged here in shard order) or on WebGPU, its
// checkpoint kept in the origin-private file system (OPFS) so a reload can resume it.
//
// Protocol, as worker.js: the page posts {id, op, ...args}; the worker answers with events of
// the same id ({type: 'events' | 'sample' | 'note' | 'rollback' | 'saved'}) and one
// {type: 'result'} or {type: 'error', message}. `run` streams until the job is done, paused
// or stopped; `pause` and `stop` end a running `run` between slices.

import init, { Corpus, TextTokens, TrainingJob, convert_model, distill_defaults, fine_tune_defaults, gpu_init, model_size, train_limits } from './pkg/itera_web.js';
import { fetchCached } from './fetch.js';
import { connect, serve } from './rpc.js';

const TOKENIZER_URL = 'weights/tokenizer.json';
// Steps stop starting after this much of a slice, so Pause and Stop take effect quickly.
const SLICE_MS = 150;
const SAVE_DIR = 'fine-tune';
// The run's best weights (Event::Best), an f32 model file.
const BEST_FILE = 'best.safetensors';

const ready = (async () => {
  await init({ module_or_path: new URL('./pkg/itera_web_bg.wasm', import.meta.url) });
  return (await fetchCached(TOKENIZER_URL, () => {})).bytes;
})();

let job = null; // TrainingJob
// What job.json holds: kind ('fine-tune' | 'distill'), base, texts, settings, sample request;
// a distillation also its teacher (name, kind, URL when shipped) and corpus settings.
let meta = null;
let teacherSource = null; // a distillation's teacher as TrainingJob.distill takes it
let pool = null; // {workers, size} of shard workers, built for the job
let request = { pause: false, stop: false };

// ---- texts ------------------------------------------------------------------------------
// A text from the page is {name, text} (a paste) or {name, file} (a File or Blob: read here,
// so a file of tens of MiB never passes through the page's thread as a string).
const encoder = new TextEncoder();
const bytesOf = async (t) => (t.file ? new Uint8Array(await t.file.arrayBuffer()) : encoder.encode(t.text));
const asSources = async (texts) => Promise.all(texts.map(async (t) => ({ name: t.name, bytes: await bytesOf(t) })));
const sizeOf = (t) => (t.file ? t.file.size : encoder.encode(t.text).length);
// Identifies texts without their contents: a paste by its text, a file by name, size and date.
const textKey = (texts) => JSON.stringify(texts.map((t) => (t.file ? [t.name, t.file.size, t.file.lastModified ?? 0] : [t.name, t.text])));

// The texts last prepared (cut, held out and tokenized: TextTokens), kept until a job takes
// them, so that the count shown before Start is not done again by Start.
let prepared = null; // {key, tokens}

// The prepared TextTokens of `texts`, made now unless kept; `emit` hears {type: 'progress',
// done, total} (bytes) about every 100 ms while the tokenizer runs.
async function prepare(texts, emit = () => {}) {
  const tokenizer = await ready;
  const key = textKey(texts);
  // Kept unless a job took them (one that then failed leaves them empty).
  if (prepared?.key === key && prepared.tokens.ready()) return prepared.tokens;
  prepared?.tokens.free();
  prepared = null;
  // Over the page's limit, TextTokens refuses them before tokenizing; a file that large never
  // gets here (the tab refuses it when it is opened).
  const total = texts.reduce((n, t) => n + sizeOf(t), 0);
  emit({ type: 'progress', phase: 'reading', done: 0, total });
  const sources = await asSources(texts);
  let last = 0;
  const tokens = new TextTokens(sources, tokenizer, (done, all) => {
    const now = performance.now();
    if (now - last > 100 || done === all) {
      last = now;
      emit({ type: 'progress', phase: 'tokenizing', done, total: all });
    }
  });
  prepared = { key, tokens };
  return tokens;
}

// Hands the prepared texts to a job (which empties them).
function takePrepared() {
  prepared = null;
}

// ---- OPFS -------------------------------------------------------------------------------
// Every file saved here says what it is and in which version: the JSON files carry
// {format, version}, teacher.bin starts with the magic "ITTB" and a u32 version; the
// checkpoint is a safetensors file with its own format and version. Files without them were
// written before versions existed (version 0, read as before). A file of a version this page
// does not read is refused with a message and kept (Discard removes it).
const SAVE_FORMAT = 'itera-playground-save';
// Version 2: job.json lists its texts as files (text-N.txt) instead of holding them.
const SAVE_VERSION = 2;
const READABLE_VERSIONS = [0, 1, 2];
const TEACHER_MAGIC = 0x42545449; // "ITTB" little-endian
const versioned = (obj) => ({ format: SAVE_FORMAT, version: SAVE_VERSION, ...obj });

// The parsed JSON of a saved file, checked to be a version this page reads.
async function readVersioned(name) {
  const file = await readFile(name);
  if (!file) return null;
  let obj;
  try {
    obj = JSON.parse(await file.text());
  } catch (e) {
    throw new Error(`${name} in this browser is damaged (${e.message}); it is kept: Discard it to start again`);
  }
  const version = obj.format === undefined ? 0 : obj.format === SAVE_FORMAT ? obj.version : null;
  if (!READABLE_VERSIONS.includes(version)) {
    throw new Error(`${name} in this browser was saved by ${version === null ? 'something other than' : `version ${version} of`} `
      + `this playground, which this page (save version ${SAVE_VERSION}) cannot read; it is kept: Discard it to start again, or open the page that saved it`);
  }
  return obj;
}

async function saveDir(create = false) {
  const root = await navigator.storage.getDirectory();
  return root.getDirectoryHandle(SAVE_DIR, { create });
}

// createWritable writes to a swap file that replaces the old one only on close, so a reload
// mid-write keeps the previous checkpoint whole.
async function writeFile(name, data) {
  const dir = await saveDir(true);
  const file = await dir.getFileHandle(name, { create: true });
  const w = await file.createWritable();
  await w.write(data);
  await w.close();
}

async function removeFile(name) {
  try {
    await (await saveDir()).removeEntry(name);
  } catch { /* not there */ }
}

async function readFile(name) {
  try {
    const file = await (await saveDir()).getFileHandle(name);
    return await file.getFile();
  } catch {
    return null;
  }
}

// Keeps a job's texts in OPFS beside it, one file each (text-STAMP-N.txt, new names each
// time: a text may itself be a File read from an earlier job's copy, so those are removed only
// once the new ones are written); job.json lists them, pastes marked as such.
async function saveTexts(texts) {
  const stamp = Date.now().toString(36);
  // The files kept for the last job, by size and date: a text that is one of them (the page
  // holds it since a resume) keeps its file, so the page's reference stays good.
  const kept = new Map();
  const before = await readVersioned('job.json').catch(() => null);
  for (const t of before?.texts ?? []) {
    const f = t.file && (await readFile(t.file));
    if (f) kept.set(`${f.size}:${f.lastModified}`, t.file);
  }
  const saved = [];
  for (const [i, t] of texts.entries()) {
    let file = t.file && kept.get(`${t.file.size}:${t.file.lastModified}`);
    if (!file) {
      file = `text-${stamp}-${i}.txt`;
      await writeFile(file, t.file ?? t.text);
    }
    saved.push({ name: t.name, file, bytes: sizeOf(t), pasted: !t.file });
  }
  const keep = new Set(saved.map((t) => t.file));
  const dir = await saveDir(true);
  const old = [];
  for await (const name of dir.keys()) if (/^text-.*\.txt$/.test(name) && !keep.has(name)) old.push(name);
  for (const name of old) await dir.removeEntry(name);
  return saved;
}

// A saved job's texts as the page gives them: pastes as text and files as Files read back from
// OPFS (save version 2), or the texts job.json held itself (versions 0 and 1).
async function loadTexts(saved) {
  return Promise.all(saved.texts.map(async (t) => {
    if (t.text !== undefined) return { name: t.name, text: t.text };
    const file = await readFile(t.file);
    if (!file) throw new Error(`the saved job's text ${t.name} (${t.file}) is missing in this browser: start the job again`);
    return t.pasted ? { name: t.name, text: await file.text() } : { name: t.name, file };
  }));
}

// The storage a new job needs (its texts, a few model files and checkpoints), refused up front
// when the browser grants the site less than that.
async function checkQuota(texts, modelBytes) {
  const estimate = await navigator.storage.estimate?.().catch(() => null);
  if (!estimate?.quota) return;
  const need = texts.reduce((n, t) => n + sizeOf(t), 0) + 8 * modelBytes;
  const free = estimate.quota - (estimate.usage ?? 0);
  if (need > free) {
    throw new Error(`this job needs about ${(need / 2 ** 20).toFixed(0)} MiB of the browser's storage for its texts and checkpoints, `
      + `and this site may use ${(free / 2 ** 20).toFixed(0)} MiB more (of ${(estimate.quota / 2 ** 20).toFixed(0)} MiB): `
      + 'clear saved data, give less text, or use a window that is not private');
  }
}

async function persist(checkpoint, info) {
  // The checkpoint first: job.json never names a step the checkpoint file does not hold.
  if (checkpoint) await writeFile('checkpoint.safetensors', checkpoint);
  await writeFile('job.json', JSON.stringify(versioned({ ...meta, step: info.completed, end: info.end, done: info.done, savedAt: Date.now() })));
}

async function storageUsed() {
  let bytes = 0;
  try {
    for await (const handle of (await saveDir()).values()) bytes += (await handle.getFile()).size;
  } catch { /* nothing saved */ }
  const estimate = await navigator.storage.estimate?.().catch(() => null);
  return { bytes, originBytes: estimate?.usage ?? null, quotaBytes: estimate?.quota ?? null };
}

// ---- one job per browser ----------------------------------------------------------------
// The saved job is one per browser (this origin's OPFS). The worker whose tab has a job
// loaded — started, resumed, or a corpus being written — holds a Web Lock on it until the job
// is cleared or the tab closes; another tab's worker cannot take it, so it cannot overwrite
// that job, and says why.
const JOB_LOCK = 'itera-playground-training-job';
const IN_USE = 'another tab of this playground has a training job loaded (one job is kept per browser, '
  + 'and starting one here would overwrite it): finish it there, or close that tab, and reload this one';
let releaseLock = null;

async function holdJobLock() {
  if (releaseLock || !navigator.locks) return;
  await new Promise((granted, refused) => {
    navigator.locks.request(JOB_LOCK, { ifAvailable: true }, (lock) => {
      if (!lock) {
        refused(new Error(IN_USE));
        return null;
      }
      granted();
      return new Promise((release) => { releaseLock = release; });
    }).catch(refused);
  });
}

function dropJobLock() {
  releaseLock?.();
  releaseLock = null;
}

// Whether another tab's worker holds the job.
async function lockedElsewhere() {
  if (releaseLock || !navigator.locks) return false;
  const state = await navigator.locks.query();
  return state.held.some((l) => l.name === JOB_LOCK);
}

// ---- the CPU pool -----------------------------------------------------------------------
// A pool of `size` CPU workers for `target` (the running job, or a benchmark's).
async function startPool(size, target = job) {
  stopPool();
  const setup = target.shard_setup();
  const workers = [];
  for (let i = 0; i < size; i++) {
    const w = new Worker(new URL('./shard-worker.js', import.meta.url), { type: 'module' });
    const { call } = connect(() => w, `CPU worker ${i + 1}`);
    workers.push({ worker: w, call: (op, args, transfer) => call(op, args, null, transfer).promise });
  }
  // A job that distils logits gives every worker the teacher, whose forward each runs on its shards.
  const teacher = setup.loss.distill_beta > 0 ? teacherSource?.bytes : null;
  await Promise.all(workers.map((w) => w.call('setup', { setup, teacher })));
  pool = { workers, size };
  // Shard i goes to worker i mod N; each answers for its shards in order, and the results
  // come back here in shard order, whatever order the workers finish in.
  const compute = async (weights, shards) => {
    const parts = workers.map(() => []);
    shards.forEach((tokens, i) => parts[i % size].push(i));
    const answers = await Promise.all(workers.map((w, k) => {
      if (parts[k].length === 0) return [];
      const mine = parts[k].map((i) => shards[i]);
      return w.call('gradients', { weights, shards: mine }, mine.map((s) => s.buffer));
    }));
    const results = new Array(shards.length);
    answers.forEach((list, k) => list.forEach((r, j) => { results[parts[k][j]] = r; }));
    return results;
  };
  target.use_workers(compute, size);
}

function stopPool() {
  for (const w of pool?.workers ?? []) w.worker.terminate();
  pool = null;
}

// ---- backends ---------------------------------------------------------------------------
async function useWebGpu() {
  await gpu_init();
  job.use_gpu();
}

// Auto: one step timed on each (on a copy of the state, thrown away), the faster one kept.
async function chooseBackend(mode, workers, emit) {
  if (!job.info().webgpu) {
    // A Transformer's steps have no WebGPU kernels: the CPU workers, whatever was asked.
    await startPool(workers);
    return `Training on ${job.backend()}: a Transformer trains on the CPU (WebGPU training is for SSM + MoE models).`;
  }
  if (mode === 'webgpu') {
    try {
      await useWebGpu();
      return `Training on ${job.backend()}, as selected.`;
    } catch (e) {
      emit({ type: 'note', message: `WebGPU is not available (${shortReason(e)}); training on the CPU.` });
      mode = 'cpu';
    }
  }
  await startPool(workers);
  if (mode === 'cpu') return `Training on ${job.backend()}, as selected.`;
  const cpuMs = await job.time_step();
  let gpuMs = null;
  let why = '';
  let verdict = 'slower';
  try {
    await gpu_init();
    // A 1 × 16-token GPU step first: if even that is slower than a full CPU step, a full GPU
    // step is too, and a software adapter is not kept busy for minutes to find out.
    const probeMs = await job.time_gpu_probe(1, 16);
    if (probeMs >= cpuMs) {
      why = ` (a 1 × 16-token WebGPU step alone took ${probeMs.toFixed(0)} ms)`;
    } else {
      job.use_gpu();
      gpuMs = await job.time_step();
      // The first full step also warms the device up; time another when that is cheap.
      if (gpuMs < 2000) gpuMs = Math.min(gpuMs, await job.time_step());
    }
  } catch (e) {
    verdict = 'unavailable';
    why = ` (${shortReason(e)})`;
  }
  if (gpuMs !== null && gpuMs < cpuMs) {
    stopPool();
    return `Auto timed one step: CPU workers ${cpuMs.toFixed(0)} ms, WebGPU ${gpuMs.toFixed(0)} ms → WebGPU.`;
  }
  await startPool(workers);
  const gpu = gpuMs === null ? `WebGPU ${verdict}${why}` : `WebGPU ${gpuMs.toFixed(0)} ms`;
  return `Auto timed one step: ${pool.size} CPU worker${pool.size > 1 ? 's' : ''} ${cpuMs.toFixed(0)} ms, ${gpu} → CPU workers.`;
}

// The first clause of an error: wgpu's "no adapter" messages list every backend it tried.
const shortReason = (e) => String(e.message ?? e).split(/[;:]\s/).slice(0, 2).join(': ');

// ---- operations -------------------------------------------------------------------------
async function sampleNow(step, emit) {
  if (!meta.sample) return;
  const text = await job.sample(meta.sample);
  emit({ type: 'sample', step, text, prompt: meta.sample.prompt, teacher: job.teacher_sample(meta.sample) });
}

// A teacher from the page ({name, url} or {name, bytes} of an itera file, or {name, llama2:
// {checkpoint, tokenizer}}) as TrainingJob.distill and StoryWriter take it.
async function teacherFrom(t) {
  if (t.llama2) return { kind: 'llama2', checkpoint: new Uint8Array(t.llama2.checkpoint), tokenizer: new Uint8Array(t.llama2.tokenizer) };
  const bytes = t.bytes ? new Uint8Array(t.bytes) : (await fetchCached(t.url, () => {})).bytes;
  return { kind: 'model', bytes };
}

// Keeps a teacher that is not on the server (opened from disk) next to the saved job.
async function saveTeacher(t) {
  if (t.url) return;
  const parts = teacherSource.kind === 'llama2' ? [teacherSource.checkpoint, teacherSource.tokenizer] : [teacherSource.bytes];
  const header = new Uint32Array([TEACHER_MAGIC, SAVE_VERSION, ...parts.map((p) => p.length)]);
  await writeFile('teacher.bin', new Blob([header, ...parts]));
}

async function loadTeacher(saved) {
  if (saved.teacher.url) return teacherFrom(saved.teacher);
  const file = await readFile('teacher.bin');
  if (!file) throw new Error('the saved distillation\'s teacher file is missing: start it again');
  const all = new Uint8Array(await file.arrayBuffer());
  const n = saved.teacher.kind === 'llama2' ? 2 : 1;
  // [magic, version] first since save version 1; before it, the lengths alone.
  const words = new Uint32Array(all.buffer.slice(0, 8));
  let at = 0;
  if (words[0] === TEACHER_MAGIC) {
    if (!READABLE_VERSIONS.includes(words[1])) {
      throw new Error(`teacher.bin in this browser was saved by version ${words[1]} of this playground, which this page cannot read; it is kept: Discard it to start again`);
    }
    at = 8;
  }
  const lengths = new Uint32Array(all.buffer.slice(at, at + 4 * n));
  at += 4 * n;
  const parts = [...lengths].map((len) => { const p = all.slice(at, at + len); at += len; return p; });
  return saved.teacher.kind === 'llama2' ? { kind: 'llama2', checkpoint: parts[0], tokenizer: parts[1] } : { kind: 'model', bytes: parts[0] };
}

// The stories of a corpus being written, kept so that a reload continues it.
async function saveCorpus(corpus) {
  await writeFile('corpus.json', JSON.stringify(versioned(corpus)));
}

// The corpus `settings` describe, written by `k` CPU workers holding the teacher: a worker
// takes the next story index until the stories in index order reach the target (or a pause
// or stop comes). `stories` (index → {text, tokens}) holds those already written, and gets
// the new ones; `onStory(i, story, corpus)` sees each story once it is part of the corpus.
async function writeStories(tokenizer, teacher, settings, k, stories, onStory = () => {}) {
  const corpus = new Corpus(settings.tokens);
  for (const [i, st] of Object.entries(stories)) corpus.insert(Number(i), st.text, st.tokens);
  let shown = 0;
  const show = () => {
    while (shown < corpus.stories()) {
      onStory(shown, stories[shown], corpus);
      shown += 1;
    }
  };
  show();
  const writers = [];
  for (let w = 0; w < k && !corpus.complete(); w++) {
    const worker = new Worker(new URL('./shard-worker.js', import.meta.url), { type: 'module' });
    const { call } = connect(() => worker, `story writer ${w + 1}`);
    writers.push({ worker, call: (op, args) => call(op, args).promise });
  }
  try {
    await Promise.all(writers.map((w) => w.call('writer', { teacher, tokenizer, settings })));
    let next = 0;
    await Promise.all(writers.map(async (w) => {
      while (!corpus.complete() && !request.stop && !request.pause) {
        while (stories[next]) next += 1;
        const i = next++;
        const st = await w.call('story', { i });
        stories[i] = st;
        corpus.insert(i, st.text, st.tokens);
        show();
      }
    }));
  } finally {
    for (const w of writers) w.worker.terminate();
  }
  return { corpus, stories };
}

// Tokens/s of a job made by `make()` on 1 and N CPU workers (`counts`) and on WebGPU: one
// warm-up step, then `steps` timed ones (WebGPU stops after `gpuSeconds`). Emits a row each.
async function benchJob(name, make, counts, steps, gpuSeconds, row) {
  const time = async (j, limitSeconds = Infinity) => {
    await j.advance(1, 1e9); // warm-up: pipelines, caches, first allocation
    const t0 = performance.now();
    let n = 0;
    while (n < steps && (performance.now() - t0) / 1000 < limitSeconds) {
      await j.advance(1, 1e9);
      n += 1;
    }
    const info = j.info();
    return (n * info.spec.batch * info.spec.seq_len) / ((performance.now() - t0) / 1000);
  };
  for (const k of counts) {
    const j = make();
    await startPool(k, j);
    const tokensPerSecond = await time(j);
    stopPool();
    const info = j.info();
    row({ job: name, backend: 'cpu', workers: k, shards: info.spec.shards, tokensPerSecond, firstLoss: j.history().loss[0], batch: info.spec.batch, seqLen: info.spec.seq_len });
    j.free();
  }
  try {
    await gpu_init();
    const j = make();
    j.use_gpu();
    const tokensPerSecond = await time(j, gpuSeconds);
    row({ job: name, backend: 'webgpu', adapter: j.backend(), tokensPerSecond, firstLoss: j.history().loss[0] });
    j.free();
  } catch (e) {
    row({ job: name, backend: 'webgpu', error: e.message ?? String(e) });
  }
}

const ops = {
  async defaults() {
    await ready;
    return { defaults: fine_tune_defaults(), distill: distill_defaults(), limits: train_limits(), cores: navigator.hardwareConcurrency ?? 1 };
  },

  // {config, family}: a student shape's parameters and file size per precision.
  async modelSize({ config, family = 'itera' }) {
    await ready;
    return model_size(config, family);
  },

  // {texts} → documents, tokens and the held-out part, or why it cannot train; emits progress
  // while a long text is read and tokenized (kept for the Start that follows).
  async prepare({ texts }, emit) {
    return (await prepare(texts, emit)).info();
  },

  // {base: {name, url} | {name, bytes}, texts, settings, sample}: a new job (replacing any).
  async start({ base, texts, settings, sample }, emit) {
    await ready;
    await holdJobLock();
    const bytes = base.bytes ? new Uint8Array(base.bytes) : (await fetchCached(base.url, () => {})).bytes;
    await checkQuota(texts, bytes.length);
    const tokens = await prepare(texts, emit);
    stopPool();
    job?.free();
    job = null;
    job = new TrainingJob(bytes, tokens, settings, base.name);
    takePrepared();
    // The last job's files: its checkpoint would otherwise be offered with this job's texts.
    await removeFile(BEST_FILE);
    await removeFile('checkpoint.safetensors');
    meta = { kind: 'fine-tune', base: { name: base.name, url: base.url ?? null }, texts: await saveTexts(texts), settings, sample };
    const info = job.info();
    await persist(null, info);
    return { info, history: job.history() };
  },

  // The saved job's description, or null.
  // A saved job this page cannot read is described by `unreadable` (the reason; it is kept).
  async saved() {
    if (await lockedElsewhere()) return { inUse: IN_USE, storage: await storageUsed() };
    const checkpoint = await readFile('checkpoint.safetensors');
    let saved;
    try {
      saved = await readVersioned('job.json');
    } catch (e) {
      return { unreadable: e.message, storage: await storageUsed() };
    }
    if (!saved || !checkpoint) return null;
    return { ...saved, kind: saved.kind ?? 'fine-tune', texts: undefined, documents: saved.texts.length, storage: await storageUsed() };
  },

  // Loads the saved job from its checkpoint (same texts): it continues where it stopped.
  // Resolves to {info, history, meta, texts} (the texts as the tab shows them: pastes as text,
  // files as Files read from this browser's storage).
  async restore(args, emit) {
    const tokenizer = await ready;
    await holdJobLock();
    const saved = await readVersioned('job.json');
    const checkpoint = await readFile('checkpoint.safetensors');
    if (!saved || !checkpoint) throw new Error('no saved fine-tune in this browser');
    const texts = await loadTexts(saved);
    const bytes = new Uint8Array(await checkpoint.arrayBuffer());
    // Everything the job needs is read before the one in memory is let go.
    let distill = null;
    let tokens = null;
    if (saved.kind === 'distill') {
      teacherSource = await loadTeacher(saved);
      const corpus = await readFile('corpus.txt');
      if (!corpus) throw new Error('the saved distillation\'s corpus is missing: start it again');
      distill = { sources: await asSources(texts), corpus: await corpus.text() };
    } else {
      tokens = await prepare(texts, emit);
    }
    stopPool();
    job?.free();
    job = null;
    job = distill
      ? TrainingJob.resume_distill(bytes, tokenizer, distill.sources, distill.corpus, teacherSource)
      : TrainingJob.resume(bytes, tokens);
    takePrepared();
    meta = saved;
    return { info: job.info(), history: job.history(), meta, texts };
  },

  // {checkpoint, texts, sample}: continues a checkpoint file (made here or natively with
  // `xtask train --text`) on the same texts; it becomes the saved job.
  async restoreFrom({ checkpoint, texts, sample }, emit) {
    await holdJobLock();
    const tokens = await prepare(texts, emit);
    stopPool();
    job?.free();
    job = null;
    job = TrainingJob.resume(new Uint8Array(checkpoint), tokens);
    takePrepared();
    const info = job.info();
    await removeFile(BEST_FILE); // the last job's
    meta = { kind: 'fine-tune', base: { name: info.base || 'a checkpoint file', url: null }, texts: await saveTexts(texts), settings: info.spec, sample };
    await persist(new Uint8Array(checkpoint), info);
    return { info, history: job.history(), meta, texts };
  },

  // {teacher, settings: {tokens, seed, temperature, top_p}, workers}: the teacher writes a
  // corpus on `workers` CPU workers, story i from its own seed, streaming each story (in index
  // order) as an event; a corpus of the same teacher and settings saved earlier continues
  // from the stories it has. Resolves to {text, stories, tokens}.
  async writeCorpus({ teacher, settings, workers = 1 }, emit) {
    const tokenizer = await ready;
    await holdJobLock();
    teacherSource = await teacherFrom(teacher);
    const key = JSON.stringify({ teacher: teacher.name, settings });
    // A saved corpus of another version is not continued (the new one replaces it).
    const s = await readVersioned('corpus.json').catch(() => null);
    let known = {};
    if (s?.key === key) known = s.stories;
    request = { pause: false, stop: false };
    let lastSave = Date.now();
    const { corpus, stories } = await writeStories(tokenizer, teacherSource, settings, workers, known, (i, st, c) => {
      emit({ type: 'story', index: i, text: st.text, tokens: c.tokens(), target: settings.tokens });
      if (Date.now() - lastSave > 1000) {
        lastSave = Date.now();
        saveCorpus({ key, stories: known });
      }
    });
    await saveCorpus({ key, stories });
    return { text: corpus.text(), stories: corpus.stories(), tokens: corpus.tokens(), complete: corpus.complete() };
  },

  // {student: {name, url|bytes} | {config}, teacher, corpus, texts, settings, sample}: a new
  // distillation (replacing any job) on the corpus the teacher wrote (and the visitor's texts).
  async startDistill({ student, teacher, corpus, texts, settings, sample, corpusSettings }) {
    const tokenizer = await ready;
    await holdJobLock();
    stopPool();
    job?.free();
    job = null;
    teacherSource = await teacherFrom(teacher);
    let studentArg = student;
    if (!student.config) {
      const bytes = student.bytes ? new Uint8Array(student.bytes) : (await fetchCached(student.url, () => {})).bytes;
      studentArg = { bytes, name: student.name };
    }
    job = TrainingJob.distill(studentArg, teacherSource, teacher.name, corpus, await asSources(texts), tokenizer, settings);
    // The last job's files: its checkpoint would otherwise be offered with this job's texts.
    await removeFile(BEST_FILE);
    await removeFile('checkpoint.safetensors');
    const t = { name: teacher.name, kind: teacherSource.kind, url: teacher.url ?? null };
    meta = { kind: 'distill', base: { name: student.name ?? 'a fresh student', url: null }, teacher: t, corpusSettings, texts: await saveTexts(texts), settings, sample };
    await writeFile('corpus.txt', corpus);
    await saveTeacher(teacher);
    const info = job.info();
    await persist(null, info);
    return { info, history: job.history() };
  },

  // The teacher's story for a request, beside the student's (a distillation's last card).
  async teacherSample({ request }) {
    return job?.teacher_sample(request) ?? null;
  },

  // {backend: 'auto' | 'cpu' | 'webgpu', workers}: advances until done, paused or stopped.
  async run({ backend = 'auto', workers = 1 }, emit) {
    if (!job) throw new Error('no job to run (start one first)');
    request = { pause: false, stop: false };
    if (!pool && !job.backend().startsWith('WebGPU')) {
      emit({ type: 'note', message: await chooseBackend(backend, workers, emit) });
    }
    for (;;) {
      if (request.stop || request.pause) break;
      const out = await job.advance(1_000_000, SLICE_MS);
      if (out.events.length) emit({ type: 'events', events: out.events });
      const info = job.info();
      // The best weights so far (an f32 model file), kept beside the checkpoint.
      if (out.best) await writeFile(BEST_FILE, out.best);
      if (out.checkpoint) {
        await persist(out.checkpoint, info);
        emit({ type: 'saved', step: info.completed, storage: await storageUsed() });
      }
      if (out.error) {
        if (!out.diverged && info.backend.startsWith('WebGPU')) {
          // A lost device: continue on the CPU from the last state read back, losing no step.
          const from = job.roll_back();
          await startPool(workers);
          emit({ type: 'rollback', step: from, message: `WebGPU failed (${out.error}); continuing on ${job.backend()} from step ${from}.` });
          continue;
        }
        throw new Error(out.diverged ? `${out.error}. The last good weights (step ${info.completed}) are kept.` : out.error);
      }
      if (out.events.some((e) => e.type === 'eval')) await sampleNow(info.completed, emit);
      if (info.done) break;
      // Let pause / stop messages in between slices.
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    const info = job.info();
    let state = info.done ? 'done' : request.stop ? 'stopped' : 'paused';
    if (state !== 'done') {
      await persist(await job.checkpoint(), info);
      emit({ type: 'saved', step: info.completed, storage: await storageUsed() });
    }
    return { state, info, backend: job.backend() };
  },

  async pause() {
    request.pause = true;
    return {};
  },

  async stop() {
    request.stop = true;
    return {};
  },

  // {precision, weights: 'last' | 'best'}: the current weights, or the run's best ones, as a
  // model file (bytes transferred to the page).
  async export({ precision, weights = 'last' }, emit, transfer) {
    if (!job) throw new Error('no fine-tune to export');
    let bytes;
    if (weights === 'best') {
      const file = await readFile(BEST_FILE);
      if (!file) throw new Error('this run has no best weights saved (no evaluation has improved on the start yet)');
      bytes = convert_model(new Uint8Array(await file.arrayBuffer()), precision);
    } else {
      bytes = await job.export(precision);
    }
    transfer.push(bytes.buffer);
    return { bytes, info: job.info() };
  },

  async checkpointBytes(args, emit, transfer) {
    if (!job) throw new Error('no fine-tune');
    const bytes = await job.checkpoint();
    transfer.push(bytes.buffer);
    return { bytes };
  },

  // The page's training speeds, each on the CPU with every worker count in `workers` (the same
  // job — the same shards — every time) and on WebGPU: a fine-tune of `base` on `texts`; the
  // teacher writing `corpusTokens` of stories; a logit distillation of the teacher into a
  // fresh micro student on that corpus. Emits one row per measurement.
  async benchmark({ base, teacher, llama2, texts, workers, steps = 6, gpuSeconds = 30, corpusTokens = 3000 }, emit) {
    const tokenizer = await ready;
    if (job) throw new Error('a training job is loaded: clear it or wait for it to end before benchmarking');
    const shards = Math.max(...workers);
    const timing = { steps: steps + 2, warmup: 1, eval_every: 1_000_000, checkpoint_every: 1_000_000, shards };
    const rows = [];
    const row = (r) => { rows.push(r); emit({ type: 'row', row: r }); };
    const baseBytes = base.bytes ? new Uint8Array(base.bytes) : (await fetchCached(base.url, () => {})).bytes;
    const sources = await asSources(texts);
    await benchJob('fine-tune', () => new TrainingJob(baseBytes, new TextTokens(sources, tokenizer), timing, base.name), workers, steps, gpuSeconds, row);
    const settings = { ...distill_defaults().corpus, tokens: corpusTokens };
    // A llama2.c teacher in the picker (the bench opens stories260K) writes stories too.
    if (llama2) {
      const source = await teacherFrom(llama2);
      for (const k of workers) {
        request = { pause: false, stop: false };
        const t0 = performance.now();
        const written = await writeStories(tokenizer, source, settings, k, {});
        row({ job: 'corpus-llama2', backend: 'cpu', workers: k, tokensPerSecond: written.corpus.tokens() / ((performance.now() - t0) / 1000), stories: written.corpus.stories() });
      }
    }
    teacherSource = await teacherFrom(teacher);
    let corpus = null;
    for (const k of workers) {
      request = { pause: false, stop: false };
      const t0 = performance.now();
      const written = await writeStories(tokenizer, teacherSource, settings, k, {});
      row({ job: 'corpus', backend: 'cpu', workers: k, tokensPerSecond: written.corpus.tokens() / ((performance.now() - t0) / 1000), stories: written.corpus.stories() });
      corpus = written.corpus.text();
    }
    const micro = distill_defaults().students.find((p) => p.family === 'itera' && p.preset === 'micro');
    const student = { family: micro.family, config: micro.config };
    await benchJob('distill', () => TrainingJob.distill(student, teacherSource, teacher.name, corpus, [], tokenizer, { ...distill_defaults().settings, ...timing }),
      workers, steps, gpuSeconds, row);
    teacherSource = null;
    return rows;
  },

  async history() {
    return job ? { info: job.info(), history: job.history() } : null;
  },

  async storage() {
    return storageUsed();
  },

  // Forgets the saved job (the one in memory too), and lets another tab have one.
  async clear() {
    if (await lockedElsewhere()) throw new Error(IN_USE);
    stopPool();
    job?.free();
    job = null;
    meta = null;
    try {
      await (await navigator.storage.getDirectory()).removeEntry(SAVE_DIR, { recursive: true });
    } catch { /* nothing saved */ }
    dropJobLock();
    return storageUsed();
  },
};

serve(ops);
