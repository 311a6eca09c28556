// The model worker: every piece of model work runs here so the page never freezes.
//
// Protocol: the page posts {id, op, ...args}; the worker answers with messages carrying the
// same id: zero or more {type: 'progress' | 'tokens'} events, then one {type: 'result'} or
// {type: 'error', message}. A {op: 'cancel', target} stops a running generation between steps.

import init, { Model, compare, generation_defaults, gpu_init } from './pkg/itera_web.js';
import { fetchCached } from './fetch.js';
import { serve } from './rpc.js';

const models = new Map(); // key → { model, info }
const cancelled = new Set();
let ready = null;
let gpuReady = null;
let generation = null; // the core's request defaults and bounds, once the wasm is up // Promise<adapter description>, rejected without a usable WebGPU device
const gpuSetup = {}; // how long WebGPU took to set up: device + pipelines, weight upload

// Stop requests. With cross-origin isolation (the server sends COOP/COEP) the page flips a
// shared flag that the loop reads between steps; otherwise a `cancel` message is the only
// way in, and the loop must leave the event loop idle now and then for it to be delivered
// (a MessageChannel ping alone can starve the worker's own message queue).
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function initWasm() {
  const t0 = performance.now();
  await init({ module_or_path: new URL('./pkg/itera_web_bg.wasm', import.meta.url) });
  generation = generation_defaults();
  return { wasmMs: performance.now() - t0, generation };
}

const ops = {
  async init() {
    return ready;
  },

  // {key, url | bytes, tokenizerUrl}: loads (or reuses) a model of either family under `key`;
  // with {llama2: {checkpoint, tokenizer}} a llama2.c checkpoint and its tokenizer.bin instead.
  // Downloads while the wasm is still compiling; parses once both are there. The result
  // carries the model's description and its cost per token at `positions`.
  async load({ key, url, bytes, tokenizerUrl, llama2, positions = [] }, emit) {
    if (models.has(key)) return { ...models.get(key).loadInfo, reused: true };
    const costs = (model) => positions.map((position) => ({ position, ...model.token_cost(position) }));
    if (llama2) {
      await ready;
      const t1 = performance.now();
      const model = Model.llama2(new Uint8Array(llama2.checkpoint), new Uint8Array(llama2.tokenizer));
      const loadInfo = { info: model.info(), costs: costs(model), bytes: llama2.checkpoint.byteLength, fromCache: false, downloadMs: 0, parseMs: performance.now() - t1 };
      models.set(key, { model, loadInfo });
      return loadInfo;
    }
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
    const info = model.info();
    const loadInfo = { info, costs: costs(model), bytes: bytes.length, fromCache, downloadMs, parseMs: t2 - t1 };
    models.set(key, { model, loadInfo });
    return loadInfo;
  },

  async unload({ key }) {
    models.get(key)?.model.free();
    models.delete(key);
    return {};
  },

  // Opens WebGPU (once, and again after a failure); resolves to the adapter description or
  // rejects with the reason.
  async gpuInit() {
    await ready;
    if (!gpuReady) {
      const t0 = performance.now();
      gpuReady = gpu_init();
      gpuReady.then(() => { gpuSetup.deviceAndShadersMs = performance.now() - t0; }, () => { gpuReady = null; });
    }
    return { adapter: await gpuReady };
  },

  // Streams tokens on `backend` ('cpu' | 'webgpu'); calls are sized to ~20 ms of work so the
  // stream stays smooth and Stop is quick. If WebGPU fails (device lost, GPU error), the
  // worker says so with a 'fallback' event and runs the same request on the CPU.
  async generate({ key, request, stopFlag, backend = 'cpu', timeLimitMs = Infinity }, emit, transfer, id) {
    const t0 = performance.now();
    const stopped = () => cancelled.has(id) || (stopFlag && Atomics.load(stopFlag, 0) !== 0)
      || performance.now() - t0 > timeLimitMs;
    const e = entry(key);
    if (backend === 'webgpu') {
      try {
        await enableGpu(e);
        return await stream(gpuSteps(e.model), request, stopped, emit, id, !stopFlag);
      } catch (err) {
        emit({ type: 'fallback', message: err instanceof Error ? err.message : String(err) });
        // The device may be lost: the next WebGPU use asks for a fresh one (gpu_init replaces
        // a device that fails its check) and uploads the weights to it again.
        e.gpuEnabled = false;
        gpuReady = null;
      }
    }
    return stream(cpuSteps(e.model), request, stopped, emit, id, !stopFlag);
  },

  // Decode speed of `key` on both backends, greedy, after a short warm-up: what "Auto" uses.
  // Time-boxed per backend (a slow software adapter must not hold the page for minutes);
  // calls grow to ~50 ms of work so a fast GPU is measured with several tokens per submission.
  async calibrate({ key, tokens = 32, budgetMs = 800 }) {
    const e = entry(key);
    const request = { prompt: 'Once upon a time', max_tokens: tokens + 8, temperature: 0, stop_at_end_of_text: false };
    const speed = async (steps) => {
      const s0 = performance.now();
      await steps.start(request);
      await steps.step(2); // warm-up: pipelines, first dispatches, caches
      steps.firstTokensMs = performance.now() - s0;
      const t0 = performance.now();
      let n = 0;
      let k = 1;
      while (n < tokens && performance.now() - t0 < budgetMs) {
        const s0 = performance.now();
        const out = await steps.step(k);
        n += out.tokens.length;
        if (out.done) break;
        const perToken = (performance.now() - s0) / Math.max(1, out.tokens.length);
        k = Math.max(1, Math.min(16, Math.round(50 / perToken)));
      }
      return n / ((performance.now() - t0) / 1000);
    };
    const cpu = await speed(cpuSteps(e.model));
    await enableGpu(e);
    const onGpu = gpuSteps(e.model);
    const gpu = await speed(onGpu);
    const setup = [
      { name: 'device + shader compile', ms: gpuSetup.deviceAndShadersMs ?? 0 },
      { name: 'weight upload', ms: e.gpuUploadMs },
      { name: 'prompt + first tokens', ms: onGpu.firstTokensMs },
    ];
    return { cpu, gpu, adapter: await gpuReady, setup };
  },

  // Decode speed and memory against position: `key` writes `length` tokens greedily on the
  // CPU from a short prompt, timed in `points` equal segments; each point is the segment's
  // tokens/s at its last position, with the FLOPs and decode-state bytes there. Events
  // `{type: 'progress', produced, length}` between segments.
  async positionRun({ key, length, points = 32 }, emit, transfer, id) {
    const { model } = entry(key);
    const request = { prompt: 'Once upon a time', max_tokens: length, temperature: 0, stop_at_end_of_text: false };
    const promptTokens = model.start(request);
    const segment = Math.max(1, Math.ceil(length / points));
    const out = [];
    let produced = 0;
    let lastIdle = performance.now();
    while (produced < length && !cancelled.has(id)) {
      const t0 = performance.now();
      const step = model.step(Math.min(segment, length - produced));
      const ms = performance.now() - t0;
      if (step.tokens.length === 0) break;
      produced += step.tokens.length;
      const position = promptTokens + produced;
      out.push({ position, tokensPerSecond: step.tokens.length / (ms / 1000), ...model.token_cost(position) });
      emit({ type: 'progress', produced, length });
      if (step.done) break;
      if (performance.now() - lastIdle > 100) {
        await sleep(0); // a cancel message can arrive
        lastIdle = performance.now();
      }
    }
    cancelled.delete(id);
    return { points: out, promptTokens, produced };
  },

  // FLOPs of one decode step and the decode state held, at each of `positions`.
  async cost({ key, positions }) {
    const { model } = entry(key);
    return positions.map((position) => ({ position, ...model.token_cost(position) }));
  },

  async cancel({ target }) {
    cancelled.add(target);
    return {};
  },

  async eval({ key, text }) {
    const t0 = performance.now();
    const r = entry(key).model.eval(text);
    return { ...r, ms: performance.now() - t0 };
  },

  // KL, top-1 and routing agreement of `other` vs `reference` on the reference's tokens.
  async compare({ reference, other, sequence, from }) {
    const r = entry(reference).model;
    const o = entry(other).model;
    return compare(r, o, new Uint32Array(sequence), from);
  },
};

