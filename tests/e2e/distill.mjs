// End-to-end test of the Distill tab as a person uses it, in headless Chromium: the default
// job (itera-tiny teaches a fresh micro-sized student its logits) — the corpus streams in, KL
// points appear and fall, the expert-load chart draws, a reload mid-job and Resume, Download
// loaded by `xtask eval`, a short run pinned to WebGPU, a Transformer student of the same
// teacher (on the CPU workers, as the page says); without WebGPU, a llama2.c teacher
// opened from ../shared/data (stories260K.bin + tok512.bin): it generates in Generate, writes
// the corpus `xtask corpus` writes for the same settings (story for story, but for float
// rounding), and the student's held-out bits per byte fall; bad checkpoints get a message.
// Usage: node tests/e2e/distill.mjs URL OUT_DIR XTASK   (screenshots in OUT_DIR)

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import assert from 'node:assert/strict';
import { BASE_FLAGS, NO_WEBGPU_FLAGS, WEBGPU_FLAGS, open, step } from './browser.mjs';

const [url, outDir, xtask] = process.argv.slice(2);
if (!url || !outDir || !xtask) throw new Error('usage: distill.mjs URL OUT_DIR XTASK');
mkdirSync(outDir, { recursive: true });
const TEACHER_DIR = new URL('../../../shared/data/teacher/', import.meta.url).pathname;
const results = {};

const dataset = (page, key) => page.evaluate((k) => document.body.dataset[k], key);
const waitFor = (page, fn, arg, timeout = 120_000) => page.waitForFunction(fn, arg, { timeout });
const stateIs = (page, states, timeout) => waitFor(page, (s) => s.includes(document.body.dataset.dsState), states, timeout);
const mean = (v) => v.reduce((a, b) => a + b, 0) / v.length;

async function openTab(page) {
  await page.goto(url, { waitUntil: 'commit', timeout: 120_000 });
  await waitFor(page, () => document.body?.dataset.backendSettled, null, 180_000);
  await page.click('#tab-distill');
  await waitFor(page, () => /parameters/.test(document.getElementById('ds-student-size').textContent));
}

async function setFields(page, fields) {
  if (await page.$('#ds-form details:not([open])')) await page.click('#ds-form details summary');
  for (const [id, v] of fields) await page.fill(`#${id}`, String(v));
}

// Downloads the finished student in q8 and scores it with `xtask eval`.
async function downloadAndEval(page, name) {
  await page.selectOption('#ds-precision', 'q8');
  const download = page.waitForEvent('download');
  await page.click('#ds-download');
  const file = `${outDir}/${name}-q8.safetensors`;
  await (await download).saveAs(file);
  const r = JSON.parse(execFileSync(xtask, ['eval', '--model', file, '--tokenizer', 'weights/tokenizer.json',
    '--text', 'web/eval-stories.txt', '--json'], { encoding: 'utf8' }));
  assert.ok(r.bits_per_byte > 0.5 && r.bits_per_byte < 5, JSON.stringify(r));
  return r.bits_per_byte;
}

const builtinCurve = async (page) => {
  const evals = JSON.parse(await page.getAttribute('#ds-bpb-chart', 'data-evals'));
  return evals['built-in stories'];
};

