#!/usr/bin/env bash
# RocketKV quality on the real models (docs/rocketkv.md):
#   bench/rocketkv.sh niah    passkey grids on models/kvq-recall, one prompt and two turns,
#                             for every policy and budget -> bench/results/rocketkv/niah-*.json
#   bench/rocketkv.sh ppl     kvq ppl (prompt half + decoded half) and KL against the full cache:
#                             kvq-recall on held-out KJV at ctx 4096, TinyStories-656K at ctx 512
#   bench/rocketkv.sh plot    the grid of heatmaps -> docs/img/rocketkv-niah-turns{1,2}.png
# Accuracy does not depend on timing: these may run beside other work. Speed is bench/rocketkv_speed.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
KVQ=${KVQ:-build/kvq}
R=models/kvq-recall
OUT=bench/results/rocketkv
S=../shared
mkdir -p "$OUT" docs/img
BUDGETS="64 128 256 512 1024"
LENS=2048,4096
DEPTHS=0,0.25,0.5,0.75,1
N=${N:-2}

spec() { # POLICY BUDGET -> KV spec
    case $1 in
    full) echo f16 ;;
    window) echo "f16+window:sink=4,win=$(($2 - 4))" ;;
    *) echo "f16+$1:budget=$2" ;;
    esac
}

niah() {
    for turns in 1 2; do
        $KVQ niah -m $R --kv f16 --turns $turns --lengths $LENS --depths $DEPTHS -n $N --json > $OUT/niah-t$turns-full.json
        for p in window snapkv hsa rocket rocket-mt; do
            for b in $BUDGETS; do
                $KVQ niah -m $R --kv "$(spec $p $b)" --turns $turns --lengths $LENS --depths $DEPTHS -n $N --json \
                    > $OUT/niah-t$turns-$p-$b.json
            done
        done
        for b in 128 256; do # combined compression
            $KVQ niah -m $R --kv kivi:k4v2+rocket:budget=$b --turns $turns --lengths $LENS --depths $DEPTHS -n $N --json \
                > $OUT/niah-t$turns-kivi-rocket-$b.json
        done
        $KVQ niah -m $R --kv kivi:k4v2 --turns $turns --lengths $LENS --depths $DEPTHS -n $N --json > $OUT/niah-t$turns-kivi.json
    done
}

# runs a command into a result file unless the file is already there (a resumed run)
fresh() { local out=$1; shift; [ -s "$out" ] || "$@" > "$out"; }

ppl() {
    python3 -c "t=open('$S/corpora/kjv.txt',encoding='utf-8').read(); open('/tmp/heldout-kjv.txt','w',encoding='utf-8').write(t[1500000:1700000])"
    head -c 120000 $S/corpora/tinystories-valid-head.txt > /tmp/ts120k.txt
    local g=$S/models/tinystories-656k
    # the full cache as prompt + decode too, saved as the KL base
    [ -s /tmp/rk-base.logits ] || $KVQ ppl -m $R -f /tmp/heldout-kjv.txt --ctx 4096 --kv f16 --split --save-logits /tmp/rk-base.logits --json > $OUT/ppl-recall-full.json
    [ -s /tmp/ts-base.logits ] || $KVQ ppl -m $g -f /tmp/ts120k.txt --ctx 512 --kv f16 --split --save-logits /tmp/ts-base.logits --json > $OUT/ppl-656k-full.json
    for p in window snapkv hsa rocket rocket-mt; do
        for b in $BUDGETS; do
            fresh $OUT/ppl-recall-$p-$b.json $KVQ ppl -m $R -f /tmp/heldout-kjv.txt --ctx 4096 --kv "$(spec $p $b)" --kl-base /tmp/rk-base.logits --json
            [ $b -lt 256 ] && fresh $OUT/ppl-656k-$p-$b.json $KVQ ppl -m $g -f /tmp/ts120k.txt --ctx 512 --kv "$(spec $p $b)" --kl-base /tmp/ts-base.logits --json
        done
    done
    for kv in kivi:k4v2 kivi:k4v2+rocket:budget=256; do
        fresh "$OUT/ppl-recall-${kv//[:+=,]/_}.json" $KVQ ppl -m $R -f /tmp/heldout-kjv.txt --ctx 4096 --kv $kv --split --kl-base /tmp/rk-base.logits --json
    done
}

plot() {
    for turns in 1 2; do
        python3 bench/rocketkv_grid.py $OUT $turns > /tmp/grid.gp && gnuplot /tmp/grid.gp
    done
}

"${1:-niah}"
