#!/usr/bin/env python3
"""Cordon demo: the real Envoy with the Cordon module in front of a fake model upstream.

Sends a handful of requests and prints, one line each, what Cordon decided and what crossed the
boundary. Run through scripts/demo.sh, which does the set-up and builds the module first.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests  # noqa: E402

from tests.harness import envoy as E  # noqa: E402
from tests.harness.fake_upstream import FakeUpstream, Script  # noqa: E402
from tests.harness.sse import SSEStream  # noqa: E402

BOLD, DIM, GREEN, RED, RESET = "\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m"
if not sys.stdout.isatty():
    BOLD = DIM = GREEN = RED = RESET = ""

ALICE_KEY = "sk-cordon-demo-alice"  # demo-only keys: policy stores their SHA-256, never the key
BOB_KEY = "sk-cordon-demo-bob"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


POLICY = {
    "identity": {
        "api_keys": [
            {"id": "k-alice", "sha256": digest(ALICE_KEY), "principal": {"user": "alice", "team": "research", "app": "notebook"}},
            {"id": "k-bob", "sha256": digest(BOB_KEY), "principal": {"user": "bob", "team": "support"}, "status": "revoked"},
        ]
    },
    "routes": [{"name": "openai", "path_prefix": "/v1/", "accept": [["api_key"], ["jwt"]]}],
    "models": [{"match": {"team": "research"}, "allow": ["gpt-4o-mini", "text-embedding-*"]}],
    "upstreams": [{"cluster": "model", "secret_env": "DEMO_PROVIDER_KEY"}],
}


def row(n: int, who: str, what: str, status: int, outcome: str) -> None:
    colour = GREEN if status < 400 else RED
    print(f" {n}  {who:<12} {what:<44} {colour}{status}{RESET}  {outcome}")


def main() -> int:
    upstream = FakeUpstream(models=["gpt-4o-mini", "gpt-4o", "o1-preview", "text-embedding-3-small"])
    flt = E.wasm_filter("cordon.identity", {"policy": POLICY}, ["DEMO_PROVIDER_KEY"])
    cfg = E.bootstrap([E.listener("main", [flt], "model")], [E.cluster("model", upstream.port)])
    print(f"{BOLD}Cordon demo{RESET}: Envoy {E.ENVOY_BIN.name} + dist/cordon.wasm (cordon.identity) -> fake model upstream :{upstream.port}")
    env = E.Envoy.start(cfg, env={"DEMO_PROVIDER_KEY": "sk-provider-from-runtime-secret"})
    try:
        url = env.url()
        print(f"{DIM}envoy listening on {url}, admin on :{env.admin_port}{RESET}\n")
        print(f" #  {'caller':<12} {'request':<44} status  outcome")
        chat = lambda model: {"model": model, "messages": [{"role": "user", "content": "hello"}]}  # noqa: E731
        alice = {"authorization": f"Bearer {ALICE_KEY}"}

        def show(n, who, what, r):
            if r.status_code >= 400:
                err = r.json()["error"]
                row(n, who, what, r.status_code, f"{err['code']}: {err['message']}")
            else:
                seen = upstream.last().headers
                row(n, who, what, r.status_code, f"upstream saw user={seen.get('x-cordon-user')} team={seen.get('x-cordon-team')} "
                    f"auth={seen.get('authorization', '')[:12]}... (provider key injected; app key stripped)")

        upstream.clear()
        show(1, "alice", "POST /v1/chat/completions gpt-4o-mini", requests.post(url + "/v1/chat/completions", json=chat("gpt-4o-mini"), headers=alice, timeout=10))
        show(2, "(no key)", "POST /v1/chat/completions gpt-4o-mini", requests.post(url + "/v1/chat/completions", json=chat("gpt-4o-mini"), timeout=10))
        show(3, "bob", "POST /v1/chat/completions (revoked key)", requests.post(url + "/v1/chat/completions", json=chat("gpt-4o-mini"), headers={"x-api-key": BOB_KEY}, timeout=10))
        show(4, "alice", "POST /v1/chat/completions gpt-4o", requests.post(url + "/v1/chat/completions", json=chat("gpt-4o"), headers=alice, timeout=10))
        show(5, "mallory", "POST spoofing x-cordon-user: alice", requests.post(url + "/v1/chat/completions", json=chat("gpt-4o-mini"), headers={"x-cordon-user": "alice"}, timeout=10))
        r = requests.get(url + "/v1/models", headers=alice, timeout=10)
        row(6, "alice", "GET /v1/models", r.status_code, "sees " + ", ".join(m["id"] for m in r.json()["data"]) + f"  {DIM}(upstream has 4){RESET}")

        upstream.push(Script(chunks=["Streams ", "pass ", "through ", "event ", "by ", "event."], delay_s=0.2))
        body = {**chat("gpt-4o-mini"), "stream": True, "stream_options": {"include_usage": True}}
        t0 = time.monotonic()
        with SSEStream(url + "/v1/chat/completions", body, headers=alice) as s:
            events = list(s)
        text = "".join(e.json()["choices"][0]["delta"].get("content", "") for e in events if e.data != "[DONE]" and e.json()["choices"])
        gaps = ", ".join(f"{(e.t - t0) * 1000:.0f}" for e in events[:8])
        row(7, "alice", "POST stream=true gpt-4o-mini", s.status, f"{len(events)} SSE events, '{text}'")
        print(f"    {DIM}arrival ms: {gaps} ... (each event as the upstream sent it, 200 ms apart){RESET}")

        stats = {line.split("{")[0]: line.rsplit(" ", 1)[1] for line in env.admin_get("/stats/prometheus").splitlines()
                 if line.startswith("cordon_decision_") and not line.endswith(" 0")}
        print(f"\n{BOLD}Envoy /stats/prometheus{RESET}: " + ", ".join(f"{k.removeprefix('cordon_decision_')}={v}" for k, v in sorted(stats.items())))
        print(f"{DIM}Coming with later work: live policy from the control plane, rate limits, streaming redaction, signed audit.{RESET}")
        return 0
    finally:
        env.cleanup()
        upstream.stop()


if __name__ == "__main__":
    sys.exit(main())
