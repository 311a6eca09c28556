// End-to-end test of a model trained by the PyTorch twin (`torchrun -m itera_torch.train`), as a
// researcher brings it back: opened from disk with "Open local…" in headless Chromium without
// WebGPU, it loads, shows its shape, and its greedy story is the one `xtask generate` writes.
// Usage: node tests/e2e/torch-model.mjs URL OUT_DIR XTASK MODEL   (screenshot in OUT_DIR)

import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { basename } from 'node:path';
import assert from 'node:assert/strict';
import { BASE_FLAGS, NO_WEBGPU_FLAGS, open, step } from './browser.mjs';

const [url, outDir, xtask, model] = process.argv.slice(2);
if (!url || !outDir || !xtask || !model) throw new Error('usage: torch-model.mjs URL OUT_DIR XTASK MODEL');
mkdirSync(outDir, { recursive: true });

const PROMPT = 'Once upon a time';
const TOKENS = 24;
const { browser, page, problems } = await open([...BASE_FLAGS, ...NO_WEBGPU_FLAGS], 'A model trained with PyTorch');
try {
  await page.goto(url, { waitUntil: 'commit', timeout: 120_000 });
  await page.waitForFunction(() => document.body?.dataset.backendSettled, null, { timeout: 180_000 });
  await page.setInputFiles('#model-file', model);
  await page.waitForFunction((v) => document.getElementById('model-select').value === v, `local:${basename(model)}`, { timeout: 60_000 });
  const meta = await page.textContent('#model-meta');
  assert.match(meta, /experts/, meta);
  await page.fill('#prompt', PROMPT);
  await page.fill('#temperature', '0');
  await page.fill('#max-tokens', String(TOKENS));
  await page.click('#generate');
  await page.waitForFunction(() => document.getElementById('output').getAttribute('aria-busy') === 'false'
    && !document.getElementById('generate').disabled && Number(document.getElementById('stat-count').textContent) > 0);
  const story = await page.textContent('#output .generated');
  const cli = JSON.parse(execFileSync(xtask, ['generate', '--model', model, '--prompt', PROMPT, '--max-tokens', String(TOKENS),
    '--temperature', '0', '--seed', '1', '--json'], { encoding: 'utf8' }));
  assert.equal(story, cli.text, 'the page and the CLI write the same greedy story');
  await page.screenshot({ path: `${outDir}/torch-model.png` });
  step(`the PyTorch-trained model loads ("${meta.trim().slice(0, 80)}") and writes the CLI's greedy story`);
  assert.deepEqual(problems, []);
} finally {
  await browser.close();
}
