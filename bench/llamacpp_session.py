#!/usr/bin/env python3
"""Extends a llama.cpp session file to a deep cache, for decode-speed comparisons at depth.

llama.cpp reaches a 32K-token cache only by prefilling 32K tokens, which on a 2-core host takes
well over an hour for Llama-3.2-1B. kvq's own bench fills its cache without computing it, so the
fair comparison is to do the same for llama.cpp: let llama.cpp prefill a short prompt and save its
session (--prompt-cache), then tile that session's KV cells up to DEPTH cells with positions
0..DEPTH-1. llama-cli then loads it (--prompt-cache FILE --prompt-cache-ro, no prompt) and decodes
from a full cache: every decode step reads DEPTH cells of real llama.cpp K/V data in llama.cpp's
own layout and type, exactly as it would after a real prefill. The contents are repeated, which
changes nothing for a dense cache's speed (it reads every cell whatever it holds); the text it
generates is meaningless, and only its timing is used.

The format is that of the llama.cpp snapshot built beside kvq (session version 9: magic 'ggsn',
tokens, architecture, outputs, logits, embeddings, KV cells, then per-layer K and V, the V rows
transposed unless flash attention is on). Anything else is refused.

usage: llamacpp_session.py SMALL.bin DEPTH OUT.bin
"""
import struct
import sys

MAGIC, VERSION = 0x6767736E, 9


class Reader:
    def __init__(self, f):
        self.f = f

    def raw(self, n):
        b = self.f.read(n)
        if len(b) != n:
            sys.exit("llamacpp_session: truncated session file")
        return b

    def u32(self):
        return struct.unpack("<I", self.raw(4))[0]

    def i32(self):
        return struct.unpack("<i", self.raw(4))[0]

    def u64(self):
        return struct.unpack("<Q", self.raw(8))[0]


def tile(out, chunk, n_small, depth, width):
    """chunk holds n_small items of width bytes; writes depth items cycling through them."""
    full, rest = divmod(depth, n_small)
    for _ in range(full):
        out.write(chunk)
    out.write(chunk[: rest * width])


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__.strip().splitlines()[-1])
    src, depth, dst = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if depth < 1:
        sys.exit("llamacpp_session: DEPTH must be positive")
    with open(src, "rb") as f, open(dst, "wb") as out:
        r = Reader(f)
        magic, version = r.u32(), r.u32()
        if (magic, version) != (MAGIC, VERSION):
            sys.exit(f"llamacpp_session: not a version-{VERSION} llama.cpp session ({magic:08x}, {version})")
        n_tok = r.u32()
        toks = r.raw(4 * n_tok)
        out.write(struct.pack("<III", MAGIC, VERSION, depth))
        tile(out, toks, n_tok, depth, 4)
        arch_len = r.u32()
        out.write(struct.pack("<I", arch_len) + r.raw(arch_len))
        n_out = r.u32()
        out.write(struct.pack("<I", n_out) + r.raw(4 * n_out))
        for _ in range(2):  # logits, embeddings
            n = r.u64()
            out.write(struct.pack("<Q", n) + r.raw(4 * n))
        cells = r.u32()
        if cells != n_tok:
            sys.exit(f"llamacpp_session: {cells} cells for {n_tok} tokens; save the session from a single prompt")
        for _ in range(cells):
            r.i32()
            n_seq = r.u32()
            r.raw(4 * n_seq)
        out.write(struct.pack("<I", depth))
        for i in range(depth):
            out.write(struct.pack("<iIi", i, 1, 0))
        v_trans, n_layer = r.u32(), r.u32()
        out.write(struct.pack("<II", v_trans, n_layer))
        for _ in range(n_layer):  # K rows, one per cell
            k_type, row = r.i32(), r.u64()
            out.write(struct.pack("<iQ", k_type, row))
            tile(out, r.raw(cells * row), cells, depth, row)
        for _ in range(n_layer):
            v_type = r.i32()
            if not v_trans:
                row = r.u64()
                out.write(struct.pack("<iQ", v_type, row))
                tile(out, r.raw(cells * row), cells, depth, row)
            else:  # one run of cells per channel
                el, n_embd = r.u32(), r.u32()
                out.write(struct.pack("<iII", v_type, el, n_embd))
                for _ in range(n_embd):
                    tile(out, r.raw(cells * el), cells, depth, el)
        if f.read(1):
            sys.exit("llamacpp_session: trailing bytes after the KV cache; unknown format")


if __name__ == "__main__":
    main()
