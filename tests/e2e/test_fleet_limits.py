"""Fleet-wide limits end to end: two real Envoys (two workers each) ask the rate-limit service of
two real control-plane replicas that keep their counters in one real Redis. Admissions across
both Envoys never exceed a fleet limit; token reservations go through the service and what was
not used is given back; with the service down, requests are denied or allowed (and counted) as
the policy says.

Every case that involves the filter runs on both builds (`build`: the wasm module, which uses
Envoy's gRPC client, and the native dynamic module, which makes the same unary call as an HTTP/2
request through Envoy's HTTP callouts); same configuration, same assertions."""

from __future__ import annotations

import concurrent.futures as cf
import time

import pytest
import requests

from tests.e2e.conftest import KEYS
from tests.harness import envoy as E
from tests.harness.control_plane import ControlPlane, free_port
from tests.harness.fake_upstream import FakeUpstream, Script
from tests.harness.identity import key_digest
from tests.harness.redis import RedisServer

ALICE = {"authorization": f"Bearer {KEYS['alice']}"}
SVC = {"authorization": f"Bearer {KEYS['svc']}"}
OPS = {"authorization": f"Bearer {KEYS['carol']}"}
USAGE = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


def policy(service: dict) -> dict:
    return {
        "identity": {"api_keys": [
            {"id": "k-alice", "sha256": key_digest(KEYS["alice"]), "principal": {"user": "alice", "team": "research"}},
            {"id": "k-svc", "sha256": key_digest(KEYS["svc"]), "principal": {"user": "svc", "team": "support"}},
            {"id": "k-ops", "sha256": key_digest(KEYS["carol"]), "principal": {"user": "olga", "team": "ops"}},
        ]},
        "models": [{"allow": ["*"]}],
        "rate_limits": [
            # Per day: a test never straddles the window's end (UTC midnight) in practice.
            {"name": "fleet-o1", "match": {"model": "o1*"}, "by": ["team"], "requests": {"limit": 10, "per": "day"}, "scope": "fleet"},
            {"name": "fleet-tokens", "match": {"model": "gpt-4o-tok"}, "by": ["team"],
             "tokens": {"limit": 100, "per": "day", "count": "completion"}, "scope": "fleet"},
            {"name": "fleet-gw", "match": {"model": "gw-*"}, "by": ["team"], "requests": {"limit": 3, "per": "day"}, "scope": "fleet"},
            # A calendar budget held by the service for the whole fleet (a MONTH window).
            {"name": "fleet-monthly", "match": {"model": "gpt-4o-budget"}, "by": ["team"],
             "budget": {"tokens": 40, "per": "month"}, "scope": "fleet"},
            # A local limit alongside: both apply.
            {"name": "local-all", "requests": {"limit": 10000, "per": "hour"}},
        ],
        "rate_limit_service": service,
        # Used by the gateway role only.
        "redaction": {"rules": {"detectors": {"email": {"enabled": True, "request": "mask", "response": "allow"}}}},
    }


def start_envoy(started: list, upstream: FakeUpstream, rls_port: int, service: dict, build: str,
                role: str = "cordon.identity") -> E.Envoy:
    """`role` "cordon.gateway" is identity, limits and redaction in one filter, on both builds."""
    config = {"policy": policy(service)}
    if build == "dynamic":
        filters = [E.dynamic_filter(role, config)]
        env_vars = E.dynamic_module_env()
    else:
        filters = [E.wasm_filter(role, config)]
        env_vars = {}
    cfg = E.bootstrap([E.listener("main", filters, "model")],
                      [E.cluster("model", upstream.port), E.cluster("cordon_control_plane", rls_port, http2=True)])
    env = E.Envoy.start(cfg, env=env_vars, concurrency=2)
    started.append(env)
    return env


