// End-to-end test of the Fine-tune tab as a person uses it, in headless Chromium: the sample
// stories, Start, loss points that appear and fall, Pause and Resume, a reload in the middle
// of the job and Resume from the saved checkpoint, the finished model in the picker (Use this
// model, then a story that knows the sample's character), Download .safetensors (loaded again
// by `xtask eval`), a short run pinned to WebGPU; and without WebGPU the same job on the CPU
// workers, plus the messages for a text that is not UTF-8 and for no text at all.
// Usage: node tests/e2e/fine-tune.mjs URL OUT_DIR XTASK   (screenshots in OUT_DIR)

import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import assert from 'node:assert/strict';
import { BASE_FLAGS, NO_WEBGPU_FLAGS, WEBGPU_FLAGS, open, step } from './browser.mjs';

const [url, outDir, xtask] = process.argv.slice(2);
if (!url || !outDir || !xtask) throw new Error('usage: fine-tune.mjs URL OUT_DIR XTASK');
mkdirSync(outDir, { recursive: true });
const results = {};
// Greedy, so the same weights always write the same words: the base model names the
// moon-otter something else, the fine-tuned one has learnt her name.
const NAME_PROMPT = 'Once upon a time, there was a little moon-otter named';

const dataset = (page, key) => page.evaluate((k) => document.body.dataset[k], key);
const waitFor = (page, fn, arg, timeout = 120_000) => page.waitForFunction(fn, arg, { timeout });
const stateIs = (page, states, timeout) => waitFor(page, (s) => s.includes(document.body.dataset.fineTuneState), states, timeout);

async function openTab(page) {
  await page.goto(url, { waitUntil: 'commit', timeout: 120_000 });
  await waitFor(page, () => document.body?.dataset.backendSettled, null, 180_000);
  await page.click('#tab-finetune');
  await waitFor(page, () => document.getElementById('ft-bounds').textContent.startsWith('Bounds'));
}

async function useSample(page) {
  await page.click('#ft-sample');
  await waitFor(page, () => /held out/.test(document.getElementById('ft-text-info').textContent));
  return page.textContent('#ft-text-info');
}

async function greedyStory(page, prompt) {
  await page.fill('#prompt', prompt);
  await page.fill('#temperature', '0');
  await page.fill('#max-tokens', '8');
  await page.click('#generate');
  await waitFor(page, () => document.getElementById('output').getAttribute('aria-busy') === 'false'
    && !document.getElementById('generate').disabled);
  return page.textContent('#output .generated');
}

const lossCurve = async (page) => JSON.parse(await page.getAttribute('#ft-loss-chart', 'data-loss'));
const mean = (v) => v.reduce((a, b) => a + b, 0) / v.length;

// After a job: the done card, Use this model, a greedy story with the sample's character.
async function useTunedModel(page, label) {
  await waitFor(page, () => document.body.dataset.fineTuneCompared);
  const family = await dataset(page, 'fineTuneFamily');
  const options = await page.$$eval('#model-select option', (o) => o.map((x) => x.value));
  for (const p of ['f32', 'f16', 'q8', 'q4']) assert.ok(options.includes(`${family}-${p}`), `${family}-${p} is in the picker`);
  await page.click('#ft-use');
  await waitFor(page, (f) => document.getElementById('model-select').value === `${f}-q8`
    && document.getElementById('tab-generate').getAttribute('aria-selected') === 'true', family);
  const story = await greedyStory(page, NAME_PROMPT);
  assert.match(story, /Zuzu/, `the fine-tuned model (${label}) knows the sample's character: ${JSON.stringify(story)}`);
  return { family, story };
}

