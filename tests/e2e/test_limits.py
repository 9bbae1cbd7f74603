"""Rate and token limits through the real Envoy with two worker threads sharing counters:
concurrent requests never admit more than the limit, 429s name the limit, the x-ratelimit-*
headers count down, token reservations are reconciled with reported usage, and a streamed
completion is cut cleanly at its budget (seen as an error by the real openai SDK)."""

from __future__ import annotations

import concurrent.futures as cf
import json

import pytest
import requests

from tests.e2e.conftest import KEYS
from tests.harness import envoy as E
from tests.harness.fake_upstream import Script
from tests.harness.identity import key_digest
from tests.harness.sse import SSEStream

ALICE = {"authorization": f"Bearer {KEYS['alice']}"}
BOB = {"authorization": f"Bearer {KEYS['svc']}"}
ERIN = {"authorization": f"Bearer {KEYS['carol']}"}

POLICY = {
    "identity": {"api_keys": [
        {"id": "k-alice", "sha256": key_digest(KEYS["alice"]), "principal": {"user": "alice", "team": "research"}},
        {"id": "k-svc", "sha256": key_digest(KEYS["svc"]), "principal": {"user": "svc", "team": "support"}},
        {"id": "k-erin", "sha256": key_digest(KEYS["carol"]), "principal": {"user": "erin", "team": "research"}},
    ]},
    "models": [{"allow": ["gpt-4o*", "claude-*", "o1*"]}],
    "rate_limits": [
        # Strict limit on one model family; a looser one for everything must not hide it.
        {"name": "o1-per-key", "match": {"model": "o1*"}, "requests": {"limit": 5, "per": "minute"}},
        {"name": "everyone", "by": ["team"], "requests": {"limit": 1000, "per": "hour"}},
        # A table of one counter for a key space of two users: every switch evicts.
        {"name": "tiny-table", "match": {"model": "claude-*"}, "by": ["user"], "requests": {"limit": 100, "per": "hour"}, "slots": 1},
        {"name": "support-tokens", "match": {"team": "support"}, "by": ["team"],
         "tokens": {"limit": 400, "per": "hour", "count": "completion"}, "on_exceed": "cut"},
        # A calendar budget: resets on the 1st, not continuously.
        {"name": "research-monthly", "match": {"model": "gpt-4o-budget"}, "by": ["team"], "budget": {"tokens": 120, "per": "month"}},
        # Two exchanges in flight per key, streamed or not.
        {"name": "two-at-once", "match": {"model": "gpt-4o-concurrent"}, "by": ["key"], "concurrent": {"limit": 2}},
    ],
    "token_estimate": {"default_completion_tokens": 16},
}


@pytest.fixture(scope="module")
def limited(gateways, upstream, build):
    """Both builds: the wasm module counts in Envoy's shared data, the native dynamic module in
    one compare-and-swap map per process; both are shared by the two workers."""
    cfg = {"policy": POLICY}
    if build == "dynamic":
        flt, env_vars = E.dynamic_filter("cordon.identity", cfg), E.dynamic_module_env()
    else:
        flt, env_vars = E.wasm_filter("cordon.identity", cfg), {}
    env = E.Envoy.start(E.bootstrap([E.listener("main", [flt], "model")], [E.cluster("model", upstream.port)]),
                        env=env_vars, concurrency=2)
    gateways.running.append(env)
    return env


def post(env, body, headers, **kw):
    return requests.post(env.url() + "/v1/chat/completions", json=body, headers=headers, timeout=15, **kw)


def test_concurrent_requests_on_two_workers_never_exceed_the_limit(limited, upstream):
    upstream.clear()
    body = {"model": "o1-mini", "messages": [{"role": "user", "content": "hi"}]}
    with cf.ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda _: post(limited, body, ALICE).status_code, range(24)))
    # Counters live in shared data and are updated by compare-and-swap: exactly the limit.
    assert statuses.count(200) == 5, statuses
    assert statuses.count(429) == 19, statuses
    assert len(upstream.received) == 5, "refused requests never reach the model"


def test_a_refusal_names_the_limit_and_says_when_to_retry(limited, upstream):
    body = {"model": "o1-preview", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(6):
        r = post(limited, body, BOB)
    assert r.status_code == 429
    err = r.json()["error"]
    assert (err["code"], err["type"]) == ("rate_limit_exceeded", "rate_limit_error")
    assert "'o1-per-key'" in err["message"]
    assert r.headers["x-cordon-limit"] == "o1-per-key"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # Another model is only under the loose limit.
    assert post(limited, {"model": "gpt-4o", "messages": []}, BOB).status_code == 200


def test_ratelimit_headers_count_down(limited, upstream):
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    seen = [int(post(limited, body, ALICE).headers["x-ratelimit-remaining-requests"]) for _ in range(3)]
    assert seen[0] > seen[1] > seen[2], seen
    r = post(limited, body, ALICE)
    assert r.headers["x-ratelimit-limit-requests"] == "1000"
    assert r.headers["x-ratelimit-reset-requests"].endswith("s")


def test_ratelimit_headers_replace_the_providers_own(limited, upstream):
    # Providers send x-ratelimit-* of their own (their limits on the shared upstream key): the
    # client sees Cordon's figures for its own key, once, and every other header as sent.
    upstream.push(Script(headers={"X-RateLimit-Remaining-Requests": "4999", "x-provider-id": "p1"}))
    r = post(limited, {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, ALICE)
    assert r.status_code == 200
    raw = r.raw.headers.getlist("x-ratelimit-remaining-requests")
    assert len(raw) == 1 and raw[0] != "4999", raw
    assert r.headers["x-provider-id"] == "p1"
    assert r.json()["choices"][0]["message"]["content"]


def test_a_stream_is_cut_at_the_token_budget_and_the_sdk_sees_an_error(limited, upstream):
    from openai import APIError, OpenAI

    # 400 completion tokens an hour for team support; each delta is ~25 tokens (100 bytes).
    upstream.push(Script(chunks=["x" * 100] * 30))
    client = OpenAI(base_url=limited.url() + "/v1", api_key=KEYS["svc"], max_retries=0, timeout=15)
    text = ""
    with pytest.raises(APIError) as err:
        stream = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "go"}], stream=True)
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    assert "support-tokens" in str(err.value)
    assert 0 < len(text) < 30 * 100, "some text, then the cut"
    # The usage chunk Cordon asked for on the client's behalf never reached it; the upstream got the ask.
    assert upstream.last().json["stream_options"]["include_usage"] is True
    # The budget is spent: the next call is refused up front with the token code.
    r = post(limited, {"model": "gpt-4o", "messages": []}, BOB)
    assert r.status_code == 429 and r.json()["error"]["code"] == "token_limit_exceeded"


