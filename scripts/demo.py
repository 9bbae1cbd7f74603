#!/usr/bin/env python3
"""Cordon demo: the control plane (embedded SQLite default), the real Envoy with the Cordon
module (policy-stream and audit singleton, identity and redaction filters), and a fake model
upstream; at the end, the signed audit trail of every request, verified offline.

Policy and API keys go in through `cordonctl`, reach Envoy over the policy stream, and every
request's fate is printed one line each. Run through scripts/demo.sh (set-up and build first).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests  # noqa: E402

from tests.harness import envoy as E  # noqa: E402
from tests.harness.control_plane import BIN_DIR, ControlPlane, node_key, policy_stream_extension  # noqa: E402
from tests.harness.fake_upstream import FakeUpstream, Script  # noqa: E402
from tests.harness.sse import SSEStream  # noqa: E402

BOLD, DIM, GREEN, RED, RESET = "\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m"
if not sys.stdout.isatty():
    BOLD = DIM = GREEN = RED = RESET = ""

NODE = "demo-sidecar-1"
POLICY = """\
# Who may call which models. API keys are added with `cordonctl keys create`.
routes:
  - name: openai
    path_prefix: /v1/
    accept: [[api_key], [jwt]]
models:
  - match: {team: research}
    allow: ["gpt-4o-mini", "text-embedding-*"]
  - match: {team: support}
    allow: ["gpt-4o-mini"]
upstreams:
  - cluster: model
    secret_env: DEMO_PROVIDER_KEY
rate_limits:
  - name: research-embeddings
    match: {team: research, model: "text-embedding-*"}
    requests: {limit: 3, per: minute}
  - name: research-tokens
    match: {team: research}
    by: [team]
    tokens: {limit: 2000, per: hour, count: completion}
    on_exceed: cut
  - name: team-monthly
    by: [team]
    budget: {tokens: 1000000, per: month}
redaction:
  rules:
    detectors:
      card: {request: redact, response: mask}
      aws_access_key: {request: block, response: redact}
    keyword_lists:
      - {name: codename, words: ["Project Zeus"], request: redact, response: block}