@pytest.fixture(scope="module")
def fleet(request, build):
    """Redis, two control-plane replicas on it, and one Envoy on each replica."""
    redis = RedisServer().start()
    replicas = [ControlPlane(extra_args=["--ratelimit-redis-url", redis.url]).start() for _ in range(2)]
    upstream = FakeUpstream(default=Script(usage=USAGE))
    started: list[E.Envoy] = []
    service = {"cluster": "cordon_control_plane", "timeout_ms": 2000}
    envoys = [start_envoy(started, upstream, cp.port, service, build) for cp in replicas]
    # Identity, limits and redaction together on the first replica.
    envoys.append(start_envoy(started, upstream, replicas[0].port, service, build, role="cordon.gateway"))
    yield envoys, upstream, replicas
    for e in started:
        e.cleanup()
    upstream.stop()
    for cp in replicas:
        cp.stop()
    redis.stop()


@pytest.fixture(autouse=True)
def _logs_on_failure(request):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed and "fleet" in request.fixturenames:
        envoys, _, replicas = request.getfixturevalue("fleet")
        for e in envoys:
            print(f"\n===== envoy log =====\n{e.log()[-5000:]}")
        for cp in replicas:
            print(f"\n===== control plane log =====\n{cp.log()[-3000:]}")


def post(env, body, headers):
    return requests.post(env.url() + "/v1/chat/completions", json=body, headers=headers, timeout=15)


def test_replicas_log_the_redis_backend(fleet):
    _, _, replicas = fleet
    for cp in replicas:
        assert "backend=\"redis\"" in cp.log() or "backend=redis" in cp.log(), cp.log()[-2000:]


def test_two_envoys_share_one_fleet_limit_through_redis(fleet):
    envoys, upstream, _ = fleet
    upstream.clear()
    body = {"model": "o1-mini", "messages": [{"role": "user", "content": "hi"}]}
    with cf.ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda i: post(envoys[i % 3], body, ALICE), range(30)))
    statuses = [r.status_code for r in responses]
    detail = [(i % 3, r.status_code, r.headers.get("x-cordon-error"), r.text[:80]) for i, r in enumerate(responses) if r.status_code != 429]
    # Every check is one atomic script in Redis: exactly the limit, across the three Envoys.
    assert statuses.count(200) == 10, detail
    assert statuses.count(429) == 20, detail
    assert len([r for r in upstream.received if r.json.get("model") == "o1-mini"]) == 10
    refused = next(r for r in responses if r.status_code == 429)
    err = refused.json()["error"]
    assert (err["code"], refused.headers["x-cordon-limit"]) == ("rate_limit_exceeded", "fleet-o1")
    assert 1 <= int(refused.headers["retry-after"]) <= 86400
    admitted = [r for r in responses if r.status_code == 200]
    # The service's remainders become the headers: the most restrictive limit is the fleet one.
    remaining = sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in admitted)
    assert remaining == list(range(10)), remaining
    # Another team has its own counter.
    assert post(envoys[1], body, SVC).status_code == 200


def test_the_gateway_role_waits_for_the_verdict_too(fleet):
    envoys, upstream, _ = fleet
    gateway = envoys[2]
    body = {"model": "gw-model", "messages": [{"role": "user", "content": "mail me at ann@example.com"}]}
    statuses = [post(gateway, body, ALICE).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429], statuses
    # Redaction ran on the admitted requests' bodies while the verdict was awaited.
    sent = [r for r in upstream.received if r.json.get("model") == "gw-model"]
    assert len(sent) == 3 and all("ann@example.com" not in r.body.decode() for r in sent)
    # The limit is fleet-wide: the identity-role Envoys see it spent.
    assert post(envoys[1], body, ALICE).status_code == 429


def test_unused_token_reservations_are_released_through_the_service(fleet):
    envoys, upstream, _ = fleet
    body = lambda max_tokens: {"model": "gpt-4o-tok", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]}
    # 60 of 100 reserved; the model reports 5 completion tokens, the other 55 are released.
    first = post(envoys[0], body(60), ALICE)
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-limit-tokens"] == "100"
    assert first.headers["x-ratelimit-remaining-tokens"] == "40"
    # Without the release a second 60 would not fit (120 > 100). The release is sent when the
    # first response ends; the retry covers the moment it is still on its way.
    second = None
    for _ in range(100):
        second = post(envoys[1], body(60), ALICE)
        if second.status_code == 200:
            break
        time.sleep(0.05)
    assert second.status_code == 200, second.text
    assert second.headers["x-ratelimit-remaining-tokens"] == "35"
    # 5 + 5 used: a 90-token reservation fits exactly once both releases have landed.
    third = None
    for _ in range(100):
        third = post(envoys[0], body(90), ALICE)
        if third.status_code == 200:
            break
        assert third.json()["error"]["code"] == "token_limit_exceeded"
        time.sleep(0.05)
    assert third.status_code == 200 and third.headers["x-ratelimit-remaining-tokens"] == "0", third.text


