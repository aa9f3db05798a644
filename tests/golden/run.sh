#!/usr/bin/env bash
# End-to-end tests of the kvq CLI on the real tiny models in ../shared:
# golden text, perplexity against independent implementations, format
# agreement, and clear errors on bad input. Skips (or fails under CI=true)
# when ../shared is absent.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
KVQ="$BUILD/kvq"
S=../shared
M=$S/models
pass=0; fail=0
ok()   { pass=$((pass+1)); echo "ok   $1"; }
bad()  { fail=$((fail+1)); echo "FAIL $1"; }
need() {
    for f in "$@"; do
        if [ ! -e "$f" ]; then
            if [ "${CI:-}" = "true" ]; then bad "missing $f (CI=true)"; return 1; fi
            echo "SKIP: $f is absent; golden tests need ../shared"; return 1
        fi
    done
}
trim() { python3 -c 'import sys; sys.stdout.write(sys.stdin.read().strip())'; }
jget() { python3 -c 'import sys,json; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
within() { python3 -c 'import sys; a,b,t=map(float,sys.argv[1:]); sys.exit(0 if abs(a-b)<=t*abs(b) else 1)' "$1" "$2" "$3"; }
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT

# 1. Golden, byte-exact: llama2.c checkpoint, empty prompt, greedy 200.
if need $M/stories260K/stories260K.bin $M/stories260K/tok512.bin $S/reference/stories260K-greedy-200.txt; then
    out=$($KVQ run -m $M/stories260K/stories260K.bin --tokenizer $M/stories260K/tok512.bin -p "" -n 200 --temp 0 2>$TMP/err | trim)
    ref=$(trim < $S/reference/stories260K-greedy-200.txt)
    [ "$out" == "$ref" ] && ok "stories260K greedy 200 is byte-exact" || bad "stories260K greedy 200 differs"
    grep -q "tok/s" $TMP/err && ok "run prints statistics on stderr" || bad "run statistics missing"
    for isa in scalar avx2 avx512; do  # every kernel path end to end (unsupported ISAs fall back)
        out=$(KVQ_ISA=$isa $KVQ run -m $M/stories260K/stories260K.bin --tokenizer $M/stories260K/tok512.bin -p "" -n 200 --temp 0 2>/dev/null | trim)
        [ "$out" == "$ref" ] && ok "greedy 200 byte-exact with KVQ_ISA=$isa" || bad "greedy 200 differs with KVQ_ISA=$isa"
    done
fi

# 2. Golden: HF folder, "Once upon a time", greedy 60.
if need $M/tinystories-656k/model.safetensors $S/reference/tinystories-656k-greedy-60.txt; then
    out=$($KVQ run -m $M/tinystories-656k -p "Once upon a time" -n 60 --temp 0 2>/dev/null | trim)
    ref=$(trim < $S/reference/tinystories-656k-greedy-60.txt)
    [ "$out" == "$ref" ] && ok "TinyStories-656K greedy 60 matches" || bad "TinyStories-656K greedy 60 differs"
fi

# 3. Perplexity within 1% of the independent references (reference/perplexity.md).
if need $S/corpora/tinystories-valid-head.txt $M/stories260K/stories260K.bin $M/tinystories-656k/model.safetensors; then
    head -c 99667 $S/corpora/tinystories-valid-head.txt > $TMP/ts100k.txt
    for kv in f32 f16; do
        p=$($KVQ ppl -m $M/stories260K/stories260K.bin --tokenizer $M/stories260K/tok512.bin -f $TMP/ts100k.txt --ctx 256 --kv $kv --json | jget ppl)
        within "$p" 3.9376 0.01 && ok "stories260K ppl $p (ref 3.9376, kv $kv)" || bad "stories260K ppl $p vs 3.9376 (kv $kv)"
    done
    for kv in f32 f16; do
        p=$($KVQ ppl -m $M/tinystories-656k -f $TMP/ts100k.txt --ctx 512 --kv $kv --json | jget ppl)
        within "$p" 36.8131 0.01 && ok "656K ppl $p (ref 36.8131, kv $kv)" || bad "656K ppl $p vs 36.8131 (kv $kv)"
    done
    j=$($KVQ ppl -m $M/tinystories-656k -f $S/corpora/tinystories-valid-head.txt --chars 60000 --score all --ctx 512 --kv f32 --json)
    p=$(echo "$j" | jget ppl); n=$(echo "$j" | jget tokens)
    within "$p" 35.457 0.01 && [ "$n" = 13573 ] && ok "656K score-all ppl $p over $n tokens (ref 35.457 / 13573)" \
        || bad "656K score-all ppl $p over $n tokens vs 35.457 / 13573"
fi

# 4. Formats agree: HF f32 vs the shipped Q8_0 GGUF (tokenizer scores all -1000).
if need $M/tinystories-656k/TinyStories-656K-Q8_0.gguf $M/tinystories-656k/model.safetensors; then
    a=$($KVQ run -m $M/tinystories-656k -p "Once upon a time" -n 8 --temp 0 2>/dev/null)
    # Token for token only where the prompt's activations stay f32 (KVQ_REPACK=0: prefill
    # multiplies them with sgemm). The repacked AVX2 kernels quantize them to int8, as
    # llama.cpp does: a near-tie of this 656K model then flips within 8 tokens, and the
    # KL check below is the test of that path.
    b=$(KVQ_REPACK=0 $KVQ run -m $M/tinystories-656k/TinyStories-656K-Q8_0.gguf -p "Once upon a time" -n 8 --temp 0 2>/dev/null)
    [ "$a" == "$b" ] && ok "HF and Q8_0 GGUF (file layout) give the same 8 greedy tokens" || bad "HF and GGUF greedy differ: '$a' vs '$b'"
    $KVQ ppl -m $M/tinystories-656k -f $TMP/ts100k.txt --kv f32 --save-logits $TMP/hf.logits --json >/dev/null
    j=$($KVQ ppl -m $M/tinystories-656k/TinyStories-656K-Q8_0.gguf -f $TMP/ts100k.txt --kv f32 --kl-base $TMP/hf.logits --json 2>/dev/null)
    kl=$(echo "$j" | jget kl_mean); t1=$(echo "$j" | jget top1_agree); p=$(echo "$j" | jget ppl)
    python3 -c "import sys; sys.exit(0 if $kl < 0.005 and $t1 > 0.95 else 1)" \
        && ok "GGUF Q8_0 vs HF f32: KL $kl, top-1 $t1, ppl $p (llama.cpp on the repaired f32: 36.8131)" \
        || bad "GGUF Q8_0 vs HF f32: KL $kl top-1 $t1"
    within "$p" 36.8131 0.01 && ok "Q8_0 GGUF ppl $p with repaired scores (broken tokenization would give ~164.8)" || bad "Q8_0 GGUF ppl $p"
    j=$($KVQ ppl -m $M/tinystories-656k -f $TMP/ts100k.txt --kv f16 --kl-base $TMP/hf.logits --json)
    kl=$(echo "$j" | jget kl_mean)
    python3 -c "import sys; sys.exit(0 if $kl < 1e-5 else 1)" && ok "f16 KV vs f32 KV: KL $kl" || bad "f16 KV KL $kl"
fi

# 5. Bad input: clear error, non-zero exit, never a crash (exit >= 128).
# Under `make SAN=1` a leak on an error path makes LeakSanitizer report and
# exit 23, still a failing status: the report itself fails the check.
expect_fail() { # description, expected stderr fragment, command...
    local d=$1 frag=$2; shift 2
    "$@" >$TMP/o 2>$TMP/e; rc=$?
    if grep -q "ERROR: LeakSanitizer\|ERROR: AddressSanitizer\|runtime error:" $TMP/e; then
        bad "$d (sanitizer: $(grep -m1 "ERROR\|runtime error" $TMP/e | head -c 200))"
    elif [ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -q -- "$frag" $TMP/e; then ok "$d"; else bad "$d (rc $rc: $(head -c 300 $TMP/e))"; fi
}
if need $M/stories260K/stories260K.bin; then
    L2C="-m $M/stories260K/stories260K.bin --tokenizer $M/stories260K/tok512.bin"
    expect_fail "missing model file" "cannot open" $KVQ run -m /nonexistent.gguf
    expect_fail "llama2.c without tokenizer" "pass --tokenizer" $KVQ run -m $M/stories260K/stories260K.bin
    expect_fail "bad --temp" "--temp expects" $KVQ run $L2C --temp -1
    expect_fail "bad -n" "-n expects" $KVQ run $L2C -n abc
    expect_fail "unknown KV codec" "unknown KV codec 'bogus'" $KVQ run $L2C --kv bogus
    expect_fail "KV option on f16" "takes no options" $KVQ run $L2C --kv f16:k4
    expect_fail "prompt longer than the context" "more than the context" $KVQ run $L2C --ctx 8 -p "one two three four five six seven eight nine ten"
    expect_fail "absurd context" "--ctx expects" $KVQ run $L2C --ctx 99999999999
    expect_fail "unknown option" "unknown option" $KVQ run $L2C --frobnicate 1
    expect_fail "a bare unknown flag" "unknown option '--frobnicate' for kvq run" $KVQ run $L2C --frobnicate
    expect_fail "a known flag without its value" "option -n needs a value" $KVQ run $L2C -n
    for c in run ppl info tokenize synth bench tune quantize calibrate niah; do
        $KVQ $c --help > $TMP/h 2>&1 && head -n 1 $TMP/h | grep -q "^usage: kvq $c" || { bad "kvq $c --help ($(head -c 200 $TMP/h))"; continue; }
    done
    $KVQ quantize -h | grep -q -- "--method slim|gptq|rtn" && ok "kvq CMD --help / -h print the command's usage" || bad "quantize -h"
    $KVQ --version | grep -q "^kvq .*(kernels: " && ok "kvq --version" || bad "kvq --version: $($KVQ --version 2>&1)"
    expect_fail "text too short for a window" "fewer than one window" $KVQ ppl $L2C -f $S/reference/stories260K-greedy-200.txt --ctx 512
    head -c 1000 $M/stories260K/stories260K.bin > $TMP/trunc.bin
    expect_fail "truncated llama2.c checkpoint" "truncated" $KVQ run -m $TMP/trunc.bin --tokenizer $M/stories260K/tok512.bin
    head -c 300000 $M/tinystories-656k/TinyStories-656K-Q8_0.gguf > $TMP/trunc.gguf
    expect_fail "truncated GGUF" "past the end of the file" $KVQ run -m $TMP/trunc.gguf
    out=$($KVQ run $L2C --ctx 16 -n 100 --temp 0 2>$TMP/e); rc=$?
    [ $rc -eq 0 ] && grep -q "context of 16 tokens is full" $TMP/e && ok "generation stops cleanly at a full context" || bad "context-full handling (rc $rc)"
fi
# issue 16's small items: ppl's standard error, bench's n/a and a peak RSS without the bandwidth probe
if need $M/tinystories-656k/model.safetensors $S/corpora/tinystories-valid-head.txt; then
    head -c 30000 $S/corpora/tinystories-valid-head.txt > $TMP/t30k.txt
    $KVQ ppl -m $M/tinystories-656k -f $TMP/t30k.txt 2>/dev/null | grep -q "^perplexity [0-9.]* +/- [0-9.]* over" \
        && ok "ppl prints the perplexity's standard error" || bad "ppl without +/-"
    $KVQ bench -m $M/tinystories-656k -p 16 -n 4 -r 1 --no-bw 2>/dev/null | grep -q " n/a " \
        && ok "bench --no-bw says n/a for the bandwidth fraction" || bad "bench --no-bw"
    printf "Once upon a time" > $TMP/p.txt
    a=$($KVQ run -m $M/tinystories-656k -f $TMP/p.txt -n 12 --temp 0 2>/dev/null)
    b=$(printf "Once upon a time" | $KVQ run -m $M/tinystories-656k -p - -n 12 --temp 0 2>/dev/null)
    c=$($KVQ run -m $M/tinystories-656k -p "Once upon a time" -n 12 --temp 0 2>/dev/null)
    [ -n "$a" ] && [ "$a" == "$c" ] && [ "$b" == "$c" ] && ok "run -f FILE and -p - (stdin) give the -p TEXT run" || bad "run -f / -p -"
    $KVQ run -m $M/tinystories-656k -p "Hi" -n 2 --ctx 1024 2>&1 >/dev/null | grep -q "past the model's training context" \
        && ok "run warns when --ctx is past the training context" || bad "no --ctx warning"
    $KVQ ppl -m $M/tinystories-656k -f $TMP/t30k.txt --ctx 1024 2>&1 >/dev/null | grep -q "past the model's training context" \
        && ok "ppl warns when --ctx is past the training context" || bad "no ppl --ctx warning"
    $KVQ niah -m $M/tinystories-656k --lengths 600 --depths 0.5 -n 1 2>&1 >/dev/null | grep -q "past the model's training context" \
        && ok "niah warns when --lengths go past the training context" || bad "no niah length warning"
    if command -v gnuplot >/dev/null; then
        $KVQ niah -m $M/tinystories-656k --lengths 128 --depths 0.2,0.8 -n 1 --plot $TMP/n1.png >/dev/null 2>&1 && [ -s $TMP/n1.png ] \
            && ok "niah --plot with a single length draws a line" || bad "niah --plot, single length"
        expect_fail "niah --plot that cannot be written fails" "gnuplot failed" $KVQ niah -m $M/tinystories-656k --lengths 128 --depths 0.5 -n 1 --plot /nonexistent/dir/x.png
    fi
    head -c 4000 $S/corpora/tinystories-valid-head.txt > $TMP/long_prompt.txt
    $KVQ run -m $M/tinystories-656k -f $TMP/long_prompt.txt -n 1 --ctx 2048 2>&1 >/dev/null | grep -q "the prompt has [0-9]* tokens, past the model's training context" \
        && ok "run warns when the prompt is past the training context" || bad "no prompt-length warning"
    s1=$($KVQ run -m $M/tinystories-656k -p "Hi" -n 2 2>&1 >/dev/null | grep -o "seed [0-9]*")
    [ -n "$s1" ] && ok "run prints its random seed ($s1)" || bad "no seed printed"
    expect_fail "run: missing prompt file" "cannot open prompt file" $KVQ run -m $M/tinystories-656k -f $TMP/none.txt
    # --stop: the text ends before the stop string, which is never printed; --repeat-penalty changes greedy text
    full=$($KVQ run -m $M/tinystories-656k -p "Once upon a time" -n 40 --temp 0 2>/dev/null)
    cut=$($KVQ run -m $M/tinystories-656k -p "Once upon a time" -n 40 --temp 0 --stop "Spot" --stop "zzz" 2>/dev/null)
    pre=${full%%Spot*}
    [ "$cut" == "${pre}" ] && [ "$cut" != "$full" ] && ok "run --stop ends before the stop string" || bad "run --stop: '$cut'"
    pen=$($KVQ run -m $M/tinystories-656k -p "Once upon a time" -n 40 --temp 0 --repeat-penalty 1.3 2>/dev/null)
    pen2=$($KVQ run -m $M/tinystories-656k -p "Once upon a time" -n 40 --temp 0 --repeat-penalty 1.3 2>/dev/null)
    [ "$pen" == "$pen2" ] && [ "$pen" != "$full" ] && ! echo "$pen" | grep -q "Spot, Spot" && ok "run --repeat-penalty" || bad "run --repeat-penalty: '$pen'"
    # -i: a two-turn conversation on stdin, the second turn reusing the cache
    printf 'Tell me a story\nWhat happened next?\n' | $KVQ run -m $M/tinystories-656k -i --chat-template plain -n 12 --temp 0 >$TMP/chat.out 2>$TMP/e
    [ $? -eq 0 ] && [ "$(grep -c . $TMP/chat.out)" -ge 2 ] && grep -q "chat (template plain)" $TMP/e && ok "run -i: two turns on standard input" || bad "run -i ($(head -c 200 $TMP/e))"
    expect_fail "run -i without a chat template" "has no chat template" $KVQ run -m $M/tinystories-656k -i
    expect_fail "run -i with -p" "takes no -p" $KVQ run -m $M/tinystories-656k -i -p hi
    rss=$($KVQ bench -m $M/tinystories-656k -p 16 -n 4 -r 1 --json 2>/dev/null | jget peak_rss)
    python3 -c "import sys; sys.exit(0 if int(sys.argv[1]) < 512 << 20 else 1)" "$rss" \
        && ok "bench's peak RSS ($rss bytes) leaves out the 1 GiB bandwidth probe" || bad "bench peak RSS $rss"
fi

# issue 16's parser and file items: each crafted input gets a clear error (or a warning), never a hang or a crash
if need $M/tinystories-656k/model.safetensors $M/stories260K/stories260K.bin $M/tinystories-656k/TinyStories-656K-Q8_0.gguf $S/tokenizers/llama2c_tokenizer.bin $S/corpora/tinystories-valid-head.txt; then
    HF=$M/tinystories-656k
    mkfifo $TMP/fifo
    # a FIFO would block forever at open: each use is bounded by timeout, and must be refused at once
    expect_fail "a FIFO as -m is refused" "not a regular file" timeout 10 $KVQ run -m $TMP/fifo -p hi
    expect_fail "a FIFO as --tokenizer is refused" "not a regular file" timeout 10 $KVQ run -m $M/stories260K/stories260K.bin --tokenizer $TMP/fifo -p hi
    expect_fail "a FIFO as ppl -f is refused" "not a regular file" timeout 10 $KVQ ppl -m $HF -f $TMP/fifo
    expect_fail "a FIFO as run -f is refused" "not a regular file" timeout 10 $KVQ run -m $HF -f $TMP/fifo
    expect_fail "a FIFO as a layer table is refused" "not a regular file" timeout 10 $KVQ run -m $HF --kv kivi:layers=$TMP/fifo -p hi
    # what a file that is no model looks like
    expect_fail "a text file as -m is named as text" "looks like a text file" $KVQ run -m README.md -p hi
    expect_fail "a safetensors file as -m" "single safetensors file" $KVQ run -m $HF/model.safetensors -p hi
    { printf 'GGUE'; tail -c +5 $HF/TinyStories-656K-Q8_0.gguf; } > $TMP/badmagic.gguf
    expect_fail "a GGUF with a damaged magic" "damaged magic" $KVQ run -m $TMP/badmagic.gguf -p hi
    expect_fail "--tokenizer with a GGUF is refused, not ignored" "is for llama2.c checkpoints" $KVQ run -m $HF/TinyStories-656K-Q8_0.gguf --tokenizer /nonexistent -p hi
    expect_fail "--tokenizer with an HF folder is refused" "its own tokenizer" $KVQ run -m $HF --tokenizer $M/stories260K/tok512.bin -p hi
    # safetensors with a header of 4k+1 bytes: every F32 tensor is misaligned (UBSan aborted in the kernels)
    python3 tests/golden/hf_variant.py $HF $TMP/unaligned unaligned
    a=$($KVQ run -m $TMP/unaligned -p "Once upon a time" -n 24 --temp 0 2>$TMP/e); b=$($KVQ run -m $HF -p "Once upon a time" -n 24 --temp 0 2>/dev/null)
    [ -n "$a" ] && [ "$a" == "$b" ] && ! grep -q "runtime error" $TMP/e && ok "unaligned safetensors tensors are realigned (same greedy text)" || bad "unaligned safetensors ($(head -c 200 $TMP/e))"
    # config.json: each inconsistent or impossible value is named
    cfg_fail() { rm -rf $TMP/cfg; python3 tests/golden/hf_variant.py $HF $TMP/cfg config "$1" "$2"; expect_fail "config.json $1=$2" "$3" $KVQ run -m $TMP/cfg -p hi -n 1; }
    cfg_fail hidden_size 128.5 "hidden_size is 128.5; it must be an integer"
    cfg_fail num_attention_heads 3 "hidden_size 128 is not divisible by num_attention_heads 3"
    cfg_fail num_key_value_heads 16 "num_attention_heads 8 is not a multiple of num_key_value_heads 16"
    cfg_fail max_position_embeddings 0 "max_position_embeddings is 0"
    cfg_fail max_position_embeddings -4 "max_position_embeddings is -4"
    cfg_fail rope_theta 1e999 "rope_theta must be a finite number"
    cfg_fail rope_scaling '"yes"' "rope_scaling must be an object or null"
    cfg_fail rope_scaling '{"type": "linear", "factor": "x"}' "rope_scaling.factor must be a finite number"
    cfg_fail rope_scaling '{"factor": 2}' "no rope_type"
    rm -rf $TMP/cfg; python3 tests/golden/hf_variant.py $HF $TMP/cfg config head_dim 32
    $KVQ run -m $TMP/cfg -p hi -n 1 2>&1 | grep -q "head_dim 32 times num_attention_heads 8 is 256, not hidden_size 128" \
        && ok "config.json head_dim inconsistent with hidden_size: a warning" || bad "no head_dim warning"
    # tokenizer.json
    tok_fail() { rm -rf $TMP/tj; python3 tests/golden/hf_variant.py $HF $TMP/tj tokenizer "$1"; expect_fail "tokenizer.json $1" "$2" $KVQ run -m $TMP/tj -p hi -n 1; }
    tok_fail empty "empty vocabulary"
    tok_fail dup-id "id 5 is given to both"
    tok_fail frac-id "has id 7.5"
    rm -rf $TMP/tj; python3 tests/golden/hf_variant.py $HF $TMP/tj tokenizer bad-byte
    $KVQ run -m $TMP/tj -p hi -n 1 2>&1 | grep -q "look like byte tokens but are not <0xHH>" \
        && ok "tokenizer.json: a malformed <0x..> token gets a warning" || bad "no warning for a malformed byte token"
    # llama2.c: a header whose vocabulary does not match the file or its tokenizer
    python3 - $M/stories260K/stories260K.bin $TMP/l2c_neg.bin $TMP/l2c_big.bin <<'PY'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
neg = bytearray(b); struct.pack_into("<i", neg, 20, -struct.unpack_from("<i", b, 20)[0])
open(sys.argv[2], "wb").write(neg)   # claims a separate classifier the file does not hold
big = bytearray(b); struct.pack_into("<i", big, 20, struct.unpack_from("<i", b, 20)[0] + 1)
open(sys.argv[3], "wb").write(big)   # one more token than the embedding holds
PY
    expect_fail "llama2.c: a negative vocabulary without the classifier" "truncated for its llama2.c header" $KVQ run -m $TMP/l2c_neg.bin --tokenizer $M/stories260K/tok512.bin -p hi
    expect_fail "llama2.c: a vocabulary larger than the arrays" "needs" $KVQ run -m $TMP/l2c_big.bin --tokenizer $M/stories260K/tok512.bin -p hi
    head -c 100000 $S/tokenizers/llama2c_tokenizer.bin > $TMP/bigtok.bin 2>/dev/null
    expect_fail "llama2.c: a tokenizer for another vocabulary" "tokenizer '$TMP/bigtok.bin'" $KVQ run -m $M/stories260K/stories260K.bin --tokenizer $TMP/bigtok.bin -p hi
    # layer tables: overflow, trailing garbage, deep nesting (libyaml took 37 s on 200 KB of '[')
    printf 'k2147483648v2\nk4v2\n' > $TMP/ovf.txt
    expect_fail "layer table: an overflowing width" "K2147483648 V2" $KVQ run -m $HF --kv kivi:layers=$TMP/ovf.txt -p hi
    printf 'k4v2 junk\nk4v2\n' > $TMP/trail.txt
    expect_fail "layer table: trailing garbage" "followed by more" $KVQ run -m $HF --kv kivi:layers=$TMP/trail.txt -p hi
    expect_fail "--kv kivi:k2147483648v2" "K2147483648 V2 is not supported" $KVQ run -m $HF --kv kivi:k2147483648v2 -p hi
    python3 -c "open('$TMP/deep.yaml','w').write('nbits_key: 1\n0: ' + '['*100000 + ']'*100000 + '\n')"
    # characters the vocabulary cannot encode: counted, and fused as tokenizer.json's fuse_unk asks
    # (expected ids from transformers.js: 80 1158 80 0 80 171 80 0)
    out=$($KVQ tokenize -m $HF -p "Hi 日本 ok ÿ" 2>$TMP/e)
    [ "$out" == "80 1158 80 0 80 171 80 0" ] && grep -q "3 character(s) of the text are not in the vocabulary and became <unk>" $TMP/e \
        && ok "unknown characters: one fused <unk> per run, and a count on stderr" || bad "unk handling: '$out' $(head -c 200 $TMP/e)"
    if [ -f $S/tokenizers/llama3/tokenizer.json ]; then
        out=$($KVQ tokenize -m $S/tokenizers/llama3 -p "Cửa Việt" 2>/dev/null)
        [ "$out" == "34 91163 101798" ] && ok "Llama 3 ignore_merges: ' Việt' is one token (a tokenizer-only folder)" || bad "Llama 3 'Cửa Việt': $out"
    fi
    head -c 20 $S/corpora/tinystories-valid-head.txt > $TMP/tiny.txt
    expect_fail "tune: too short a calibration text (no leak under LSan)" "calibration text too short" $KVQ tune -m $HF -f $TMP/tiny.txt --budget 3 -o $TMP/tt.txt
    expect_fail "deeply nested YAML is refused before parsing" "nest 100000 deep" timeout 10 $KVQ run -m $HF --kv kivi:layers=$TMP/deep.yaml -p hi
fi

# info --kv ...+window: what a window really holds (sinks rounded up to a page, the window, under a page),
# and a run that generates far past the window stays within it
if [ -f models/kvq-recall/model.safetensors ]; then
    j=$($KVQ info models/kvq-recall --kv f16+window:win=256 --ctx 4096 --json 2>/dev/null)
    hm=$(echo "$j" | python3 -c 'import json,sys; k=json.load(sys.stdin)["kv"][0]; print(k["held_max"], k["bytes_alloc_max"])')
    $KVQ run -m models/kvq-recall -p "the" -n 1500 --ctx 4096 --kv f16+window:win=256 --temp 1 --seed 1 2>$TMP/e >/dev/null
    held=$(grep -o "held for [0-9]* tokens" $TMP/e | grep -o "[0-9]*")
    set -- $hm
    [ "${1:-0}" -gt 256 ] && [ "${1:-0}" -lt 4096 ] && [ -n "$held" ] && [ "$held" -le "$1" ] && [ "$held" -gt 256 ] \
        && ok "info --kv f16+window:win=256 says it holds at most $1 tokens; a 1500-token run holds $held" || bad "window bound: info '$hm', run held '$held'"
    expect_fail "info --kv with an unknown window option" "unknown option 'size'" $KVQ info models/kvq-recall --kv f16+window:size=64
fi

# 6. KV quantization end to end: tuner, per-layer tables, accounting.
if need $M/stories260K/stories260K.bin $S/corpora/tinystories-valid-head.txt; then
    L2C="-m $M/stories260K/stories260K.bin --tokenizer $M/stories260K/tok512.bin"
    tail -c 20000 $S/corpora/tinystories-valid-head.txt > $TMP/calib.txt
    if $KVQ tune $L2C -f $TMP/calib.txt --budget 3 --tokens 256 --ctx 128 -o $TMP/tuned.txt >$TMP/o 2>$TMP/e \
        && [ "$(grep -c '^k[0-9]v[0-9]' $TMP/tuned.txt)" = 5 ] && python3 -c "import json; json.load(open('$TMP/tuned.txt.json'))"; then
        ok "kvq tune writes a 5-layer table and its JSON report"
    else bad "kvq tune ($(tail -c 300 $TMP/e))"; fi
    p=$($KVQ ppl $L2C -f $TMP/ts100k.txt --ctx 256 --kv kivi:layers=$TMP/tuned.txt --json | jget ppl)
    within "$p" 3.9376 0.25 && ok "tuned table runs in ppl (ppl $p)" || bad "tuned table ppl $p"
    # true bytes per token: stories260K k4v2 at ctx 512 = codes + fp16 scales + fp16 window (5 layers x 4 heads x 8 dims)
    j=$($KVQ info $M/stories260K/stories260K.bin --tokenizer $M/stories260K/tok512.bin --kv kivi:k4v2 --ctx 512 --json)
    b=$(echo "$j" | python3 -c 'import json,sys; print(json.load(sys.stdin)["kv"][0]["bytes_per_token"])')
    # nq = 480 tokens quantized, 32 in the window: keys 15 blocks x (8*32*4/8 + 8*4), values 480 x (8*2/8 + 1*4), window 32 x 8 x 4
    want=$(python3 -c "print(5*4*(15*(128+32) + 480*(2+4) + 32*8*4)/512)")
    python3 -c "import sys; sys.exit(0 if abs($b-$want) < 1e-6 else 1)" && ok "kivi:k4v2 true bytes/token $b = formula" || bad "kivi bytes/token $b vs $want"
    expect_fail "layer table of the wrong length" "covers 2 layers but the model has 5" \
        bash -c "printf 'k4v2\nk2v2\n' > $TMP/short.txt; $KVQ ppl $L2C -f $TMP/ts100k.txt --kv kivi:layers=$TMP/short.txt"
    expect_fail "unsupported bit pair" "not supported" $KVQ ppl $L2C -f $TMP/ts100k.txt --kv kivi:k3v5
    printf '0:\n  nbits_key: [8\n' > $TMP/bad.yaml
    expect_fail "malformed YAML" "yaml" $KVQ ppl $L2C -f $TMP/ts100k.txt --kv kivi:layers=$TMP/bad.yaml
fi

# 7. synth + bench smoke test (speed is recorded in bench/, never asserted here).
$KVQ synth --preset stories110m --type q4_0 --layers 1 -o $TMP/s.gguf >/dev/null 2>&1 \
    && j=$($KVQ bench -m $TMP/s.gguf --kv f16 --kv kivi:k2v2 -p 16 -n 4 --depth 0,64 -r 1 --no-bw --json 2>/dev/null) \
    && echo "$j" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert len(d["results"]) == 6 and all(r["tok_s"] > 0 for r in d["results"])' \
    && ok "synth + bench produce results for every kv and depth" || bad "synth + bench smoke test"
# a model of 24 MB or more: % bw is taken against reads of the model file beside each run
$KVQ synth --preset stories110m --type q8_0 --layers 1 -o $TMP/s8.gguf >/dev/null 2>&1 \
    && j=$($KVQ bench -m $TMP/s8.gguf -p 0 -n 2 --depth 16 -r 2 --json 2>/dev/null) \
    && echo "$j" | python3 -c 'import json,sys; d=json.load(sys.stdin); r=d["results"][0]; assert d["file_read_gbs"] > 0 and r["ref_gbs"] > 0 and ((r["bw_fraction"] or 0) > 0) != r["above_probe"]' \
    && ok "bench measures the model file's read rate beside each decode run" || bad "bench file-read reference"
# decode only (-p 0): bench must still decode a valid token (it once read an unset one)
$KVQ bench -m $TMP/s.gguf -p 0 -n 2 --depth 16 -r 2 --no-bw --json >/dev/null 2>&1 \
    && ok "bench -p 0 decodes" || bad "bench -p 0 fails"

# 8. Long context: the committed kvq-recall model retrieves; a small window does not.
R=models/kvq-recall
if [ -f $R/model.safetensors ]; then
    full=$($KVQ niah -m $R --lengths 1024 --depths 0.25,0.5 -n 4 --json | jget mean)
    win=$($KVQ niah -m $R --kv f32+window:sink=4,win=128 --lengths 1024 --depths 0.25,0.5 -n 4 --json | jget mean)
    python3 -c "import sys; sys.exit(0 if $full >= 0.75 and $win <= 0.25 else 1)" \
        && ok "kvq-recall passkey at 1024: full cache $full, window(128) $win" || bad "niah full $full window $win"
else
    bad "models/kvq-recall is missing"
fi

# 9. Sessions, weight sets and memory caps (the step-protocol issue).
if need $M/tinystories-656k/TinyStories-656K-Q8_0.gguf $M/stories260K/stories260K.bin; then
    G=$M/tinystories-656k/TinyStories-656K-Q8_0.gguf
    for kv in f16 kivi:k4v2; do
        full=$($KVQ run -m $G -p "Once upon a time" -n 200 --temp 0 --kv $kv 2>/dev/null)
        a=$($KVQ run -m $G -p "Once upon a time" -n 50 --temp 0 --kv $kv --save-session $TMP/s.kvq 2>$TMP/ea)
        b=$($KVQ run -m $G -n 150 --temp 0 --kv $kv --load-session $TMP/s.kvq 2>$TMP/e)
        # the session holds what the first run held (the story may end before 200 tokens)
        held=$(sed -n 's/.* held for \([0-9]*\) tokens.*/\1/p' $TMP/ea | tail -1)
        [ -n "$b" ] && [ "$a$b" == "$full" ] && grep -q "restored $held tokens" $TMP/e \
            && ok "session ($kv): 50 + 150 tokens across two runs = 200 in one ($held restored)" || bad "session continuation ($kv) differs"
    done
    $KVQ run -m $G -p "Once upon a time" -n 50 --temp 0 --kv f16 --save-session $TMP/f16.kvq >/dev/null 2>&1
    $KVQ run -m $G -n 20 --temp 0 --kv kivi:k4v2 --load-session $TMP/f16.kvq >/dev/null 2>$TMP/e \
        && ok "an f16 session restores into a kivi:k4v2 context" || bad "f16 -> kivi session ($(head -c 200 $TMP/e))"
    expect_fail "session of another model" "saved from another model" \
        $KVQ run -m $M/stories260K/stories260K.bin --tokenizer $M/stories260K/tok512.bin --load-session $TMP/f16.kvq
    head -c 2000 $TMP/f16.kvq > $TMP/trunc.kvq
    expect_fail "truncated session file" "truncated or corrupt" $KVQ run -m $G --load-session $TMP/trunc.kvq
    python3 -c "import sys; b=bytearray(open(sys.argv[1],'rb').read()); b[len(b)//2]^=0x10; open(sys.argv[2],'wb').write(b)" $TMP/f16.kvq $TMP/flip.kvq
    expect_fail "session with a flipped bit" "corrupt" $KVQ run -m $G --load-session $TMP/flip.kvq
    expect_fail "not a session file" "not a kvq session file" $KVQ run -m $G --load-session $G
    $KVQ quantize -m $G --type q4_0 -o $TMP/q4.gguf 2>/dev/null
    a=$($KVQ run -m $TMP/q4.gguf -p "Once upon a time" -n 60 --temp 0 2>/dev/null)
    b=$($KVQ run -m $G --weights q4_0 -p "Once upon a time" -n 60 --temp 0 2>/dev/null)
    [ -n "$a" ] && [ "$a" == "$b" ] && ok "weight set q4_0 at load = the model requantized to q4_0 on disk" || bad "weight set differs from the q4_0 file"
    c=$($KVQ run -m $G --weights $TMP/q4.gguf -p "Once upon a time" -n 60 --temp 0 2>/dev/null)
    [ "$a" == "$c" ] && ok "weight set from a second file = that file alone" || bad "weight set from file differs"
    $KVQ synth --preset stories110m --type q8_0 --layers 1 -o $TMP/other.gguf >/dev/null 2>&1
    expect_fail "weight set of another model" "is another model" $KVQ run -m $G --weights $TMP/other.gguf
    expect_fail "KV memory cap reached" "memory cap" $KVQ run -m $G --kv-memory 100K -p "Once upon a time" -n 400 --temp 0
fi

# 10. RocketKV policies end to end.
if [ -f models/kvq-recall/model.safetensors ] && need $M/tinystories-656k/TinyStories-656K-Q8_0.gguf; then
    R=models/kvq-recall
    G=$M/tinystories-656k/TinyStories-656K-Q8_0.gguf
    for kv in f16+rocket:budget=128 kivi:k4v2+rocket:budget=128 f16+rocket-mt:budget=256; do
        a=$($KVQ niah -m $R --kv $kv --turns 2 --lengths 1024 --depths 0.25,0.75 -n 2 --json | jget mean)
        python3 -c "import sys; sys.exit(0 if $a >= 0.75 else 1)" && ok "niah --turns 2 with $kv: $a" || bad "niah --turns 2 $kv: $a"
    done
    j=$($KVQ niah -m $R --kv f16+snapkv:budget=128 --lengths 1024 --depths 0.5 -n 1 --json)
    h=$(echo "$j" | jget kv_bytes_held_per_token)
    python3 -c "import sys; sys.exit(0 if $h < 0.2 * 2048 else 1)" && ok "snapkv:budget=128 holds $h bytes per context token (f16: 2048)" || bad "snapkv held $h"
    j=$($KVQ ppl -m $G -f $TMP/ts100k.txt --ctx 512 --kv f16+rocket:budget=64 --json)
    [ "$(echo "$j" | jget mode)" = "prompt+decode" ] && ok "ppl with a policy: prompt half + decoded half (ppl $(echo "$j" | jget ppl))" || bad "ppl rocket"
    expect_fail "policy budget 0" "budget=0" $KVQ run -m $G --kv f16+rocket:budget=0
    expect_fail "policy budget past the context" "larger than the context" $KVQ run -m $G --kv f16+snapkv:budget=9999 --ctx 512
    expect_fail "policy budget not a number" "budget=many" $KVQ run -m $G --kv f16+hsa:budget=many
    expect_fail "policy window past its budget" "must be smaller than budget" $KVQ run -m $G --kv f16+snapkv:budget=64,window=100
fi

# 11. QuantSpec: speculative greedy output = plain greedy output with the same cache, on every model and ISA path.
if [ -f models/kvq-recall/model.safetensors ] && need $M/stories260K/stories260K.bin $M/tinystories-656k/TinyStories-656K-Q8_0.gguf; then
    L2C="-m $M/stories260K/stories260K.bin --tokenizer $M/stories260K/tok512.bin"
    G=$M/tinystories-656k/TinyStories-656K-Q8_0.gguf
    for isa in scalar avx2 avx512; do
        for mdl in "$L2C" "-m $G" "-m models/kvq-recall"; do
            a=$(KVQ_ISA=$isa $KVQ run $mdl -p "Once upon a time" -n 300 --temp 0 --kv hier:g=32 2>/dev/null)
            b=$(KVQ_ISA=$isa $KVQ run $mdl -p "Once upon a time" -n 300 --temp 0 --kv hier:g=32 --speculate quantspec 2>$TMP/e)
            name=$(echo "$mdl" | sed 's|.*/||; s| .*||')
            [ -n "$a" ] && [ "$a" == "$b" ] && grep -q "acceptance" $TMP/e \
                && ok "quantspec greedy = plain greedy ($name, KVQ_ISA=$isa)" || bad "quantspec greedy differs ($name, $isa)"
            b=$(KVQ_ISA=$isa $KVQ run $mdl -p "Once upon a time" -n 300 --temp 0 --kv hier:g=32 --speculate quantspec:adaptive 2>$TMP/e)
            [ -n "$a" ] && [ "$a" == "$b" ] && grep -q "plain steps" $TMP/e \
                && ok "quantspec adaptive greedy = plain greedy ($name, KVQ_ISA=$isa)" || bad "quantspec adaptive greedy differs ($name, $isa)"
        done
    done
    expect_fail "speculate without a draft view" "use --kv hier" $KVQ run -m $G --speculate quantspec --kv kivi:k4v4
    expect_fail "gamma 0" "gamma" $KVQ run -m $G --kv hier --speculate quantspec:gamma=0
    expect_fail "absurd gamma" "gamma" $KVQ run -m $G --kv hier --speculate quantspec --gamma 1000
    expect_fail "draft weights of another model" "is another model" $KVQ run -m $G --kv hier --speculate quantspec --draft-weights $TMP/other.gguf
    j=$($KVQ ppl -m $G -f $TMP/ts100k.txt --ctx 512 --kv hier --view draft --json)
    p4=$(echo "$j" | jget ppl); p8=$($KVQ ppl -m $G -f $TMP/ts100k.txt --ctx 512 --kv hier --json | jget ppl)
    python3 -c "import sys; sys.exit(0 if $p8 < $p4 else 1)" && ok "hier: the 8-bit view ($p8) beats the 4-bit view ($p4)" || bad "hier views $p8 $p4"
fi

# 12. AQUA-KV: calibration, the codec, and the cold tier.
if need $M/stories260K/stories260K.bin $M/tinystories-656k/TinyStories-656K-Q8_0.gguf $S/corpora/tinystories-valid-head.txt; then
    L2C="-m $M/stories260K/stories260K.bin --tokenizer $M/stories260K/tok512.bin"
    G=$M/tinystories-656k/TinyStories-656K-Q8_0.gguf
    tail -c 200000 $S/corpora/tinystories-valid-head.txt > $TMP/aq-calib.txt
    $KVQ calibrate aqua $L2C -f $TMP/aq-calib.txt --tokens 8192 --ctx 256 -o $TMP/260k-aqua.gguf >$TMP/o 2>$TMP/e \
        && [ "$(grep -cE '^ +[1-4] ' $TMP/o)" = 4 ] && ok "calibrate aqua fits 4 predictors and reports them" || bad "calibrate aqua ($(tail -c 200 $TMP/e))"
    f=$($KVQ ppl $L2C -f $TMP/ts100k.txt --ctx 256 --kv f16 --split --json | jget ppl)
    a=$($KVQ ppl $L2C -f $TMP/ts100k.txt --ctx 256 --kv aqua:pred=$TMP/260k-aqua.gguf,mode=cached --split --json | jget ppl)
    within "$a" "$f" 0.10 && ok "aqua 2-bit ppl $a within 10% of f16 $f" || bad "aqua ppl $a vs f16 $f"
    $KVQ calibrate aqua -m $G -f $TMP/aq-calib.txt --tokens 8192 -o $TMP/656k-aqua.gguf >/dev/null 2>&1
    # a prompt long enough that most of the session lies beyond aqua's sinks and window
    lp="$(head -c 1600 $S/corpora/tinystories-valid-head.txt)"
    $KVQ run -m $G -p "$lp" -n 20 --temp 0 --save-session $TMP/f16s.kvq >/dev/null 2>&1
    $KVQ run -m $G -p "$lp" -n 20 --temp 0 --save-session $TMP/aqs.kvq --session-kv aqua:pred=$TMP/656k-aqua.gguf >/dev/null 2>&1
    b=$($KVQ run -m $G -n 20 --temp 0 --load-session $TMP/aqs.kvq 2>$TMP/e)
    sa=$(stat -c %s $TMP/aqs.kvq); sf=$(stat -c %s $TMP/f16s.kvq)
    [ -n "$b" ] && grep -qE "restored [0-9]{3} tokens" $TMP/e && [ $sa -lt $((sf / 2)) ] \
        && ok "cold tier: an aqua session ($sa bytes, f16 $sf) restores into f16 and continues" || bad "aqua session ($sa vs $sf)"
    j=$($KVQ info $G --kv aqua:pred=$TMP/656k-aqua.gguf --json)
    python3 -c "
import json,sys; k=json.loads(sys.argv[1])['kv'][0]
C=4*16; want=(2-1)*(3*C*C+2*C)*4   # one predicted layer: A [C][C], B [C][2C], two biases, f32
sys.exit(0 if k['aux_bytes']==want and k['break_even_tokens']>0 else 1)" "$j" \
        && ok "info reports the predictors' bytes and their break-even" || bad "aqua info: $j"
    j=$($KVQ bench -m $G -p 0 -n 2 --depth 300 -r 1 --no-bw --session aqua:pred=$TMP/656k-aqua.gguf --json)
    python3 -c "
import json,sys; r=[x for x in json.loads(sys.argv[1])['results'] if x['test']=='session@300']
sys.exit(0 if r and r[0]['file_bytes']>0 and r[0]['load_s']>0 and r[0]['session_kv'].startswith('aqua') else 1)" "$j" \
        && ok "bench --session times the cold tier round trip" || bad "bench --session: $j"
    expect_fail "aqua predictors of another model" "another model" $KVQ run -m $G --kv aqua:pred=$TMP/260k-aqua.gguf
    head -c 3000 $TMP/aq-calib.txt > $TMP/short.txt
    expect_fail "calibration text too short" "too few" $KVQ calibrate aqua -m $G -f $TMP/short.txt -o $TMP/x.gguf
    expect_fail "aqua without predictors" "pred=" $KVQ run -m $G --kv aqua
fi

# 13. The block types of llama.cpp's mixed files (docs/weight-types.md) on real weights: kvq-recall's
# matrices requantized at load to each, KL against the f16 model under twice what was measured, the
# scalar path within 1e-5 of the file layout's AVX2 kernels (1e-3 of the repacked ones); a 656K file
# written in each 32-value type reloads.
if [ -f models/kvq-recall/model.safetensors ] && need $S/corpora/kjv.txt $M/tinystories-656k/TinyStories-656K-Q8_0.gguf; then
    # 40K characters (7154 scored tokens): three ppl runs per type under ASan fit CI's time
    python3 -c "t=open('$S/corpora/kjv.txt',encoding='utf-8').read(); open('$TMP/kjv40.txt','w',encoding='utf-8').write(t[1500000:1540000])"
    $KVQ ppl -m models/kvq-recall -f $TMP/kjv40.txt --ctx 1024 --kv f16 --save-logits $TMP/recall.logits --json >/dev/null 2>&1
    for tk in q5_0:0.0045 q5_1:0.0034 iq4_nl:0.0125 iq4_xs:0.013 q3_K:0.051 q2_K:0.24; do
        t=${tk%%:*}; bound=${tk#*:}
        j=$($KVQ ppl -m models/kvq-recall --weights $t -f $TMP/kjv40.txt --ctx 1024 --kv f16 --kl-base $TMP/recall.logits --json 2>/dev/null)
        kl=$(echo "$j" | jget kl_mean); p=$(echo "$j" | jget ppl)
        ps=$(KVQ_ISA=scalar $KVQ ppl -m models/kvq-recall --weights $t -f $TMP/kjv40.txt --ctx 1024 --kv f16 --json 2>/dev/null | jget ppl)
        # the file layout's AVX2 kernels compute what the scalar ones do; the repacked ones (Q2_K,
        # Q3_K) take int8 activations in prefill too, where the scalar path multiplies f32 tiles
        pn=$(KVQ_REPACK=0 $KVQ ppl -m models/kvq-recall --weights $t -f $TMP/kjv40.txt --ctx 1024 --kv f16 --json 2>/dev/null | jget ppl)
        python3 -c "import sys; sys.exit(0 if 0 < $kl < $bound else 1)" && within "$pn" "$ps" 1e-5 && within "$p" "$ps" 1e-3 \
            && ok "kvq-recall --weights $t: KL $kl (bound $bound), ppl $p, file layout $pn, scalar $ps" \
            || bad "--weights $t: KL $kl ppl $p file layout $pn scalar $ps"
    done
    G=$M/tinystories-656k/TinyStories-656K-Q8_0.gguf
    for t in q5_0 q5_1 iq4_nl; do
        $KVQ quantize -m $G --type $t -o $TMP/656k-$t.gguf >/dev/null 2>&1
        a=$($KVQ run -m $TMP/656k-$t.gguf -p "Once upon a time" -n 40 --temp 0 2>/dev/null)
        b=$($KVQ run -m $G --weights $t -p "Once upon a time" -n 40 --temp 0 2>/dev/null)
        $KVQ info -m $TMP/656k-$t.gguf 2>/dev/null | grep -q "$t x" && [ -n "$a" ] && [ "$a" == "$b" ] \
            && ok "656K written as $t reloads and equals the weight set requantized at load" || bad "656K $t file"
    done
fi

# 9. SliM-LLM weights (kvq quantize --bits): the paper's ordering at 2 bits
# on a real model, a self-contained file that reloads with a pinned greedy
# text, and clear errors on bad options and corrupted bit maps.
G=$M/tinystories-656k/TinyStories-656K-Q8_0.gguf
if need $M/tinystories-656k/model.safetensors $G $S/corpora/tinystories-valid-head.txt; then
    H=$M/tinystories-656k
    tail -c 200000 $S/corpora/tinystories-valid-head.txt > $TMP/wq-calib.txt   # calibration: the tail
    head -c 60000 $S/corpora/tinystories-valid-head.txt > $TMP/wq-eval.txt     # evaluation: the head
    declare -A wppl
    for me in rtn gptq slim; do
        $KVQ quantize -m $H -f $TMP/wq-calib.txt --method $me --bits 2 --group 32 -o $TMP/w-$me.gguf >$TMP/w-$me.txt 2>$TMP/e \
            || bad "quantize --method $me ($(head -c 200 $TMP/e))"
        wppl[$me]=$($KVQ ppl -m $H --weights $TMP/w-$me.gguf -f $TMP/wq-eval.txt --kv f32 --json 2>/dev/null | jget ppl)
    done
    f32=$($KVQ ppl -m $H -f $TMP/wq-eval.txt --kv f32 --json 2>/dev/null | jget ppl)
    python3 -c "import sys; f,r,g,s=map(float,sys.argv[1:]); sys.exit(0 if f < s < 0.9*g and g < 0.9*r else 1)" \
        "$f32" "${wppl[rtn]}" "${wppl[gptq]}" "${wppl[slim]}" \
        && ok "2-bit weights: f32 ${f32} < slim ${wppl[slim]} < gptq ${wppl[gptq]} < rtn ${wppl[rtn]}" \
        || bad "2-bit ordering: f32 $f32 slim ${wppl[slim]} gptq ${wppl[gptq]} rtn ${wppl[rtn]}"
    grep -q "3.001 bits per weight" $TMP/w-slim.txt && ok "slim 2-bit in groups of 32 reports 3.001 bits per weight" \
        || bad "slim bits per weight: $(tail -n 1 $TMP/w-slim.txt)"
    # a GGUF input gives a self-contained file (tokenizer copied); RTN is deterministic, so its text is pinned
    $KVQ quantize -m $G --method rtn --bits 3 -o $TMP/g3.gguf >/dev/null 2>$TMP/e
    grep -q "source weights are q8_0" $TMP/e && ok "quantize warns about a Q8_0 source" || bad "no warning for a Q8_0 source"
    out=$($KVQ run -m $TMP/g3.gguf -p "Once upon a time" -n 40 --temp 0 2>/dev/null | trim)
    want=$(trim < tests/golden/expected/656k-slim3-rtn-greedy.txt)
    [ "$out" == "$want" ] && ok "slim3 file reloads; greedy text pinned" || bad "slim3 greedy: $out"
    out2=$(KVQ_ISA=scalar $KVQ run -m $TMP/g3.gguf -p "Once upon a time" -n 40 --temp 0 2>/dev/null | trim)
    [ "$out2" == "$out" ] && ok "slim3 scalar kernels give the same text" || bad "slim3 scalar: $out2"
    # GPTQ into standard q4_0 blocks: a better file of the same size that any GGUF reader loads
    $KVQ quantize -m $G -f $TMP/wq-calib.txt --method gptq --type q4_0 -o $TMP/gq4.gguf >/dev/null 2>&1
    $KVQ quantize -m $G --type q4_0 -o $TMP/rq4.gguf >/dev/null 2>&1
    $KVQ ppl -m $G -f $TMP/wq-eval.txt --kv f32 --save-logits $TMP/g.logits >/dev/null 2>&1
    gq=$($KVQ ppl -m $TMP/gq4.gguf -f $TMP/wq-eval.txt --kv f32 --kl-base $TMP/g.logits --json 2>/dev/null | jget kl_mean)
    rq=$($KVQ ppl -m $TMP/rq4.gguf -f $TMP/wq-eval.txt --kv f32 --kl-base $TMP/g.logits --json 2>/dev/null | jget kl_mean)
    sg=$(stat -c %s $TMP/gq4.gguf); sr=$(stat -c %s $TMP/rq4.gguf)
    # the same tensors; the files differ only by a metadata key and the name
    python3 -c "import sys; g,r,a,b=map(float,sys.argv[1:]); sys.exit(0 if g < 0.9*r and abs(a-b) < 256 else 1)" "$gq" "$rq" "$sg" "$sr" \
        && ok "gptq q4_0 KL $gq < rtn q4_0 KL $rq, same size ($sg vs $sr bytes)" || bad "gptq q4_0 KL $gq ($sg B) vs rtn $rq ($sr B)"
    expect_fail "quantize: gptq into an unsupported standard type" "q4_K or q5_K blocks" $KVQ quantize -m $G -f $TMP/wq-calib.txt --method gptq --type q6_K -o $TMP/x.gguf
    # GPTQ into q4_K super-blocks: kvq-recall's rows of 256 hold them (TinyStories-656K's 128 do not)
    if [ -f models/kvq-recall/model.safetensors ] && need $S/corpora/kjv.txt; then
        R=models/kvq-recall
        tail -c +500001 $S/corpora/kjv.txt | head -c 200000 > $TMP/kjv-calib.txt
        tail -c +1500001 $S/corpora/kjv.txt | head -c 60000 > $TMP/kjv-eval.txt
        $KVQ quantize -m $R -f $TMP/kjv-calib.txt --ctx 512 --tokens 8192 --method gptq --type q4_K -o $TMP/gk.gguf >/dev/null 2>&1
        $KVQ ppl -m $R -f $TMP/kjv-eval.txt --ctx 512 --kv f32 --save-logits $TMP/r.logits >/dev/null 2>&1
        gk=$($KVQ ppl -m $R --weights $TMP/gk.gguf -f $TMP/kjv-eval.txt --ctx 512 --kv f32 --kl-base $TMP/r.logits --json 2>/dev/null | jget kl_mean)
        rk=$($KVQ ppl -m $R --weights q4_K -f $TMP/kjv-eval.txt --ctx 512 --kv f32 --kl-base $TMP/r.logits --json 2>/dev/null | jget kl_mean)
        python3 -c "import sys; g,r=map(float,sys.argv[1:]); sys.exit(0 if 0 < g < 0.9*r else 1)" "$gk" "$rk" \
            && ok "gptq q4_K KL $gk < rtn q4_K KL $rk (kvq-recall)" || bad "gptq q4_K KL $gk vs rtn $rk"
    fi
    head -c 1000 $TMP/wq-calib.txt > $TMP/short.txt
    expect_fail "quantize: calibration text too short" "at least 512 tokens" $KVQ quantize -m $H -f $TMP/short.txt --method slim --bits 2 -o $TMP/x.gguf
    expect_fail "quantize: bits out of range" "--bits expects" $KVQ quantize -m $H --method rtn --bits 5 -o $TMP/x.gguf
    expect_fail "quantize: group not a multiple of 32" "not a multiple of 32" $KVQ quantize -m $H --method rtn --bits 2 --group 48 -o $TMP/x.gguf
    expect_fail "quantize: gptq without calibration" "needs calibration text" $KVQ quantize -m $H --method gptq --bits 2 -o $TMP/x.gguf
    expect_fail "quantize: unknown method" "not one of rtn, gptq, slim" $KVQ quantize -m $H --method awq --bits 2 -o $TMP/x.gguf
    off=$(python3 tests/golden/gguf_offset.py $TMP/g3.gguf blk.0.attn_q.weight.bits)
    python3 -c "import sys; b=bytearray(open(sys.argv[1],'rb').read()); b[int(sys.argv[3])]=9; open(sys.argv[2],'wb').write(b)" $TMP/g3.gguf $TMP/bad.gguf $off
    expect_fail "slim file with a bit width of 9" "width 9" $KVQ run -m $TMP/bad.gguf -p hi -n 1
    python3 -c "import sys; b=bytearray(open(sys.argv[1],'rb').read()); b[int(sys.argv[3])]=2; open(sys.argv[2],'wb').write(b)" $TMP/g3.gguf $TMP/bad.gguf $off
    expect_fail "slim file whose widths do not average N" "average exactly 3" $KVQ run -m $TMP/bad.gguf -p hi -n 1
fi

echo "golden: $pass passed, $fail failed"
[ $fail -eq 0 ]