def test_reported_usage_is_reconciled_and_the_stream_is_untouched_when_the_client_asked(limited, upstream):
    upstream.push(Script(chunks=["Hello", " there"]))
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True}}
    with SSEStream(limited.url() + "/v1/chat/completions", body, headers=ALICE) as s:
        assert s.status == 200
        events = list(s)
    datas = [e.data for e in events]
    assert datas[-1] == "[DONE]"
    usage = json.loads(datas[-2])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] >= 1, "the client asked: it gets its usage chunk"


def test_a_table_too_small_for_its_key_space_evicts_and_says_so(limited, upstream):
    before = limited.stat("cordon_ratelimit_evictions") or 0
    body = {"model": "claude-3-haiku", "messages": [{"role": "user", "content": "hi"}]}
    for headers in (ALICE, ERIN, ALICE, ERIN):
        r = post(limited, body, headers)
        assert r.status_code == 200, r.text
    # The first request takes the empty slot; each of the next three evicts the other user.
    assert limited.stat("cordon_ratelimit_evictions") == before + 3


def test_a_monthly_budget_refuses_with_budget_exceeded_until_the_month_ends(limited, upstream):
    import datetime as dt

    body = {"model": "gpt-4o-budget", "messages": [{"role": "user", "content": "hi"}]}
    statuses, last = [], None
    for _ in range(12):
        last = post(limited, body, ERIN)
        statuses.append(last.status_code)
        if last.status_code == 429:
            break
        assert "x-ratelimit-reset-tokens" in last.headers
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    assert last.json()["error"]["code"] == "budget_exceeded" and last.headers["x-cordon-limit"] == "research-monthly"
    now = dt.datetime.now(dt.timezone.utc)
    first_of_next = (now.replace(day=1) + dt.timedelta(days=32)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    to_month_end = (first_of_next - now).total_seconds()
    assert abs(int(last.headers["retry-after"]) - to_month_end) <= 5, (last.headers["retry-after"], to_month_end)


def wait_until(pred, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_concurrency_limit_refuses_the_third_exchange_in_flight_and_frees_places_as_they_end(limited, upstream):
    upstream.clear()
    body = {"model": "gpt-4o-concurrent", "messages": [{"role": "user", "content": "hi"}]}
    upstream.push(Script(first_delay_s=1.5), Script(first_delay_s=1.5))
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        slow = [pool.submit(post, limited, body, ALICE) for _ in range(2)]
        wait_until(lambda: len(upstream.received) == 2)  # both are in flight at the model
        third = post(limited, body, ALICE)
        other_key = post(limited, body, ERIN)
        done = [f.result() for f in slow]
    assert [r.status_code for r in done] == [200, 200]
    assert third.status_code == 429, third.text
    assert third.json()["error"]["code"] == "concurrency_limit_exceeded" and third.headers["x-cordon-limit"] == "two-at-once"
    assert third.headers["retry-after"] == "1"
    assert other_key.status_code == 200, "per key: another caller is not held up"
    # Both ended: their places are free again.
    assert post(limited, body, ALICE).status_code == 200


def test_an_app_that_leaves_mid_stream_gives_its_place_back(limited, upstream):
    body = {"model": "gpt-4o-concurrent", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    for _ in range(2):  # more than the limit: a leaked place would refuse the later ones
        upstream.push(Script(chunks=["a"] * 50, delay_s=0.1))
        with SSEStream(limited.url() + "/v1/chat/completions", body, headers=ALICE) as s:
            assert s.status == 200
            next(iter(s))  # one event, then the app hangs up
    import time

    def admitted():
        # The hang-up reaches Envoy's log hook a moment later: retry within a bounded wait.
        for _ in range(50):
            r = post(limited, {**body, "stream": False}, ALICE)
            if r.status_code != 429:
                return r.status_code
            time.sleep(0.1)
        return r.status_code

    upstream.push(Script(first_delay_s=1.0), Script(first_delay_s=1.0))
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        got = list(pool.map(lambda _: admitted(), range(2)))
    assert got == [200, 200], f"two places are free once the streams' apps left: {got}"
