// Greedy decode speed of the playground's wasm (the same build the page loads, wasm-bindgen
// --target nodejs) in Node's V8, for `cargo xtask bench --wasm`.
// Usage: node wasm-decode.cjs PKG_DIR WEIGHTS_DIR TOKENS ROUNDS NAME...  → JSON {name: tokens/s}
const [pkg, weights, tokens, rounds, ...names] = process.argv.slice(2);
const { Model } = require(`${pkg}/itera_web.js`);
const fs = require('fs');
const tokenizer = fs.readFileSync(`${weights}/tokenizer.json`);
const request = { prompt: 'Once upon a time', max_tokens: Number(tokens), stop_at_end_of_text: false };
const result = {};
const models = names.map((n) => [n, new Model(fs.readFileSync(`${weights}/${n}.safetensors`), tokenizer)]);
for (let r = 0; r < Number(rounds); r++) {
  for (const [name, m] of models) {
    m.start(request);
    const t0 = performance.now();
    let n = 0;
    for (;;) {
      const out = m.step(16);
      n += out.tokens.length;
      if (out.done) break;
    }
    result[name] = Math.max(result[name] ?? 0, n / ((performance.now() - t0) / 1000));
  }
}
console.log(JSON.stringify(result));
