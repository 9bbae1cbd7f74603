"""The combined role `cordon.gateway` (identity, limits and redaction in one HTTP context)
behaves exactly as the two-filter chain: the whole redaction and limits suites run again here
against it (their fixtures are overridden below, their tests imported unchanged), and one
exchange through it is one audit record carrying both roles' facts. On both builds: the wasm
module's role and the native dynamic module's (`build`, from conftest)."""

from __future__ import annotations

import json

import pytest

from tests.e2e import test_limits as limits_suite
from tests.e2e import test_redaction as redaction_suite
from tests.e2e.test_limits import *  # noqa: F401,F403  (the limits suite, re-run on cordon.gateway)
from tests.e2e.test_redaction import *  # noqa: F401,F403  (the redaction suite, re-run on cordon.gateway)
from tests.harness import envoy as E


def start_gateway(gateways, upstream, cfg: dict, build: str, concurrency: int = 1) -> E.Envoy:
    """Envoy with the one combined role instead of cordon.identity + cordon.redact."""
    if build == "dynamic":
        flt, env_vars = E.dynamic_filter("cordon.gateway", cfg), E.dynamic_module_env()
    else:
        flt, env_vars = E.wasm_filter("cordon.gateway", cfg), {}
    env = E.Envoy.start(E.bootstrap([E.listener("main", [flt], "model")], [E.cluster("model", upstream.port)]),
                        concurrency=concurrency, env=env_vars)
    gateways.running.append(env)
    return env


@pytest.fixture(scope="module")
def redacting(gateways, upstream, build):
    return start_gateway(gateways, upstream, {"policy": redaction_suite.POLICY}, build)


@pytest.fixture(scope="module")
def failing_open(gateways, upstream, build):
    """As the redaction suite's: `on_unscannable: pass` and a small JSON response cap."""
    policy = json.loads(json.dumps(redaction_suite.POLICY))
    policy["redaction"]["on_unscannable"] = "pass"
    policy["limits"] = {"max_response_body_bytes": 2048}
    return start_gateway(gateways, upstream, {"policy": policy}, build)


@pytest.fixture(scope="module")
def limited(gateways, upstream, build):
    """Two workers sharing counters, the combined role."""
    return start_gateway(gateways, upstream, {"policy": limits_suite.POLICY}, build, concurrency=2)


def test_one_exchange_through_the_combined_role_is_one_audit_record_with_both_roles_facts(tmp_path, build):
    from tests.e2e.test_audit import NODE, POLICY, chat, post, push, records
    from tests.harness.control_plane import ControlPlane, native_control_plane, node_key, policy_stream_extension
    from tests.harness.fake_upstream import FakeUpstream

    cp = ControlPlane().start()
    up = FakeUpstream()
    env = None
    try:
        seed = node_key(cp, NODE)
        if build == "dynamic":
            # The native module's process-wide control plane and audit shipper, set up by the
            # role's own configuration.
            section = {"control_plane": native_control_plane(cp, [cp.trusted_key], NODE),
                       "audit": {"node_key_env": "CORDON_NODE_KEY", "linger_ms": 0}}
            cfg = E.bootstrap([E.listener("main", [E.dynamic_filter("cordon.gateway", section)], "model")], [E.cluster("model", up.port)])
            env = E.Envoy.start(cfg, env={"CORDON_NODE_KEY": seed, **E.dynamic_module_env()})
        else:
            ext = policy_stream_extension("cordon_control_plane", [cp.trusted_key], E.WASM, ["CORDON_NODE_KEY"],
                                          audit={"node_key_env": "CORDON_NODE_KEY", "linger_ms": 0})
            cfg = E.bootstrap([E.listener("main", [E.wasm_filter("cordon.gateway", {}, ["CORDON_NODE_KEY"])], "model")],
                              [E.cluster("model", up.port), E.cluster("cordon_control_plane", cp.port, http2=True)],
                              extra={"bootstrap_extensions": [ext], "node": {"id": NODE, "cluster": "e2e"}})
            env = E.Envoy.start(cfg, env={"CORDON_NODE_KEY": seed})
        key = push(cp, POLICY)
        assert post(env, key, chat("write to ada@example.org")).status_code == 200
        assert "ada@example.org" not in str(up.last().body)
        got = records(cp, 1)
        assert len(got) == 1, got
        r = got[0]
        assert (r["decision"], r["user"], r["model"]) == ("allow", "ada", "gpt-4o-mini")
        assert r["redactions"] == ["request:email:redact=1"] and r["rate_limit"].startswith("per-key-burst")
    finally:
        if env is not None:
            env.cleanup()
        up.stop()
        cp.stop()


# The combined role hands redaction the request head and body identity already holds (one read
# from Envoy, not two). This shows redaction still judges what the upstream would receive: the
# method and path it scans by, and the body as identity rewrote it. (A compressed request body
# never reaches redaction: identity refuses it first, 415, in the chain and here alike.)


@pytest.fixture(scope="module")
def limited_and_redacting(gateways, upstream, build):
    """The limits suite's policy (a token limit that makes identity rewrite the body to ask for
    usage) with the redaction suite's rules."""
    policy = json.loads(json.dumps(limits_suite.POLICY))
    policy["redaction"] = redaction_suite.POLICY["redaction"]
    return start_gateway(gateways, upstream, {"policy": policy}, build)


def test_a_prompt_rewritten_to_ask_for_usage_is_also_redacted(limited_and_redacting, upstream):
    from tests.harness.fake_upstream import Script
    from tests.harness.sse import SSEStream

    upstream.push(Script(chunks=["fine"]))
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"card {redaction_suite.CARD} on file"}], "stream": True}
    with SSEStream(limited_and_redacting.url() + "/v1/chat/completions", body, headers=limits_suite.BOB) as s:
        assert s.status == 200
        list(s)
    sent = upstream.last().json
    # Identity's rewrite (the usage ask for the token limit) and redaction's both reached it.
    assert sent["stream_options"]["include_usage"] is True
    prompt = sent["messages"][0]["content"]
    assert redaction_suite.CARD not in prompt and prompt.startswith("card ") and prompt.endswith(" on file")



def test_a_stream_cut_at_the_token_budget_never_carries_what_redaction_removed(limited_and_redacting, upstream):
    from tests.harness.fake_upstream import Script
    from tests.harness.sse import SSEStream

    # Support's 400 completion tokens an hour run out mid-stream (each delta ~25 tokens); every
    # delta carries a card number, which redaction masks. The limits read (and at the cut,
    # rewrite) the chunks as redaction left them, never the upstream's bytes.
    upstream.push(Script(chunks=[f"pay {redaction_suite.CARD} now " + "x" * 70] * 30))
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "go"}], "stream": True}
    with SSEStream(limited_and_redacting.url() + "/v1/chat/completions", body, headers=limits_suite.BOB) as s:
        assert s.status == 200
        datas = [e.data for e in s]
    raw = "\n".join(datas)
    assert "support-tokens" in raw, "the stream was cut at the budget"
    assert "pay " in raw and redaction_suite.CARD not in raw