// The two backends behind one shape: start(request) → prompt tokens, step(n) → output.
const cpuSteps = (model) => ({
  start: async (request) => model.start(request),
  step: async (n) => model.step(n),
  sequence: () => ({ sequence: Array.from(model.sequence()), promptLen: model.prompt_len() }),
  maxStep: generation.max_tokens_per_step,
});
const gpuSteps = (model) => ({
  start: (request) => model.start_gpu(request),
  step: (n) => model.step_gpu(n),
  sequence: () => ({ sequence: Array.from(model.gpu_sequence()), promptLen: model.gpu_prompt_len() }),
  maxStep: generation.max_tokens_per_step,
});

async function enableGpu(e) {
  if (!e.loadInfo.info.webgpu) throw new Error('a llama2.c checkpoint decodes on the CPU only (its tokenizer is not the page\'s)');
  await ops.gpuInit();
  if (!e.gpuEnabled) {
    const t0 = performance.now();
    e.model.enable_gpu();
    e.gpuUploadMs = performance.now() - t0;
    e.gpuEnabled = true;
  }
}

async function stream(steps, request, stopped, emit, id, yieldNow) {
  const t0 = performance.now();
  const promptTokens = await steps.start(request);
  let firstTokenMs = null;
  let firstBatch = 0; // tokens that arrived with the first one (not part of the decode rate)
  let produced = 0;
  let perToken = 5;
  let lastIdle = performance.now();
  while (!stopped()) {
    const n = Math.max(1, Math.min(steps.maxStep, Math.round(20 / perToken)));
    const s0 = performance.now();
    const out = await steps.step(n);
    const now = performance.now();
    if (out.tokens.length > 0) perToken = (now - s0) / out.tokens.length;
    if (firstTokenMs === null && out.tokens.length > 0) {
      firstTokenMs = now - t0;
      firstBatch = out.tokens.length;
    }
    produced += out.tokens.length;
    emit({ type: 'tokens', ...out, elapsedMs: now - t0, produced });
    if (out.done) break;
    if (yieldNow && now - lastIdle > 100) {
      await sleep(0);
      lastIdle = performance.now();
    }
  }
  const totalMs = performance.now() - t0;
  const wasStopped = stopped();
  cancelled.delete(id);
  // Decode rate: tokens after the first call over the time after it; a run that ended within
  // its first call is rated over its whole time (prompt included).
  const decodeMs = totalMs - (firstTokenMs ?? totalMs);
  const decoded = produced - firstBatch;
  return {
    promptTokens,
    produced,
    stopped: wasStopped,
    firstTokenMs,
    totalMs,
    tokensPerSecond: decoded > 0 && decodeMs > 0 ? decoded / (decodeMs / 1000) : produced > 0 ? produced / (totalMs / 1000) : null,
    ...steps.sequence(),
  };
}

function entry(key) {
  const e = models.get(key);
  if (!e) throw new Error(`model ${key} is not loaded`);
  return e;
}

ready = initWasm();

serve(ops);
