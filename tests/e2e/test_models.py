"""Model access and request bodies through the real Envoy: allowlists, the filtered model list,
malformed, oversized and compressed bodies, streaming pass-through, cold start, bad policy."""

import gzip
import json

import pytest
import requests

from tests.e2e.conftest import KEYS, base_policy, chat
from tests.harness.fake_upstream import FakeUpstream, Script
from tests.harness.rawhttp import RawConnection
from tests.harness.sse import SSEStream

ALICE = {"authorization": f"Bearer {KEYS['alice']}"}  # team research: gpt-4o*, text-embedding-*
SVC = {"x-api-key": KEYS["svc"]}  # team support: gpt-4o-mini only


def code(r):
    return r.json()["error"]["code"]


def test_allowed_and_disallowed_models(gateway, upstream):
    upstream.clear()
    assert requests.post(gateway.url() + "/v1/chat/completions", json=chat("gpt-4o"), headers=ALICE, timeout=10).status_code == 200
    r = requests.post(gateway.url() + "/v1/chat/completions", json=chat("gpt-4o"), headers=SVC, timeout=10)
    assert r.status_code == 403
    assert code(r) == "model_not_allowed"
    assert r.json()["error"]["type"] == "permission_error"
    r = requests.post(gateway.url() + "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hi"}, headers=ALICE, timeout=10)
    assert r.status_code == 200
    assert len(upstream.received) == 2, "the refused request never reached the upstream"


def test_model_list_is_filtered_per_caller(gateway, upstream):
    upstream.models[:] = ["gpt-4o", "gpt-4o-mini", "o1-preview", "text-embedding-3-small", "claude-3-opus"]
    research = requests.get(gateway.url() + "/v1/models", headers=ALICE, timeout=10)
    support = requests.get(gateway.url() + "/v1/models", headers=SVC, timeout=10)
    assert research.status_code == support.status_code == 200
    assert [m["id"] for m in research.json()["data"]] == ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"]
    assert [m["id"] for m in support.json()["data"]] == ["gpt-4o-mini"]
    assert research.headers.get("content-length") in (None, str(len(research.content))), "no stale length"
    r = requests.get(gateway.url() + "/v1/models/o1-preview", headers=ALICE, timeout=10)
    assert r.status_code == 403 and code(r) == "model_not_allowed"
    r = requests.get(gateway.url() + "/v1/models/gpt-4o%00admin", headers=ALICE, timeout=10)
    assert r.status_code == 400 and code(r) == "invalid_model_name"


def test_model_list_that_is_not_json_is_not_passed_unfiltered(gateway, upstream):
    upstream.push(Script(body=b"<html>maintenance</html>", headers={"content-type": "text/html"}))
    r = requests.get(gateway.url() + "/v1/models", headers=ALICE, timeout=10)
    assert r.status_code == 502
    assert code(r) == "upstream_response_invalid"


def test_upstream_errors_on_model_list_pass_through(gateway, upstream):
    upstream.push(Script(status=500))
    r = requests.get(gateway.url() + "/v1/models", headers=ALICE, timeout=10)
    assert r.status_code == 500


@pytest.mark.parametrize(
    "body,status,expected",
    [
        (b'{"model": "gpt-4o", "messages": [', 400, "invalid_json"),
        (b'{"messages": []}', 400, "missing_model"),
        (b'{"model": 4, "messages": []}', 400, "missing_model"),
        (b"", 400, "missing_model"),
        (b'{"model": "gpt-4o", "messages": [{"role":"user","content":"\xff\xfe"}]}', 400, "invalid_json"),
        (b'["gpt-4o"]', 400, "invalid_json"),
        # gpt-4o* would match: a control character must not ride along to the upstream.
        (b'{"model": "gpt-4o-mini\\u0000admin", "messages": []}', 400, "invalid_model_name"),
        (b'{"model": "gpt-4o\\nX-Injected: 1", "messages": []}', 400, "invalid_model_name"),
        (b'{"model": "gpt-4o\\u202e", "messages": []}', 400, "invalid_model_name"),
        (b'{"model": "gpt-4o' + b"x" * 300 + b'", "messages": []}', 400, "invalid_model_name"),
    ],
    ids=["truncated", "no-model", "model-not-string", "empty", "invalid-utf8", "not-an-object",
         "model-nul", "model-newline", "model-bidi", "model-too-long"],
)
def test_bad_bodies_get_400_and_never_reach_upstream(gateway, upstream, body, status, expected):
    upstream.clear()
    r = requests.post(gateway.url() + "/v1/chat/completions", data=body, headers={**ALICE, "content-type": "application/json"}, timeout=10)
    assert r.status_code == status
    assert code(r) == expected
    assert upstream.received == []


