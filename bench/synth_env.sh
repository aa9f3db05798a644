# Sourced by the bench scripts that run synthetic models (`source bench/synth_env.sh "$@"`):
# the paths, and synth_model PRESET TYPE, which prints the model's path after writing it
# with `kvq synth` when it is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
KVQ=build/kvq
DIR=${1:-/tmp/kvq-synth}
OUT=bench/results
mkdir -p "$DIR" "$OUT"
synth_model() {
    local f=$DIR/$1-$2.gguf
    [ -f "$f" ] || $KVQ synth --preset "$1" --type "$2" -o "$f" >/dev/null || return 1
    echo "$f"
}