{
  const { browser, page, problems } = await open([...BASE_FLAGS, ...WEBGPU_FLAGS], 'Distill, WebGPU available');
  await openTab(page);
  assert.equal(await dataset(page, 'dsMode'), 'logits');
  step(`student: ${await page.textContent('#ds-student-size')}`);
  const t0 = Date.now();
  await page.click('#ds-start');
  await waitFor(page, () => Number(document.body.dataset.dsStories) >= 3);
  step(`the corpus streams in: ${await page.textContent('#ds-corpus-status')}`);
  await waitFor(page, () => Number(document.getElementById('ds-loss-chart').dataset.points) >= 30, null, 300_000);
  // Reload mid-job: the checkpoint kept in the browser resumes.
  await page.reload({ waitUntil: 'commit' });
  await waitFor(page, () => document.body?.dataset.backendSettled, null, 180_000);
  await page.click('#tab-distill');
  await page.waitForSelector('#ds-saved:not([hidden])');
  step(`after a reload: ${await page.textContent('#ds-saved-text')}`);
  await page.click('#ds-restore');
  await stateIs(page, ['done', 'failed'], 300_000);
  assert.equal(await dataset(page, 'dsState'), 'done', await page.textContent('#ds-error'));
  const wall = (Date.now() - t0) / 1000;
  const kl = JSON.parse(await page.getAttribute('#ds-loss-chart', 'data-kl'));
  assert.equal(kl.length, 150, 'every step on the chart, those before the reload included');
  assert.ok(mean(kl.slice(-10)) < 0.7 * mean(kl.slice(0, 10)), `KL falls: ${kl.slice(0, 3)} … ${kl.slice(-3)}`);
  assert.ok(Number(await page.getAttribute('#ds-load-chart', 'data-layers')) >= 1, 'the expert-load chart draws');
  const bpb = await builtinCurve(page);
  assert.ok(bpb[bpb.length - 1][1] < bpb[0][1] - 0.5, `the student's BPB falls: ${JSON.stringify(bpb)}`);
  await waitFor(page, () => document.body.dataset.dsCompared);
  const done = await page.textContent('#ds-done-text');
  assert.match(done, /^Distillation finished: 150 steps/);
  assert.ok((await page.textContent('#ds-samples')).includes('teacher:'), 'teacher and student samples side by side');
  await page.screenshot({ path: `${outDir}/distill.png`, fullPage: true });
  const evalBpb = await downloadAndEval(page, 'distilled');
  step(`done in ${wall.toFixed(0)} s (a reload included): ${done}; downloaded student → xtask eval ${evalBpb.toFixed(4)} bits/byte`);
  results.logits = { wallSeconds: wall, bpb, klFirst: kl[0], klLast: kl[kl.length - 1], done, evalBpb };

  // A short run pinned to WebGPU (SwiftShader is software: a small teacher, corpus and batch).
  await page.selectOption('#ds-teacher', 'itera-micro-q8');
  await setFields(page, [['ds-corpus-tokens', 400], ['ds-steps', 3], ['ds-batch', 2], ['ds-seq-len', 16], ['ds-warmup', 1],
    ['ds-eval-every', 3], ['ds-checkpoint-every', 3]]);
  await page.selectOption('#ds-backend', 'webgpu');
  await page.click('#ds-start');
  await waitFor(page, () => document.body.dataset.dsState === 'writing');
  await stateIs(page, ['done', 'failed'], 300_000);
  assert.equal(await dataset(page, 'dsState'), 'done', await page.textContent('#ds-error'));
  assert.match(await page.textContent('#ds-note'), /Training on WebGPU/);
  step(`pinned WebGPU: ${await page.textContent('#ds-note')}; ${await page.textContent('#ds-status')}`);

  // A Transformer student of the SSM + MoE teacher (logits: one tokenizer), on the CPU workers.
  await page.selectOption('#ds-teacher', 'itera-tiny-q8');
  await page.selectOption('#ds-student-family', 'transformer');
  await waitFor(page, () => document.getElementById('ds-student').value === 'fresh:micro'
    && /^0\.26M parameters; files/.test(document.getElementById('ds-student-size').textContent));
  await setFields(page, [['ds-corpus-tokens', 3000], ['ds-steps', 40], ['ds-batch', 4], ['ds-seq-len', 32], ['ds-warmup', 4],
    ['ds-eval-every', 20], ['ds-checkpoint-every', 20]]);
  await page.selectOption('#ds-backend', 'auto');
  await page.click('#ds-start');
  await stateIs(page, ['done', 'failed'], 300_000);
  assert.equal(await dataset(page, 'dsState'), 'done', await page.textContent('#ds-error'));
  const transformerNote = await page.textContent('#ds-note');
  assert.match(transformerNote, /a Transformer trains on the CPU/, transformerNote);
  const tkl = JSON.parse(await page.getAttribute('#ds-loss-chart', 'data-kl'));
  assert.ok(tkl.length === 40 && mean(tkl.slice(-5)) < mean(tkl.slice(0, 5)), `the Transformer student's KL falls: ${tkl.slice(0, 3)} … ${tkl.slice(-3)}`);
  await waitFor(page, () => document.body.dataset.dsCompared);
  await page.screenshot({ path: `${outDir}/distill-transformer.png`, fullPage: true });
  const transformerBpb = await downloadAndEval(page, 'distilled-transformer');
  step(`a Transformer student: ${transformerNote}; ${await page.textContent('#ds-done-text')}; xtask eval ${transformerBpb.toFixed(4)} bits/byte`);
  results.transformerStudent = { note: transformerNote, klFirst: tkl[0], klLast: tkl[tkl.length - 1], evalBpb: transformerBpb };
  assert.deepEqual(problems, [], 'no page errors, console errors or failed requests');
  await browser.close();
}

