#!/usr/bin/env python3
"""Markdown tables for docs/rocketkv.md from bench/results/rocketkv/*.json."""
import glob, json, os, sys

d = sys.argv[1] if len(sys.argv) > 1 else "bench/results/rocketkv"
what = sys.argv[2] if len(sys.argv) > 2 else "all"   # niah | ppl | combined | all
pols = ["window", "snapkv", "hsa", "rocket", "rocket-mt"]
budgets = [64, 128, 256, 512, 1024]

def load(p):
    try:
        return json.load(open(p))
    except Exception:
        return None

for turns in ("1", "2") if what in ("niah", "all") else ():
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

for model, label in [("recall", "kvq-recall, held-out KJV, ctx 4096"), ("656k", "TinyStories-656K, TinyStories, ctx 512")] if what in ("ppl", "all") else ():
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

if what in ("combined", "all"):
    # each compression alone and both: memory held, passkey (one prompt, two turns), ppl and KL on kvq-recall
    print("| KV spec | codec bytes/token (before eviction) | bytes held after a 2K-4K prompt, per prompt token | passkey, one prompt | passkey, two turns | ppl / KL (kvq-recall, ctx 4096) |")
    print("|---|---|---|---|---|---|")
    rows = [("f16", "full", "full", "ppl-recall-full.json"),
            ("kivi:k4v2", "kivi", "kivi", "ppl-recall-kivi_k4v2.json"),
            ("f16+rocket:budget=256", "rocket-256", "rocket-256", "ppl-recall-rocket-256.json"),
            ("kivi:k4v2+rocket:budget=256", "kivi-rocket-256", "kivi-rocket-256", "ppl-recall-kivi_k4v2_rocket_budget_256.json")]
    for spec, n1, n2, pf in rows:
        a, b, c = load(f"{d}/niah-t1-{n1}.json"), load(f"{d}/niah-t2-{n2}.json"), load(f"{d}/{pf}")
        cell = lambda j: f"{100 * j['mean']:.0f}%" if j else "-"
        ppl = (f"{c['ppl']:.3f} / {c['kl_mean']:.4f}" if c.get("kl_mean") is not None else f"{c['ppl']:.3f} / 0 (the base)") if c else "-"
        print(f"| {spec} | {a['kv_bytes_per_token']:.0f} | {a['kv_bytes_held_per_token']:.0f} | {cell(a)} | {cell(b)} | {ppl} |" if a else f"| {spec} | - | - | - | - | {ppl} |")