def test_concurrent_streams_cannot_overshoot_a_fleet_token_limit(fleet):
    envoys, upstream, _ = fleet
    # Slow answers: every check happens while the admitted requests still hold their reservation.
    upstream.push(*[Script(usage=USAGE, first_delay_s=1.0) for _ in range(8)])
    body = {"model": "gpt-4o-tok", "max_tokens": 40, "messages": [{"role": "user", "content": "go"}]}
    with cf.ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda i: post(envoys[i % 2], body, SVC).status_code, range(8)))
    # Each holds 40 of 100 until it ends: two fit, never more.
    assert statuses.count(200) == 2, statuses
    assert statuses.count(429) == 6, statuses


def test_a_streamed_completion_settles_its_reservation_too(fleet):
    envoys, upstream, _ = fleet
    body = lambda max_tokens, stream: {"model": "gpt-4o-tok", "max_tokens": max_tokens, "stream": stream,
                                       "messages": [{"role": "user", "content": "hi"}]}
    r = requests.post(envoys[1].url() + "/v1/chat/completions", json=body(50, True), headers=OPS, timeout=15, stream=True)
    text = r.content.decode()
    assert r.status_code == 200 and "[DONE]" in text, text
    # Cordon asked the stream for its usage (5 completion tokens) and took that chunk out again.
    assert '"usage"' not in text.replace('"usage": null', "").replace('"usage":null', "")
    # What team ops had counted before (nothing, unless this test ran before on this Redis).
    before = 100 - 50 - int(r.headers["x-ratelimit-remaining-tokens"])
    # Once the stream's 45 unused tokens are released, exactly the rest fits.
    rest = 100 - before - 5
    last = None
    for _ in range(100):
        last = post(envoys[0], body(rest, False), OPS)
        if last.status_code == 200:
            break
        time.sleep(0.05)
    assert last.status_code == 200 and last.headers["x-ratelimit-remaining-tokens"] == "0", last.text


@pytest.fixture(scope="module")
def dead_rls(request, build):
    """Envoys whose rate-limit service cluster points at a port nobody listens on."""
    upstream = FakeUpstream(default=Script(usage=USAGE))
    started: list[E.Envoy] = []
    port = free_port()
    deny = start_envoy(started, upstream, port, {"cluster": "cordon_control_plane", "timeout_ms": 500}, build)
    allow = start_envoy(started, upstream, port, {"cluster": "cordon_control_plane", "timeout_ms": 500, "on_unavailable": "allow"}, build)
    yield deny, allow
    for e in started:
        e.cleanup()
    upstream.stop()


def test_service_down_denies_by_default(dead_rls):
    deny, _ = dead_rls
    r = post(deny, {"model": "o1-mini", "messages": []}, ALICE)
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "rate_limit_unavailable"
    assert "rate-limit service is unavailable" in err["message"]
    # Requests no fleet limit matches never ask the service.
    assert post(deny, {"model": "gpt-4o", "messages": []}, ALICE).status_code == 200


def test_service_down_allows_when_configured_and_counts_it(dead_rls):
    _, allow = dead_rls
    before = allow.stat("cordon_ratelimit_fail_open") or 0
    for _ in range(3):
        r = post(allow, {"model": "o1-mini", "messages": []}, ALICE)
        assert r.status_code == 200, r.text
    assert allow.stat("cordon_ratelimit_fail_open") == before + 3
    assert "fleet limits not applied (on_unavailable: allow)" in allow.log()


