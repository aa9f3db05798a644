#!/usr/bin/env python3
"""Writes a copy of a Hugging Face model folder with one thing changed, for
the golden tests of bad input. Usage:
  hf_variant.py SRC DST config KEY JSON       config.json KEY set to JSON (a raw JSON text, kept verbatim)
  hf_variant.py SRC DST tokenizer EDIT        tokenizer.json edited: empty | dup-id | frac-id | bad-byte
  hf_variant.py SRC DST unaligned             model.safetensors with a header length of 4k+1 bytes
Only the changed file is written; the rest are symlinked."""
import json
import os
import struct
import sys


def main(src, dst, what, *args):
    os.makedirs(dst, exist_ok=True)
    for f in os.listdir(src):
        if not os.path.exists(os.path.join(dst, f)):
            os.symlink(os.path.abspath(os.path.join(src, f)), os.path.join(dst, f))

    def replace(name, data):
        p = os.path.join(dst, name)
        os.unlink(p)
        open(p, "wb" if isinstance(data, bytes) else "w").write(data)

    if what == "config":
        key, raw = args
        text = open(os.path.join(src, "config.json")).read()
        cfg = json.loads(text)
        cfg[key] = "@@VALUE@@"
        # verbatim, so that a fraction or a huge exponent reaches kvq as written
        replace("config.json", json.dumps(cfg).replace('"@@VALUE@@"', raw))
    elif what == "tokenizer":
        tok = json.load(open(os.path.join(src, "tokenizer.json")))
        vocab = tok["model"]["vocab"]
        edit = args[0]
        if edit == "empty":
            tok["model"]["vocab"] = {}
            tok["model"]["merges"] = []
            tok["added_tokens"] = []
            replace("tokenizer.json", json.dumps(tok))
            return
        if edit == "dup-id":
            vocab["zzz_duplicate"] = 5
        elif edit == "bad-byte":
            vocab["<0xZZ>"] = vocab.pop("0")
        text = json.dumps(tok)
        if edit == "frac-id":
            k = next(k for k in vocab if vocab[k] == 7)
            text = text.replace(json.dumps(k) + ": 7,", json.dumps(k) + ": 7.5,", 1)
        replace("tokenizer.json", text)
    elif what == "unaligned":
        b = open(os.path.join(src, "model.safetensors"), "rb").read()
        n = struct.unpack_from("<Q", b, 0)[0]
        header = b[8:8 + n].rstrip(b" ")
        pad = (1 - len(header)) % 4  # total length 4k+1: every tensor lands off a 4-byte boundary
        header += b" " * pad
        replace("model.safetensors", struct.pack("<Q", len(header)) + header + b[8 + n:])
    else:
        sys.exit("unknown variant " + what)


if __name__ == "__main__":
    main(*sys.argv[1:])
