#!/usr/bin/env python3
"""Markdown tables for docs/rocketkv.md from bench/results/rocketkv/*.json."""
import glob, json, os, sys

d = sys.argv[1] if len(sys.argv) > 1 else "bench/results/rocketkv"
pols = ["window", "snapkv", "hsa", "rocket", "rocket-mt"]
budgets = [64, 128, 256, 512, 1024]

def load(p):
    try:
        return json.load(open(p))
    except Exception:
        return None

for turns in ("1", "2"):
    full = load(f"{d}/niah-t{turns}-full.json")
    if not full:
        continue
    print(f"\n**Passkey, kvq-recall, {'one prompt' if turns == '1' else 'two turns (haystack, then question)'}**: "
          f"mean exact match over lengths {full['lengths']} x depths {full['depths']}, {full['samples']} samples per cell; "
          f"in brackets the KV bytes held after the prompt per prompt token (f16 full cache: {full['kv_bytes_held_per_token']:.0f}).\n")
    print("| policy | " + " | ".join(f"budget {b}" for b in budgets) + " |")
    print("|---|" + "---|" * len(budgets))
    print(f"| full | " + " | ".join(f"{100 * full['mean']:.0f}%" for _ in budgets) + " |")
    for p in pols:
        row = []
        for b in budgets:
            j = load(f"{d}/niah-t{turns}-{p}-{b}.json")
            row.append(f"{100 * j['mean']:.0f}% ({j['kv_bytes_held_per_token']:.0f})" if j else "-")
        print(f"| {p} | " + " | ".join(row) + " |")
    for name, label in [("kivi", "kivi:k4v2"), ("kivi-rocket-128", "kivi:k4v2+rocket:budget=128"),
                        ("kivi-rocket-256", "kivi:k4v2+rocket:budget=256")]:
        j = load(f"{d}/niah-t{turns}-{name}.json")
        if j:
            print(f"| {label} | {100 * j['mean']:.0f}% ({j['kv_bytes_held_per_token']:.0f} bytes held per token) |" + " |" * (len(budgets) - 1))

for model, label in [("recall", "kvq-recall, held-out KJV, ctx 4096"), ("656k", "TinyStories-656K, TinyStories, ctx 512")]:
    full = load(f"{d}/ppl-{model}-full.json")
    if not full:
        continue
    print(f"\n**Perplexity ({label})**: the first half of each window is a prompt that ends, the second half is "
          f"decoded one token at a time and scored; KL against the full f16 cache run the same way "
          f"(full: ppl {full['ppl']:.3f}).\n")
    bs = [b for b in budgets if glob.glob(f"{d}/ppl-{model}-*-{b}.json")]
    print("| policy | " + " | ".join(f"budget {b}: ppl / KL" for b in bs) + " |")
    print("|---|" + "---|" * len(bs))
    for p in pols:
        row = []
        for b in bs:
            j = load(f"{d}/ppl-{model}-{p}-{b}.json")
            row.append(f"{j['ppl']:.2f} / {j['kl_mean']:.4f}" if j else "-")
        print(f"| {p} | " + " | ".join(row) + " |")
    for f in sorted(glob.glob(f"{d}/ppl-{model}-kivi*.json")):
        j = load(f)
        print(f"| {j['kv']} | ppl {j['ppl']:.3f}, KL {j['kl_mean']:.4f}, {j['kv_bytes_used']} bytes held at the end of a window |")
