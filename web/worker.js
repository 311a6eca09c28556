// The model worker: every piece of model work runs here so the page never freezes.
//
// Protocol: the page posts {id, op, ...args}; the worker answers with messages carrying the
// same id: zero or more {type: 'progress' | 'tokens'} events, then one {type: 'result'} or
// {type: 'error', message}. A {op: 'cancel', target} stops a running generation between steps.

import init, { Model, compare } from '/pkg/itera_web.js';

const CACHE_NAME = 'itera-weights-v1';
const models = new Map(); // key → { model, info }
const cancelled = new Set();
let ready = null;

// Stop requests. With cross-origin isolation (the server sends COOP/COEP) the page flips a
// shared flag that the loop reads between steps; otherwise a `cancel` message is the only
// way in, and the loop must leave the event loop idle now and then for it to be delivered
// (a MessageChannel ping alone can starve the worker's own message queue).
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function initWasm() {
  const t0 = performance.now();
  await init({ module_or_path: '/pkg/itera_web_bg.wasm' });
  return { wasmMs: performance.now() - t0 };
}

// Fetches a URL through the Cache API (second visits load instantly), reporting progress.
async function fetchCached(url, onProgress) {
  const cache = 'caches' in self ? await caches.open(CACHE_NAME) : null;
  const hit = cache && (await cache.match(url));
  if (hit) {
    const bytes = new Uint8Array(await hit.arrayBuffer());
    onProgress(bytes.length, bytes.length);
    return { bytes, fromCache: true };
  }
  const response = await fetch(url);
  if (!response.ok) throw new Error(`download of ${url} failed: HTTP ${response.status}`);
  // With gzip, Content-Length is the compressed size; the server also sends the decoded one.
  const total = Number(response.headers.get('X-Decoded-Length') ?? response.headers.get('Content-Length')) || 0;
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    onProgress(received, total);
  }
  const bytes = new Uint8Array(received);
  let offset = 0;
  for (const c of chunks) { bytes.set(c, offset); offset += c.length; }
  if (cache) {
    await cache.put(url, new Response(bytes, { headers: { 'Content-Type': 'application/octet-stream' } }));
  }
  return { bytes, fromCache: false };
}

const ops = {
  async init() {
    return ready;
  },

  // {key, url | bytes, tokenizerUrl}: loads (or reuses) a model under `key`.
  // Downloads while the wasm is still compiling; parses once both are there.
  async load({ key, url, bytes, tokenizerUrl }, emit) {
    if (models.has(key)) return { ...models.get(key).loadInfo, reused: true };
    const t0 = performance.now();
    let fromCache = false;
    if (!bytes) {
      const got = await fetchCached(url, (received, total) => emit({ type: 'progress', received, total }));
      bytes = got.bytes;
      fromCache = got.fromCache;
    } else {
      bytes = new Uint8Array(bytes);
    }
    const tok = await fetchCached(tokenizerUrl, () => {});
    const downloadMs = performance.now() - t0;
    await ready;
    const t1 = performance.now();
    const model = new Model(bytes, tok.bytes);
    const t2 = performance.now();
    const info = JSON.parse(model.info());
    const loadInfo = { info, bytes: bytes.length, fromCache, downloadMs, parseMs: t2 - t1 };
    models.set(key, { model, loadInfo });
    return loadInfo;
  },

  async unload({ key }) {
    models.get(key)?.model.free();
    models.delete(key);
    return {};
  },

  // Streams tokens; steps are sized to ~20 ms so the stream stays smooth and cancel is quick.
  async generate({ key, request, stopFlag }, emit, id) {
    const stopped = () => cancelled.has(id) || (stopFlag && Atomics.load(stopFlag, 0) !== 0);
    const { model } = entry(key);
    const t0 = performance.now();
    const promptTokens = model.start(JSON.stringify(request));
    let firstTokenMs = null;
    let produced = 0;
    let perToken = 5;
    let lastIdle = performance.now();
    while (!stopped()) {
      const n = Math.max(1, Math.min(64, Math.round(20 / perToken)));
      const s0 = performance.now();
      const out = JSON.parse(model.step(n));
      const now = performance.now();
      if (out.tokens.length > 0) perToken = (now - s0) / out.tokens.length;
      if (firstTokenMs === null && out.tokens.length > 0) firstTokenMs = now - t0;
      produced += out.tokens.length;
      emit({ type: 'tokens', ...out, elapsedMs: now - t0, produced });
      if (out.done) break;
      if (!stopFlag && now - lastIdle > 100) {
        await sleep(0);
        lastIdle = performance.now();
      }
    }
    const totalMs = performance.now() - t0;
    const wasStopped = stopped();
    cancelled.delete(id);
    const decodeMs = totalMs - (firstTokenMs ?? totalMs);
    return {
      promptTokens,
      produced,
      stopped: wasStopped,
      firstTokenMs,
      totalMs,
      tokensPerSecond: produced > 1 && decodeMs > 0 ? (produced - 1) / (decodeMs / 1000) : null,
      sequence: Array.from(model.sequence()),
      promptLen: model.prompt_len(),
    };
  },

  async cancel({ target }) {
    cancelled.add(target);
    return {};
  },

  async eval({ key, text }) {
    const t0 = performance.now();
    const r = JSON.parse(entry(key).model.eval(text));
    return { ...r, ms: performance.now() - t0 };
  },

  // KL, top-1 and routing agreement of `other` vs `reference` on the reference's tokens.
  async compare({ reference, other, sequence, from }) {
    const r = entry(reference).model;
    const o = entry(other).model;
    return JSON.parse(compare(r, o, new Uint32Array(sequence), from));
  },
};

function entry(key) {
  const e = models.get(key);
  if (!e) throw new Error(`model ${key} is not loaded`);
  return e;
}

ready = initWasm();

self.onmessage = async (event) => {
  const { id, op, ...args } = event.data;
  const emit = (msg) => self.postMessage({ id, ...msg });
  try {
    if (!(op in ops)) throw new Error(`unknown operation ${op}`);
    const result = await ops[op](args, emit, id);
    emit({ type: 'result', result });
  } catch (e) {
    emit({ type: 'error', message: e instanceof Error ? e.message : String(e) });
  }
};