def test_envoys_own_ratelimit_filter_speaks_to_the_control_plane(fleet, build):
    """Wire compatibility with Envoy's own RLS client (its protos, not ours): Envoy's
    `envoy.filters.http.ratelimit` asks the control plane, with the limit as a descriptor
    override taken from dynamic metadata; the third request in the window is refused by Envoy."""
    if build == "dynamic":
        pytest.skip("no Cordon filter involved: run once, with the wasm build's fixtures")
    _, upstream, replicas = fleet
    set_metadata = {
        "name": "envoy.filters.http.set_metadata",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config",
            "metadata": [{"metadata_namespace": "cordon.test", "value": {"limit": {"requests_per_unit": 2, "unit": "DAY"}}}],
        },
    }
    ratelimit = {
        "name": "envoy.filters.http.ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            "domain": "cordon",
            "failure_mode_deny": True,  # a call our service could not answer would be a 500
            "timeout": "2s",
            "rate_limit_service": {"grpc_service": {"envoy_grpc": {"cluster_name": "cordon_control_plane"}}, "transport_api_version": "V3"},
        },
    }
    lst = E.listener("main", [set_metadata, ratelimit], "model")
    route = lst["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    route["rate_limits"] = [{
        "actions": [{"generic_key": {"descriptor_key": "cordon_limit", "descriptor_value": "envoy-native"}}],
        "limit": {"dynamic_metadata": {"metadata_key": {"key": "cordon.test", "path": [{"key": "limit"}]}}},
    }]
    cfg = E.bootstrap([lst], [E.cluster("model", upstream.port), E.cluster("cordon_control_plane", replicas[1].port, http2=True)])
    with E.Envoy.start(cfg) as env:
        statuses = [requests.post(env.url() + "/v1/chat/completions", json={"model": "x", "messages": []}, timeout=15).status_code
                    for _ in range(3)]
        assert statuses == [200, 200, 429], (statuses, env.log()[-3000:])


def test_a_timed_out_check_takes_on_unavailable(build):
    """A service that accepts the connection but never answers: after `timeout_ms` the request
    gets `on_unavailable` (deny), it is not held longer and not let through."""
    import socket

    upstream = FakeUpstream(default=Script(usage=USAGE))
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    started: list[E.Envoy] = []
    try:
        env = start_envoy(started, upstream, silent.getsockname()[1], {"cluster": "cordon_control_plane", "timeout_ms": 300}, build)
        r = post(env, {"model": "o1-mini", "messages": []}, ALICE)
        assert r.status_code == 503 and r.json()["error"]["code"] == "rate_limit_unavailable", r.text
        assert not [x for x in upstream.received if x.json.get("model") == "o1-mini"]
    finally:
        for e in started:
            e.cleanup()
        upstream.stop()
        silent.close()


def test_a_fleet_budget_is_spent_across_envoys_and_refuses_with_budget_exceeded(fleet):
    """Each exchange reserves prompt + max_tokens and settles to the reported usage (8 tokens):
    the budget of 40 is shared by the Envoys on both replicas, then refused on any of them."""
    import datetime as dt

    envoys, _, _ = fleet
    body = {"model": "gpt-4o-budget", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    statuses = []
    for i in range(12):
        r = post(envoys[i % 2], body, OPS)
        statuses.append(r.status_code)
        if r.status_code == 429:
            break
        assert r.status_code == 200, r.text
        time.sleep(0.2)  # the settlement is fire-and-forget (root context / the configuration's callout)
    assert statuses[0] == 200 and statuses[-1] == 429 and 3 <= len(statuses) <= 8, statuses
    assert r.json()["error"]["code"] == "budget_exceeded" and r.headers["x-cordon-limit"] == "fleet-monthly"
    # Retry-After is the calendar month's end (UTC), as the service counts it.
    now = dt.datetime.now(dt.timezone.utc)
    first_of_next = (now.replace(day=1) + dt.timedelta(days=32)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    assert abs(int(r.headers["retry-after"]) - (first_of_next - now).total_seconds()) <= 5, r.headers["retry-after"]
    # The other Envoy, on the other replica, refuses too: one budget for the fleet.
    other = post(envoys[(len(statuses)) % 2], body, OPS)
    assert other.status_code == 429 and other.json()["error"]["code"] == "budget_exceeded"