if (!existsSync(`${TEACHER_DIR}stories260K.bin`)) {
  console.log(`  · SKIPPED the llama2.c teacher: ${TEACHER_DIR} is absent (reference data is not part of the repository)`);
} else {
  const { browser, page, problems } = await open([...BASE_FLAGS, ...NO_WEBGPU_FLAGS], 'Distill from a llama2.c teacher, WebGPU unavailable');
  await openTab(page);
  // Bad checkpoints: a truncated one, and a tokenizer.bin that does not fit.
  const ckpt = readFileSync(`${TEACHER_DIR}stories260K.bin`);
  const tok = readFileSync(`${TEACHER_DIR}tok512.bin`);
  await page.setInputFiles('#model-file', [
    { name: 'broken.bin', mimeType: 'application/octet-stream', buffer: ckpt.subarray(0, ckpt.length - 4096) },
    { name: 'tok512.bin', mimeType: 'application/octet-stream', buffer: tok },
  ]);
  await page.waitForSelector('#error-note:not([hidden])');
  const truncated = await page.textContent('#error-note');
  assert.match(truncated, /f32 values for this header/, truncated);
  await page.setInputFiles('#model-file', [
    { name: 'stories260K.bin', mimeType: 'application/octet-stream', buffer: ckpt },
    { name: 'tok.bin', mimeType: 'application/octet-stream', buffer: tok.subarray(0, 3000) },
  ]);
  await waitFor(page, () => /tokenizer/.test(document.getElementById('error-note').textContent));
  const badTokenizer = await page.textContent('#error-note');
  step(`bad checkpoints: "${truncated.trim()}" and "${badTokenizer.trim()}"`);
  problems.length = 0; // the refused files are reported on purpose

  // The teacher in the model picker: it writes a story in Generate (on the CPU).
  await page.setInputFiles('#model-file', [`${TEACHER_DIR}stories260K.bin`, `${TEACHER_DIR}tok512.bin`]);
  await waitFor(page, () => document.getElementById('model-select').value === 'llama2:stories260K.bin');
  await page.click('#tab-generate');
  await page.fill('#temperature', '0');
  await page.fill('#max-tokens', '40');
  await page.click('#generate');
  await waitFor(page, () => !document.getElementById('generate').disabled && Number(document.getElementById('stat-count').textContent) > 0);
  const story = await page.textContent('#output .generated');
  assert.ok(story.trim().length > 20, story);
  step(`stories260K in Generate: ${JSON.stringify(story.slice(0, 80))}…`);

  await page.click('#tab-distill');
  await page.selectOption('#ds-teacher', 'llama2:stories260K.bin');
  assert.equal(await dataset(page, 'dsMode'), 'sequence');
  assert.match(await page.textContent('#ds-mode'), /Sequence-level distillation/);
  await setFields(page, [['ds-corpus-tokens', 6000], ['ds-corpus-seed', 4], ['ds-steps', 80], ['ds-eval-every', 20], ['ds-checkpoint-every', 40]]);
  const t0 = Date.now();
  await page.click('#ds-start');
  await stateIs(page, ['done', 'failed'], 300_000);
  assert.equal(await dataset(page, 'dsState'), 'done', await page.textContent('#ds-error'));
  const wall = (Date.now() - t0) / 1000;
  // The page's corpus against `xtask corpus` with the same teacher and settings.
  const pageStories = await page.$$eval('#ds-corpus li', (li) => li.map((x) => x.textContent));
  const reference = `${outDir}/stories260K-corpus.txt`;
  execFileSync(xtask, ['corpus', '--teacher', `${TEACHER_DIR}stories260K.bin`, '--tokenizer', `${TEACHER_DIR}tok512.bin`,
    '--tokens', '6000', '--seed', '4', '--out', reference], { stdio: 'ignore' });
  const native = readFileSync(reference, 'utf8').split('<|endoftext|>\n').filter((s) => s.length > 0);
  const same = pageStories.filter((s, i) => s === native[i]).length;
  assert.ok(pageStories.length > 5 && same >= 0.9 * native.length, `${same} of ${native.length} stories as xtask corpus writes them (page: ${pageStories.length})`);
  step(`the page's corpus: ${pageStories.length} stories, ${same} of ${native.length} exactly as xtask corpus writes them`);
  const bpb = await builtinCurve(page);
  assert.ok(bpb[bpb.length - 1][1] < bpb[0][1] - 0.3, `the student's BPB falls: ${JSON.stringify(bpb)}`);
  assert.equal(JSON.parse(await page.getAttribute('#ds-loss-chart', 'data-kl')).every((k) => k === 0), true, 'no KL across tokenizers');
  await waitFor(page, () => document.body.dataset.dsCompared);
  const done = await page.textContent('#ds-done-text');
  await page.screenshot({ path: `${outDir}/distill-llama2c.png`, fullPage: true });
  const evalBpb = await downloadAndEval(page, 'distilled-from-stories260K');
  step(`sequence-level in ${wall.toFixed(0)} s: ${done}; downloaded → xtask eval ${evalBpb.toFixed(4)} bits/byte`);
  assert.deepEqual(problems, [], 'no page errors, console errors or failed requests');
  results.sequence = { wallSeconds: wall, bpb, done, evalBpb, corpus: { page: pageStories.length, native: native.length, same } };
  await browser.close();
}

writeFileSync(`${outDir}/distill.json`, JSON.stringify(results, null, 2));
console.log(`distill e2e passed; screenshots in ${outDir}`);
