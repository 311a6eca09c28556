// The training worker (train-worker.js), shared by the Fine-tune and Distill tabs — one job at
// a time — made on first use: the page's first story loads faster without it.

import { connect } from './rpc.js';

let client = null;

// Resolves to {call, rpc, defaults}: `defaults` = the core's settings, bounds and core count.
export function trainer() {
  client ??= (async () => {
    // A training worker that dies is replaced; its job is gone with it, so the tabs hear of it
    // and offer the job saved in this browser (its last checkpoint) to resume.
    const c = connect(() => new Worker(new URL('./train-worker.js', import.meta.url), { type: 'module' }), 'training worker', (message) => {
      document.dispatchEvent(new CustomEvent('trainer-restarted', { detail: message }));
    });
    return { ...c, defaults: await c.rpc('defaults') };
  })();
  return client;
}

export const MAX_WORKERS = 8;

// The CPU workers a job of `batch` sequences gets on this device.
export const defaultWorkers = (cores, batch) => Math.max(1, Math.min(cores, MAX_WORKERS, batch));

// Fills every [data-setting] input under `form` from `values`, with the bounds of `limits`,
// and returns the bounds line for the tab.
export function fillSettings(form, values, limits) {
  const byName = new Map(limits.settings.map((l) => [l.name, l]));
  for (const input of form.querySelectorAll('[data-setting]')) {
    const name = input.dataset.setting;
    input.value = values[name] ?? values.distill?.[name] ?? '';
    const l = byName.get(name);
    if (l) { input.min = l.min; input.max = l.max; }
  }
}

// The settings of `form` over `defaults`; an unreadable number goes through as text, so the job
// names the setting.
export function readSettings(form, defaults) {
  const s = { ...defaults };
  for (const input of form.querySelectorAll('[data-setting]')) {
    const v = input.value.trim();
    const value = v !== '' && Number.isFinite(Number(v)) ? Number(v) : v;
    if (input.dataset.setting === 'beta' || input.dataset.setting === 'temperature') {
      s.distill = { ...(s.distill ?? {}), [input.dataset.setting]: value };
    } else {
      s[input.dataset.setting] = value;
    }
  }
  return s;
}
