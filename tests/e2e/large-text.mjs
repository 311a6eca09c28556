// End-to-end test of the Fine-tune tab with a large text, early stopping and two tabs, in
// headless Chromium without WebGPU, as a person uses it: a generated 8 MiB .txt opened from
// disk (the page stays responsive while the worker tokenizes it with a progress line), Start
// and the first step within a stated bound, an evaluation announced on the status line; a file
// over the page's limit refused without losing the text given before; a run with a patience
// that stops early as `xtask train --patience` does, its best weights offered beside the last
// and downloaded; and a second tab of the same browser, which may not overwrite the first
// tab's job and says so, then resumes it once the first tab is closed.
// Usage: node tests/e2e/large-text.mjs URL OUT_DIR XTASK   (screenshots in OUT_DIR)

import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import assert from 'node:assert/strict';
import { BASE_FLAGS, NO_WEBGPU_FLAGS, open, step } from './browser.mjs';

const [url, outDir, xtask] = process.argv.slice(2);
if (!url || !outDir || !xtask) throw new Error('usage: large-text.mjs URL OUT_DIR XTASK');
mkdirSync(outDir, { recursive: true });

const MIB = 2 ** 20;
// Start → step 1 on the 8 MiB text (tokenized before Start), on this 2-core machine under the
// suite's load: the held-out part's first evaluation is capped, so it is seconds, not minutes.
const FIRST_STEP_BOUND_MS = 60_000;
// The evaluation and patience of the early-stopping run (the native run below takes the same).
const EARLY = { steps: 40, lr: 0.02, min_lr: 0.02, warmup: 1, eval_every: 5, patience: 2 };

const dataset = (page, key) => page.evaluate((k) => document.body.dataset[k], key);
const waitFor = (page, fn, arg, timeout = 120_000) => page.waitForFunction(fn, arg, { timeout });
const stateIs = (page, states, timeout = 300_000) => waitFor(page, (s) => s.includes(document.body.dataset.ftState), states, timeout);

async function openTab(page) {
  await page.goto(url, { waitUntil: 'commit', timeout: 120_000 });
  await waitFor(page, () => document.body?.dataset.backendSettled, null, 180_000);
  await page.click('#tab-finetune');
  await waitFor(page, () => document.getElementById('ft-bounds').textContent.startsWith('Bounds'));
}

// How long the page's thread takes to run a 0 ms timer: it stays responsive while the worker works.
const mainThreadLag = (page) => page.evaluate(() => new Promise((r) => { const t0 = performance.now(); setTimeout(() => r(performance.now() - t0), 0); }));

async function setSettings(page, values) {
  if (!(await page.isVisible('#ft-eval-every'))) await page.click('#ft-form details summary');
  const ids = { steps: 'ft-steps', lr: 'ft-lr', min_lr: 'ft-min-lr', warmup: 'ft-warmup', eval_every: 'ft-eval-every', patience: 'ft-patience', checkpoint_every: 'ft-checkpoint-every' };
  for (const [k, v] of Object.entries(values)) await page.fill(`#${ids[k]}`, String(v));
}

// Every text the status line shows, from now on.
const recordStatus = (page) => page.evaluate(() => {
  window.statusSeen = [];
  new MutationObserver(() => window.statusSeen.push(document.getElementById('ft-status').textContent))
    .observe(document.getElementById('ft-status'), { childList: true, characterData: true, subtree: true });
});

const results = {};
const { browser, page, problems } = await open([...BASE_FLAGS, ...NO_WEBGPU_FLAGS], 'Large text, early stop, two tabs');
await openTab(page);

