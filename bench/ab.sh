#!/usr/bin/env bash
# A/B speed check of two kvq binaries, alternating runs on the same model:
#   bench/ab.sh OLD_KVQ NEW_KVQ MODEL.gguf [ROUNDS] [DEPTHS] [EXTRA kvq bench ARGS...]
# Each round runs `kvq bench -p 0 -n 32 --depth DEPTHS -r 3` with the old
# binary, then the new one, so drift on this VM hits both alike; prints the
# median decode tok/s per depth for each and the ratio new/old. Benchmark
# only on a quiet machine (check `uptime`).
set -euo pipefail
OLD=$1 NEW=$2 MODEL=$3 ROUNDS=${4:-5} DEPTHS=${5:-0,4096}
shift $(( $# < 5 ? $# : 5 ))
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
for r in $(seq "$ROUNDS"); do
    for side in old new; do
        bin=$OLD; [ $side = new ] && bin=$NEW
        "$bin" bench -m "$MODEL" -p 0 -n 32 --depth "$DEPTHS" -r 3 --no-bw --json "$@" 2>/dev/null > "$TMP/$side.$r.json"
    done
done
python3 - "$TMP" "$ROUNDS" "$MODEL" <<'PY'
import json, statistics, sys, glob
tmp, rounds, model = sys.argv[1], int(sys.argv[2]), sys.argv[3]
res = {}
for side in ("old", "new"):
    for r in range(1, rounds + 1):
        for x in json.load(open(f"{tmp}/{side}.{r}.json"))["results"]:
            res.setdefault((x["kv"], x["depth"]), {}).setdefault(side, []).append(x["tok_s"])
print(f"{model}: median decode tok/s over {rounds} alternating rounds (each a median of 3 runs)")
print(f"{'kv':<24}{'depth':>7}{'old':>10}{'new':>10}{'new/old':>9}   spread old / new")
for (kv, d), v in sorted(res.items(), key=lambda x: (x[0][0], x[0][1])):
    o, n = statistics.median(v["old"]), statistics.median(v["new"])
    print(f"{kv:<24}{d:>7}{o:>10.1f}{n:>10.1f}{n / o:>9.3f}   {min(v['old']):.1f}-{max(v['old']):.1f} / {min(v['new']):.1f}-{max(v['new']):.1f}")
PY
