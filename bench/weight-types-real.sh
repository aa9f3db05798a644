#!/usr/bin/env bash
# The weight types of llama.cpp's files, on real weights, in kvq and in llama.cpp:
#   bench/weight-types-real.sh LLAMA_CPP_DIR
# 1. TinyStories-656K: its Q8_0 GGUF with the tokenizer scores repaired (bench/gguf_repair_scores.py),
#    requantized by llama-quantize to each file type; kvq ppl and llama-perplexity on the same file,
#    same text (TS100K, ../shared/reference/perplexity.md), ctx 512, f16 KV.
# 2. kvq-recall (rows of 256 and 768, so the K-quants themselves appear), with kvq's own quantizers
#    at load (--weights TYPE): KL and top-1 against its f16 weights on held-out KJV text.
# Never run by CI. Needs Debian's python3-numpy and python3-tqdm for step 1.
set -euo pipefail
cd "$(dirname "$0")/.."
L=${1:?usage: bench/weight-types-real.sh LLAMA_CPP_DIR}
S=../shared
OUT=${OUT:-bench/results/weight-types}
W=${WORK:-/tmp/kvq-weight-types}
TYPES=${TYPES:-Q8_0 Q6_K Q5_K_M Q5_1 Q5_0 Q4_K_M Q4_0 IQ4_NL IQ4_XS Q3_K_M Q2_K}
mkdir -p "$OUT" "$W"
log=$OUT/real-$(date -u +%Y%m%dT%H%M%S).txt
KVQ=build/kvq
make -s build/kvq
head -c 99667 $S/corpora/tinystories-valid-head.txt > "$W/ts100k.txt"
{
echo "# $(date -u '+%F %T') kvq $(git describe --always --dirty); llama.cpp $(git -C "$L" describe --always)"
echo "# TinyStories-656K, TS100K, ctx 512, f16 KV: file type | tensor types (kvq info) | kvq ppl | llama.cpp ppl | kvq / llama.cpp"
PYTHONPATH=$L/gguf-py /usr/bin/python3 bench/gguf_repair_scores.py $S/models/tinystories-656k/TinyStories-656K-Q8_0.gguf \
    "$W/656k.gguf" >/dev/null 2>&1
for t in $TYPES; do
    f=$W/656k-$t.gguf
    "$L/build/bin/llama-quantize" --allow-requantize "$W/656k.gguf" "$f" "$t" 2 >/dev/null 2>&1
    types=$($KVQ info -m "$f" 2>/dev/null | sed -n 's/^weights.*; //p')
    k=$($KVQ ppl -m "$f" -f "$W/ts100k.txt" --ctx 512 --kv f16 --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])')
    g=$("$L/build/bin/llama-perplexity" -m "$f" -f "$W/ts100k.txt" -c 512 -t 2 2>&1 | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')
    python3 -c 'import sys; t,ty,k,g=sys.argv[1:]; print("%-7s | %s | %.4f | %.4f | %.5f" % (t, ty, float(k), float(g), float(k)/float(g)))' "$t" "$types" "$k" "$g"
done
echo "# kvq-recall, held-out KJV (characters 1.5M-1.7M, as bench/slimllm.sh), ctx 1024, f16 KV: kvq's own"
echo "# round-to-nearest quantizers at load (--weights TYPE), rows of 256 and 768 so every type applies:"
echo "# type | kvq ppl | KL vs the f16 weights | top-1 agreement"
python3 -c "t=open('$S/corpora/kjv.txt',encoding='utf-8').read(); open('$W/kjv.txt','w',encoding='utf-8').write(t[1500000:1700000])"
$KVQ ppl -m models/kvq-recall -f "$W/kjv.txt" --ctx 1024 --kv f16 --save-logits "$W/recall.logits" --json 2>/dev/null |
    python3 -c 'import json,sys; j=json.load(sys.stdin); print("f16     | %.4f | 0 | 1" % j["ppl"])'
for t in ${KTYPES:-q8_0 q6_K q5_K q5_1 q5_0 q4_K q4_1 q4_0 iq4_nl iq4_xs q3_K q2_K}; do
    $KVQ ppl -m models/kvq-recall --weights "$t" -f "$W/kjv.txt" --ctx 1024 --kv f16 --kl-base "$W/recall.logits" --json 2>/dev/null |
        python3 -c 'import json,sys; j=json.load(sys.stdin); print("%-7s | %.4f | %.5f | %.4f" % (sys.argv[1], j["ppl"], j["kl_mean"], j["top1_agree"]))' "$t"
done
} | tee "$log"
