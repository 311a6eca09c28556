// The page's training benchmark in headless Chromium (WebGPU through SwiftShader), for
// `cargo xtask bench --train-wasm`: opens the page, clicks the Benchmarks tab's
// "Run training benchmark" and prints its rows as JSON (tokens/s per backend and worker count).
// Usage: node tests/bench/train-tab.mjs URL
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';

const url = process.argv[2];
const args = ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--no-first-run', '--disable-quic', '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader',
  '--use-webgpu-adapter=swiftshader', '--use-angle=swiftshader'];
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args, headless: true });
try {
  const page = await browser.newPage();
  await page.goto(url, { waitUntil: 'commit', timeout: 120_000 });
  await page.waitForFunction(() => document.body?.dataset.backendSettled, null, { timeout: 180_000 });
  // The llama2.c teacher from the shared data, when present, writes stories too.
  const teacher = new URL('../../../shared/data/teacher/', import.meta.url).pathname;
  if (existsSync(`${teacher}stories260K.bin`)) {
    await page.setInputFiles('#model-file', [`${teacher}stories260K.bin`, `${teacher}tok512.bin`]);
    await page.waitForFunction(() => document.getElementById('model-select').value.startsWith('llama2:'), null, { timeout: 60_000 });
    await page.selectOption('#model-select', 'itera-tiny-q8');
    await page.waitForFunction(() => !document.getElementById('model-select').disabled, null, { timeout: 60_000 });
  }
  await page.click('#tab-bench');
  await page.click('#train-bench');
  await page.waitForFunction(() => document.body.dataset.trainBench || document.getElementById('train-bench-status').textContent.startsWith('⚠'),
    null, { timeout: 600_000 });
  const rows = await page.evaluate(() => document.body.dataset.trainBench);
  if (!rows) throw new Error(await page.textContent('#train-bench-status'));
  console.log(rows);
} finally {
  await browser.close();
}
