// A CPU worker of the training pool: holds one ShardWorker (itera-web) and, per step, computes
// the forward, loss and backward of the shards it is sent from the weights it is sent (and
// the teacher's forward when distilling); the gradients go back as transferred Float32Arrays.
// The training worker averages every worker's shards in shard order, so the step does not
// depend on how many of these there are. For a distillation's corpus it is a story writer
// instead: the teacher writes story i from its own seed.
//
// Protocol (web/rpc.js): {id, op: 'setup', setup, teacher} then {id, op: 'gradients', weights,
// shards}; or {id, op: 'writer', …} then {id, op: 'story', i}; answers {id, type: 'result',
// result} or {id, type: 'error', message}.

import init, { ShardWorker, StoryWriter } from './pkg/itera_web.js';
import { serve } from './rpc.js';

const ready = init({ module_or_path: new URL('./pkg/itera_web_bg.wasm', import.meta.url) });
let shard = null;
let writer = null;

const ops = {
  // `teacher`: the distillation teacher's weight file when the job distils logits.
  async setup({ setup, teacher }) {
    await ready;
    shard?.free();
    shard = new ShardWorker(setup, teacher ?? null);
    return {};
  },

  // A story writer of a corpus: the teacher, the shipped tokenizer, the corpus settings.
  async writer({ teacher, tokenizer, settings }) {
    await ready;
    writer?.free();
    writer = new StoryWriter(teacher, tokenizer, settings);
    return {};
  },

  // → {text, tokens} of story `i`.
  async story({ i }) {
    if (!writer) throw new Error('the story writer was not set up');
    return writer.story(i);
  },

  // → [{loss, grads}] for `shards` in order.
  async gradients({ weights, shards }, emit, transfer) {
    if (!shard) throw new Error('the CPU worker was not set up');
    return shards.map((tokens) => {
      const r = shard.gradients(weights, tokens);
      transfer.push(r.grads.buffer);
      return r;
    });
  },
};

serve(ops);
