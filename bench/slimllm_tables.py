#!/usr/bin/env python3
"""Markdown tables from bench/slimllm.sh results.
usage: slimllm_tables.py DIR quality|speed [NAME: DIR/NAME.jsonl for speed]"""
import glob
import json
import os
import re
import statistics
import sys

D = sys.argv[1]
what = sys.argv[2]

MODELS = [("260k", "stories260K", ["ts", "wiki"]), ("656k", "TinyStories-656K", ["ts", "wiki"]),
          ("recall", "kvq-recall", ["kjv"])]
TEXT = {"ts": "TinyStories", "wiki": "WikiText-2", "kjv": "KJV"}
# bits per weight of the standard block types (ggml's layouts)
TYPE_BPW = {"q4_0": "4.5", "q4_1": "5.0", "q4_K": "4.5", "q5_K": "5.5", "q6_K": "6.5625", "q8_0": "8.5"}


def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None


def bpw(name, tag):
    try:
        t = open(os.path.join(D, f"quant-{name}-{tag}.txt")).read()
    except OSError:
        return None
    m = re.search(r"([0-9.]+) bits per weight", t)
    return float(m.group(1)) if m else None


def quality():
    for name, title, texts in MODELS:
        for tx in texts:
            base = load(os.path.join(D, f"ppl-{name}-{tx}-f32.json"))
            if not base:
                continue
            print(f"\n**{title}, {TEXT[tx]} text** (F32: ppl {base['ppl']:.3f})\n")
            print("| weights | bits/weight (quantized matrices) | ppl | KL vs F32 | top-1 agreement |")
            print("|---|---|---|---|---|")
            for g in (128, 32):
                for b in (2, 3, 4):
                    for me in ("rtn", "gptq", "slim"):
                        tag = f"{me}{b}-g{g}"
                        r = load(os.path.join(D, f"ppl-{name}-{tx}-{tag}.json"))
                        if not r:
                            continue
                        w = bpw(name, tag)
                        print(f"| {me} {b}-bit, groups of {g} | {w:.3f} | {r['ppl']:.3f} | {r['kl_mean']:.4f} | "
                              f"{r['top1_agree']:.4f} |" if w else f"| {tag} | ? | {r['ppl']:.3f} | | |")
            for ty in ("q4_0", "q4_1", "q4_K", "q5_K", "q6_K", "q8_0"):
                r = load(os.path.join(D, f"ppl-{name}-{tx}-{ty}.json"))
                if not r:
                    continue
                if r["kl_mean"] == 0 and r["top1_agree"] == 1:
                    print(f"| {ty} | n/a: no row is a multiple of its 256-value block, all kept F32 | | | |")
                    continue
                print(f"| {ty} (RTN, at load) | {TYPE_BPW[ty]} | {r['ppl']:.3f} | {r['kl_mean']:.4f} | "
                      f"{r['top1_agree']:.4f} |")


def speed():
    """decode rows of DIR/speed.jsonl (or DIR/NAME.jsonl: argv[3]), and each
    file's tok/s over q4_0's in the same round"""
    rows, per_rep = {}, {}
    name = sys.argv[3] if len(sys.argv) > 3 else "speed"
    for line in open(os.path.join(D, name + ".jsonl")):
        j = json.loads(line)
        for r in j["run"]["results"]:
            if r["test"].startswith("tg"):
                rows.setdefault(j["file"], []).append(r)
                per_rep.setdefault(j["rep"], {})[j["file"]] = r["tok_s"]
    print("| weights | decode tok/s (median of runs) | GB/s achieved | read probe GB/s same run | fraction |")
    print("|---|---|---|---|---|")
    for f, rs in rows.items():
        # bw_fraction is null when decode beat the probe (a probe disturbed by another process)
        med = lambda k: statistics.median([x[k] for x in rs if x[k] is not None] or [float("nan")])
        print(f"| {f} | {med('tok_s'):.2f} | {med('gbs'):.2f} | {med('ref_gbs'):.2f} | {med('bw_fraction'):.2f} |")
    for f in rows:
        ratios = [r[f] / r["q4_0"] for r in per_rep.values() if f in r and "q4_0" in r]
        if ratios and f != "q4_0":
            print(f"{f} / q4_0 per round: " + ", ".join(f"{x:.2f}" for x in ratios)
                  + f" (median {statistics.median(ratios):.2f})")


{"quality": quality, "speed": speed}[what]()
