#!/usr/bin/python3
"""Trains kvq-recall: a small Llama-architecture model that retrieves from long contexts.

A fixture generator, not part of the engine. It trains a BPE tokenizer and a
Llama model (RMSNorm, RoPE on halves, GQA, SwiGLU, head_dim 64) on natural
filler text from ../shared/corpora with RULER-style retrieval tasks embedded
at every depth (passkey, needle, multi-key needles, key-value lookup, variable
tracking), using a curriculum that doubles the sequence length whenever the
passkey is retrieved reliably. It exports a Hugging Face folder
(config.json + model.safetensors in f16 + tokenizer.json) that kvq loads.

    /usr/bin/python3 tools/train/train.py --out models/kvq-recall --minutes 120 --seed 1 --start-len 64
    (see models/kvq-recall/README.md for the exact commands that made the committed model)

The task templates here and in tools/kvq/niah_tasks.c must stay identical.
"""
import argparse
import json
import math
import os
import random
import struct
import sys
import time
from collections import Counter

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MARK = "\u2581"
SPECIALS = ["<unk>", "<s>", "</s>"]
KEY_WORDS = ["apple", "river", "garden", "castle", "rabbit", "lantern", "forest", "mirror", "pencil", "candle",
             "window", "basket", "dragon", "rocket", "violin", "island", "bridge", "ladder", "carpet", "wallet",
             "button", "pepper", "orange", "monkey", "planet", "silver", "hammer", "bucket", "cookie", "jacket",
             "kitten", "meadow", "pirate", "saddle", "tunnel", "turtle", "wizard", "anchor", "bottle", "cherry"]
GRASS = (" The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.")


# ----------------------------------------------------------------------------- tasks
# Each returns (needles, query, answer): needles are (text, depth) pairs placed
# in the filler; query follows the filler; answer is what the model must say.
DEPTH_ENDS = 0.0  # probability that a needle sits exactly at depth 0 or 1 (set by --depth-ends)


def depth(rng):
    if DEPTH_ENDS and rng.random() < DEPTH_ENDS:
        return float(rng.random() < 0.5)
    return rng.random()


def task_passkey(rng):
    k = str(rng.randint(10000, 99999))
    return ([(f" The pass key is {k}. Remember it. {k} is the pass key.", depth(rng))],
            " What is the pass key? The pass key is", f" {k}.")


def task_needle(rng):
    w = rng.choice(KEY_WORDS)
    n = str(rng.randint(100000, 9999999))
    return ([(f" The special magic number for {w} is {n}.", depth(rng))],
            f" What is the special magic number for {w}? The special magic number for {w} is", f" {n}.")


def task_multikey(rng, n_keys=4):
    ws = rng.sample(KEY_WORDS, n_keys)
    nums = [str(rng.randint(100000, 9999999)) for _ in ws]
    needles = [(f" The special magic number for {w} is {n}.", depth(rng)) for w, n in zip(ws, nums)]
    i = rng.randrange(n_keys)
    return (needles, f" What is the special magic number for {ws[i]}? The special magic number for {ws[i]} is",
            f" {nums[i]}.")


def task_kv(rng, n_pairs=6):
    ws = rng.sample(KEY_WORDS, n_pairs)
    nums = [str(rng.randint(10000, 99999)) for _ in ws]
    needles = [(f" {w} maps to {n}.", depth(rng)) for w, n in zip(ws, nums)]
    i = rng.randrange(n_pairs)
    return needles, f" What does {ws[i]} map to? {ws[i]} maps to", f" {nums[i]}."


def task_vars(rng):
    a, b, c = rng.sample("ABCDEFGHJKLMNPQRSTUVWXYZ", 3)
    n = str(rng.randint(10000, 99999))
    d1, d2 = sorted([rng.random(), rng.random()])
    needles = [(f" VAR {a} = {n}.", d1), (f" VAR {b} = VAR {a}.", d2), (f" VAR {c} = VAR {b}.", d2)]
    return needles, f" What is VAR {c}? VAR {c} =", f" {n}."


TASKS = [(task_passkey, 0.45), (task_needle, 0.15), (task_multikey, 0.15), (task_kv, 0.15), (task_vars, 0.10)]


# ------------------------------------------------------------------------- tokenizer
def normalize(text):
    return MARK + text.replace(" ", MARK)


