"""The signed audit trail end to end: the real Envoy with the real module (policy-stream and
audit singleton, identity, redaction, limits), the real control plane, cordonctl and the
offline verifier. Every exchange through Envoy becomes one record whose fields match what
happened; the export verifies offline and fails after one changed byte. The tests that take
`stack` run on both builds: the wasm module (singleton + shared queue) and the native dynamic
module (one shipper thread per process, fed by a channel)."""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import time

import pytest
import requests

from tests.harness import envoy as E
from tests.harness.control_plane import BIN_DIR, ControlPlane, native_control_plane, node_key, policy_stream_extension
from tests.harness.fake_upstream import FakeUpstream

NODE = "envoy-audit-node"
CONTENT_KEY_ENV = "CORDON_AUDIT_CONTENT_KEY"

POLICY = """
routes:
  - name: openai
    path_prefix: /v1/
    accept: [[api_key]]
models:
  - match: {team: research}
    allow: ["gpt-4o-mini"]
rate_limits:
  - name: per-key-burst
    by: [key]
    requests: {limit: 3, per: hour}
redaction:
  rules:
    detectors:
      email: {request: redact}
      card: {request: block}
"""


def chat(content="hi", model="gpt-4o-mini"):
    return {"model": model, "messages": [{"role": "user", "content": content}]}


@pytest.fixture
def stack(request, build):
    cp = ControlPlane().start()
    up = FakeUpstream()
    started = []
    seeds = {}

    def envoy(audit=True, buffer_records=10_000, content_key=None):
        env_vars = {}
        audit_cfg = None
        keys = ["CORDON_NODE_KEY", CONTENT_KEY_ENV]
        if audit:
            if "seed" not in seeds:  # one key per node: a restarted Envoy keeps its key
                seeds["seed"] = node_key(cp, NODE)
            env_vars["CORDON_NODE_KEY"] = seeds["seed"]
            audit_cfg = {"node_key_env": "CORDON_NODE_KEY", "buffer_records": buffer_records}
        if content_key is not None:
            audit_cfg["content_key_env"] = CONTENT_KEY_ENV
            if content_key:
                env_vars[CONTENT_KEY_ENV] = content_key
        if build == "dynamic":
            # The identity filter carries the control plane and audit sections; redaction runs
            # the policy the process's stream pushed.
            identity = {"control_plane": native_control_plane(cp, [cp.trusted_key], NODE)}
            if audit_cfg is not None:
                identity["audit"] = audit_cfg
            filters = [E.dynamic_filter("cordon.identity", identity), E.dynamic_filter("cordon.redact", {})]
            cfg = E.bootstrap([E.listener("main", filters, "model")], [E.cluster("model", up.port)])
            env = E.Envoy.start(cfg, env={**env_vars, **E.dynamic_module_env()})
            started.append(env)
            return env
        ext = policy_stream_extension("cordon_control_plane", [cp.trusted_key], E.WASM, keys, audit=audit_cfg)
        filters = [E.wasm_filter("cordon.identity", {}, keys), E.wasm_filter("cordon.redact", {}, keys)]
        cfg = E.bootstrap(
            [E.listener("main", filters, "model")],
            [E.cluster("model", up.port), E.cluster("cordon_control_plane", cp.port, http2=True)],
            extra={"bootstrap_extensions": [ext], "node": {"id": NODE, "cluster": "e2e"}},
        )
        env = E.Envoy.start(cfg, env=env_vars)
        started.append(env)
        return env

    yield cp, up, envoy
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for e in started:
            print(f"\n===== envoy log =====\n{e.log()[-6000:]}")
        print(f"\n===== control plane log =====\n{cp.log()[-4000:]}")
    for e in started:
        e.cleanup()
    up.stop()
    cp.stop()


def push(cp, policy=POLICY):
    cp.apply(policy)
    key = cp.ctl("keys", "create", "--id", "k-audit", "--user", "ada", "--team", "research")
    cp.wait_node(NODE, lambda n: n["state"] == "SYNCED" and n["acked_version"] == key["version"]["version"])
    return key["plaintext"]


