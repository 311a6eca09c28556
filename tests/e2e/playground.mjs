// End-to-end test of the playground as a person uses it, in headless Chromium via
// playwright-core: open the page served by `cargo xtask serve`, watch the first story stream
// in, reload (warm cache), compare the SSM + MoE model with its same-size Transformer and two precisions, run the benchmark, check the charts and the
// routing heatmap draw, and check the CPU fallback note with WebGPU unavailable.
// Usage: node tests/e2e/playground.mjs URL OUT_DIR [static-site SITE_DIR]   (screenshots +
// results.json in OUT_DIR). With `static-site`, URL is SITE_DIR (`cargo xtask build-web --out`)
// under a sub-path of a plain static file server: no COOP/COEP, so the page is not
// cross-origin isolated and Stop reaches the generation as a message; and a model file
// republished under its old name is loaded anew, not from the copy the page kept.

import { mkdirSync, writeFileSync } from 'node:fs';
import assert from 'node:assert/strict';
import { BASE_FLAGS, NO_WEBGPU_FLAGS, WEBGPU_FLAGS, open, step } from './browser.mjs';

const [url, outDir, mode, siteDir] = process.argv.slice(2);
const staticSite = mode === 'static-site';
if (!url || !outDir) throw new Error('usage: playground.mjs URL OUT_DIR');
mkdirSync(outDir, { recursive: true });
const results = {};

// Loads the page and waits for the automatic first story; returns page load → first token (ms).
async function firstStory(page) {
  // The page's own clock (firstTokenMs) is what is measured; the navigation only has to commit.
  await page.goto(url, { waitUntil: 'commit', timeout: 120_000 });
  await page.waitForFunction(() => document.body?.dataset.firstTokenMs, null, { timeout: 120_000 });
  const ms = Number(await page.evaluate(() => document.body.dataset.firstTokenMs));
  const text = await page.textContent('#output .generated');
  assert.ok(text.trim().length > 20, `a story appears (got ${JSON.stringify(text)})`);
  const tps = Number(await page.textContent('#stat-tps'));
  assert.ok(tps > 0, `tokens/s is shown (got ${tps})`);
  assert.equal(await page.isVisible('#error-note'), false, 'no error notice');
  return { ms, tps, text, fromCache: await page.evaluate(() => document.body.dataset.modelFromCache === 'true') };
}

async function inkedPixels(page, selector) {
  return page.$eval(selector, (c) => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
    return n;
  });
}

