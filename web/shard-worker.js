// A CPU worker of the training pool: holds one ShardWorker (itera-web) and, per step, computes
// the forward, loss and backward of the shards it is sent from the weights it is sent; the
// gradients go back as transferred Float32Arrays. The training worker averages every worker's
// shards in shard order, so the step does not depend on how many of these there are.
//
// Protocol (web/rpc.js): {id, op: 'setup', setup} then {id, op: 'gradients', weights, shards};
// answers {id, type: 'result', result} or {id, type: 'error', message}.

import init, { ShardWorker } from '/pkg/itera_web.js';

const ready = init({ module_or_path: '/pkg/itera_web_bg.wasm' });
let shard = null;

const ops = {
  async setup({ setup }) {
    await ready;
    shard?.free();
    shard = new ShardWorker(setup);
    return {};
  },

  // → [{loss, grads}] for `shards` in order.
  async gradients({ weights, shards }, transfer) {
    if (!shard) throw new Error('the CPU worker was not set up');
    return shards.map((tokens) => {
      const r = shard.gradients(weights, tokens);
      transfer.push(r.grads.buffer);
      return r;
    });
  },
};

self.onmessage = async ({ data }) => {
  const { id, op, ...args } = data;
  try {
    const transfer = [];
    const result = await ops[op](args, transfer);
    self.postMessage({ id, type: 'result', result }, transfer);
  } catch (e) {
    self.postMessage({ id, type: 'error', message: e instanceof Error ? e.message : String(e) });
  }
};
