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
OUT=${OUT:-bench/results/quantspec}
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
    # acceptance by gamma (greedy), and end-to-end decode tok/s against plain decoding (hier, f16);
    # one thread: at these model sizes a second thread adds only fork/join noise
    : > $OUT/accept.txt
    local L2C="-m $S/models/stories260K/stories260K.bin --tokenizer $S/models/stories260K/tok512.bin"
    echo "Once upon a time" > /tmp/qs-p-story.txt
    local cases=("stories260K|$L2C|/tmp/qs-p-story.txt|400|512" "656k|-m $S/models/tinystories-656k/TinyStories-656K-Q8_0.gguf|/tmp/qs-p-story.txt|400|512")
    for chars in 2600 5200 10400; do # kvq-recall continuing filler prompts of about 1K, 2K and 4K tokens
        python3 -c "print(open('$S/corpora/kjv.txt',encoding='utf-8').read()[1500000:1500000+$chars], end='')" > /tmp/qs-p-$chars.txt
        cases+=("recall-kjv-$chars|-m models/kvq-recall|/tmp/qs-p-$chars.txt|200|4600")
    done
    for c in "${cases[@]}"; do
        IFS='|' read -r name args pf n ctx <<< "$c"
        for g in plain-f16 plain-hier 2 4 6 8 adaptive; do
            case $g in
            plain-f16) sp="--kv f16" ;;
            plain-hier) sp="--kv hier" ;;
            adaptive) sp="--kv hier --speculate quantspec:adaptive" ;;
            *) sp="--kv hier --speculate quantspec:gamma=$g" ;;
            esac
            $KVQ run $args -p "$(cat $pf)" -n $n --temp 0 --ctx $ctx -t 1 $sp 2>&1 >/dev/null | grep -E "quantspec|prefill" \
                | sed 's/kvq: //' | tr '\n' ' ' | sed "s/^/$name $g: /" >> $OUT/accept.txt
            echo >> $OUT/accept.txt
        done
    done
    cat $OUT/accept.txt
}

speed() {
    # Q4_0 weights: the draft weight set (q4_0) is the target's own bytes; Q8_0 weights: the draft
    # reads half of them, as the paper's 4-bit draft of a 16-bit model does
    local M=${M:-/work/synth/llama3.2-1b-q4_0.gguf} M8=${M8:-/work/synth/llama3.2-1b-q8_0.gguf}
    [ -f "$M8" ] || build/kvq synth --preset llama3.2-1b --type q8_0 --ctx 40000 -o "$M8"
    echo "# $(date -u +%F) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); uptime: $(uptime)" > $OUT/speed.txt
    for d in 0 4096 32768; do
        $KVQ bench -m "$M" --kv f16 --kv hier --speculate quantspec -p 0 -n 12 --depth $d -r 3 --json > $OUT/speed-$d.json
        $KVQ bench -m "$M8" --kv f16 --kv hier --speculate quantspec -p 0 -n 12 --depth $d -r 3 --json > $OUT/speed-q8_0-$d.json
        cat $OUT/speed-$d.json $OUT/speed-q8_0-$d.json >> $OUT/speed.txt
    done
    for g in 2 4; do # the smaller gammas, where the implied speed-up is best, at 32K
        $KVQ bench -m "$M8" --kv f16 --kv hier --speculate quantspec:gamma=$g -p 0 -n 12 --depth 32768 -r 3 --json \
            > $OUT/speed-q8_0-32768-gamma$g.json
        cat $OUT/speed-q8_0-32768-gamma$g.json >> $OUT/speed.txt
    done
}

"${1:-quality}"