def split_words(norm):
    """Words start at each U+2581; BPE merges never cross them (no merge has one inside)."""
    out, cur = [], ""
    for ch in norm:
        if ch == MARK and cur:
            out.append(cur)
            cur = ""
        cur += ch
    if cur:
        out.append(cur)
    return out


class Tokenizer:
    def __init__(self, vocab, merges):
        self.vocab = vocab                      # list of token strings, id = index
        self.id = {t: i for i, t in enumerate(vocab)}
        self.rank = {tuple(m): r for r, m in enumerate(merges)}
        self.merges = merges
        self.cache = {}

    def encode_word(self, w):
        ids = self.cache.get(w)
        if ids is not None:
            return ids
        sym = list(w)
        while len(sym) > 1:
            best, bi = None, -1
            for i in range(len(sym) - 1):
                r = self.rank.get((sym[i], sym[i + 1]))
                if r is not None and (best is None or r < best):
                    best, bi = r, i
            if best is None:
                break
            sym[bi:bi + 2] = [sym[bi] + sym[bi + 1]]
        ids = []
        for s in sym:
            if s in self.id:
                ids.append(self.id[s])
            else:  # byte fallback
                ids.extend(self.id["<0x%02X>" % b] for b in s.encode("utf-8"))
        self.cache[w] = ids
        return ids

    def encode(self, text, prefix=True):
        norm = normalize(text) if prefix else text.replace(" ", MARK)
        out = []
        for w in split_words(norm):
            out.extend(self.encode_word(w))
        return out

    def decode(self, ids):
        bs = b""
        for i in ids:
            t = self.vocab[i]
            if t.startswith("<0x") and len(t) == 6:
                bs += bytes([int(t[3:5], 16)])
            elif t in SPECIALS:
                continue
            else:
                bs += t.replace(MARK, " ").encode("utf-8")
        return bs.decode("utf-8", "replace")


def load_tokenizer(folder):
    tj = json.load(open(os.path.join(folder, "tokenizer.json"), encoding="utf-8"))
    vocab = sorted(tj["model"]["vocab"].items(), key=lambda kv: kv[1])
    merges = [m.split(" ") if isinstance(m, str) else m for m in tj["model"]["merges"]]
    return Tokenizer([t for t, _ in vocab], merges)