def records(cp, want, timeout=15.0):
    """The node's stored entries once `want` of them arrived (or what there is at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        got = cp.ctl("audit", "query", "--node", NODE).get("entries", [])
        if len(got) >= want or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def post(env, key, body):
    return requests.post(env.url() + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=10)


def test_every_exchange_is_one_record_that_says_what_happened(stack, tmp_path):
    cp, up, envoy = stack
    env = envoy()
    key = push(cp)
    secret_mail = "ada.lovelace@example.org"
    outcomes = [
        post(env, key, chat("hello")),  # allowed (limit: 1 of 3)
        post(env, "sk-not-a-key", chat()),  # 401
        post(env, key, chat(model="gpt-4o")),  # 403, before limits count
        post(env, key, chat(f"mail {secret_mail} please")),  # redacted, allowed (2 of 3)
        post(env, key, chat("card 4111111111111111")),  # blocked by redaction (3 of 3)
        post(env, key, chat("hello")),  # limited
    ]
    assert [r.status_code for r in outcomes] == [200, 401, 403, 200, 400, 429], [r.text for r in outcomes]
    got = records(cp, 6)
    assert len(got) == 6, got
    by_order = sorted(got, key=lambda e: int(e["seq"]))
    summary = [(e["decision"], e["reason"], int(e.get("status", 0))) for e in by_order]
    assert summary == [
        ("allow", "ok", 200),
        ("refuse", "invalid_api_key", 401),
        ("refuse", "model_not_allowed", 403),
        ("allow", "ok", 200),
        ("refuse", "sensitive_data_blocked", 400),
        ("refuse", "rate_limit_exceeded", 429),
    ], summary
    ok, bad_key, denied, redacted, blocked, limited = by_order
    assert ok["user"] == "ada" and ok["team"] == "research" and ok["model"] == "gpt-4o-mini"
    assert ok["key_id"] == "k-audit" and ok["rate_limit"].startswith("per-key-burst 3 "), ok
    assert ok["policy_version"] and ok["usage"].endswith(("reported", "estimated")), ok
    assert bad_key.get("user", "") == "" and bad_key.get("key_id", "") == ""
    assert denied["model"] == "gpt-4o"
    assert redacted.get("redactions") == ["request:email:redact=1"], redacted
    assert blocked.get("redactions") == ["request:card:block=1"], blocked
    assert limited["rate_limit"].startswith("per-key-burst") and limited["rate_limit"].endswith("limited"), limited
    # The request ids are Envoy's, one per exchange.
    assert len({e["request_id"] for e in by_order}) == 6
    # No content anywhere in the trail or the logs: the e-mail went upstream redacted only.
    assert secret_mail not in json.dumps(got) and secret_mail not in cp.log() and secret_mail not in env.log()

    # Provable against a signed head, and the export verifies offline; one changed byte fails it.
    proof = cp.ctl("audit", "prove", NODE, str(redacted["seq"]))
    assert proof.get("proof") is not None or proof.get("leaf") is not None, proof
    time.sleep(1.2)  # a head covering every entry is signed within 500 ms of the last one
    export, keys = tmp_path / "audit.jsonl", tmp_path / "node-keys"
    r = cp.ctl("audit", "export", "--out", str(export), "--keys-out", str(keys), json_out=False)
    cp_key = r.stderr.strip().rsplit(" ", 1)[-1]
    verify = [str(BIN_DIR / "cordon-verify"), str(export), "--node-keys", str(keys), "--control-plane-key", cp_key]
    r = subprocess.run(verify, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    data = bytearray(export.read_bytes())
    at = data.index(b'"entry":"') + 40
    data[at] = ord("A") if data[at] != ord("A") else ord("B")
    export.write_bytes(bytes(data))
    r = subprocess.run(verify, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0, r.stdout


def test_a_restarted_control_plane_gets_every_record_in_one_chain(stack):
    cp, up, envoy = stack
    env = envoy()
    key = push(cp)
    assert post(env, key, chat()).status_code == 200
    assert len(records(cp, 1)) == 1
    cp.stop()
    # Served while the control plane is down; the records wait in the node's buffer.
    assert post(env, key, chat()).status_code == 200
    assert post(env, key, chat(model="gpt-4o")).status_code == 403
    cp.start()
    got = records(cp, 3)
    assert [e["seq"] for e in sorted(got, key=lambda e: int(e["seq"]))] in ([0, 1, 2], ["0", "1", "2"]), got
    v = cp.ctl("audit", "verify")
    assert v.get("ok") is True, v


def test_audit_required_but_not_set_up_fails_closed(stack):
    cp, up, envoy = stack
    env = envoy(audit=False)
    key = push(cp, POLICY + "audit:\n  on_unavailable: refuse\n")
    r = post(env, key, chat())
    assert r.status_code == 503 and r.json()["error"]["code"] == "audit_unavailable", r.text
    assert up.received == [], "nothing reached the model"


def test_roles_in_different_vms_still_record_every_exchange_and_say_why_they_split(stack, build):
    """An operator gave the roles different vm_configs: no record is lost or merged wrongly;
    each role writes its own, and Envoy's log says how to fix the configuration."""
    if build == "dynamic":
        pytest.skip("wasm only: the native roles share one process, there are no VMs to split")
    cp, up, _ = stack
    seed = node_key(cp, NODE)
    ext = policy_stream_extension("cordon_control_plane", [cp.trusted_key], E.WASM, ["CORDON_NODE_KEY"], audit={"node_key_env": "CORDON_NODE_KEY"})
    filters = [E.wasm_filter("cordon.identity", {}, ["CORDON_NODE_KEY"]), E.wasm_filter("cordon.redact", {}, [])]
    cfg = E.bootstrap(
        [E.listener("main", filters, "model")],
        [E.cluster("model", up.port), E.cluster("cordon_control_plane", cp.port, http2=True)],
        extra={"bootstrap_extensions": [ext], "node": {"id": NODE, "cluster": "e2e"}},
    )
    with E.Envoy.start(cfg, env={"CORDON_NODE_KEY": seed}) as env:
        key = push(cp)
        assert post(env, key, chat("mail ada@example.org")).status_code == 200
        got = records(cp, 2)
        assert len(got) == 2, got
        assert len({e["request_id"] for e in got}) == 1, "the two parts share the request id"
        assert any(e.get("user") == "ada" for e in got) and any(e.get("redactions") == ["request:email:redact=1"] for e in got)
        assert "runs in another VM" in env.log()


