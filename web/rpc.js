// Calls into a worker: `call(op, args, onEvent, transfer)` posts {id, op, ...args} and returns
// {id, promise}; the worker's events of that id go to `onEvent`, its one 'result' or 'error'
// settles the promise. A worker that dies rejects every call still waiting, with the reason.

export function connect(worker, name) {
  let nextId = 1;
  const pending = new Map();
  const failAll = (message) => {
    for (const p of pending.values()) p.reject(new Error(message));
    pending.clear();
  };
  worker.onmessage = ({ data }) => {
    const p = pending.get(data.id);
    if (!p) return;
    if (data.type === 'result') { pending.delete(data.id); p.resolve(data.result); }
    else if (data.type === 'error') { pending.delete(data.id); p.reject(new Error(data.message)); }
    else p.onEvent?.(data);
  };
  worker.onerror = (e) => failAll(`the ${name} stopped (${e.message || 'a crash in the worker'})`);
  worker.onmessageerror = () => failAll(`the ${name} sent a message that could not be read`);
  const call = (op, args = {}, onEvent = null, transfer = []) => {
    const id = nextId++;
    const promise = new Promise((resolve, reject) => pending.set(id, { resolve, reject, onEvent }));
    worker.postMessage({ id, op, ...args }, transfer);
    return { id, promise };
  };
  const rpc = (op, args, onEvent) => call(op, args, onEvent).promise;
  return { call, rpc };
}