def load_weights(model, folder):
    """Inverse of export(): the f16 safetensors back into the torch model."""
    raw = open(os.path.join(folder, "model.safetensors"), "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    hf = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        hf[name] = torch.from_numpy(np.frombuffer(data[a:b], dtype=np.float16).reshape(e["shape"]).astype(np.float32))
    names = {"emb.weight": "model.embed_tokens.weight", "norm.w": "model.norm.weight", "head.weight": "lm_head.weight"}
    for i in range(model.c["n_layers"]):
        p, q = f"blocks.{i}.", f"model.layers.{i}."
        for x, y in [("q", "self_attn.q_proj"), ("k", "self_attn.k_proj"), ("v", "self_attn.v_proj"),
                     ("o", "self_attn.o_proj"), ("gate", "mlp.gate_proj"), ("up", "mlp.up_proj"),
                     ("down", "mlp.down_proj")]:
            names[p + x + ".weight"] = q + y + ".weight"
        names[p + "n1.w"] = q + "input_layernorm.weight"
        names[p + "n2.w"] = q + "post_attention_layernorm.weight"
    model.load_state_dict({k: hf[v] for k, v in names.items()})


def train_tokenizer(text, vocab_size):
    words = Counter(split_words(normalize(text)))
    chars = Counter()
    for w, c in words.items():
        for ch in w:
            chars[ch] += c
    base = sorted(ch for ch, c in chars.items() if c >= 20)
    vocab = SPECIALS + ["<0x%02X>" % b for b in range(256)] + base
    # words as symbol lists; digits never merge so numbers stay one token per digit
    seqs = {w: list(w) for w in words}
    merges = []
    while len(vocab) < vocab_size:
        pairs = Counter()
        for w, s in seqs.items():
            c = words[w]
            for a, b in zip(s, s[1:]):
                if any(ch.isdigit() for ch in a + b) or b.startswith(MARK):
                    continue
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append([a, b])
        vocab.append(a + b)
        for w, s in seqs.items():
            i = 0
            while i < len(s) - 1:
                if s[i] == a and s[i + 1] == b:
                    s[i:i + 2] = [a + b]
                i += 1
    return Tokenizer(vocab, merges)


# ----------------------------------------------------------------------------- model
class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return self.w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rope_tables(n, hd, theta):
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2).float() / hd))
    f = torch.outer(torch.arange(n).float(), inv)
    emb = torch.cat([f, f], -1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], -1)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, hd = c["dim"], c["head_dim"]
        self.nh, self.nkv, self.hd = c["n_heads"], c["n_kv_heads"], hd
        self.q = nn.Linear(d, self.nh * hd, bias=False)
        self.k = nn.Linear(d, self.nkv * hd, bias=False)
        self.v = nn.Linear(d, self.nkv * hd, bias=False)
        self.o = nn.Linear(self.nh * hd, d, bias=False)
        self.gate = nn.Linear(d, c["ffn"], bias=False)
        self.up = nn.Linear(d, c["ffn"], bias=False)
        self.down = nn.Linear(c["ffn"], d, bias=False)
        self.n1, self.n2 = RMSNorm(d, c["eps"]), RMSNorm(d, c["eps"])

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        h = self.n1(x)
        q = self.q(h).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k(h).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v(h).view(B, T, self.nkv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv
        k = k.repeat_interleave(rep, 1)
        v = v.repeat_interleave(rep, 1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd) + mask
        y = att.softmax(-1) @ v
        x = x + self.o(y.transpose(1, 2).reshape(B, T, -1))
        h = self.n2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.emb = nn.Embedding(c["vocab"], c["dim"])
        self.blocks = nn.ModuleList(Block(c) for _ in range(c["n_layers"]))
        self.norm = RMSNorm(c["dim"], c["eps"])
        self.head = nn.Linear(c["dim"], c["vocab"], bias=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)
        self.tables = {}

    def forward(self, idx):
        T = idx.shape[1]
        if T not in self.tables:
            cos, sin = rope_tables(T, self.c["head_dim"], self.c["rope_theta"])
            mask = torch.full((T, T), float("-inf")).triu(1)
            self.tables = {T: (cos, sin, mask)}
        cos, sin, mask = self.tables[T]
        x = self.emb(idx)
        for b in self.blocks:
            x = b(x, cos, sin, mask)
        return self.head(self.norm(x))


# ------------------------------------------------------------------------------ data
class Data:
    def __init__(self, tok, filler_ids, grass_ids, seed):
        self.tok, self.filler, self.grass = tok, filler_ids, grass_ids
        self.rng = random.Random(seed)

    def filler_tokens(self, n):
        if self.rng.random() < 0.25:
            reps = n // len(self.grass) + 2
            s = self.rng.randrange(len(self.grass))
            return (self.grass * reps)[s:s + n]
        s = self.rng.randrange(len(self.filler) - n - 1)
        return self.filler[s:s + n]

    def sample(self, length):
        """A sequence of `length` tokens with loss weights (answer tokens weighted 20x)."""
        bos = self.tok.id["<s>"]
        if self.rng.random() < 0.1:  # plain language modelling
            ids = [bos] + self.filler_tokens(length - 1)
            return ids, [1.0] * len(ids)
        r, acc = self.rng.random(), 0
        for fn, p in TASKS:
            acc += p
            if r < acc:
                break
        needles, query, answer = fn(self.rng)
        nd = [(self.tok.encode(t, prefix=False), d) for t, d in needles]
        q = self.tok.encode(query, prefix=False)
        a = self.tok.encode(answer, prefix=False)
        n_fill = length - 1 - len(q) - len(a) - sum(len(x) for x, _ in nd)
        if n_fill < 4:
            return None
        fill = self.filler_tokens(n_fill)
        cuts = sorted((int(d * n_fill), x) for x, d in nd)
        ids, prev = [bos], 0
        for c, x in cuts:
            ids += fill[prev:c] + x
            prev = c
        ids += fill[prev:] + q
        w = [1.0] * len(ids) + [20.0] * len(a)
        return ids + a, w


def batch(data, length, tokens_per_step):
    bs = max(1, tokens_per_step // length)
    xs, ws = [], []
    while len(xs) < bs:
        s = data.sample(length)
        if s:
            xs.append(s[0])
            ws.append(s[1])
    x = torch.tensor(xs)
    w = torch.tensor(ws)
    return x, w


@torch.no_grad()
def eval_passkey(model, data, length, n):
    """Exact match with teacher forcing: every answer token must be the argmax."""
    model.eval()
    rng_state = data.rng.getstate()
    data.rng = random.Random(12345 + length)
    ok = 0
    for _ in range(n):
        while True:
            needles, query, answer = task_passkey(data.rng)
            nd = [(data.tok.encode(t, prefix=False), d) for t, d in needles]
            q = data.tok.encode(query, prefix=False)
            a = data.tok.encode(answer, prefix=False)[:-1]  # digits, not the final "."
            n_fill = length - 1 - len(q) - len(a) - len(nd[0][0])
            if n_fill > 4:
                break
        fill = data.filler_tokens(n_fill)
        c = int(nd[0][1] * n_fill)
        ids = [data.tok.id["<s>"]] + fill[:c] + nd[0][0] + fill[c:] + q + a
        logits = model(torch.tensor([ids]))[0]
        pred = logits[len(ids) - len(a) - 1:len(ids) - 1].argmax(-1).tolist()
        ok += pred == a
    data.rng = random.Random()
    data.rng.setstate(rng_state)
    model.train()
    return ok / n


# ---------------------------------------------------------------------------- export
def export(model, tok, c, out, meta):
    os.makedirs(out, exist_ok=True)
    sd = model.state_dict()
    names = {"emb.weight": "model.embed_tokens.weight", "norm.w": "model.norm.weight", "head.weight": "lm_head.weight"}
    for i in range(c["n_layers"]):
        p, q = f"blocks.{i}.", f"model.layers.{i}."
        for a, b in [("q", "self_attn.q_proj"), ("k", "self_attn.k_proj"), ("v", "self_attn.v_proj"),
                     ("o", "self_attn.o_proj"), ("gate", "mlp.gate_proj"), ("up", "mlp.up_proj"),
                     ("down", "mlp.down_proj")]:
            names[p + a + ".weight"] = q + b + ".weight"
        names[p + "n1.w"] = q + "input_layernorm.weight"
        names[p + "n2.w"] = q + "post_attention_layernorm.weight"
    header, blobs, off = {}, [], 0
    for k, name in sorted(names.items(), key=lambda kv: kv[1]):
        a = sd[k].detach().to(torch.float16).contiguous().numpy()
        b = a.tobytes()
        header[name] = {"dtype": "F16", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": c["dim"],
           "intermediate_size": c["ffn"], "num_hidden_layers": c["n_layers"], "num_attention_heads": c["n_heads"],
           "num_key_value_heads": c["n_kv_heads"], "head_dim": c["head_dim"], "vocab_size": c["vocab"],
           "max_position_embeddings": c["ctx"], "rms_norm_eps": c["eps"], "rope_theta": c["rope_theta"],
           "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float16",
           "hidden_act": "silu", "kvq": meta}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tj = {"version": "1.0", "truncation": None, "padding": None,
          "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                            "normalized": False, "special": True} for i, s in enumerate(SPECIALS)],
          "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": MARK},
                                                             {"type": "Replace", "pattern": {"String": " "},
                                                              "content": MARK}]},
          "pre_tokenizer": None,
          "post_processor": {"type": "TemplateProcessing",
                             "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                        {"Sequence": {"id": "A", "type_id": 0}}],
                             "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}},
                                      {"Sequence": {"id": "B", "type_id": 1}}],
                             "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
          "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": MARK}, "content": " "},
                                                       {"type": "ByteFallback"}, {"type": "Fuse"},
                                                       {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
          "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                    "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
                    "vocab": {t: i for i, t in enumerate(tok.vocab)}, "merges": [" ".join(m) for m in tok.merges]}}
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tj, f, ensure_ascii=False)