def test_audit_configured_without_its_node_key_refuses_to_start(tmp_path):
    """Fail closed at start: an Envoy told to keep an audit trail must not run without its key."""
    from tests.harness.control_plane import free_port

    ext = policy_stream_extension("cp", [{"key_id": "ed25519:0000000000000000", "public_key": "A" * 43 + "="}], E.WASM, ["CORDON_NODE_KEY"],
                                  audit={"node_key_env": "CORDON_NODE_KEY"})
    cfg = E.bootstrap([E.listener("main", [E.wasm_filter("cordon.identity", {}, ["CORDON_NODE_KEY"])], "cp")], [E.cluster("cp", free_port(), http2=True)],
                      extra={"bootstrap_extensions": [ext]})
    with pytest.raises(RuntimeError) as err:
        E.Envoy.start(cfg).cleanup()
    assert "node key variable 'CORDON_NODE_KEY' is not set" in str(err.value)


def test_native_audit_configured_without_its_node_key_refuses_to_start():
    """The same for the native module: the filter configuration is rejected, Envoy does not start."""
    from tests.harness.control_plane import free_port

    section = {"address": f"http://127.0.0.1:{free_port()}", "node_id": NODE,
               "trusted_keys": [{"key_id": "ed25519:0000000000000000", "public_key": "A" * 43 + "="}]}
    flt = E.dynamic_filter("cordon.identity", {"control_plane": section, "audit": {"node_key_env": "CORDON_NODE_KEY"}})
    cfg = E.bootstrap([E.listener("main", [flt], "cp")], [E.cluster("cp", free_port())])
    with pytest.raises(RuntimeError) as err:
        E.Envoy.start(cfg, env=E.dynamic_module_env()).cleanup()
    assert "node key variable 'CORDON_NODE_KEY' is not set" in str(err.value)


