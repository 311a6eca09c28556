// End-to-end test of the Fine-tune tab as a person uses it, in headless Chromium: the sample
// stories, Start, loss points that appear and fall, Pause and Resume, a reload in the middle
// of the job and Resume from the saved checkpoint, the finished model in the picker (Use this
// model, then a story that knows the sample's character), Download .safetensors (loaded again
// by `xtask eval`), a short run pinned to WebGPU, the Transformer baseline fine-tuned (on the
// CPU workers, as the page says); and without WebGPU the same job on the CPU
// workers, plus the messages for a text that is not UTF-8 and for no text at all, and a job
// saved by a newer version of the page (refused, kept, discarded on request).
// Usage: node tests/e2e/fine-tune.mjs URL OUT_DIR XTASK   (screenshots in OUT_DIR)

import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
const stateIs = (page, states, timeout) => waitFor(page, (s) => s.includes(document.body.dataset.ftState), states, timeout);

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

// `xtask train` on the sample stories as the page cuts them (--text), 2 threads and shards like
// the page's 2 workers here; returns the loss of every step in log.jsonl by step number.
function nativeTrain(dir, args) {
  rmSync(dir, { recursive: true, force: true });
  execFileSync(xtask, ['train', '--text', 'web/finetune-stories.txt', '--tokenizer', 'weights/tokenizer.json',
    '--heldout', 'web/eval-stories.txt', '--threads', '2', '--out-dir', dir, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  const log = readFileSync(`${dir}/log.jsonl`, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  return new Map(log.map((r) => [r.step, r.loss]));
}

// The largest relative difference between the page's losses (index i = step i + 1) and the
// native ones over `steps`.
function worstRelative(page, native, steps) {
  let worst = 0;
  for (const s of steps) {
    assert.ok(native.has(s) && page[s - 1] !== undefined, `step ${s} on both sides`);
    worst = Math.max(worst, Math.abs(page[s - 1] - native.get(s)) / Math.abs(native.get(s)));
  }
  return worst;
}
// wasm SIMD128 and native AVX2/AVX-512 round differently: the same run drifts apart slowly.
const CROSS_TOLERANCE = 2e-3;

// After a job: the done card, Use this model, a greedy story with the sample's character.
async function useTunedModel(page, label) {
  await waitFor(page, () => document.body.dataset.ftCompared);
  const family = await dataset(page, 'ftFamily');
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
  const pausedAt = Number(await dataset(page, 'ftStep'));
  await page.waitForTimeout(700);
  assert.equal(Number(await dataset(page, 'ftStep')), pausedAt, 'no step while paused');
  assert.match(await page.textContent('#ft-status'), /^Paused: step \d+ of 60/);
  // The paused job's checkpoint, to continue natively below.
  const checkpointDownload = page.waitForEvent('download');
  await page.click('#ft-download-checkpoint');
  const pageCheckpoint = `${outDir}/page-step-${pausedAt}.checkpoint.safetensors`;
  await (await checkpointDownload).saveAs(pageCheckpoint);
  await page.click('#ft-resume');
  await waitFor(page, (k) => Number(document.body.dataset.ftStep) > k, pausedAt);
  step(`paused at step ${pausedAt}, resumed`);

  // Reload mid-job: the checkpoint saved in the browser (at the pause, or every 20 steps) resumes.
  await page.reload({ waitUntil: 'commit' });
  await waitFor(page, () => document.body?.dataset.backendSettled, null, 180_000);
  await page.click('#tab-finetune');
  await page.waitForSelector('#ft-saved:not([hidden])');
  const saved = Number(await dataset(page, 'ftSaved'));
  assert.ok(saved >= pausedAt, `the saved job is at step ${saved} ≥ ${pausedAt}`);
  step(`after a reload: ${await page.textContent('#ft-saved-text')}`);
  await page.click('#ft-restore');
  await waitFor(page, (k) => Number(document.getElementById('ft-loss-chart').dataset.points) >= k, saved);
  await stateIs(page, ['done'], 300_000);
  const loss = await lossCurve(page);
  assert.equal(loss.length, 60, 'every step is on the chart, those before the reload included');
  assert.ok(mean(loss.slice(-5)) < 0.8 * mean(loss.slice(0, 5)), `the loss falls: ${loss.map((x) => x.toFixed(2))}`);
  // The page's checkpoint of step `pausedAt`, continued natively, follows the page's steps.
  const fromPage = nativeTrain(`${outDir}/native-from-page`, ['--resume-from', pageCheckpoint]);
  const pageToNative = worstRelative(loss, fromPage, Array.from({ length: 60 - pausedAt }, (_, i) => pausedAt + 1 + i));
  assert.ok(pageToNative < CROSS_TOLERANCE, `page → native: worst relative loss difference ${pageToNative}`);
  step(`the page's checkpoint (step ${pausedAt}) resumed by xtask train: steps ${pausedAt + 1}–60 within ${pageToNative.toExponential(1)} of the page's`);
  assert.match(await page.textContent('#ft-eval-cap'), /first 1,024 tokens \(at most\) of each set/, 'the evaluations\' cap is stated');
  const evals = JSON.parse(await page.getAttribute('#ft-bpb-chart', 'data-evals'));
  const yours = evals['your text (held out)'];
  assert.ok(yours.length >= 7 && yours[yours.length - 1][1] < yours[0][1] - 0.2, `held-out BPB falls: ${JSON.stringify(yours)}`);
  await waitFor(page, () => document.body.dataset.ftCompared);
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
  assert.equal(await dataset(page, 'ftState'), 'done', await page.textContent('#ft-error'));
  assert.match(await page.textContent('#ft-note'), /Training on WebGPU/);
  assert.equal((await lossCurve(page)).length, 3);
  step(`pinned WebGPU: ${await page.textContent('#ft-note')}; ${await page.textContent('#ft-status')}`);

  // The Transformer baseline fine-tunes on the same stories with the tab's defaults; asked for
  // WebGPU, it says it trains on the CPU workers.
  await openTab(page);
  await useSample(page);
  await page.selectOption('#ft-base', 'transformer-tiny-q8');
  await page.selectOption('#ft-backend', 'webgpu');
  await page.click('#ft-start');
  await stateIs(page, ['done', 'failed'], 300_000);
  assert.equal(await dataset(page, 'ftState'), 'done', await page.textContent('#ft-error'));
  const transformerNote = await page.textContent('#ft-note');
  assert.match(transformerNote, /a Transformer trains on the CPU \(WebGPU training is for SSM \+ MoE models\)/, transformerNote);
  const transformerLoss = await lossCurve(page);
  assert.ok(mean(transformerLoss.slice(-5)) < 0.8 * mean(transformerLoss.slice(0, 5)), `the Transformer's loss falls: ${transformerLoss.map((x) => x.toFixed(2))}`);
  const transformerTuned = await useTunedModel(page, 'Transformer');
  assert.match(await page.textContent('#model-meta'), /Transformer/);
  await page.screenshot({ path: `${outDir}/fine-tune-transformer.png`, fullPage: true });
  step(`transformer-tiny-q8 fine-tuned: ${transformerNote}; greedy "${transformerTuned.story.trim()}"`);

  assert.deepEqual(problems, [], 'no page errors, console errors or failed requests');
  Object.assign(results, { webgpu: { note, pausedAt, saved, loss, evals, doneText, download: evalOut, before, after: tuned.story, pageToNative }, transformer: { note: transformerNote, loss: transformerLoss, story: transformerTuned.story } });
  await browser.close();
}

{
  const { browser, page, problems } = await open([...BASE_FLAGS, ...NO_WEBGPU_FLAGS], 'Fine-tune, WebGPU unavailable');
  await openTab(page);
  // A job saved by a newer page (save version 99): said, kept, only Discard offered.
  await page.evaluate(async () => {
    const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle('fine-tune', { create: true });
    for (const [name, text] of [['job.json', JSON.stringify({ format: 'itera-playground-save', version: 99, kind: 'fine-tune' })], ['checkpoint.safetensors', 'x']]) {
      const w = await (await dir.getFileHandle(name, { create: true })).createWritable();
      await w.write(text);
      await w.close();
    }
  });
  await openTab(page);
  await page.waitForSelector('#ft-saved:not([hidden])');
  const newer = await page.textContent('#ft-saved-text');
  assert.match(newer, /saved by version 99 of this playground.*cannot read; it is kept/, newer);
  assert.equal(await page.isVisible('#ft-restore'), false, 'no Resume for a job this page cannot read');
  await page.click('#ft-discard');
  await page.waitForSelector('#ft-saved', { state: 'hidden' });
  step(`a job saved by another version: "${newer.trim()}"; Discard removed it`);
  // Bad input: no text, then a file that is not UTF-8.
  await page.click('#ft-start');
  await page.waitForSelector('#ft-error:not([hidden])');
  assert.match(await page.textContent('#ft-error'), /Give a text to learn from/);
  await page.setInputFiles('#ft-files', { name: 'latin1.txt', mimeType: 'text/plain', buffer: Buffer.from([0x4f, 0x6e, 0x63, 0x65, 0xe9, 0x20]) });
  await waitFor(page, () => /latin1\.txt is not UTF-8/.test(document.getElementById('ft-text-info').textContent));
  step(`bad input: ${await page.textContent('#ft-text-info')}`);
  await page.setInputFiles('#ft-files', []);
  await page.fill('#ft-text', 'A tiny story.');
  await page.click('#ft-start');
  await waitFor(page, () => /seq_len/.test(document.getElementById('ft-error').textContent));
  step(`too short: ${await page.textContent('#ft-error')}`);
  await useSample(page);
  await page.fill('#ft-lr', '5');
  await page.click('#ft-start');
  await waitFor(page, () => /lr = 5/.test(document.getElementById('ft-error').textContent), null, 20_000)
    .catch(async (e) => { throw new Error(`${e.message}: the page says ${await page.textContent('#ft-error')} / ${await page.textContent('#ft-status')}`); });
  step(`out of range: ${await page.textContent('#ft-error')}`);
  await page.fill('#ft-lr', '0.0005');
  await page.click('#ft-start');
  await stateIs(page, ['done', 'failed'], 300_000);
  assert.equal(await dataset(page, 'ftState'), 'done', await page.textContent('#ft-error'));
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

  // A native checkpoint (xtask train --init --text, stopped at step 30) continues in the page
  // and follows the native run that went on to step 60.
  const straight = nativeTrain(`${outDir}/native-straight`, ['--init', 'weights/itera-tiny-q8.safetensors', '--shards', '2']);
  nativeTrain(`${outDir}/native-to-page`, ['--init', 'weights/itera-tiny-q8.safetensors', '--shards', '2', '--stop-at', '30']);
  await page.setViewportSize({ width: 1280, height: 1000 });
  await page.click('#tab-finetune');
  await useSample(page);
  await page.setInputFiles('#ft-checkpoint-file', `${outDir}/native-to-page/checkpoint.safetensors`);
  await waitFor(page, () => document.body.dataset.ftState === 'running');
  await stateIs(page, ['done', 'failed'], 300_000);
  assert.equal(await dataset(page, 'ftState'), 'done', await page.textContent('#ft-error'));
  const resumed = await lossCurve(page);
  assert.equal(resumed.length, 60);
  const nativeToPage = worstRelative(resumed, straight, Array.from({ length: 30 }, (_, i) => 31 + i));
  assert.ok(nativeToPage < CROSS_TOLERANCE, `native → page: worst relative loss difference ${nativeToPage}`);
  step(`a native checkpoint (step 30) resumed in the page: steps 31–60 within ${nativeToPage.toExponential(1)} of the native run`);
  results.crossResume = { pageToNative: results.webgpu.pageToNative, nativeToPage };
  await browser.close();
}

writeFileSync(`${outDir}/fine-tune.json`, JSON.stringify(results, null, 2));
console.log(`fine-tune e2e passed; screenshots in ${outDir}`);
