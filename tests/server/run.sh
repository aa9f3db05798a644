#!/usr/bin/env bash
# kvq serve end to end on loopback: the API and its errors, concurrency,
# admission, sessions (test_server.py); the official openai npm client
# (openai_client.mjs); nginx in front of two replicas (test_scaleout.py).
# Skips what it lacks (../shared, node's openai package, nginx), except
# under CI=true, where a missing piece is a failure.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
KVQ="$BUILD/kvq"
M=../shared/models/tinystories-656k
fail=0
missing() {
    if [ "${CI:-}" = "true" ]; then echo "FAIL missing $1 (CI=true)"; fail=1; else echo "SKIP: $1 is absent"; fi
}
if [ ! -e $M/TinyStories-656K-Q8_0.gguf ]; then missing "$M (server tests need ../shared)"; exit $fail; fi
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
# a random-weight model slow enough (tens of ms per token) that requests overlap
$KVQ synth --preset stories110m --type q4_0 -o $TMP/slow.gguf >/dev/null 2>&1 || { echo "FAIL synth"; exit 1; }
python3 tests/server/test_server.py $KVQ $M/TinyStories-656K-Q8_0.gguf $M $TMP/slow.gguf || fail=1

if [ -d tests/server/node_modules/openai ] && command -v node >/dev/null; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    $KVQ serve -m $M/TinyStories-656K-Q8_0.gguf --port $port --api-key test-key -t 1 2>$TMP/serve.log &
    pid=$!
    for _ in $(seq 200); do curl -sf http://127.0.0.1:$port/health >/dev/null 2>&1 && break; sleep 0.05; done
    node tests/server/openai_client.mjs http://127.0.0.1:$port/v1 test-key || fail=1
    kill -TERM $pid; wait $pid || { echo "FAIL kvq serve exit status"; cat $TMP/serve.log; fail=1; }
else
    missing "tests/server/node_modules/openai (npm ci --prefix tests/server)"
fi

NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ -x "$NGINX" ]; then
    python3 tests/server/test_scaleout.py $KVQ $M/TinyStories-656K-Q8_0.gguf $NGINX || fail=1
else
    missing "nginx"
fi
exit $fail
