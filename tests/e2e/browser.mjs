// Shared by the page's end-to-end tests: headless Chromium through playwright-core with the
// flags this machine kind needs (WebGPU through SwiftShader when asked for), and a page that
// collects its errors, console errors and failed requests.

import { chromium } from 'playwright-core';

export const BASE_FLAGS = ['--no-sandbox', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run', '--disable-quic'];
export const WEBGPU_FLAGS = ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader',
  '--use-webgpu-adapter=swiftshader', '--use-angle=swiftshader'];
export const NO_WEBGPU_FLAGS = ['--disable-gpu', '--disable-features=WebGPU'];

export const step = (msg) => console.log(`  · ${msg}`);

export async function open(args, name) {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args, headless: true });
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 }, acceptDownloads: true });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
  // A navigation the test makes aborts what the previous page still had in flight (say, a
  // worker revalidating its kept tokenizer): net::ERR_ABORTED is that, not a failure.
  page.on('requestfailed', (r) => {
    if (r.failure()?.errorText !== 'net::ERR_ABORTED') problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
  });
  console.log(`[${name}]`);
  return { browser, page, problems };
}