# ------------------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "../../../shared"))
    ap.add_argument("--out", default="models/kvq-recall")
    ap.add_argument("--minutes", type=float, default=110)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=4096)
    ap.add_argument("--start-len", type=int, default=128)
    ap.add_argument("--tokens-per-step", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--log", default=None)
    ap.add_argument("--tokenizer-only", action="store_true")
    ap.add_argument("--init", default=None, help="continue from an exported folder (its tokenizer and weights)")
    ap.add_argument("--decay", action="store_true", help="decay the learning rate linearly to 10%% over --minutes")
    ap.add_argument("--depth-ends", type=float, default=0.0,
                    help="probability of a needle exactly at depth 0 or 1 (the ends of the context)")
    args = ap.parse_args()
    global DEPTH_ENDS
    DEPTH_ENDS = args.depth_ends
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    corp = os.path.join(args.shared, "corpora")
    ts = open(os.path.join(corp, "tinystories-valid-head.txt"), encoding="utf-8").read()
    kjv = open(os.path.join(corp, "kjv.txt"), encoding="utf-8").read()
    wiki = open(os.path.join(corp, "wikitext-2-raw-test.txt"), encoding="utf-8").read()
    # the last 10% of TinyStories is held out for perplexity (docs/long-context.md)
    split = int(len(ts) * 0.9)
    train_text = ts[:split] + "\n" + kjv[:1500000] + "\n" + wiki[:600000]
    t0 = time.time()
    tok = load_tokenizer(args.init) if args.init else train_tokenizer(ts[:300000] + kjv[:150000] + wiki[:100000], args.vocab)
    print(f"tokenizer: {len(tok.vocab)} tokens, {len(tok.merges)} merges ({time.time() - t0:.0f} s)", flush=True)
    if args.tokenizer_only:
        export_dir = args.out
        c = {"dim": 8, "head_dim": 4, "n_heads": 2, "n_kv_heads": 1, "ffn": 8, "n_layers": 1, "eps": 1e-5,
             "rope_theta": 10000.0, "vocab": len(tok.vocab), "ctx": 64}
        export(Model(c), tok, c, export_dir, {})
        with open(os.path.join(export_dir, "probe.txt"), "w") as f:
            sample = ts[split:split + 3000]
            f.write(sample)
        with open(os.path.join(export_dir, "probe.ids"), "w") as f:
            f.write(" ".join(map(str, [1] + tok.encode(sample))))
        return
    filler = tok.encode(train_text)
    grass = tok.encode(GRASS, prefix=False)
    print(f"filler: {len(filler)} tokens ({len(train_text) / len(filler):.2f} chars/token)", flush=True)
    c = {"dim": args.dim, "head_dim": 64, "n_heads": args.dim // 64, "n_kv_heads": max(1, args.dim // 128),
         "ffn": 3 * args.dim, "n_layers": args.layers, "eps": 1e-5, "rope_theta": 10000.0,
         "vocab": len(tok.vocab), "ctx": args.max_len}
    model = Model(c)
    if args.init:
        load_weights(model, args.init)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, config {c}", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    data = Data(tok, filler, grass, args.seed)
    log = open(args.log or os.path.join(args.out + ".log.csv"), "w")
    log.write("step,tokens,seconds,length,loss,passkey_acc\n")
    length, step, seen, deadline = args.start_len, 0, 0, t0 + args.minutes * 60
    acc, best_len, loss_ema = 0.0, 0, None
    while time.time() < deadline:
        # once at the top length, mix shorter lengths so every length and depth stays trained
        L = length if length < args.max_len else random.choice([length, length, length // 2, length // 4])
        lr = args.lr * min(1.0, (step + 1) / 100)
        if args.decay:
            lr *= 1.0 - 0.9 * min(1.0, (time.time() - t0) / (args.minutes * 60))
        for g in opt.param_groups:
            g["lr"] = lr
        x, w = batch(data, L, args.tokens_per_step)
        logits = model(x[:, :-1])
        loss_t = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none")
        wt = w[:, 1:].reshape(-1)
        loss = (loss_t * wt).sum() / wt.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        seen += x.numel()
        loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
        ev = step % 100 == 0
        if ev:
            acc = eval_passkey(model, data, length, 20 if length <= 2048 else 10)
            if acc >= 0.9 and length < args.max_len:
                length *= 2
                print(f"  -> length {length}", flush=True)
            best_len = max(best_len, length)
        log.write(f"{step},{seen},{time.time() - t0:.1f},{L},{loss.item():.4f},{acc if ev else ''}\n")
        log.flush()
        if step % 20 == 0:
            print(f"step {step} tokens {seen} len {L} loss {loss_ema:.3f} acc@{length} {acc:.2f} "
                  f"{seen / (time.time() - t0):.0f} tok/s", flush=True)
        if step % 500 == 0:
            export(model, tok, c, args.out, {"step": step, "tokens": seen, "train_len": length})
    meta = {"step": step, "tokens": seen, "train_len": length, "seed": args.seed, "minutes": args.minutes,
            "init": args.init, "depth_ends": args.depth_ends, "lr": args.lr, "decay": args.decay,
            "final_passkey_acc_teacher_forced": acc}
    export(model, tok, c, args.out, meta)
    print(f"done: {step} steps, {seen} tokens, length {length}, {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