// ---- a large text: tokenized in the worker with progress ----------------------------------
const sample = readFileSync('web/finetune-stories.txt', 'utf8').trim();
const copies = [];
for (let i = 0, size = 0; size < 8 * MIB; i++) {
  const story = `${sample.replace(/Zuzu/g, `Zuzu ${i}`)}\n\n`;
  copies.push(story);
  size += Buffer.byteLength(story);
}
const bigFile = `${outDir}/big.txt`;
writeFileSync(bigFile, copies.join(''));
const bigBytes = readFileSync(bigFile).length;
await page.setInputFiles('#ft-files', bigFile);
await waitFor(page, () => document.body.dataset.ftPreparing === 'tokenizing');
const progress = await page.textContent('#ft-text-info');
assert.match(progress, /^Tokenizing: \d+ % \([\d.]+ of [\d.]+ MB\)…$/, progress);
const lag = await mainThreadLag(page);
assert.ok(lag < 250, `the page answers within 250 ms while the worker tokenizes (${lag.toFixed(0)} ms)`);
await waitFor(page, () => document.body.dataset.ftPreparing === 'done', null, 180_000);
const info = await page.textContent('#ft-text-info');
assert.match(info, /stories to learn from \([\d,]+ bytes, [\d,]+ tokens\); \d+ held out/, info);
step(`${(bigBytes / MIB).toFixed(1)} MiB opened: "${progress}" while the page answered in ${lag.toFixed(0)} ms; then ${info}`);

await page.selectOption('#ft-base', 'itera-micro-q8');
await setSettings(page, { steps: 4, warmup: 1, eval_every: 2, checkpoint_every: 4 });
await recordStatus(page);
const t0 = Date.now();
await page.click('#ft-start');
await waitFor(page, () => Number(document.body.dataset.ftStep) >= 1, null, FIRST_STEP_BOUND_MS);
const firstStepMs = Date.now() - t0;
await stateIs(page, ['done', 'failed']);
assert.equal(await dataset(page, 'ftState'), 'done', await page.textContent('#ft-error'));
const seen = await page.evaluate(() => window.statusSeen);
assert.ok(seen.some((t) => /evaluating held-out bits per byte \(2 sets, at most [\d,]+ tokens each\)…/.test(t)), `an evaluation is announced: ${JSON.stringify(seen)}`);
await page.screenshot({ path: `${outDir}/large-text.png`, fullPage: true });
step(`Start → step 1 in ${(firstStepMs / 1000).toFixed(1)} s (bound ${FIRST_STEP_BOUND_MS / 1000} s); status showed "${seen.find((t) => /evaluating/.test(t))}"`);
results.large = { bytes: bigBytes, progress, info, lagMs: lag, firstStepMs };

// ---- a file over the page's limit: refused, the text before kept ---------------------------
const hugeFile = `${outDir}/huge.txt`;
writeFileSync(hugeFile, Buffer.alloc(65 * MIB, 'a'));
await page.setInputFiles('#ft-files', hugeFile);
await waitFor(page, () => /huge\.txt: 65 MiB of text, more than the 64 MiB the page trains on/.test(document.getElementById('ft-error').textContent));
const refusal = await page.textContent('#ft-error');
assert.match(await page.textContent('#ft-files-list'), /big\.txt/, 'the text given before is kept');
rmSync(hugeFile);
step(`over the limit: ${refusal}`);
results.refusal = refusal;

