#!/usr/bin/env bash
# QuantSpec on the real models (docs/quantspec.md):
#   bench/quantspec.sh quality    ppl and KL of hier's two views against kivi k4v4 / k8v8 and f16
#                                 (prompt half + decoded half, so the cache is read as decoding reads it)
#   bench/quantspec.sh accept     acceptance rate and tokens per round by gamma, greedy, on real text
#   bench/quantspec.sh speed      draft step, verify pass and plain decode on synthetic Llama-3.2-1B
#                                 (Q4_0) at depths 0, 4K and 32K; run on a quiet machine
set -euo pipefail
cd "$(dirname "$0")/.."
KVQ=${KVQ:-build/kvq}
S=../shared
OUT=bench/results/quantspec
mkdir -p $OUT

quality() {
    head -c 120000 $S/corpora/tinystories-valid-head.txt > /tmp/ts120k.txt
    python3 -c "t=open('$S/corpora/kjv.txt',encoding='utf-8').read(); open('/tmp/heldout-kjv.txt','w',encoding='utf-8').write(t[1500000:1700000])"
    local L2C="-m $S/models/stories260K/stories260K.bin --tokenizer $S/models/stories260K/tok512.bin"
    for m in "stories260K|$L2C|/tmp/ts120k.txt|256" "656k|-m $S/models/tinystories-656k|/tmp/ts120k.txt|512" \
             "recall|-m models/kvq-recall|/tmp/heldout-kjv.txt|2048"; do
        IFS='|' read -r name args text ctx <<< "$m"
        $KVQ ppl $args -f $text --ctx $ctx --kv f16 --split --save-logits /tmp/qs-$name.logits --json > $OUT/ppl-$name-f16.json
        for kv in kivi:k8v8 kivi:k4v4 hier; do
            $KVQ ppl $args -f $text --ctx $ctx --kv $kv --split --kl-base /tmp/qs-$name.logits --json > $OUT/ppl-$name-${kv//:/_}.json
        done
        $KVQ ppl $args -f $text --ctx $ctx --kv hier --view draft --split --kl-base /tmp/qs-$name.logits --json > $OUT/ppl-$name-hier_draft.json
    done
}

accept() {
    : > $OUT/accept.txt
    local L2C="-m $S/models/stories260K/stories260K.bin --tokenizer $S/models/stories260K/tok512.bin"
    for g in 2 4 6 8; do
        for m in "stories260K|$L2C|Once upon a time" "656k|-m $S/models/tinystories-656k/TinyStories-656K-Q8_0.gguf|Once upon a time"; do
            IFS='|' read -r name args p <<< "$m"
            $KVQ run $args -p "$p" -n 400 --temp 0 --kv hier --speculate quantspec:gamma=$g 2>&1 >/dev/null \
                | grep quantspec | sed "s/^/$name gamma $g: /" | tee -a $OUT/accept.txt
        done
        for chars in 2600 5200 10400; do # kvq-recall continuing filler prompts of about 1K, 2K and 4K tokens
            p=$(python3 -c "t=open('$S/corpora/kjv.txt',encoding='utf-8').read()[1500000:]; print(t[:$chars])")
            $KVQ run -m models/kvq-recall -p "$p" -n 200 --temp 0 --kv hier --speculate quantspec:gamma=$g --ctx 4600 2>&1 >/dev/null \
                | grep -E "quantspec|prefill" | tr '\n' ' ' | sed "s/^/recall kjv $chars chars gamma $g: /" | tee -a $OUT/accept.txt
            echo >> $OUT/accept.txt
        done
    done
}

speed() {
    local M=${M:-/work/synth/llama3.2-1b-q4_0.gguf}
    echo "# $(date -u +%F) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); uptime: $(uptime)" > $OUT/speed.txt
    for d in 0 4096 32768; do
        build/kvq bench -m "$M" --kv f16 --kv hier --speculate quantspec -p 0 -n 12 --depth $d -r 3 --json > $OUT/speed-$d.json
        cat $OUT/speed-$d.json >> $OUT/speed.txt
    done
}

"${1:-quality}"
