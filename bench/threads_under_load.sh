#!/usr/bin/env bash
# Decode speed on a quiet machine and beside one or two busy processes (a
# shell loop each), for -t 1, -t 2 and the default thread count (issue 16,
# "threads under load"). Medians of REPS runs; each cell's runs alternate
# nothing else, so run it alone (check uptime first).
#   bench/threads_under_load.sh [KVQ_BINARY] > bench/results/threads/RESULT.md
# Models: stories260K (../shared, llama2.c), TinyStories-656K (GGUF) and the synthetic Llama-3.2-1B q4_0
# (/work/synth or SYNTH_1B), each through `kvq run`: its decode tok/s, as a user gets it (kvq bench pins
# the thread count, so it would not show the governor).
set -u
cd "$(dirname "$0")/.."
KVQ=${1:-build/kvq}
REPS=${REPS:-5}
M=../shared/models
B1=${SYNTH_1B:-/work/synth/llama3.2-1b-q4_0.gguf}

median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.argv[1:] if x]; print("%.1f" % statistics.median(v) if v else "n/a")' "$@"; }

tps_run() { # stories260K: decode tok/s of a greedy run (first run = what stderr reports)
    $KVQ run -m $M/stories260K/stories260K.bin --tokenizer $M/stories260K/tok512.bin -p "Once upon a time" -n 200 \
        --temp 0 "$@" 2>&1 >/dev/null | sed -n 's/.*decode [0-9]* tokens in [0-9.]* s (\([0-9.]*\) tok\/s).*/\1/p'
}
tps_gguf() { # model, n, extra args: decode tok/s of a greedy `kvq run` (the path users take: threads as run picks them)
    local m=$1 n=$2; shift 2
    $KVQ run -m "$m" -p "Once upon a time" -n "$n" --temp 0 "$@" 2>&1 >/dev/null |
        sed -n 's/.*decode [0-9]* tokens in [0-9.]* s (\([0-9.]*\) tok\/s).*/\1/p'
}
cell() { # unused label, then the function and its args
    local v=() i
    shift
    for i in $(seq $REPS); do v+=("$("$@")"); done
    median "${v[@]}"
}

start_busy() { BUSY=(); for _ in $(seq "$1"); do (while :; do :; done) & BUSY+=($!); done; sleep 0.5; }
stop_busy() { [ ${#BUSY[@]} -gt 0 ] && kill "${BUSY[@]}" 2>/dev/null; wait 2>/dev/null; BUSY=(); }
trap stop_busy EXIT

echo "# decode tok/s under load: $(date -u +%F), $KVQ ($($KVQ --version 2>/dev/null))"
echo "host: $(nproc) vCPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "medians of $REPS runs; busy = shell loops spinning beside kvq"
echo
echo "| model | threads | quiet | 1 busy | 2 busy |"
echo "|---|---|---|---|---|"
for t in 1 2 0; do
    row=()
    for busy in 0 1 2; do
        start_busy $busy
        row+=("$(cell x tps_run -t $t)")
        stop_busy
    done
    echo "| stories260K | ${t/0/default} | ${row[0]} | ${row[1]} | ${row[2]} |"
done
for spec in "$M/tinystories-656k/TinyStories-656K-Q8_0.gguf:TinyStories-656K:128" "$B1:Llama-3.2-1B q4_0 (synthetic):48"; do
    IFS=: read -r path name n <<< "$spec"
    [ -f "$path" ] || continue
    for t in 1 2 0; do
        row=()
        for busy in 0 1 2; do
            start_busy $busy
            row+=("$(cell x tps_gguf "$path" "$n" -t $t)")
            stop_busy
        done
        echo "| $name | ${t/0/default} | ${row[0]} | ${row[1]} | ${row[2]} |"
    done
done
