"""Streaming redaction through the real Envoy: secrets split across SSE events and TCP chunks at
every offset never reach the client; prompts are redacted before the upstream sees them; block
on request and mid-stream; unscannable bodies fail closed; real SDKs and curl consume the result."""

from __future__ import annotations

import gzip
import json
import subprocess

import pytest
import requests

from tests.e2e.conftest import KEYS
from tests.harness import envoy as E
from tests.harness.fake_upstream import FakeUpstream, Script
from tests.harness.identity import key_digest
from tests.harness.sse import SSEStream

CARD = "4111 1111 1111 1111"
EMAIL = "jane.doe@example.com"
AWS = "AKIAIOSFODNN7EXAMPLE"
ALICE = {"authorization": f"Bearer {KEYS['alice']}"}

POLICY = {
    "identity": {"api_keys": [{"id": "k-alice", "sha256": key_digest(KEYS["alice"]), "principal": {"user": "alice", "team": "research"}}]},
    "models": [{"allow": ["gpt-4o*", "claude-*"]}],
    "redaction": {
        "rules": {
            "detectors": {
                "card": {"request": "redact", "response": "mask"},
                "aws_access_key": {"request": "block", "response": "redact"},
            },
            "keyword_lists": [{"name": "codename", "words": ["Project Zeus"], "request": "redact", "response": "block"}],
        }
    },
}


def start_chain(gateways, upstream, cfg: dict, build: str) -> E.Envoy:
    """Envoy with cordon.identity then cordon.redact: one VM (wasm), or one library (dynamic)."""
    if build == "dynamic":
        filters = [E.dynamic_filter("cordon.identity", cfg), E.dynamic_filter("cordon.redact", cfg)]
        env_vars = E.dynamic_module_env()
    else:
        filters = [E.wasm_filter("cordon.identity", cfg), E.wasm_filter("cordon.redact", cfg)]
        env_vars = {}
    env = E.Envoy.start(E.bootstrap([E.listener("main", filters, "model")], [E.cluster("model", upstream.port)]), env=env_vars)
    gateways.running.append(env)
    return env


@pytest.fixture(scope="module")
def redacting(gateways, upstream, build):
    """Envoy with cordon.identity then cordon.redact, on both builds."""
    return start_chain(gateways, upstream, {"policy": POLICY}, build)