def test_the_usage_ledger_agrees_with_what_the_limiter_counted(stack):
    """`cordonctl usage` (from verified records) and the token budget's counter (in Envoy) count
    the same tokens: the budget's remainder is exactly its size minus the ledger's total."""
    cp, up, envoy = stack
    env = envoy()
    budget = 100_000
    key = push(cp, POLICY.replace("rate_limits:\n", f"rate_limits:\n  - name: key-monthly\n    budget: {{tokens: {budget}, per: month}}\n"))
    for text in ["one", "two two"]:  # (the policy's per-key-burst allows 3 an hour: 2 + the probe)
        assert post(env, key, chat(text)).status_code == 200
    assert len(records(cp, 2)) == 2
    rows = cp.ctl("usage", "--by", "key")["rows"]
    assert [r["key_id"] for r in rows] == ["k-audit"], rows
    used = int(rows[0]["total_tokens"])
    assert int(rows[0]["requests"]) == 2 and used > 0 and int(rows[0].get("estimated", 0)) == 0, rows
    # A probe whose reservation is known exactly: ceil(body bytes / 4) prompt + max_tokens 1.
    body = json.dumps({"model": "gpt-4o-mini", "max_tokens": 1, "messages": [{"role": "user", "content": "probe"}]}, separators=(",", ":"))
    r = requests.post(env.url() + "/v1/chat/completions", data=body, headers={"authorization": f"Bearer {key}", "content-type": "application/json"}, timeout=10)
    assert r.status_code == 200, r.text
    reserved = -(-len(body.encode()) // 4) + 1
    assert int(r.headers["x-ratelimit-remaining-tokens"]) == budget - used - reserved, (r.headers, used, reserved)
    table = cp.ctl("usage", "--by", "team,model", json_out=False).stdout
    assert "research" in table and "gpt-4o-mini" in table and "TOTAL" in table
    # `cordonctl budgets`: the budget, its counter (by key, the default) and what is left of it,
    # fleet-wide from the same verified records: the two first exchanges and the probe.
    assert len(records(cp, 3)) == 3
    probe_used = int(cp.ctl("usage", "--by", "key")["rows"][0]["total_tokens"]) - used
    got = cp.ctl("budgets")
    rows = [r for r in got["rows"] if r["limit"] == "key-monthly"]
    assert len(rows) == 1 and rows[0]["counter"] == "key=k-audit", got
    b = rows[0]
    assert (b["per"], b["count"], int(b["tokens"])) == ("month", "total", budget), b
    assert int(b["used"]) == used + probe_used and int(b["remaining"]) == budget - used - probe_used, (b, used, probe_used)
    assert b["window_start_day"].endswith("-01") and b["resets_day"].endswith("-01"), b
    text = cp.ctl("budgets", json_out=False).stdout
    assert "key-monthly" in text and "key=k-audit" in text and "LEFT" in text, text


def keyed_digest(key: bytes, direction: str, content: bytes) -> str:
    """docs/audit.md, written independently of the Rust code: HMAC-SHA256 under the content key
    of "cordon-audit/content/v1" NUL, one byte for the direction (1 request, 2 response), then
    the exact bytes."""
    tag = {"request": b"\x01", "response": b"\x02"}[direction]
    return hmac.new(key, b"cordon-audit/content/v1\x00" + tag + content, hashlib.sha256).hexdigest()


def test_records_carry_keyed_digests_of_the_content_after_redaction(stack, tmp_path):
    cp, up, envoy = stack
    key = os.urandom(32)
    env = envoy(content_key=base64.b64encode(key).decode())
    api_key = push(cp)
    secret_mail = "grace.hopper@example.org"
    r = post(env, api_key, chat(f"write to {secret_mail} today"))
    assert r.status_code == 200, r.text
    sent = up.last().body
    assert secret_mail.encode() not in sent, "redaction ran before the digest"
    r2 = post(env, "sk-not-a-key", chat())
    assert r2.status_code == 401
    got = sorted(records(cp, 2), key=lambda e: int(e["seq"]))
    assert len(got) == 2, got
    ok, refused = got
    # The request digest is of what went upstream (redacted), the response's of what the app got.
    assert ok["request_digest"] == keyed_digest(key, "request", sent), ok
    assert ok["response_digest"] == keyed_digest(key, "response", r.content), ok
    original = json.dumps(chat(f"write to {secret_mail} today")).encode()
    assert ok["request_digest"] != keyed_digest(key, "request", original)
    # A refused request went nowhere: no digest is claimed for it.
    assert not refused.get("request_digest") and not refused.get("response_digest"), refused
    # A reviewer holding the key and the content recomputes the same digest with cordonctl.
    body = tmp_path / "sent.json"
    body.write_bytes(sent)
    out = subprocess.run([str(BIN_DIR / "cordonctl"), "audit", "digest", "--direction", "request", str(body)],
                         env={**os.environ, CONTENT_KEY_ENV: base64.b64encode(key).decode()},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == ok["request_digest"], out.stdout + out.stderr
    # Neither the key nor the content is in any log.
    assert base64.b64encode(key).decode() not in env.log() + cp.log()


@pytest.mark.parametrize("value, why", [("", "is not set"), (base64.b64encode(b"short").decode(), "at least 32")])
def test_a_named_content_key_that_is_missing_or_short_stops_envoy(stack, value, why):
    cp, up, envoy = stack
    with pytest.raises(RuntimeError) as failed:
        envoy(content_key=value)
    assert "content-digest key" in str(failed.value) and why in str(failed.value), failed.value


def test_a_killed_envoy_leaves_a_restart_gap_for_the_stream_it_had_in_flight(stack):
    """Kill -9 mid-stream: the exchange in flight can never be recorded by that Envoy, so its
    number is named by a `restart` gap that the next run of the node seals, never silently absent."""
    import signal
    import threading

    from tests.harness.fake_upstream import Script
    from tests.harness.sse import SSEStream

    cp, up, envoy = stack
    env = envoy()
    key = push(cp)
    assert post(env, key, chat("before")).status_code == 200
    assert len(records(cp, 1)) == 1
    up.push(Script(chunks=["tick "] * 400, delay_s=0.05))
    started = threading.Event()

    def stream():
        try:
            with SSEStream(env.url() + "/v1/chat/completions", {**chat("long"), "stream": True},
                           headers={"authorization": f"Bearer {key}"}) as s:
                for _ in s:
                    started.set()
        except Exception:
            pass  # the Envoy under it is killed

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    assert started.wait(10), "the stream began"

    def node():
        return next((n for n in cp.ctl("audit", "nodes")["nodes"] if n["node_id"] == NODE), {})

    # The node's watermark says one exchange is in flight beyond what is stored (seq 1).
    deadline = time.monotonic() + 10
    def pending():
        n = node()
        claimed = n.get("claimed_through")
        return -1 if claimed is None else int(claimed) + 1 - int(n.get("next_seq") or 0)

    while pending() != 1:
        assert time.monotonic() < deadline, node()
        time.sleep(0.1)
    env.proc.send_signal(signal.SIGKILL)
    env.proc.wait(10)
    t.join(10)

    again = envoy()
    deadline = time.monotonic() + 15
    while (r := post(again, key, chat("after"))).status_code == 503:  # until the policy arrives
        assert time.monotonic() < deadline, r.text
        time.sleep(0.1)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 15
    while True:
        got = sorted(records(cp, 3), key=lambda e: int(e["seq"]))
        if got[-1]["decision"] == "allow" and int(got[-1]["seq"]) > 0:
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.2)
    # Seq 0 the first exchange, seq 1 the stream the kill took (named by the gap, seq 2), then
    # the new run's exchanges: refusals while it waited for its policy (recorded too), the last one.
    assert [(int(e["seq"]), e["decision"]) for e in got[:3]] == [(0, "allow"), (2, "gap"), (3, got[2]["decision"])], got
    assert got[1]["reason"] == "restart 1..=1", got[1]
    assert all(e["reason"] == "policy_unavailable" for e in got[2:-1]) and got[-1]["decision"] == "allow", got
    assert cp.ctl("audit", "verify").get("ok") is True
