#!/usr/bin/env bash
# SliM-LLM measurements (docs/weight-quantization.md):
#   bench/slimllm.sh quality   perplexity, KL and top-1 agreement against the F32 model for RTN, GPTQ and SliM-LLM at
#                              2, 3, 4 bits (groups of 128 and of 32), and for the standard GGUF types at load, on
#                              stories260K, TinyStories-656K (TinyStories and WikiText-2 text) and kvq-recall (KJV);
#                              calibration text is disjoint from the evaluation text
#   bench/slimllm.sh files     slim 2/3-bit files of the synthetic Llama-3.2-1B (speed only: random weights)
#   bench/slimllm.sh speed     decode tok/s and GB/s of those files next to Q4_0, Q4_K and Q8_0, alternating, same run
# Tables: python3 bench/slimllm_tables.py bench/results/slimllm quality|speed
set -euo pipefail
cd "$(dirname "$0")/.."
KVQ=${KVQ:-build/kvq}
S=../shared
OUT=bench/results/slimllm
SYN=${SYN:-/work/synth}
mkdir -p $OUT
T=/tmp/slimllm
mkdir -p $T

texts() {
    tail -c 400000 $S/corpora/tinystories-valid-head.txt > $T/calib-ts.txt         # calibration: the tail
    head -c 120000 $S/corpora/tinystories-valid-head.txt > $T/eval-ts.txt           # evaluation: the head
    head -c 120000 $S/corpora/wikitext-2-raw-test.txt > $T/eval-wiki.txt
    python3 -c "t=open('$S/corpora/kjv.txt',encoding='utf-8').read(); open('$T/calib-kjv.txt','w',encoding='utf-8').write(t[500000:1400000]); open('$T/eval-kjv.txt','w',encoding='utf-8').write(t[1500000:1700000])"
}

# name | model args | calibration | ctx | evaluation texts (name:file ...)
MODELS=(
    "260k|-m $S/models/stories260K/stories260K.bin --tokenizer $S/models/stories260K/tok512.bin|calib-ts|256|ts:eval-ts wiki:eval-wiki"
    "656k|-m $S/models/tinystories-656k|calib-ts|512|ts:eval-ts wiki:eval-wiki"
    "recall|-m models/kvq-recall|calib-kjv|1024|kjv:eval-kjv"
)

quality() {
    texts
    for spec in "${MODELS[@]}"; do
        IFS='|' read -r name args calib ctx evals <<< "$spec"
        for e in $evals; do
            $KVQ ppl $args -f $T/${e#*:}.txt --ctx $ctx --kv f32 -t 1 --save-logits $T/$name-${e%%:*}.logits --json \
                > $OUT/ppl-$name-${e%%:*}-f32.json
        done
        for g in 128 32; do
            for b in 2 3 4; do
                for me in rtn gptq slim; do
                    w=$T/$name-$me$b-g$g.gguf
                    $KVQ quantize $args -f $T/$calib.txt --ctx $ctx --method $me --bits $b --group $g -t 1 -o $w \
                        > $OUT/quant-$name-$me$b-g$g.txt 2>/dev/null
                    for e in $evals; do
                        $KVQ ppl $args -f $T/${e#*:}.txt --ctx $ctx --kv f32 -t 1 --weights $w \
                            --kl-base $T/$name-${e%%:*}.logits --json > $OUT/ppl-$name-${e%%:*}-$me$b-g$g.json
                    done
                done
            done
        done
        for ty in q4_0 q4_1 q4_K q5_K q6_K q8_0; do
            for e in $evals; do
                $KVQ ppl $args -f $T/${e#*:}.txt --ctx $ctx --kv f32 -t 1 --weights $ty --kl-base $T/$name-${e%%:*}.logits \
                    --json > $OUT/ppl-$name-${e%%:*}-$ty.json 2> $OUT/ppl-$name-${e%%:*}-$ty.err
            done
        done
    done
}

# The head (tied to the embedding) stays Q8_0 in a slim file, as in the paper; it is then rounded to
# q4_0 (requantizing a slim file to q4_0 touches only what is not slim), so that every file compared
# has the same 4.5-bit head and differs in the layer matrices only.
files() {
    texts
    for b in 2 3; do
        [ -f $SYN/llama3.2-1b-slim$b-full.gguf ] || $KVQ quantize -m $SYN/llama3.2-1b-q8_0.gguf -f $T/calib-ts.txt \
            --tokens 1024 --method slim --bits $b -o $SYN/llama3.2-1b-slim$b-full.gguf > $OUT/quant-llama1b-slim$b.txt
        $KVQ quantize -m $SYN/llama3.2-1b-slim$b-full.gguf --type q4_0 -o $SYN/llama3.2-1b-slim$b.gguf
    done
    $KVQ quantize -m $SYN/llama3.2-1b-q8_0.gguf --type q4_K -o $SYN/llama3.2-1b-q4_K.gguf
}

speed() {
    local o=$OUT/${SPEED:-speed}.jsonl   # SPEED=NAME: another host's results beside the first
    : > $o
    for rep in $(seq ${REPS:-3}); do
        for f in slim2 slim3 q4_0 q4_K q8_0; do
            $KVQ bench -m $SYN/llama3.2-1b-$f.gguf -p 0 -n 32 --depth 0 -r 3 -t 2 --json | sed "s|^|{\"file\":\"$f\",\"rep\":$rep,\"run\":|; s|\$|}|" >> $o
        done
    done
}

"$@"
