// Calls between the page and its workers, and what happens when a worker dies.
//
// Page side: `connect(spawn, name, onRestart)` starts `spawn()` and returns {call, rpc}.
// `call(op, args, onEvent, transfer)` posts {id, op, ...args} and returns {id, promise}; the
// worker's events of that id go to `onEvent`, its one 'result' or 'error' settles the promise.
// A worker that dies — an uncaught error, a message that cannot be read, or a WebAssembly trap
// it reports as 'crashed' — rejects every call still waiting with the reason, is replaced by a
// fresh `spawn()`, and `onRestart(message)` runs so the page can reload what the old one held.
// Without `onRestart` (a training job's CPU workers, whose state a fresh one would lack) a dead
// worker is not replaced: later calls are refused with the reason, and the job makes a new
// pool. A worker that keeps dying (MAX_RESTARTS within RESTART_WINDOW_MS) is given up.
//
// Worker side: `serve(ops)` answers each call with `ops[op](args, emit, transfer, id)`.

const MAX_RESTARTS = 3;
const RESTART_WINDOW_MS = 60_000;

export function connect(spawn, name, onRestart = null) {
  let nextId = 1;
  let worker = null;
  let dead = null; // why calls are refused, once the worker is given up
  const restarts = [];
  const pending = new Map();
  const died = (reason) => {
    const now = performance.now();
    while (restarts.length && now - restarts[0] > RESTART_WINDOW_MS) restarts.shift();
    const again = onRestart !== null && restarts.length < MAX_RESTARTS;
    const message = again ? `the ${name} stopped (${reason}); a fresh one was started`
      : onRestart ? `the ${name} keeps stopping (${reason}); reload the page`
        : `the ${name} stopped (${reason})`;
    for (const p of pending.values()) p.reject(new Error(message));
    pending.clear();
    worker.terminate();
    if (!again) { dead = message; return; }
    restarts.push(now);
    start();
    onRestart?.(message);
  };
  const start = () => {
    worker = spawn();
    worker.onmessage = ({ data }) => {
      if (data.type === 'crashed') { died(data.message); return; }
      const p = pending.get(data.id);
      if (!p) return;
      if (data.type === 'result') { pending.delete(data.id); p.resolve(data.result); }
      else if (data.type === 'error') { pending.delete(data.id); p.reject(new Error(data.message)); }
      else p.onEvent?.(data);
    };
    worker.onerror = (e) => { e.preventDefault(); died(e.message || 'a crash in the worker'); };
    worker.onmessageerror = () => died('it sent a message that could not be read');
  };
  start();
  const call = (op, args = {}, onEvent = null, transfer = []) => {
    const id = nextId++;
    if (dead) return { id, promise: Promise.reject(new Error(dead)) };
    const promise = new Promise((resolve, reject) => pending.set(id, { resolve, reject, onEvent }));
    worker.postMessage({ id, op, ...args }, transfer);
    return { id, promise };
  };
  const rpc = (op, args, onEvent) => call(op, args, onEvent).promise;
  const terminate = () => { worker.terminate(); dead = `the ${name} was closed`; };
  return { call, rpc, terminate };
}

// Answers the page's calls in a worker. After a WebAssembly trap the module's memory is in an
// unknown state, so the worker reports 'crashed' and closes instead of answering again.
export function serve(ops) {
  self.onmessage = async ({ data }) => {
    const { id, op, ...args } = data;
    const emit = (msg) => self.postMessage({ id, ...msg });
    try {
      if (!(op in ops)) throw new Error(`unknown operation ${op}`);
      const transfer = [];
      const result = await ops[op](args, emit, transfer, id);
      self.postMessage({ id, type: 'result', result }, transfer);
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      if (e instanceof WebAssembly.RuntimeError) {
        self.postMessage({ type: 'crashed', message: `a WebAssembly trap: ${message}` });
        self.close();
        return;
      }
      emit({ type: 'error', message });
    }
  };
}
