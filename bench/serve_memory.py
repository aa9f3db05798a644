#!/usr/bin/env python3
"""How many concurrent sessions of a given length fit in a fixed --kv-memory,
per KV spec: starts `kvq serve` with that spec and budget, opens more
streaming requests (prompt + max_tokens = the session length) than can fit,
and counts the admitted (200, first event received) and the refused (429).
The admitted streams are then dropped (the server cancels them) and the
server is stopped with SIGTERM; its exit status is reported.

usage: serve_memory.py KVQ MODEL --kv-memory 1G --ctx 4096 --specs f16,kivi:k4v2 [--try 64]"""
import argparse
import http.client
import json
import socket
import subprocess
import time

ap = argparse.ArgumentParser()
ap.add_argument("kvq")
ap.add_argument("model")
ap.add_argument("--kv-memory", default="1G")
ap.add_argument("--ctx", type=int, default=4096)
ap.add_argument("--specs", default="f16,kivi:k4v2,kivi:k2v2+rocket:budget=512")
ap.add_argument("--try", dest="tries", type=int, default=64)
a = ap.parse_args()

for spec in a.specs.split(","):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = subprocess.Popen([a.kvq, "serve", "-m", a.model, "--port", str(port), "--kv", spec, "--ctx", str(a.ctx),
                          "--kv-memory", a.kv_memory, "--parallel", str(a.tries), "--queue", "0", "--idle-sessions", "0",
                          "-t", "2"], stderr=subprocess.PIPE, text=True)
    for _ in range(400):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.05)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/metrics")
    fit = [l for l in c.getresponse().read().decode().splitlines() if l.startswith("kvq_sessions_fit{kv=\"%s\"" % spec)]
    conns, codes = [], []
    for i in range(a.tries):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        body = {"prompt": "Once upon a time there was", "max_tokens": a.ctx - 16, "stream": True, "temperature": 0.8}
        c.request("POST", "/v1/completions", json.dumps(body))
        r = c.getresponse()
        codes.append(r.status)
        if r.status == 200:
            r.read1(1)  # the first event: the request is admitted and running
            conns.append(c)
        else:
            r.read()
            c.close()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/metrics")
    m = c.getresponse().read().decode().splitlines()
    reserved = [l for l in m if l.startswith("kvq_kv_bytes_reserved ")]
    used = [l for l in m if l.startswith("kvq_kv_bytes_used ")]
    c.request("GET", "/health")
    health = c.getresponse().status
    for c in conns:
        c.close()
    p.terminate()
    try:
        rc = p.wait(120)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = "killed"
    print(json.dumps({"kv": spec, "ctx": a.ctx, "kv_memory": a.kv_memory, "tried": a.tries,
                      "admitted": codes.count(200), "refused_429": codes.count(429),
                      "other": len(codes) - codes.count(200) - codes.count(429),
                      "metrics_fit_before": fit[0].rsplit(" ", 1)[1] if fit else None,
                      "reserved": int(float(reserved[0].split()[1])) if reserved else None,
                      "used": int(float(used[0].split()[1])) if used else None,
                      "health_after": health, "exit": rc}), flush=True)