{
  const { browser, page, problems } = await open([...BASE_FLAGS, ...WEBGPU_FLAGS], 'Fine-tune, WebGPU available');
  await openTab(page);
  const info = await useSample(page);
  step(`sample stories: ${info}`);

  // Before: the base model does not know the character.
  await page.click('#tab-generate');
  const before = await greedyStory(page, NAME_PROMPT);
  assert.doesNotMatch(before, /Zuzu/, before);
  await page.click('#tab-finetune');

  await page.click('#ft-start');
  await waitFor(page, () => Number(document.getElementById('ft-loss-chart').dataset.points) >= 3);
  const note = await page.textContent('#ft-note');
  assert.match(note, /Auto timed one step: \d CPU workers? \d+ ms, WebGPU/, note);
  step(`backend: ${note}`);

  // Pause: the steps stop; Resume: they go on.
  await page.click('#ft-pause');
  await stateIs(page, ['paused']);
  const pausedAt = Number(await dataset(page, 'fineTuneStep'));
  await page.waitForTimeout(700);
  assert.equal(Number(await dataset(page, 'fineTuneStep')), pausedAt, 'no step while paused');
  assert.match(await page.textContent('#ft-status'), /^Paused: step \d+ of 60/);
  await page.click('#ft-resume');
  await waitFor(page, (k) => Number(document.body.dataset.fineTuneStep) > k, pausedAt);
  step(`paused at step ${pausedAt}, resumed`);

  // Reload mid-job: the checkpoint saved in the browser (at the pause, or every 20 steps) resumes.
  await page.reload({ waitUntil: 'commit' });
  await waitFor(page, () => document.body?.dataset.backendSettled, null, 180_000);
  await page.click('#tab-finetune');
  await page.waitForSelector('#ft-saved:not([hidden])');
  const saved = Number(await dataset(page, 'fineTuneSaved'));
  assert.ok(saved >= pausedAt, `the saved job is at step ${saved} ≥ ${pausedAt}`);
  step(`after a reload: ${await page.textContent('#ft-saved-text')}`);
  await page.click('#ft-restore');
  await waitFor(page, (k) => Number(document.getElementById('ft-loss-chart').dataset.points) >= k, saved);
  await stateIs(page, ['done'], 300_000);
  const loss = await lossCurve(page);
  assert.equal(loss.length, 60, 'every step is on the chart, those before the reload included');
  assert.ok(mean(loss.slice(-5)) < 0.8 * mean(loss.slice(0, 5)), `the loss falls: ${loss.map((x) => x.toFixed(2))}`);
  const evals = JSON.parse(await page.getAttribute('#ft-bpb-chart', 'data-evals'));
  const yours = evals['your text (held out)'];
  assert.ok(yours.length >= 7 && yours[yours.length - 1][1] < yours[0][1] - 0.2, `held-out BPB falls: ${JSON.stringify(yours)}`);
  await waitFor(page, () => document.body.dataset.fineTuneCompared);
  const doneText = await page.textContent('#ft-done-text');
  assert.match(doneText, /^Fine-tune finished: 60 steps/);
  const after = await page.textContent('#ft-after');
  assert.ok(after.trim().length > 20 && (await page.textContent('#ft-before')).trim().length > 20, 'before / after stories');
  await page.screenshot({ path: `${outDir}/fine-tune.png`, fullPage: true });
  step(`done: ${doneText}`);

  // Download .safetensors: a file `xtask eval` loads with the shipped tokenizer.
  await page.selectOption('#ft-precision', 'q8');
  const download = page.waitForEvent('download');
  await page.click('#ft-download');
  const file = `${outDir}/fine-tuned-q8.safetensors`;
  await (await download).saveAs(file);
  const header = readFileSync(file);
  const meta = JSON.parse(header.subarray(8, 8 + Number(header.readBigUInt64LE(0))).toString()).__metadata__;
  assert.equal(meta.precision, 'q8');
  const evalOut = JSON.parse(execFileSync(xtask, ['eval', '--model', file, '--tokenizer', 'weights/tokenizer.json',
    '--text', 'web/eval-stories.txt', '--json'], { encoding: 'utf8' }));
  assert.ok(evalOut.bits_per_byte > 0.5 && evalOut.bits_per_byte < 3, JSON.stringify(evalOut));
  step(`downloaded ${file} (${header.length} bytes): xtask eval → ${evalOut.bits_per_byte.toFixed(4)} bits/byte`);

  const tuned = await useTunedModel(page, 'Auto');
  await page.screenshot({ path: `${outDir}/fine-tuned-story.png`, fullPage: true });
  step(`greedy "${NAME_PROMPT}" → base "${before.trim()}", fine-tuned "${tuned.story.trim()}"`);

  // A short run pinned to WebGPU (SwiftShader: a software adapter, so a small model and batch).
  await page.click('#tab-finetune');
  await page.selectOption('#ft-base', 'itera-micro-q8');
  await page.click('#ft-form details summary');
  for (const [id, v] of [['ft-steps', 3], ['ft-batch', 2], ['ft-seq-len', 16], ['ft-warmup', 1], ['ft-eval-every', 3], ['ft-checkpoint-every', 3]]) {
    await page.fill(`#${id}`, String(v));
  }
  await page.selectOption('#ft-backend', 'webgpu');
  await page.click('#ft-start');
  await stateIs(page, ['done', 'failed'], 300_000);
  assert.equal(await dataset(page, 'fineTuneState'), 'done', await page.textContent('#ft-error'));
  assert.match(await page.textContent('#ft-note'), /Training on WebGPU/);
  assert.equal((await lossCurve(page)).length, 3);
  step(`pinned WebGPU: ${await page.textContent('#ft-note')}; ${await page.textContent('#ft-status')}`);

  assert.deepEqual(problems, [], 'no page errors, console errors or failed requests');
  Object.assign(results, { webgpu: { note, pausedAt, saved, loss, evals, doneText, download: evalOut, before, after: tuned.story } });
  await browser.close();
}