// ---- early stopping and the best weights, as natively --------------------------------------
await page.setInputFiles('#ft-files', []);
await page.click('#ft-sample');
await waitFor(page, () => /held out/.test(document.getElementById('ft-text-info').textContent));
await setSettings(page, { ...EARLY, checkpoint_every: 20 });
await page.evaluate(() => { delete document.body.dataset.ftCompared; });
await page.click('#ft-start');
await waitFor(page, () => document.body.dataset.ftCompared || document.body.dataset.ftState === 'failed', null, 300_000);
assert.equal(await dataset(page, 'ftState'), 'done', await page.textContent('#ft-error'));
const doneText = await page.textContent('#ft-done-text');
const stop = doneText.match(/stopped early at step (\d+) of 40: 2 evaluations in a row did not lower your text \(held out\) below ([\d.]+) bits\/byte \(step (\d+)\)/);
assert.ok(stop, doneText);
const [stopStep, bestStep] = [Number(stop[1]), Number(stop[3])];
// The same run natively stops at the same step with the same best step.
const dir = `${outDir}/native-early-stop`;
rmSync(dir, { recursive: true, force: true });
const native = execFileSync(xtask, ['train', '--init', 'weights/itera-micro-q8.safetensors', '--text', 'web/finetune-stories.txt',
  '--tokenizer', 'weights/tokenizer.json', '--heldout', 'web/eval-stories.txt', '--threads', '2', '--out-dir', dir,
  ...Object.entries(EARLY).flatMap(([k, v]) => [`--${k.replace('_', '-')}`, String(v)])], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const nativeLog = readFileSync(`${dir}/log.jsonl`, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
assert.equal(nativeLog.at(-1).step, stopStep, `xtask train --patience 2 stops at step ${stopStep} too`);
// The best weights: in the picker, chosen on the card, downloaded, loaded by xtask eval.
assert.ok(bestStep > 0 && bestStep < stopStep, doneText);
const best = await dataset(page, 'ftBest');
const options = await page.$$eval('#model-select option', (o) => o.map((x) => x.value));
assert.ok(options.includes(`${best}-q8`), `${best}-q8 is in the picker`);
await page.selectOption('#ft-weights', 'best');
await page.selectOption('#ft-precision', 'f32');
const download = page.waitForEvent('download');
await page.click('#ft-download');
const bestFile = `${outDir}/best-f32.safetensors`;
await (await download).saveAs(bestFile);
const header = readFileSync(bestFile);
const meta = JSON.parse(header.subarray(8, 8 + Number(header.readBigUInt64LE(0))).toString()).__metadata__;
assert.equal(JSON.parse(meta.config).training.steps, bestStep, 'the best file holds the weights of the best step');
const evalOut = JSON.parse(execFileSync(xtask, ['eval', '--model', bestFile, '--tokenizer', 'weights/tokenizer.json',
  '--text', 'web/eval-stories.txt', '--json'], { encoding: 'utf8' }));
assert.ok(evalOut.bits_per_byte > 0.5 && evalOut.bits_per_byte < 3, JSON.stringify(evalOut));
await page.screenshot({ path: `${outDir}/early-stop.png`, fullPage: true });
step(`${doneText.split('. ')[0]}; natively: the same step (${nativeLog.at(-1).step}); best (step ${bestStep}) downloaded, xtask eval → ${evalOut.bits_per_byte.toFixed(4)} bits/byte`);
results.earlyStop = { doneText, stopStep, bestStep, native: native.trim().split('\n').slice(-2) };

// ---- a second tab may not overwrite the first tab's job -------------------------------------
const other = await page.context().newPage();
other.on('pageerror', (e) => problems.push(`second tab: page error: ${e.message}`));
await openTab(other);
await other.waitForSelector('#ft-saved:not([hidden])');
const inUse = await other.textContent('#ft-saved-text');
assert.match(inUse, /Training is off in this tab: another tab of this playground has a training job loaded/, inUse);
assert.equal(await other.isVisible('#ft-discard'), false, 'no Discard of the other tab\'s job');
await other.click('#ft-sample');
await waitFor(other, () => /held out/.test(document.getElementById('ft-text-info').textContent));
await other.click('#ft-start');
await waitFor(other, () => /another tab of this playground has a training job loaded/.test(document.getElementById('ft-error').textContent));
// Clear saved data is refused there too, with the same words, and removes nothing.
await other.evaluate(() => { document.getElementById('ft-error').textContent = ''; });
await other.click('#ft-clear');
await waitFor(other, () => /another tab of this playground has a training job loaded/.test(document.getElementById('ft-error').textContent));
await other.screenshot({ path: `${outDir}/second-tab.png`, fullPage: true });
step(`second tab: "${inUse.trim()}"; its Start says: ${await other.textContent('#ft-error')}`);
// The first tab closes: the second tab now offers its job.
await page.close();
await openTab(other);
await other.waitForSelector('#ft-restore:visible');
const offered = await other.textContent('#ft-saved-text');
assert.match(offered, new RegExp(`A fine-tune of itera-micro-q8 is saved in this browser: step ${stopStep} of 40 \\(stopped early\\)`), offered);
step(`the first tab closed: the second offers "${offered.trim()}"`);
results.twoTabs = { inUse, offered };

assert.deepEqual(problems, [], 'no page errors, console errors or failed requests');
await browser.close();
writeFileSync(`${outDir}/large-text.json`, JSON.stringify(results, null, 2));
console.log(`large-text e2e passed; screenshots in ${outDir}`);
