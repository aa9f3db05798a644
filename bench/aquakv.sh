#!/usr/bin/env bash
# AQUA-KV measurements (docs/aquakv.md):
#   bench/aquakv.sh calib     predictors for the three real models (calibration text disjoint from the
#                             evaluation text) -> bench/results/aquakv/pred-*.gguf and the per-layer tables
#   bench/aquakv.sh quality   ppl and KL against f16 (prompt half + decoded half), at equal true bits with
#                             kivi and pertoken, the predictor ablation, HIGGS vs uniform; passkey on kvq-recall
#   bench/aquakv.sh cold      session save / restore against re-prefilling, and file sizes (kvq-recall at
#                             1K and 4K tokens; synthetic Llama-3.2-1B at 32K, speed only)
#   bench/aquakv.sh hot       decode speed of the live (stream) cache against depth, next to kivi
set -euo pipefail
cd "$(dirname "$0")/.."
KVQ=${KVQ:-build/kvq}
S=../shared
OUT=bench/results/aquakv
mkdir -p $OUT
L2C="-m $S/models/stories260K/stories260K.bin --tokenizer $S/models/stories260K/tok512.bin"
G=$S/models/tinystories-656k
R=models/kvq-recall

texts() {
    tail -c 400000 $S/corpora/tinystories-valid-head.txt > /tmp/aq-calib-ts.txt    # calibration: the tail
    head -c 120000 $S/corpora/tinystories-valid-head.txt > /tmp/ts120k.txt           # evaluation: the head
    python3 -c "t=open('$S/corpora/kjv.txt',encoding='utf-8').read(); open('/tmp/aq-calib-kjv.txt','w',encoding='utf-8').write(t[500000:1400000]); open('/tmp/heldout-kjv.txt','w',encoding='utf-8').write(t[1500000:1700000])"
}

calib() {
    texts
    for b in 2 3 4; do
        $KVQ calibrate aqua $L2C -f /tmp/aq-calib-ts.txt --tokens 32768 --ctx 256 --bits $b -o $OUT/pred-260k-$b.gguf > $OUT/calib-260k-$b.txt
        $KVQ calibrate aqua -m $G -f /tmp/aq-calib-ts.txt --tokens 32768 --ctx 512 --bits $b -o $OUT/pred-656k-$b.gguf > $OUT/calib-656k-$b.txt
        $KVQ calibrate aqua -m $R -f /tmp/aq-calib-kjv.txt --tokens 32768 --ctx 4096 --bits $b -o $OUT/pred-recall-$b.gguf > $OUT/calib-recall-$b.txt
    done
    $KVQ calibrate aqua -m $G -f /tmp/aq-calib-ts.txt --tokens 32768 --ctx 512 --bits 2 --quantizer uniform -o $OUT/pred-656k-2u.gguf > $OUT/calib-656k-2u.txt
    $KVQ calibrate aqua -m $R -f /tmp/aq-calib-kjv.txt --tokens 32768 --ctx 4096 --bits 2 --quantizer uniform -o $OUT/pred-recall-2u.gguf > $OUT/calib-recall-2u.txt
}

quality() {
    texts
    for m in "656k|-m $G|/tmp/ts120k.txt|512" "recall|-m $R|/tmp/heldout-kjv.txt|4096"; do
        IFS='|' read -r name args text ctx <<< "$m"
        $KVQ ppl $args -f $text --ctx $ctx --kv f16 --split --save-logits /tmp/aq-$name.logits --json > $OUT/ppl-$name-f16.json
        for kv in kivi:k2v2 kivi:k4v2 kivi:k4v4 pertoken:k2v2 pertoken:k4v2 \
                  aqua:pred=$OUT/pred-$name-2.gguf,mode=cached aqua:pred=$OUT/pred-$name-3.gguf,mode=cached \
                  aqua:pred=$OUT/pred-$name-4.gguf,mode=cached aqua:pred=none,bits=2,mode=cached \
                  aqua:pred=$OUT/pred-$name-2u.gguf,mode=cached; do
            tag=$(echo "$kv" | sed "s|$OUT/||; s|[:=,]|_|g")
            $KVQ ppl $args -f $text --ctx $ctx --kv $kv --split --kl-base /tmp/aq-$name.logits --json > $OUT/ppl-$name-$tag.json
        done
    done
    for kv in f16 kivi:k2v2 aqua:pred=$OUT/pred-recall-2.gguf,mode=cached aqua:pred=none,bits=2,mode=cached; do
        tag=$(echo "$kv" | sed "s|$OUT/||; s|[:=,]|_|g")
        $KVQ niah -m $R --kv $kv --lengths 2048,4096 --depths 0,0.25,0.5,0.75,1 -n 2 --json --plot docs/img/aquakv-niah-$tag.png > $OUT/niah-$tag.json
    done
}

cold() {
    texts
    : > $OUT/cold.txt
    for chars in 2600 10400; do
        p=$(python3 -c "print(open('/tmp/heldout-kjv.txt',encoding='utf-8').read()[:$chars])")
        for kv in "" "aqua:pred=$OUT/pred-recall-2.gguf"; do
            $KVQ run -m $R -p "$p" -n 1 --temp 0 --ctx 4200 --save-session /tmp/aq-cold.kvq ${kv:+--session-kv $kv} 2>&1 >/dev/null \
                | grep -E "prefill|saved" | tr '\n' ' ' | sed "s|^|recall $chars chars save ${kv:-f16}: |" >> $OUT/cold.txt
            echo " size $(stat -c %s /tmp/aq-cold.kvq)" >> $OUT/cold.txt
            for hot in f16 kivi:k4v2; do
                $KVQ run -m $R -n 1 --temp 0 --ctx 4200 --kv $hot --load-session /tmp/aq-cold.kvq 2>&1 >/dev/null | grep restored \
                    | sed "s|^|recall $chars chars restore ${kv:-f16} into $hot: |" >> $OUT/cold.txt
            done
        done
    done
    cat $OUT/cold.txt
    # 32K on synthetic Llama-3.2-1B (random weights: speed and size only): predictors fitted on its own
    # random-weight activations, then the round trip at depth against the prefill rate of the same run
    local M=${M:-/work/synth/llama3.2-1b-q4_0.gguf}
    [ -f ${SYNTH_PRED:-/work/synth/aqua-pred-llama3.2-1b.gguf} ] || $KVQ calibrate aqua -m "$M" -f /tmp/aq-calib-ts.txt --tokens 8704 --ctx 512 \
        -o ${SYNTH_PRED:-/work/synth/aqua-pred-llama3.2-1b.gguf} > $OUT/calib-synth-llama3.2-1b.txt
    $KVQ bench -m "$M" --kv f16 -p 512 -n 4 --depth 32768 -r 3 --session aqua:pred=${SYNTH_PRED:-/work/synth/aqua-pred-llama3.2-1b.gguf} --json \
        > $OUT/cold-synth-32768-aqua.json
    $KVQ bench -m "$M" --kv f16 -p 0 -n 4 --depth 32768 -r 3 --session same --json > $OUT/cold-synth-32768-f16.json
}

hot() {
    # 128 decoded tokens per run: one window chunk compressed per run, as in steady decoding
    for d in 1024 4096; do
        $KVQ bench -m $R --kv kivi:k2v2 --kv aqua:pred=$OUT/pred-recall-2.gguf --kv aqua:pred=$OUT/pred-recall-2.gguf,mode=cached \
            --kv f16 -p 0 -n 128 --depth $d -r 3 --json > $OUT/hot-$d.json
    done
}

"${1:-quality}"