{
  const { browser, page, problems } = await open([...BASE_FLAGS, ...WEBGPU_FLAGS], 'WebGPU available');
  const cold = await firstStory(page);
  step(`cold start: page load → first token ${cold.ms.toFixed(0)} ms, ${cold.tps} tokens/s`);
  assert.equal(cold.fromCache, false);
  if (staticSite) {
    assert.equal(await page.evaluate(() => self.crossOriginIsolated), false, 'a plain static host sends no COOP/COEP');
    assert.match(await page.evaluate(() => location.pathname), /^\/.+\/$/, 'served under a sub-path');
  } else {
    assert.equal(await page.evaluate(() => self.crossOriginIsolated), true, 'COOP/COEP make the page cross-origin isolated');
  }
  await page.waitForSelector('#backend-note:not([hidden])');
  const note = await page.textContent('#backend-note');
  assert.match(note, /WebGPU adapter found/, note);
  assert.ok((await inkedPixels(page, '#routing-heatmap')) > 500, 'the routing heatmap is drawn');
  assert.ok((await page.$$('#tps-chart canvas')).length > 0, 'the tokens/s chart is drawn');
  // Even a story that takes a tenth of a second plots a line, not an empty chart.
  await page.waitForFunction(() => Number(document.getElementById('tps-chart').dataset.points) >= 2, null, { timeout: 60_000 });
  assert.ok((await page.$$('#load-breakdown .stack div')).length >= 3, 'the load-time breakdown is drawn');
  await page.hover('#routing-heatmap', { position: { x: 62, y: 10 } });
  assert.match(await page.textContent('#routing-caption'), /layer \d+ → expert/);
  await page.screenshot({ path: `${outDir}/generate.png`, fullPage: true });

  // Auto measures both backends once the first story is out, and says what it found.
  await page.waitForFunction(() => document.body.dataset.backendSettled, null, { timeout: 90_000 });
  const measured = await page.textContent('#backend-note');
  assert.match(measured, /Auto measured itera-tiny-q8: CPU [\d.]+ tokens\/s, WebGPU [\d.]+ tokens\/s → /, measured);
  step(`backend calibration: ${measured}`);
  assert.ok((await page.$$('#gpu-breakdown .stack div')).length >= 2, 'the WebGPU setup breakdown is drawn');
  step(`WebGPU setup: ${await page.textContent('#gpu-breakdown .legend')}`);

  const warm = await firstStory(page);
  step(`warm start: page load → first token ${warm.ms.toFixed(0)} ms (weights from the Cache API: ${warm.fromCache})`);
  assert.equal(warm.fromCache, true);
  await page.waitForFunction(() => document.body.dataset.backendSettled, null, { timeout: 90_000 });

  // The same greedy story on the CPU and on WebGPU (every kernel, routing and sampling on the GPU).
  await page.fill('#prompt', 'The little bird');
  await page.fill('#temperature', '0');
  await page.fill('#max-tokens', '6');
  const storyOn = async (backend) => {
    await page.selectOption('#backend-select', backend);
    await page.click('#generate');
    await page.waitForFunction(() => document.getElementById('output').getAttribute('aria-busy') === 'false'
      && !document.getElementById('generate').disabled, null, { timeout: 90_000 });
    return page.textContent('#output .generated');
  };
  const onCpu = await storyOn('cpu');
  const onGpu = await storyOn('webgpu');
  assert.match(await page.textContent('#backend-note'), /Running on WebGPU, as selected/);
  assert.ok(onCpu.trim().length > 0);
  assert.equal(onGpu, onCpu, 'greedy text on WebGPU equals the CPU');
  assert.ok((await inkedPixels(page, '#routing-heatmap')) > 50, 'routing heatmap from the GPU trace');
  await page.screenshot({ path: `${outDir}/webgpu.png`, fullPage: true });
  step(`WebGPU in the page: greedy ${JSON.stringify(onGpu)} equals the CPU's`);
  await page.selectOption('#backend-select', 'auto');

  // A person's own story: type a prompt, generate, then stop a long one midway.
  await page.fill('#prompt', 'Tom and his dog went to the beach');
  await page.fill('#temperature', '0');
  await page.click('#generate');
  await page.waitForFunction(() => !document.getElementById('generate').disabled, null, { timeout: 60_000 });
  assert.ok((await page.textContent('#output .generated')).length > 10);
  await page.fill('#max-tokens', '4096');
  await page.fill('#temperature', '0.8');
  await page.uncheck('#stop-at-end');
  await page.click('#generate');
  await page.waitForFunction(() => document.getElementById('output').getAttribute('aria-busy') === 'true'
    && Number(document.getElementById('stat-count').textContent) > 5);
  await page.click('#stop');
  await page.waitForFunction(() => !document.getElementById('generate').disabled, null, { timeout: 30_000 });
  const stoppedAt = Number(await page.textContent('#stat-count'));
  assert.ok(stoppedAt < 4096, `stop ends the generation early (${stoppedAt} tokens)`);
  step(`stop button ended a 4096-token generation after ${stoppedAt} tokens`);

  // Compare models: the SSM + MoE model against its same-size Transformer (the tab's first
  // rows), with the visitor's own text and a run of each to a position.
  await page.check('#stop-at-end');
  await page.click('#tab-compare');
  assert.deepEqual(await page.$$eval('#compare-models select', (s) => s.map((x) => x.value)), ['itera-tiny-q8', 'transformer-tiny-q8']);
  await page.fill('#compare-text', 'Once upon a time there was a little cat. The cat liked to play with a red ball in the garden.');
  await page.fill('#compare-length', '192');
  await page.click('#compare');
  await page.waitForFunction(() => /running to position 192: \d+ %/.test(document.getElementById('compare-status').textContent), null, { timeout: 120_000 });
  await page.waitForFunction(() => /^compared|error/.test(document.getElementById('compare-status').textContent), null, { timeout: 300_000 });
  assert.equal(await page.textContent('#compare-status'), 'compared 2 models');
  const columnsOf = () => page.$$eval('#compare-columns .column', (cols) => cols.map((c) => ({
    key: c.dataset.key,
    text: c.querySelector('.text span').textContent,
    metrics: Object.fromEntries([...c.querySelectorAll('tr')].map((r) => [r.cells[0].textContent, r.cells[1].textContent])),
  })));
  const columns = await columnsOf();
  for (const c of columns) {
    assert.ok(c.text.trim().length > 20, `${c.key} writes a story`);
    assert.match(c.metrics['built-in bits/byte'], /^\d\.\d{4}$/);
    assert.match(c.metrics['your text bits/byte'], /^\d\.\d{4}$/);
    assert.match(c.metrics['FLOPs/token at 192'], /MFLOPs$/);
    assert.match(c.metrics['tokens/s at 197'], /^\d+$/);
  }
  const [ssm, transformer] = columns;
  assert.equal(ssm.metrics.family, 'SSM + MoE');
  assert.equal(transformer.metrics.family, 'Transformer');
  assert.match(transformer.metrics['top-1 agreement'], /%$/);
  assert.match(transformer.metrics['routing agreement'], /no.*experts/);
  const kb = (v) => Number(v.replace(/ KB$/, ''));
  assert.ok(kb(transformer.metrics['decode state at 192']) > kb(ssm.metrics['decode state at 192']), 'the KV cache at 192 outweighs the SSM state');
  const points = (await page.getAttribute('#position-speed-chart', 'data-points')).split(',').map(Number);
  assert.ok(points.length === 2 && points.every((n) => n >= 16), `the position chart has both runs: ${points}`);
  assert.ok((await inkedPixels(page, '#position-memory-chart canvas')) > 200, 'the memory chart is drawn');
  assert.ok((await inkedPixels(page, '#kl-chart canvas')) > 200, 'the KL chart is drawn');
  await page.screenshot({ path: `${outDir}/compare-families.png`, fullPage: true });
  step(`compare models: ${JSON.stringify(columns.map((c) => [c.key, c.metrics]))}`);

  // The size-vs-quality chart: every shipped variant of itera-tiny and of transformer-tiny,
  // each model's Pareto front marked: the smallest file (q2) starts it, and it holds a mixed
  // variant (each is smaller than every better-scoring one: the chart's own rule, unit-free).
  const front = await page.getAttribute('#size-quality-chart', 'data-front');
  assert.match(front, /^itera-tiny: q2 .*auto\d.*; transformer-tiny: q2 /, front);
  assert.equal(await page.$$eval('#size-quality-chart circle', (c) => c.length), 17, 'itera-tiny\'s nine variants, transformer-tiny\'s eight');
  await page.locator('#panel-compare article').first().screenshot({ path: `${outDir}/size-quality.png` });
  step(`size vs quality: Pareto fronts ${front}`);

  // Every variant of one model: the tab's own preset; a mixed variant against f32, positions
  // not charted this time.
  await page.click('#compare-variants');
  const variants = await page.$$eval('#compare-models select', (s) => s.map((x) => x.value));
  assert.deepEqual(variants, ['f32', 'f16', 'q8', 'q4', 'q3', 'q2', 'auto1', 'auto5', 'keep3-q4'].map((v) => `itera-tiny-${v}`));
  assert.match(await page.$eval('#compare-models .row:nth-child(8) select', (s) => s.selectedOptions[0].textContent), /^itera-tiny · auto ≤ \+5 % \(q\d/);
  // f32, auto5 and the pruned keep3-q4 (whose routing cannot be matched expert by expert).
  for (let i = 0; i < 6; i++) await page.click('#compare-models .row:nth-child(2) button');
  await page.uncheck('#compare-positions');
  await page.fill('#compare-text', '');
  await page.click('#compare');
  await page.waitForFunction(() => /^compared|error/.test(document.getElementById('compare-status').textContent), null, { timeout: 300_000 });
  const q = await columnsOf();
  assert.deepEqual(q.map((c) => c.key), ['itera-tiny-f32', 'itera-tiny-auto5', 'itera-tiny-keep3-q4']);
  assert.match(q[1].metrics['routing agreement'], /^\d+\.\d%$/);
  assert.match(q[2].metrics['routing agreement'], /not defined: 4 experts against 3/);
  assert.match(q[2].metrics['parameters'], /^1\.39M/);
  assert.match(q[1].metrics['mean KL vs reference'], /e-/);
  await page.screenshot({ path: `${outDir}/compare.png`, fullPage: true });
  step(`compare: auto5 (mixed) and keep3-q4 (pruned) vs f32 ${JSON.stringify(q.slice(1).map((c) => c.metrics))}`);

  // A Transformer in the picker, with WebGPU available: Auto measures it on both backends, and
  // its greedy story on WebGPU (attention over the KV cache in WGSL) is the CPU's.
  await page.click('#tab-generate');
  await page.selectOption('#model-select', 'transformer-tiny-q8');
  await page.waitForFunction(() => /Auto measured transformer-tiny-q8: CPU \d+ tokens\/s, WebGPU [\d.]+ tokens\/s/.test(document.getElementById('backend-note').textContent), null, { timeout: 90_000 });
  const transformerCalibration = await page.textContent('#backend-note');
  assert.match(await page.textContent('#model-meta'), /Transformer, 1\.48M parameters.*KV cache at 8192/);
  await page.fill('#prompt', 'The little bird');
  await page.fill('#temperature', '0');
  await page.fill('#max-tokens', '6');
  const transformerOnCpu = await storyOn('cpu');
  const transformerOnGpu = await storyOn('webgpu');
  assert.ok(transformerOnCpu.trim().length > 0);
  assert.equal(transformerOnGpu, transformerOnCpu, 'the Transformer\'s greedy text on WebGPU equals the CPU\'s');
  await page.selectOption('#backend-select', 'auto');
  step(`transformer-tiny-q8: ${transformerCalibration}; greedy ${JSON.stringify(transformerOnGpu)} on WebGPU equals the CPU's`);
  await page.selectOption('#model-select', 'itera-tiny-q8');
  await page.waitForFunction(() => /^itera-tiny-q8: SSM \+ MoE/.test(document.getElementById('model-meta').textContent));
  await page.fill('#max-tokens', '256');

  // Benchmarks.
  await page.click('#tab-bench');
  await page.click('#bench');
  await page.waitForFunction(() => document.querySelectorAll('#bench-table tbody tr').length >= 2, null, { timeout: 60_000 });
  const benchTps = Number(await page.$eval('#bench-table tbody tr td:nth-child(3)', (td) => td.textContent));
  assert.ok(benchTps > 0);
  const gpuRow = await page.$$eval('#bench-table tbody tr', (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)).find((c) => c[1] === 'WebGPU'));
  assert.ok(gpuRow && Number(gpuRow[2]) > 0, `a WebGPU benchmark row: ${gpuRow}`);
  await page.screenshot({ path: `${outDir}/bench.png`, fullPage: true });
  step(`benchmark: CPU ${benchTps} tokens/s, WebGPU ${gpuRow[2]} tokens/s (greedy, up to 128 tokens / 5 s)`);

  const download = page.waitForEvent('download');
  await page.click('#export-bench');
  const report = JSON.parse(await (await (await download).createReadStream()).toArray().then((c) => Buffer.concat(c).toString()));
  assert.ok(report.device.userAgent && report.runs.some((r) => r.kind === 'bench'), 'benchmark JSON has device info and runs');
  assert.ok(report.runs.some((r) => r.kind === 'calibration') && report.backend.calibration['itera-tiny-q8'], 'and the calibration');
  step(`exported benchmark JSON: ${report.runs.length} runs, device ${report.device.webgpu?.architecture ?? 'without WebGPU'}`);

  // "Open local…": a file that is not a model gives a visible error and keeps the current
  // model; a real one loads and generates.
  await page.click('#tab-generate');
  await page.setInputFiles('#model-file', { name: 'notes.safetensors', mimeType: 'application/octet-stream', buffer: Buffer.from('not a model at all') });
  await page.waitForSelector('#error-note:not([hidden])');
  assert.match(await page.textContent('#error-note'), /safetensors/);
  assert.equal(await page.inputValue('#model-select'), 'itera-tiny-q8');
  problems.length = 0; // the refused file is reported on purpose
  await page.setInputFiles('#model-file', new URL('../../weights/itera-micro-q4.safetensors', import.meta.url).pathname);
  await page.waitForFunction(() => document.getElementById('model-select').value === 'local:itera-micro-q4.safetensors');
  assert.equal(await page.isVisible('#error-note'), false);
  await page.fill('#max-tokens', '40');
  await page.click('#generate');
  await page.waitForFunction(() => !document.getElementById('generate').disabled && Number(document.getElementById('stat-count').textContent) > 0);
  step('a local .safetensors file loads and generates; a bad one shows a clear error');

  // The longest prompt the page accepts in bytes (65,536: 16,384 crabs) encodes to more tokens
  // than a prompt may have: refused with the limit, the page still usable.
  await page.fill('#prompt', '🦀'.repeat(16384));
  await page.click('#generate');
  await page.waitForSelector('#error-note:not([hidden])');
  const tooLong = await page.textContent('#error-note');
  assert.match(tooLong, /prompt length = 65536 tokens: at most 16384 tokens/, tooLong);
  problems.length = 0; // the refusal is reported on purpose
  step(`a 65,536-byte prompt: "${tooLong.trim()}"`);

  // A model worker that dies mid-generation: the waiting call fails with a visible message, a
  // fresh worker starts, the model in use (here a local file, from the bytes the page kept)
  // is loaded into it, and the next story is written.
  await page.fill('#prompt', 'Once upon a time');
  await page.fill('#max-tokens', '4096');
  await page.click('#generate');
  await page.waitForFunction(() => Number(document.getElementById('stat-count').textContent) > 5);
  const modelWorker = page.workers().find((w) => w.url().endsWith('/worker.js'));
  await modelWorker.evaluate(() => { setTimeout(() => { throw new Error('injected crash'); }); });
  await page.waitForFunction(() => document.body.dataset.workerRestarts === '1'
    && /reloaded and is ready/.test(document.getElementById('error-note').textContent), null, { timeout: 60_000 });
  const recovered = await page.textContent('#error-note');
  assert.match(recovered, /the model worker stopped \(.*injected crash\); a fresh one was started; local:itera-micro-q4.safetensors was reloaded/, recovered);
  assert.equal(await page.isDisabled('#generate'), false);
  await page.screenshot({ path: `${outDir}/worker-recovered.png`, fullPage: true });
  problems.length = 0; // the crash is reported on purpose
  await page.fill('#max-tokens', '30');
  await page.click('#generate');
  await page.waitForFunction(() => !document.getElementById('generate').disabled
    && Number(document.getElementById('stat-count').textContent) > 0, null, { timeout: 60_000 });
  assert.ok((await page.textContent('#output .generated')).length > 5);
  step(`a crashed model worker: "${recovered.trim()}", then a new story`);

  // Phone width.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.click('#tab-generate');
  await page.screenshot({ path: `${outDir}/phone.png`, fullPage: true });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `no horizontal scrolling at phone width (overflow ${overflow}px)`);

  assert.deepEqual(problems, [], 'no page errors, console errors or failed requests');
  const timings = await page.evaluate(() => document.body.dataset.loadParts);
  Object.assign(results, { calibration: measured, webgpuBenchTokensPerSecond: Number(gpuRow[2]), warmLoadParts: JSON.parse(timings ?? 'null'), coldFirstTokenMs: cold.ms, warmFirstTokenMs: warm.ms, firstStoryTokensPerSecond: cold.tps, benchTokensPerSecond: benchTps, compare: columns.map((c) => ({ model: c.key, ...c.metrics })), comparePrecisions: q.map((c) => ({ model: c.key, ...c.metrics })) });
  await browser.close();
}