def stream_text(env, body=None, path="/v1/chat/completions"):
    body = body or {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with SSEStream(env.url() + path, body, headers=ALICE) as s:
        assert s.status == 200
        events = list(s)
    return events


def chat_text(events) -> str:
    out = []
    for e in events:
        if e.data == "[DONE]":
            continue
        doc = e.json()
        for c in doc.get("choices", []):
            out.append(c["delta"].get("content") or "")
    return "".join(out)


@pytest.mark.parametrize("secret,expect", [(CARD, "**** **** **** 1111"), (EMAIL, "[EMAIL]"), (AWS, "[AWS_ACCESS_KEY]")], ids=["card", "email", "aws"])
def test_secret_split_across_two_events_at_every_offset_never_reaches_client(redacting, upstream, secret, expect):
    for k in range(1, len(secret)):
        upstream.push(Script(chunks=[f"Here it is: {secret[:k]}", f"{secret[k:]} - done."]))
        events = stream_text(redacting)
        text = chat_text(events)
        assert secret not in text, f"split at {k} leaked"
        assert secret[: max(k, 6)] not in text.replace(expect, ""), f"split at {k}: a prefix leaked"
        assert expect in text, f"split at {k}: {text!r}"
        assert text.endswith(" - done."), "text after the match is released at the end"
        assert events[-1].data == "[DONE]"


@pytest.mark.parametrize("secret", [CARD, EMAIL, AWS], ids=["card", "email", "aws"])
def test_secret_spread_over_many_events_and_tcp_chunks(redacting, upstream, secret):
    # One character per SSE event.
    upstream.push(Script(chunks=["x "] + list(secret) + [" y"]))
    assert secret not in chat_text(stream_text(redacting))
    # Raw byte-level splits: inside `data:`, inside the JSON, inside the secret.
    event = lambda text: ("data: " + json.dumps({"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}) + "\n\n").encode()  # noqa: E731
    raw = event("pay with " + secret[:5]) + event(secret[5:] + " now") + b"data: [DONE]\n\n"
    for cut in range(1, len(raw), 7):
        upstream.push(Script(raw_chunks=[raw[:cut], raw[cut:]], headers={"content-type": "text/event-stream"}))
        text = chat_text(stream_text(redacting))
        assert secret not in text and text.startswith("pay with ") and text.endswith(" now"), (cut, text)


def test_prompt_pii_is_redacted_before_the_upstream_sees_it(redacting, upstream):
    upstream.clear()
    body = {"model": "gpt-4o", "messages": [{"role": "system", "content": "You help Project Zeus."},
                                             {"role": "user", "content": [{"type": "text", "text": f"My card is {CARD}, mail {EMAIL}"}]}]}
    r = requests.post(redacting.url() + "/v1/chat/completions", json=body, headers=ALICE, timeout=10)
    assert r.status_code == 200, r.text
    got = upstream.last()
    assert got.json is not None, "the rewritten body is still valid JSON"
    sent = json.dumps(got.json)
    for secret in (CARD, EMAIL, "Project Zeus"):
        assert secret not in sent
    assert "[CARD]" in sent and "[EMAIL]" in sent and "[CODENAME]" in sent
    assert int(got.headers["content-length"]) == len(got.body)


@pytest.mark.parametrize("first,released", [("Hello there. ", True), ("word1 ", True), ("Hello", False)])
def test_settled_text_is_not_held_for_the_next_event(redacting, upstream, first, released):
    """A delta that ends in a space or punctuation reaches the client before the upstream sends
    the next one (time to first token is not held hostage by redaction); a delta ending inside a
    word waits for the next one, because `Hello` may still become `Hello@example.com`."""
    upstream.push(Script(chunks=[first, "General Kenobi."], delay_s=0.5))
    events = stream_text(redacting)
    arrivals = [(e.t, chat_text([e])) for e in events if e.data != "[DONE]" and chat_text([e])]
    second_sent = upstream.sent_times[2]  # role delta, first delta, second delta, ...
    assert "".join(text for _, text in arrivals) == first + "General Kenobi."
    at, text = arrivals[0]
    if released:
        assert text == first and at < second_sent, (arrivals, second_sent)
    else:
        assert at >= second_sent and text.startswith(first), (arrivals, second_sent)


def test_block_on_request(redacting, upstream):
    upstream.clear()
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"use key {AWS}"}]}
    r = requests.post(redacting.url() + "/v1/chat/completions", json=body, headers=ALICE, timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "sensitive_data_blocked"
    assert AWS not in r.text
    assert upstream.received == []


def test_block_mid_stream_ends_with_a_provider_error_event(redacting, upstream):
    upstream.push(Script(chunks=["All about ", "Project ", "Zeus", " and more", " text"]))
    events = stream_text(redacting)
    text = chat_text([e for e in events if "error" not in e.json()]) if events else ""
    assert "Zeus" not in "".join(e.data for e in events)
    assert text.startswith("All about")
    last = events[-1].json()
    assert last["error"]["code"] == "response_blocked", events[-1].data
    assert "codename" in last["error"]["message"] and "Zeus" not in last["error"]["message"]
    assert all(e.data != "[DONE]" for e in events), "a blocked stream does not pretend to finish"


def test_anthropic_stream_is_redacted_across_events(redacting, upstream):
    for k in (3, 9, 15):
        upstream.push(Script(chunks=[f"write to {EMAIL[:k]}", f"{EMAIL[k:]} today"]))
        body = {"model": "claude-3-5-sonnet", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}], "stream": True}
        events = stream_text(redacting, body, path="/v1/messages")
        text = "".join(e.json()["delta"].get("text", "") for e in events if e.event == "content_block_delta")
        assert EMAIL not in text and "[EMAIL]" in text, text
        assert events[-1].event == "message_stop"


def test_non_streamed_json_response_is_redacted(redacting, upstream):
    upstream.push(Script(content=f"Call me at {EMAIL} with card {CARD}."))
    r = requests.post(redacting.url() + "/v1/chat/completions", json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}, headers=ALICE, timeout=10)
    assert r.status_code == 200
    content = r.json()["choices"][0]["message"]["content"]
    assert EMAIL not in content and CARD not in content
    assert "[EMAIL]" in content and "1111" in content


def test_compressed_response_is_never_passed_unscanned(redacting, upstream):
    upstream.clear()
    payload = gzip.compress(json.dumps({"choices": [{"message": {"content": EMAIL}}]}).encode())
    upstream.push(Script(body=payload, headers={"content-type": "application/json", "content-encoding": "gzip"}))
    r = requests.post(redacting.url() + "/v1/chat/completions", json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}, headers=ALICE, timeout=10)
    assert r.status_code == 502 and r.json()["error"]["code"] == "unscannable_response"
    # And Cordon asked for an uncompressed answer in the first place.
    assert upstream.last().headers["accept-encoding"] == "identity"


