// Downloads shared by the workers: weights and tokenizer through the Cache API, so a second
// visit (and the training worker, after the model worker) loads them without downloading
// them again. A kept copy is revalidated with the server (If-None-Match / If-Modified-Since:
// one small request, answered 304), so a host that publishes new files under the same names
// is never shadowed by an old copy; offline, the kept copy is used.

const CACHE_NAME = 'itera-weights-v2'; // v1 kept no validators: dropped below

let oldCachesDropped = null;

// Fetches a URL through the Cache API, reporting progress; `fromCache` when the kept copy was
// still the server's.
export async function fetchCached(url, onProgress) {
  const cache = 'caches' in self ? await caches.open(CACHE_NAME) : null;
  if ('caches' in self) oldCachesDropped ??= caches.delete('itera-weights-v1').catch(() => {});
  const hit = cache && (await cache.match(url));
  let response;
  if (hit) {
    const validators = {};
    const etag = hit.headers.get('ETag');
    const modified = hit.headers.get('Last-Modified');
    if (etag) validators['If-None-Match'] = etag;
    if (modified) validators['If-Modified-Since'] = modified;
    if (Object.keys(validators).length > 0) {
      response = await fetch(url, { headers: validators, cache: 'no-store' }).catch(() => null);
    }
    if (!response || response.status === 304 || !response.ok) {
      const bytes = new Uint8Array(await hit.arrayBuffer());
      onProgress(bytes.length, bytes.length);
      return { bytes, fromCache: true };
    }
  } else {
    response = await fetch(url);
    if (!response.ok) throw new Error(`download of ${url} failed: HTTP ${response.status}`);
  }
  // With gzip, Content-Length is the compressed size; the dev server also sends the decoded one.
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
    const headers = { 'Content-Type': 'application/octet-stream' };
    for (const h of ['ETag', 'Last-Modified']) {
      const v = response.headers.get(h);
      if (v) headers[h] = v;
    }
    await cache.put(url, new Response(bytes, { headers }));
  }
  return { bytes, fromCache: false };
}
