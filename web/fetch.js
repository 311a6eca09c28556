// Downloads shared by the workers: weights and tokenizer through the Cache API, so a second
// visit (and the training worker, after the model worker) loads them without the network.

const CACHE_NAME = 'itera-weights-v1';

// Fetches a URL through the Cache API (second visits load instantly), reporting progress.
export async function fetchCached(url, onProgress) {
  const cache = 'caches' in self ? await caches.open(CACHE_NAME) : null;
  const hit = cache && (await cache.match(url));
  if (hit) {
    const bytes = new Uint8Array(await hit.arrayBuffer());
    onProgress(bytes.length, bytes.length);
    return { bytes, fromCache: true };
  }
  const response = await fetch(url);
  if (!response.ok) throw new Error(`download of ${url} failed: HTTP ${response.status}`);
  // With gzip, Content-Length is the compressed size; the server also sends the decoded one.
  const total = Number(response.headers.get('X-Decoded-Length') ?? response.headers.get('Content-Length')) || 0;
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    onProgress(received, total);
  }
  const bytes = new Uint8Array(received);
  let offset = 0;
  for (const c of chunks) { bytes.set(c, offset); offset += c.length; }
  if (cache) {
    await cache.put(url, new Response(bytes, { headers: { 'Content-Type': 'application/octet-stream' } }));
  }
  return { bytes, fromCache: false };
}