"""


def heading(text: str) -> None:
    print(f"\n{BOLD}{text}{RESET}")


def row(n: int, who: str, what: str, status: int, outcome: str) -> None:
    colour = GREEN if status < 400 else RED
    print(f" {n:>2}  {who:<10} {what:<42} {colour}{status}{RESET}  {outcome}")


def main() -> int:
    cp = ControlPlane().start()
    upstream = FakeUpstream(models=["gpt-4o-mini", "gpt-4o", "o1-preview", "text-embedding-3-small"])
    env = None
    try:
        heading(f"1. Control plane (embedded SQLite in {cp.data_dir}) on {cp.url}")
        applied = cp.apply(POLICY, "demo: initial policy")
        print(f"    cordonctl apply -f policy.yaml      -> version {applied['version']['version']}")
        alice = cp.ctl("keys", "create", "--id", "k-alice", "--user", "alice", "--team", "research")
        bob = cp.ctl("keys", "create", "--id", "k-bob", "--user", "bob", "--team", "support")
        print(f"    cordonctl keys create --id k-alice  -> {alice['plaintext'][:10]}... (shown once; the store keeps its SHA-256)")
        print(f"    cordonctl keys create --id k-bob    -> {bob['plaintext'][:10]}...")
        version = bob["version"]["version"]

        seed = node_key(cp, NODE)
        print(f"    cordonctl nodes keygen + nodes register --node {NODE}  -> the node's audit key (secret seed to Envoy's env)")

        # The same vm_config for every role: one VM per worker, one audit record per request.
        env_keys = ["DEMO_PROVIDER_KEY", "CORDON_NODE_KEY"]
        heading("2. Envoy with dist/cordon.wasm: policy-stream + audit singleton, cordon.identity + cordon.redact, no static policy")
        ext = policy_stream_extension("cordon_control_plane", [cp.trusted_key], E.WASM, env_keys,
                                      audit={"node_key_env": "CORDON_NODE_KEY"})
        filters = [E.wasm_filter("cordon.identity", {}, env_keys), E.wasm_filter("cordon.redact", {}, env_keys)]
        cfg = E.bootstrap(
            [E.listener("main", filters, "model")],
            [E.cluster("model", upstream.port), E.cluster("cordon_control_plane", cp.port, http2=True)],
            extra={"bootstrap_extensions": [ext], "node": {"id": NODE, "cluster": "demo"}},
        )
        env = E.Envoy.start(cfg, env={"DEMO_PROVIDER_KEY": "sk-provider-from-runtime-secret", "CORDON_NODE_KEY": seed})
        t0 = time.monotonic()
        cp.wait_node(NODE, lambda n: n["state"] == "SYNCED" and n["acked_version"] == version)
        print(f"    node {NODE} ACKed version {version} {(time.monotonic() - t0) * 1000:.0f} ms after Envoy was ready; trusted signer {cp.trusted_key['key_id']}")
        print(f"{DIM}" + cp.ctl("status", json_out=False).stdout.rstrip().replace("\n", f"\n{DIM}") + RESET)

        heading("3. Requests through Envoy")
        url = env.url()
        print(f" {'#':>2}  {'caller':<10} {'request':<42} status  outcome")
        chat = lambda model: {"model": model, "messages": [{"role": "user", "content": "hello"}]}  # noqa: E731
        as_alice = {"authorization": f"Bearer {alice['plaintext']}"}
        as_bob = {"x-api-key": bob["plaintext"]}

        def show(n, who, what, r):
            if r.status_code >= 400:
                err = r.json()["error"]
                row(n, who, what, r.status_code, f"{err['code']}: {err['message']}")
            else:
                seen = upstream.last().headers
                row(n, who, what, r.status_code, f"upstream saw user={seen.get('x-cordon-user')} team={seen.get('x-cordon-team')} "
                    f"auth={seen.get('authorization', '')[:12]}... (provider key injected, app key stripped)")

        post = lambda body, headers: requests.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=10)  # noqa: E731
        show(1, "alice", "POST /v1/chat/completions gpt-4o-mini", post(chat("gpt-4o-mini"), as_alice))
        show(2, "(no key)", "POST /v1/chat/completions gpt-4o-mini", post(chat("gpt-4o-mini"), {}))
        show(3, "alice", "POST /v1/chat/completions gpt-4o", post(chat("gpt-4o"), as_alice))
        show(4, "mallory", "POST with x-cordon-user: alice", post(chat("gpt-4o-mini"), {"x-cordon-user": "alice"}))
        r = requests.get(url + "/v1/models", headers=as_alice, timeout=10)
        row(5, "alice", "GET /v1/models", r.status_code, "sees " + ", ".join(m["id"] for m in r.json()["data"]) + f"  {DIM}(upstream has 4){RESET}")
        show(6, "bob", "POST /v1/chat/completions gpt-4o-mini", post(chat("gpt-4o-mini"), as_bob))

        upstream.push(Script(chunks=["Streams ", "pass ", "through ", "event ", "by ", "event."], delay_s=0.2))
        body = {**chat("gpt-4o-mini"), "stream": True, "stream_options": {"include_usage": True}}
        t0 = time.monotonic()
        with SSEStream(url + "/v1/chat/completions", body, headers=as_alice) as s:
            events = list(s)
        text = "".join(e.json()["choices"][0]["delta"].get("content", "") for e in events if e.data != "[DONE]" and e.json()["choices"])
        row(7, "alice", "POST stream=true gpt-4o-mini", s.status, f"{len(events)} SSE events: '{text}'")
        print(f"     {DIM}arrival ms: {', '.join(f'{(e.t - t0) * 1000:.0f}' for e in events[:8])} ... (as the upstream sent them, 200 ms apart){RESET}")

        heading("4. Redaction (streamed and not, both directions)")
        upstream.clear()
        prompt = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Card 4111 1111 1111 1111, mail jane@example.com, re Project Zeus"}]}
        r = post(prompt, as_alice)
        sent = upstream.last().json["messages"][0]["content"]
        row(8, "alice", "prompt with card, e-mail, codename", r.status_code, f"upstream received: {sent!r}")
        r = post({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "key AKIAIOSFODNN7EXAMPLE"}]}, as_alice)
        row(9, "alice", "prompt with an AWS access key", r.status_code, f"{r.json()['error']['code']} (never left the boundary)")
        card = "5555 5555 5555 4444"
        upstream.push(Script(chunks=["Your card ", card[:6], card[6:13], card[13:], " is on file; mail ", "jane@exa", "mple.com", "."], delay_s=0.05))
        with SSEStream(url + "/v1/chat/completions", body, headers=as_alice) as s:
            events = list(s)
        text = "".join(e.json()["choices"][0]["delta"].get("content", "") for e in events if e.data != "[DONE]" and e.json().get("choices"))
        row(10, "alice", "stream: card over 3 events, e-mail over 2", s.status, f"client read: {text!r}")
        upstream.push(Script(chunks=["The plan for ", "Project ", "Zeus", " is secret"]))
        with SSEStream(url + "/v1/chat/completions", body, headers=as_alice) as s:
            events = list(s)
        last = events[-1].json()
        row(11, "alice", "stream that names the codename", s.status, f"stream ended by error event: {last['error']['code']}")

        heading("5. Rate and token limits (every matching limit applies; counters shared by Envoy's workers)")
        emb = {"model": "text-embedding-3-small", "input": "hello"}
        for n in range(4):
            r = requests.post(url + "/v1/embeddings", json=emb, headers=as_alice, timeout=10)
            if r.status_code == 200:
                row(14 + n, "alice", "POST /v1/embeddings", r.status_code, f"x-ratelimit-remaining-requests={r.headers.get('x-ratelimit-remaining-requests')}")
            else:
                row(14 + n, "alice", "POST /v1/embeddings", r.status_code,
                    f"{r.json()['error']['code']} by '{r.headers.get('x-cordon-limit')}', Retry-After {r.headers.get('retry-after')} s")
        upstream.push(Script(chunks=["lorem ipsum " * 33] * 30))
        with SSEStream(url + "/v1/chat/completions", {**chat("gpt-4o-mini"), "stream": True}, headers=as_alice) as s:
            events = list(s)
        chars = sum(len(e.json()["choices"][0]["delta"].get("content", "")) for e in events if e.data != "[DONE]" and e.json().get("choices"))
        last = next(e.json() for e in reversed(events) if e.data != "[DONE]")
        row(18, "alice", "stream of ~3000 tokens, 2000/h budget (cut)", s.status,
            f"{chars} chars, then error event {last['error']['code']} and [DONE]")

        heading("6. Live policy change: revoke bob's key")
        t0 = time.monotonic()
        revoked = cp.ctl("keys", "revoke", "k-bob")
        new_version = revoked["version"]["version"]
        cp.wait_node(NODE, lambda n: n["state"] == "SYNCED" and n["acked_version"] == new_version)
        print(f"    cordonctl keys revoke k-bob -> version {new_version}, ACKed by {NODE} after {(time.monotonic() - t0) * 1000:.0f} ms")
        show(19, "bob", "POST /v1/chat/completions gpt-4o-mini", post(chat("gpt-4o-mini"), as_bob))
        show(20, "alice", "POST gpt-4o-mini (budget spent by #18)", post(chat("gpt-4o-mini"), as_alice))

        stats = {line.split("{")[0]: line.rsplit(" ", 1)[1] for line in env.admin_get("/stats/prometheus").splitlines()
                 if line.startswith(("cordon_decision_", "cordon_redaction_")) and not line.endswith(" 0")}
        heading("7. Envoy /stats/prometheus")
        print("    " + ", ".join(f"{k.removeprefix('cordon_decision_')}={v}" for k, v in sorted(stats.items())))

        heading("8. The signed audit trail: one record per request, shipped by the node, verified offline")
        # Records arrive within a few hundred ms of each exchange; wait until the count settles.
        deadline, entries, settled = time.monotonic() + 15, [], 0
        while settled < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
            now = cp.ctl("audit", "query", "--node", NODE, "--limit", "1000").get("entries", [])
            settled = settled + 1 if entries and len(now) == len(entries) else 0
            entries = now
        for e in sorted(entries, key=lambda e: int(e["seq"])):
            details = [e.get("rate_limit", ""), " ".join(e.get("redactions", [])), e.get("usage", "")]
            print(f"    seq {int(e['seq']):>2}  {e['decision']:<6} {e['reason']:<24} {e.get('user', '-') or '-':<6} "
                  f"{e.get('model', '') or '-':<24} {DIM}{'  '.join(d for d in details if d)}{RESET}")
        time.sleep(1.0)  # the control plane signs a tree head within 500 ms of the last entry
        some = sorted(entries, key=lambda e: int(e["seq"]))[3]
        proof = cp.ctl("audit", "prove", NODE, str(some["seq"]))
        print(f"    cordonctl audit prove {NODE} {some['seq']} -> leaf {proof.get('leaf', 0)}, {len(proof.get('proof', []))} hashes to a signed head")
        with tempfile.TemporaryDirectory() as tmp:
            export, keys = Path(tmp) / "audit.jsonl", Path(tmp) / "node-keys"
            r = cp.ctl("audit", "export", "--out", str(export), "--keys-out", str(keys), json_out=False)
            cp_key = r.stderr.strip().rsplit(" ", 1)[-1]
            verify = [str(BIN_DIR / "cordon-verify"), str(export), "--node-keys", str(keys), "--control-plane-key", cp_key]
            ok = subprocess.run(verify, capture_output=True, text=True, timeout=60)
            print(f"    cordon-verify audit.jsonl (offline, public keys only) -> {ok.stdout.strip().splitlines()[-1] if ok.stdout.strip() else ok.stderr.strip()}")
            data = bytearray(export.read_bytes())
            at = data.index(b'"entry":"') + 40
            data[at] = ord("A") if data[at] != ord("A") else ord("B")
            export.write_bytes(bytes(data))
            bad = subprocess.run(verify, capture_output=True, text=True, timeout=60)
            first = (bad.stdout + bad.stderr).strip().splitlines()
            print(f"    ... after changing one byte of one entry   -> exit {bad.returncode}: {first[0] if first else ''}")
        heading("9. Budgets, fleet-wide from the verified trail (cordonctl budgets)")
        for line in cp.ctl("budgets", json_out=False).stdout.rstrip().splitlines():
            print(f"    {line}")
        print(f"\n{DIM}Also there, not shown here: fleet-wide limits through the control plane's rate-limit "
              f"service (scope: fleet, docs/limits.md), concurrency limits, content digests.{RESET}")
        return 0
    finally:
        if env is not None:
            env.cleanup()
        upstream.stop()
        cp.stop()


if __name__ == "__main__":
    sys.exit(main())