def test_oversized_body_gets_413_declared_or_chunked(gateway, upstream):
    upstream.clear()
    big = json.dumps(chat("gpt-4o", extra_text="x" * (70 * 1024))).encode()
    r = requests.post(gateway.url() + "/v1/chat/completions", data=big, headers={**ALICE, "content-type": "application/json"}, timeout=10)
    assert r.status_code == 413 and code(r) == "request_too_large"
    # Without content-length the limit is enforced while the body streams in.
    with RawConnection("127.0.0.1", gateway.port()) as conn:
        pieces = [big[i:i + 8192] for i in range(0, len(big), 8192)]
        resp = conn.request("POST", "/v1/chat/completions", headers={**ALICE, "content-type": "application/json"}, chunked_body=pieces)
    assert resp.status == 413
    assert json.loads(resp.body)["error"]["code"] == "request_too_large"
    assert upstream.received == []


def test_compressed_request_body_is_refused(gateway, upstream):
    upstream.clear()
    body = gzip.compress(json.dumps(chat("gpt-4o")).encode())
    r = requests.post(gateway.url() + "/v1/chat/completions", data=body, headers={**ALICE, "content-type": "application/json", "content-encoding": "gzip"}, timeout=10)
    assert r.status_code == 415 and code(r) == "unsupported_content_encoding"
    assert upstream.received == []


def test_streamed_completion_passes_unchanged_and_unbuffered(gateway, upstream):
    pieces = [f"tok{i} " for i in range(8)]
    upstream.push(Script(chunks=pieces, delay_s=0.15))
    with SSEStream(gateway.url() + "/v1/chat/completions", chat("gpt-4o", stream=True), headers=ALICE) as s:
        assert s.status == 200
        events = list(s)
    sent = list(upstream.sent_times)
    assert events[-1].data == "[DONE]"
    deltas = [e.json()["choices"][0]["delta"].get("content", "") for e in events if e.data != "[DONE]" and e.json()["choices"]]
    assert "".join(deltas) == "".join(pieces)
    assert events[-2].json()["usage"]["completion_tokens"] > 0
    assert len(events) == len(sent)
    # Unbuffered: each event reached the client before the upstream sent the next one.
    for k in range(1, len(sent)):
        assert events[k - 1].t < sent[k], f"event {k - 1} was held back until after event {k} was sent"


def test_no_policy_means_503_until_one_arrives(gateways, upstream, build):
    env = gateways.start(None, upstream, build=build)
    r = requests.post(env.url() + "/v1/chat/completions", json=chat(), headers=ALICE, timeout=10)
    assert r.status_code == 503
    assert code(r) == "policy_unavailable"


def test_invalid_policy_is_refused_with_the_field_named(gateways, upstream, jwt_keys, build):
    policy = base_policy(jwt_keys)
    policy["routes"][0]["accept"] = [["password"]]
    with pytest.raises(RuntimeError) as err:
        gateways.start(policy, upstream, build=build)
    assert "policy.routes[0].accept[0][0]" in str(err.value)


def test_missing_provider_secret_fails_closed(gateways, jwt_keys, build):
    with FakeUpstream() as up:
        policy = base_policy(jwt_keys)
        policy["upstreams"][0]["secret_env"] = "CORDON_TEST_NOT_SET"
        env = gateways.start(policy, up, build=build)
        r = requests.post(env.url() + "/v1/chat/completions", json=chat(), headers=ALICE, timeout=10)
        assert r.status_code == 503
        assert code(r) == "upstream_credential_unavailable"
        assert up.received == []