def test_broken_sse_ends_the_stream_with_an_error(redacting, upstream):
    upstream.push(Script(raw_chunks=[b"data: {\"choices\": [{\"index\": 0, \"delta\": {\"content\": \"ok\"}}]}\n\n", b"data: {not json\n\n"],
                         headers={"content-type": "text/event-stream"}))
    events = stream_text(redacting)
    assert "error" in events[-1].json()
    assert events[-1].json()["error"]["code"] == "unscannable_response"


def test_malformed_request_json_is_refused_not_passed(redacting, upstream):
    upstream.clear()
    r = requests.post(redacting.url() + "/v1/chat/completions", data=b'{"model":"gpt-4o","messages":[', headers={**ALICE, "content-type": "application/json"}, timeout=10)
    assert r.status_code == 400
    assert upstream.received == []


def test_openai_sdk_and_curl_consume_redacted_streams(redacting, upstream):
    from openai import OpenAI

    upstream.push(Script(chunks=["mail ", EMAIL[:6], EMAIL[6:], " ok"]))
    client = OpenAI(base_url=redacting.url() + "/v1", api_key=KEYS["alice"], max_retries=0)
    text = "".join((c.choices[0].delta.content or "") for c in client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True) if c.choices)
    assert text == "mail [EMAIL] ok"

    upstream.push(Script(chunks=["card ", CARD[:7], CARD[7:]]))
    out = subprocess.run(["curl", "-sSN", "--fail-with-body", redacting.url() + "/v1/chat/completions", "-H", f"authorization: Bearer {KEYS['alice']}",
                          "-H", "content-type: application/json", "-d", json.dumps({"model": "gpt-4o", "messages": [], "stream": True})],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert CARD not in out.stdout and "data: [DONE]" in out.stdout


def test_redaction_outcomes_and_holdback_bound_are_metrics(redacting, upstream):
    upstream.push(Script(chunks=[f"x {EMAIL} y"]))
    stream_text(redacting)
    assert (redacting.stat("cordon_redaction_response_email_redact") or 0) >= 1
    assert (redacting.stat("cordon_redaction_holdback_bound_bytes") or 0) > 0


@pytest.fixture(scope="module")
def failing_open(gateways, upstream, build):
    """The same chain with `on_unscannable: pass` (an explicit, counted fail-open) and a small
    JSON response cap."""
    policy = json.loads(json.dumps(POLICY))
    policy["redaction"]["on_unscannable"] = "pass"
    policy["limits"] = {"max_response_body_bytes": 2048}
    return start_chain(gateways, upstream, {"policy": policy}, build)


def test_on_unscannable_pass_forwards_unscanned_and_counts_it(failing_open, upstream):
    before = failing_open.stat("cordon_redaction_response_unscannable_pass") or 0
    payload = gzip.compress(json.dumps({"choices": [{"message": {"content": "fine"}}]}).encode())
    upstream.push(Script(body=payload, headers={"content-type": "application/json", "content-encoding": "gzip"}))
    r = requests.post(failing_open.url() + "/v1/chat/completions", json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
                      headers={**ALICE, "accept-encoding": "gzip"}, timeout=10)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "fine", "forwarded as it came"
    assert failing_open.stat("cordon_redaction_response_unscannable_pass") == before + 1
    assert "passed unscanned by policy (on_unscannable: pass)" in failing_open.log()

    # (The request-side pass paths are tested natively in core: with cordon.identity in front,
    # a compressed or malformed request is that role's 415/400 before redaction runs.)


def test_an_oversized_json_response_is_a_clear_error_not_a_truncated_body(failing_open, upstream):
    upstream.push(Script(content="x" * 4096))
    r = requests.post(failing_open.url() + "/v1/chat/completions", json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
                      headers=ALICE, timeout=10)
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "response_too_large"
    assert "2048 bytes" in r.json()["error"]["message"]


REGIONAL_POLICY = {**POLICY, "redaction": {"rules": {"phone_regions": ["GR", "ES", "DE"]}}}


@pytest.fixture(scope="module")
def regional(gateways, upstream, build):
    """The redaction chain with `phone_regions` named in the policy."""
    return start_chain(gateways, upstream, {"policy": REGIONAL_POLICY}, build)


def test_named_phone_regions_redact_national_numbers_before_the_upstream(regional, upstream):
    upstream.clear()
    prompt = "Call Athens 210 123 4567, Madrid 912 345 678, Berlin (030) 123 4567, or +44 20 7946 0958; mail o'brien@example.com"
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]}
    r = requests.post(regional.url() + "/v1/chat/completions", json=body, headers=ALICE, timeout=10)
    assert r.status_code == 200, r.text
    sent = upstream.last().json["messages"][0]["content"]
    assert sent == "Call Athens [PHONE], Madrid [PHONE], Berlin [PHONE], or [PHONE]; mail [EMAIL]"
