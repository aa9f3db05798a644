#!/usr/bin/env python3
"""Scale-out with existing software (docs/serving.md): nginx in front of two
kvq serve replicas that share a session directory, with session affinity on
the X-Session-Id header. A conversation stays on one replica; when that
replica is stopped mid-conversation, the next turn goes to the other, which
restores the session from the directory and reuses its cache.

usage: test_scaleout.py KVQ MODEL_GGUF NGINX"""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
KVQ, MODEL, NGINX = sys.argv[1:4]
sys.argv = [sys.argv[0], KVQ, MODEL, "", ""]  # test_server's helpers read these
import test_server as ts  # noqa: E402  (runs nothing at import: see its guard)

FAILS = 0


def check(name, cond, detail=""):
    global FAILS
    print(("ok   " if cond else "FAIL ") + name + ("" if cond or not detail else "  [" + str(detail)[:400] + "]"))
    FAILS += not cond


with tempfile.TemporaryDirectory() as d:
    sessions = os.path.join(d, "sessions")
    os.mkdir(sessions)
    reps = {name: ts.Server(MODEL, "--session-dir", sessions, "--model-id", name) for name in ("kvq-a", "kvq-b")}
    port = ts.free_port()
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""
worker_processes 1;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log warn;
daemon off;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %(d)s/body; proxy_temp_path %(d)s/proxy;
    fastcgi_temp_path %(d)s/fcgi; uwsgi_temp_path %(d)s/uwsgi; scgi_temp_path %(d)s/scgi;
    upstream kvq {
        hash $http_x_session_id consistent;   # a conversation stays on its replica
        %(servers)s
    }
    server {
        listen 127.0.0.1:%(port)d;
        location / {
            proxy_pass http://kvq;
            proxy_http_version 1.1;
            proxy_buffering off;               # server-sent events pass through as they come
            proxy_read_timeout 600s;
            proxy_next_upstream error timeout; # a stopped replica: the next one takes the request
        }
    }
}
""" % {"d": d, "port": port,
       "servers": "\n        ".join("server 127.0.0.1:%d max_fails=1 fail_timeout=30s;" % r.port for r in reps.values())})
    ng = subprocess.Popen([NGINX, "-c", conf, "-p", d], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    front = ts.Server.__new__(ts.Server)
    front.port = port
    for _ in range(100):
        try:
            if front.get("/health")[0] == 200:
                break
        except OSError:
            time.sleep(0.05)
    conv = [{"role": "user", "content": "Tell me about a cat."}]
    # the client names the conversation from its first turn, so nginx routes every turn by it
    st, h, r = front.post("/v1/chat/completions", {"messages": conv, "max_tokens": 12, "temperature": 0},
                          {"X-Session-Id": os.urandom(16).hex()})
    sid, first = h.get("X-Session-Id"), r.get("model") if isinstance(r, dict) else None
    check("turn 1 through nginx", st == 200 and sid and first in reps, r)
    conv2 = conv + [{"role": "assistant", "content": r["choices"][0]["message"]["content"]},
                    {"role": "user", "content": "What did the cat do next?"}]
    st, h, r2 = front.post("/v1/chat/completions", {"messages": conv2, "max_tokens": 12, "temperature": 0},
                           {"X-Session-Id": sid})
    check("turn 2 goes to the same replica and reuses its cache",
          st == 200 and r2["model"] == first and r2["kvq"]["prompt_tokens_reused"] > 0, r2)
    rc = reps[first].stop()
    check("the replica holding the conversation stops (SIGTERM, exit 0)", rc == 0, reps[first].log()[-300:])
    conv3 = conv2 + [{"role": "assistant", "content": r2["choices"][0]["message"]["content"]},
                     {"role": "user", "content": "And then?"}]
    st, h, r3 = front.post("/v1/chat/completions", {"messages": conv3, "max_tokens": 12, "temperature": 0},
                           {"X-Session-Id": sid})
    other = [n for n in reps if n != first][0]
    check("turn 3 resumes on the other replica from the shared session directory",
          st == 200 and r3["model"] == other and r3["kvq"]["prompt_tokens_reused"] > 0 and
          h.get("X-Session-Id") == sid and ts.metric(reps[other], "kvq_sessions_restored_total") == 1, r3)
    ng.terminate()
    ng.wait(30)
    check("the other replica exits 0 on SIGTERM", reps[other].stop() == 0, reps[other].log()[-400:])
print("scale-out: %s" % ("all passed" if FAILS == 0 else "%d FAILED" % FAILS))
sys.exit(1 if FAILS else 0)
