#!/usr/bin/env python3
"""Writes the fuzzers' seed corpora, tests/fuzz/seeds/NAME/ (committed, so CI
needs neither this script nor ../shared): small valid inputs of each format,
built here or cut from the real files in ../shared, plus the attack classes
the golden tests use. A seed starts past the magic bytes, so 30 s of CI
fuzzing mutates fields, not headers. Run from the repository root after
`make`: python3 tests/fuzz/make_seeds.py"""
import json
import os
import struct
import subprocess
import sys
import tempfile

SHARED = "../shared"
OUT = "tests/fuzz/seeds"


def seed(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    assert len(data) <= 65536, (target, name, len(data))  # fuzz-run's -max_len
    open(os.path.join(d, name), "wb").write(data)


# ---------------------------------------------------------------- GGUF
def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gkv(key, typ, val):
    out = gstr(key) + struct.pack("<I", typ)
    if typ == 4:
        out += struct.pack("<I", val)
    elif typ == 6:
        out += struct.pack("<f", val)
    elif typ == 7:
        out += struct.pack("<B", val)
    elif typ == 8:
        out += gstr(val)
    elif typ == 9:
        et, items = val
        out += struct.pack("<IQ", et, len(items))
        for it in items:
            out += gstr(it) if et == 8 else struct.pack({4: "<I", 5: "<i", 6: "<f"}[et], it)
    return out


def gguf(kvs, tensors, align=32):
    """tensors: (name, dims, f32 values); all F32."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs)
    data, infos = b"", b""
    for name, dims, vals in tensors:
        data += b"\0" * ((-len(data)) % align)
        infos += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", 0, len(data))
        data += struct.pack("<%df" % len(vals), *vals)
    body = head + infos
    return body + b"\0" * ((-len(body)) % align) + data


def tiny_llama_gguf(tokenizer):
    E, F, V, L, H, KVH = 8, 16, 16, 1, 2, 1
    D = E // H
    kvs = [gkv("general.architecture", 8, "llama"), gkv("general.name", 8, "seed"),
           gkv("llama.embedding_length", 4, E), gkv("llama.block_count", 4, L),
           gkv("llama.feed_forward_length", 4, F), gkv("llama.context_length", 4, 64),
           gkv("llama.attention.head_count", 4, H), gkv("llama.attention.head_count_kv", 4, KVH),
           gkv("llama.attention.layer_norm_rms_epsilon", 6, 1e-5), gkv("llama.rope.freq_base", 6, 10000.0)]
    toks = ["<unk>", "<s>", "</s>"] + [chr(ord("a") + i) for i in range(V - 3)]
    if tokenizer == "llama":
        toks[3] = "\u2581"
        kvs += [gkv("tokenizer.ggml.model", 8, "llama"), gkv("tokenizer.ggml.tokens", 9, (8, toks)),
                gkv("tokenizer.ggml.scores", 9, (6, [float(-i) for i in range(V)])),
                gkv("tokenizer.ggml.token_type", 9, (5, [2, 3, 3] + [1] * (V - 3))),
                gkv("tokenizer.ggml.bos_token_id", 4, 1), gkv("tokenizer.ggml.eos_token_id", 4, 2)]
    else:
        toks[3] = "ab"
        kvs += [gkv("tokenizer.ggml.model", 8, "gpt2"), gkv("tokenizer.ggml.pre", 8, "llama-bpe"),
                gkv("tokenizer.ggml.tokens", 9, (8, toks)), gkv("tokenizer.ggml.merges", 9, (8, ["a b"])),
                gkv("tokenizer.ggml.token_type", 9, (5, [2, 3, 3] + [1] * (V - 3))),
                gkv("tokenizer.ggml.bos_token_id", 4, 1), gkv("tokenizer.ggml.add_bos_token", 7, 1)]
    w = lambda n: [((i * 37) % 11) * 0.01 for i in range(n)]
    t = [("token_embd.weight", [E, V], w(E * V)), ("output_norm.weight", [E], w(E))]
    for l in range(L):
        p = "blk.%d." % l
        t += [(p + "attn_norm.weight", [E], w(E)), (p + "attn_q.weight", [E, E], w(E * E)),
              (p + "attn_k.weight", [E, KVH * D], w(E * KVH * D)), (p + "attn_v.weight", [E, KVH * D], w(E * KVH * D)),
              (p + "attn_output.weight", [E, E], w(E * E)), (p + "ffn_norm.weight", [E], w(E)),
              (p + "ffn_gate.weight", [E, F], w(E * F)), (p + "ffn_up.weight", [E, F], w(E * F)),
              (p + "ffn_down.weight", [F, E], w(F * E))]
    return gguf(kvs, t)


def gguf_typed(kvs, tensors, align=32):
    """tensors: (name, dims, GGUF type id, raw bytes)."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs)
    data, infos = b"", b""
    for name, dims, typ, raw in tensors:
        data += b"\0" * ((-len(data)) % align)
        infos += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", typ, len(data))
        data += raw
    body = head + infos
    return body + b"\0" * ((-len(body)) % align) + data


def tiny_slim_gguf():
    """A tiny model whose layer matrices are kvq's slim2 type (id 64) in groups of 128, so loading
    it builds their decode layout (src/kernels/slim_pk.c) from the file's codes and companions."""
    E, F, V, H, KVH = 128, 128, 16, 2, 1
    D = E // H
    kvs = [gkv("general.architecture", 8, "llama"), gkv("general.name", 8, "seed-slim"),
           gkv("llama.embedding_length", 4, E), gkv("llama.block_count", 4, 1),
           gkv("llama.feed_forward_length", 4, F), gkv("llama.context_length", 4, 64),
           gkv("llama.attention.head_count", 4, H), gkv("llama.attention.head_count_kv", 4, KVH),
           gkv("llama.attention.layer_norm_rms_epsilon", 6, 1e-5), gkv("llama.rope.freq_base", 6, 10000.0)]
    toks = ["<unk>", "<s>", "</s>", "\u2581"] + [chr(ord("a") + i) for i in range(V - 4)]
    kvs += [gkv("tokenizer.ggml.model", 8, "llama"), gkv("tokenizer.ggml.tokens", 9, (8, toks)),
            gkv("tokenizer.ggml.scores", 9, (6, [float(-i) for i in range(V)])),
            gkv("tokenizer.ggml.token_type", 9, (5, [2, 3, 3] + [1] * (V - 3)))]
    f32 = lambda n: struct.pack("<%df" % n, *[((i * 37) % 11) * 0.01 for i in range(n)])
    f16 = lambda vals: struct.pack("<%de" % len(vals), *vals)
    t = [("token_embd.weight", [E, V], 0, f32(E * V)), ("output_norm.weight", [E], 0, f32(E)),
         ("blk.0.attn_norm.weight", [E], 0, f32(E)), ("blk.0.ffn_norm.weight", [E], 0, f32(E))]
    mats = [("attn_q", E, E), ("attn_k", E, KVH * D), ("attn_v", E, KVH * D), ("attn_output", E, E),
            ("ffn_gate", E, F), ("ffn_up", E, F), ("ffn_down", F, E)]
    for k, (m, cols, rows) in enumerate(mats):
        n = "blk.0.%s.weight" % m
        codes = bytes(((i * 73 + k * 11) >> 2) & 255 for i in range(cols * rows * 2 // 8))
        t += [(n, [cols, rows], 64, codes), (n + ".bits", [cols // 128], 24, bytes([2] * (cols // 128))),
              (n + ".dm", [2 * (cols // 128), rows], 1, f16([0.01, -0.02] * (cols // 128) * rows))]
    return gguf_typed(kvs, t)


def main():
    if not os.path.isdir(SHARED):
        sys.exit("../shared is needed to build the seeds")
    # fuzz_gguf: two valid tiny models (SPM and byte-level BPE vocabularies), a vocabulary-only file, an
    # unaligned one, and a truncated one
    spm, bpe = tiny_llama_gguf("llama"), tiny_llama_gguf("gpt2")
    seed("fuzz_gguf", "tiny_spm.gguf", spm)
    seed("fuzz_gguf", "tiny_bpe_llama3.gguf", bpe)
    seed("fuzz_gguf", "truncated.gguf", spm[: len(spm) // 2])
    seed("fuzz_gguf", "tiny_slim2.gguf", tiny_slim_gguf())
    seed("fuzz_gguf", "vocab_only.gguf", gguf([gkv("general.architecture", 8, "llama"),
                                               gkv("general.alignment", 4, 1),
                                               gkv("tokenizer.ggml.model", 8, "llama"),
                                               gkv("tokenizer.ggml.tokens", 9, (8, ["<unk>", "<0x41>", "\u2581a"])),
                                               gkv("tokenizer.ggml.scores", 9, (6, [0.0, 0.0, -1.0]))],
                                              [("x", [3], [1.0, 2.0, 3.0])], align=1))
    # fuzz_safetensors: the real header of TinyStories-656K with its tensors shrunk to a few bytes, and a tiny file
    real = open(os.path.join(SHARED, "models/tinystories-656k/model.safetensors"), "rb").read(65536)
    n = struct.unpack_from("<Q", real, 0)[0]
    hdr = json.loads(real[8:8 + n])
    small, off = {}, 0
    for k, v in hdr.items():
        if k == "__metadata__":
            small[k] = v
            continue
        small[k] = {"dtype": v["dtype"], "shape": [1], "data_offsets": [off, off + 4]}
        off += 4
    hb = json.dumps(small).encode()
    seed("fuzz_safetensors", "tinystories_small.safetensors", struct.pack("<Q", len(hb)) + hb + b"\0" * off)
    one = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode() + b" "
    seed("fuzz_safetensors", "unaligned.safetensors", struct.pack("<Q", len(one)) + one + b"\0" * 16)
    # fuzz_hf: first byte odd = config.json, even = tokenizer.json
    cfg = open(os.path.join(SHARED, "models/tinystories-656k/config.json"), "rb").read()
    seed("fuzz_hf", "config_tinystories", b"\x01" + cfg)
    seed("fuzz_hf", "config_rope_llama3", b"\x01" + json.dumps({
        "model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 1, "intermediate_size": 8, "vocab_size": 16, "head_dim": 4,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192}}).encode())
    for name in ("llama3", "qwen3"):
        tok = json.load(open(os.path.join(SHARED, "tokenizers", name, "tokenizer.json")))
        vocab = dict(list(tok["model"]["vocab"].items())[:300])
        merges = [m for m in tok["model"]["merges"]
                  if all(p in vocab for p in (m.split(" ") if isinstance(m, str) else m))][:200]
        tok["model"]["vocab"], tok["model"]["merges"] = vocab, merges
        tok["added_tokens"] = [{"id": 300, "content": "<|special|>", "special": True}]
        seed("fuzz_hf", "tokenizer_" + name, b"\x00" + json.dumps(tok, ensure_ascii=False).encode())
    tt = json.load(open(os.path.join(SHARED, "models/tinystories-656k/tokenizer.json")))
    tt["model"]["vocab"] = dict(list(tt["model"]["vocab"].items())[:400])
    tt["model"]["merges"] = [m for m in tt["model"]["merges"] if all(p in tt["model"]["vocab"] for p in m.split(" "))]
    seed("fuzz_hf", "tokenizer_tinystories", b"\x00" + json.dumps(tt, ensure_ascii=False).encode())
    # fuzz_llama2c: first byte odd = checkpoint (the harness's shape), even = tokenizer
    hdr7 = struct.pack("<7i", 8, 16, 1, 2, 1, 8, 4)
    nf = 8 * 8 + (8 + 8 * 8 + 2 * 8 * 4 + 8 * 8 + 8 + 3 * 8 * 16) + 8 + 4 * 4
    ckpt = hdr7 + struct.pack("<%df" % nf, *[((i * 37) % 11) * 0.01 for i in range(nf)])
    seed("fuzz_llama2c", "checkpoint", b"\x01" + ckpt)
    seed("fuzz_llama2c", "checkpoint_negative_vocab", b"\x01" + struct.pack("<7i", 8, 16, 1, 2, 1, -8, 4) + ckpt[28:])
    tok = struct.pack("<i", 3) + b"".join(struct.pack("<fi", -i, 1) + bytes([97 + i]) for i in range(8))
    seed("fuzz_llama2c", "tokenizer", b"\x00" + tok)
    seed("fuzz_llama2c", "tokenizer_real_head", b"\x00" + open(os.path.join(SHARED, "models/stories260K/tok512.bin"), "rb").read(4096))
    # fuzz_tokenize: the multilingual texts one by one, and llama.cpp's
    texts = open("tests/data/tokenizer/multilingual.inp", encoding="utf-8").read().split("\n__ggml_vocab_test__\n")[:-1]
    for i, t in enumerate(texts):
        seed("fuzz_tokenize", "multilingual_%02d" % i, t)
    seed("fuzz_tokenize", "invalid_utf8", b"ok \xff\xfe \xc3 \xe2\x82 \xf0\x9f\x98 end")
    # fuzz_layers: both table formats, from KVTuner's published presets
    pre = sorted(os.listdir(os.path.join(SHARED, "kvtuner-presets")))[0]
    seed("fuzz_layers", "kvtuner.yaml", open(os.path.join(SHARED, "kvtuner-presets", pre), "rb").read())
    seed("fuzz_layers", "table.txt", "# kvq table\n" + "k4v2\nk2v2\n" * 16)
    seed("fuzz_layers", "flow.yaml", "{0: {nbits_key: 4, nbits_value: 2}, 1: {nbits_key: 8, nbits_value: 8}}\n")
    # fuzz_session: sessions saved by kvq from the harness's own tiny model, for each of its four KV specs
    # (first byte: spec index | 4 fingerprint | 8 checksum, so mutations get past both)
    with tempfile.TemporaryDirectory() as tmp:
        m, t = os.path.join(tmp, "m.bin"), os.path.join(tmp, "t.bin")
        open(m, "wb").write(ckpt)
        tk = struct.pack("<i", 1) + b"".join(struct.pack("<fi", 0.0, 1) + bytes([97 + i]) for i in range(8))
        open(t, "wb").write(tk)
        for i, spec in enumerate(["f16", "f32", "kivi:k4v2,g=4,r=4", "q4_0"]):
            s = os.path.join(tmp, "s%d" % i)
            subprocess.run(["build/kvq", "run", "-m", m, "--tokenizer", t, "-p", "abcdefgh", "-n", "4", "--temp", "0",
                            "--ctx", "64", "--kv", spec, "-t", "1", "--save-session", s], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seed("fuzz_session", "session_" + spec.split(":")[0], bytes([i | 12]) + open(s, "rb").read())


if __name__ == "__main__":
    main()