{
  const { browser, page, problems } = await open([...BASE_FLAGS, ...NO_WEBGPU_FLAGS], 'Fine-tune, WebGPU unavailable');
  await openTab(page);
  // Bad input: no text, then a file that is not UTF-8.
  await page.click('#ft-start');
  await page.waitForSelector('#ft-error:not([hidden])');
  assert.match(await page.textContent('#ft-error'), /Give a text to learn from/);
  await page.setInputFiles('#ft-files', { name: 'latin1.txt', mimeType: 'text/plain', buffer: Buffer.from([0x4f, 0x6e, 0x63, 0x65, 0xe9, 0x20]) });
  await waitFor(page, () => /latin1\.txt is not UTF-8/.test(document.getElementById('ft-error').textContent));
  step(`bad input: ${await page.textContent('#ft-error')}`);
  await useSample(page);
  await page.click('#ft-start');
  await stateIs(page, ['done', 'failed'], 300_000);
  assert.equal(await dataset(page, 'fineTuneState'), 'done', await page.textContent('#ft-error'));
  const note = await page.textContent('#ft-note');
  assert.match(note, /WebGPU unavailable.*→ CPU workers/, note);
  const loss = await lossCurve(page);
  assert.ok(mean(loss.slice(-5)) < 0.8 * mean(loss.slice(0, 5)), 'the loss falls on the CPU too');
  const tuned = await useTunedModel(page, 'CPU workers');
  await page.screenshot({ path: `${outDir}/fine-tune-cpu.png`, fullPage: true });
  step(`without WebGPU: ${note}; fine-tuned greedy "${tuned.story.trim()}"`);
  // Phone width: the tab fits without sideways scrolling.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.click('#tab-finetune');
  await page.screenshot({ path: `${outDir}/fine-tune-phone.png`, fullPage: true });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `no horizontal scrolling at phone width (overflow ${overflow}px)`);
  assert.deepEqual(problems, [], 'no page errors, console errors or failed requests');
  results.cpu = { note, loss, story: tuned.story };
  await browser.close();
}

writeFileSync(`${outDir}/fine-tune.json`, JSON.stringify(results, null, 2));
console.log(`fine-tune e2e passed; screenshots in ${outDir}`);