{
  const { browser, page, problems } = await open([...BASE_FLAGS, ...NO_WEBGPU_FLAGS], 'WebGPU unavailable');
  const story = await firstStory(page);
  const note = await page.textContent('#backend-note');
  assert.match(note, /WebGPU is not available.*CPU/, note);
  await page.screenshot({ path: `${outDir}/cpu-fallback.png`, fullPage: true });
  step(`CPU fallback note shown; first token ${story.ms.toFixed(0)} ms`);
  // The Transformer baseline writes in the Generate tab without WebGPU too.
  await page.selectOption('#model-select', 'transformer-micro-q8');
  await page.waitForFunction(() => /^transformer-micro-q8: Transformer/.test(document.getElementById('model-meta').textContent));
  await page.fill('#max-tokens', '48');
  await page.click('#generate');
  await page.waitForFunction(() => !document.getElementById('generate').disabled && Number(document.getElementById('stat-count').textContent) > 0, null, { timeout: 60_000 });
  assert.match(await page.textContent('#routing-caption'), /no experts/);
  step(`transformer-micro-q8 writes without WebGPU: "${(await page.textContent('#output .generated')).slice(0, 60)}…"`);
  // A pruned shipped model (3 of itera-micro's 4 experts, healed, q4) is an ordinary model: the
  // picker says so, it writes, and its routing heatmap has three experts.
  await page.selectOption('#model-select', 'itera-micro-keep3-q4');
  await page.waitForFunction(() => /^itera-micro-keep3-q4: SSM \+ MoE.*3 experts \(top-2\)/.test(document.getElementById('model-meta').textContent));
  assert.match(await page.$eval('#model-select', (s) => s.selectedOptions[0].textContent), /itera-micro · q4 · 3 of 4 experts/);
  await page.click('#generate');
  await page.waitForFunction(() => !document.getElementById('generate').disabled && Number(document.getElementById('stat-count').textContent) > 0, null, { timeout: 60_000 });
  const pruned = await page.textContent('#output .generated');
  assert.ok(pruned.trim().length > 20, `the pruned model writes: ${JSON.stringify(pruned)}`);
  step(`itera-micro-keep3-q4 (pruned) writes: "${pruned.slice(0, 60)}…"`);
  // Benchmarks: every variant of itera-micro timed in turn (CPU only here, so it is quick).
  await page.click('#tab-bench');
  await page.click('#bench-variants');
  await page.waitForFunction(() => /^timed \d+ variants|error/.test(document.getElementById('bench-status').textContent), null, { timeout: 120_000 });
  const timed = await page.$$eval('#bench-table tbody tr', (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)).filter((c) => c[1].startsWith('CPU')));
  assert.deepEqual(timed.map((c) => c[0]), ['f32', 'f16', 'q8', 'q4', 'q3', 'q2', 'auto1', 'auto5', 'keep3-q4'].map((v) => `itera-micro-${v}`));
  assert.ok(timed.every((c) => Number(c[2]) > 0), JSON.stringify(timed));
  await page.screenshot({ path: `${outDir}/bench-variants.png`, fullPage: true });
  step(`every variant timed on the CPU: ${timed.map((c) => `${c[0].slice(12)} ${c[2]}`).join(', ')} tokens/s`);
  if (staticSite) {
    // Republish the default model's file with other weights (itera-micro q8's): the kept copy
    // is revalidated with the host, so the reload loads the new file.
    const { copyFileSync, readFileSync, writeFileSync: write } = await import('node:fs');
    const file = `${siteDir}/weights/itera-tiny-q8.safetensors`;
    const original = readFileSync(file);
    await new Promise((r) => setTimeout(r, 1100)); // a later Last-Modified (whole seconds)
    copyFileSync(`${siteDir}/weights/itera-micro-q8.safetensors`, file);
    try {
      const again = await firstStory(page);
      assert.equal(again.fromCache, false, 'a republished file is downloaded again');
      assert.match(await page.textContent('#model-meta'), /0\.26M parameters/, 'and it is the new file');
      step('a model file republished under its old name is loaded anew (not the kept copy)');
    } finally {
      write(file, original);
    }
  }
  assert.deepEqual(problems, []);
  results.noWebGpuFirstTokenMs = story.ms;
  await browser.close();
}

writeFileSync(`${outDir}/results.json`, JSON.stringify(results, null, 2));
console.log(`e2e passed; screenshots and results.json in ${outDir}`);
