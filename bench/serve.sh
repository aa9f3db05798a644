#!/usr/bin/env bash
# kvq serve measurements (docs/serving.md), into bench/results/serve/:
#   bench/serve.sh load     streaming load test (bench/serve_load.py) at 1, 4 and 16 concurrent streams on
#                           TinyStories-656K (real) and the synthetic Llama-3.2-1B q4_0 (speed only)
#   bench/serve.sh batch    the same batching without HTTP: kvq bench --seqs 1..16, then llama.cpp's
#                           llama-batched-bench on the same file, alternating, same run (LLAMA_CPP=dir of its bin/)
#   bench/serve.sh memory   concurrent 4K-token sessions that fit in --kv-memory 1G per KV spec (bench/serve_memory.py)
# One benchmark at a time, on a quiet machine (uptime): each uses both cores.
set -euo pipefail
cd "$(dirname "$0")/.."
KVQ=${KVQ:-build/kvq}
S=../shared
OUT=bench/results/serve
SYN=${SYN:-/work/synth}
LLAMA_CPP=${LLAMA_CPP:-/work/llama.cpp/build/bin}
mkdir -p $OUT
[ -f $SYN/llama3.2-1b-q4_0.gguf ] || $KVQ synth --preset llama3.2-1b --type q4_0 -o $SYN/llama3.2-1b-q4_0.gguf
machine() { echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cpus, load: $(cut -d' ' -f1-3 /proc/loadavg)"; }

serve_load() { # label model serve-args load-args
    local port; port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    $KVQ serve -m "$2" --port $port --parallel 16 -t 2 ${3:-} 2>>$OUT/serve-stderr.log &
    local pid=$!
    for _ in $(seq 600); do curl -sf http://127.0.0.1:$port/health >/dev/null 2>&1 && break; sleep 0.1; done
    python3 bench/serve_load.py --port $port --streams 1,4,16 --reqs ${REQS:-2} --label "$1" ${4:-}
    kill -TERM $pid; wait $pid
}

case "${1:-}" in
load)
    { machine
      echo "# bench/serve.sh load: bench/serve_load.py --streams 1,4,16 --reqs ${REQS:-2}; kvq serve --parallel 16 -t 2"
      echo "# 656k: --max-tokens 128 --prompt-words 24; 1b (decode-bound): --max-tokens 96 --prompt-words 2;"
      echo "# 1b-mixed: --max-tokens 64 --prompt-words 24 (the synthetic model's tokenizer gives ~5 tokens a word)"
      serve_load 656k-q8_0 $S/models/tinystories-656k/TinyStories-656K-Q8_0.gguf "" "--max-tokens 128"
      serve_load 1b-q4_0 $SYN/llama3.2-1b-q4_0.gguf "--ctx 1024" "--max-tokens 96 --prompt-words 2"
      serve_load 1b-q4_0-mixed $SYN/llama3.2-1b-q4_0.gguf "--ctx 1024" "--max-tokens 64 --prompt-words 24"
    } | tee $OUT/load.jsonl ;;
batch)
    { machine
      for rep in 1 2; do
        echo "# kvq bench -m llama3.2-1b-q4_0.gguf -p 0 -n 32 -t 2 -r 3 --no-bw --seqs 2,4,8,16 (rep $rep)"
        $KVQ bench -m $SYN/llama3.2-1b-q4_0.gguf -p 0 -n 32 -t 2 -r 3 --no-bw --seqs 2,4,8,16 --json
        if [ -x $LLAMA_CPP/llama-batched-bench ]; then
          echo "# llama-batched-bench -npp 16 -ntg 32 -npl 1,2,4,8,16 -t 2 (rep $rep)"
          $LLAMA_CPP/llama-batched-bench -m $SYN/llama3.2-1b-q4_0.gguf -c 2048 -b 512 -ub 512 -npp 16 -ntg 32 \
              -npl 1,2,4,8,16 -t 2 2>&1 | grep -E '^\|'
        fi
      done
    } | tee $OUT/batch.txt ;;
memory)
    { machine
      echo "# bench/serve_memory.py llama3.2-1b-q4_0.gguf --kv-memory 1G --ctx 4096 --try 48"
      python3 bench/serve_memory.py $KVQ $SYN/llama3.2-1b-q4_0.gguf --kv-memory 1G --ctx 4096 --try 48 \
          --specs f16,kivi:k4v2,kivi:k2v2+rocket:budget=512
    } | tee $OUT/memory.jsonl ;;
*) echo "usage: bench/serve.sh load|batch|memory"; exit 2 ;;
esac
