// Writes the expected token ids of tests/data/tokenizer/multilingual.inp for
// a tokenizer.json, with transformers.js (an implementation independent of
// kvq's, and of llama.cpp's). The output is committed; run this only to
// add texts or tokenizers:
//   npm install --prefix /tmp/tjs @huggingface/transformers@3 --ignore-scripts
//   NODE_PATH=/tmp/tjs/node_modules node scripts/tokenizer_vectors.mjs ../shared/tokenizers/qwen3 > tests/data/tokenizer/qwen3.out
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
const require = createRequire(process.env.NODE_PATH + '/');
const { PreTrainedTokenizer } = require('@huggingface/transformers');

const dir = process.argv[2];
const json = JSON.parse(readFileSync(`${dir}/tokenizer.json`, 'utf8'));
const config = JSON.parse(readFileSync(`${dir}/tokenizer_config.json`, 'utf8'));
const tok = new PreTrainedTokenizer(json, config);
// an optional second argument names another input in the same format
const here = process.argv[3] || new URL('../tests/data/tokenizer/multilingual.inp', import.meta.url);
const texts = readFileSync(here, 'utf8').split('\n__ggml_vocab_test__\n').slice(0, -1);
for (const t of texts) {
    const ids = tok.encode(t, { add_special_tokens: false });
    process.stdout.write(ids.map((i) => ' ' + i).join('') + '\n');
}
