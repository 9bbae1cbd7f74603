"""What only the native build has to prove: it matches the pinned Envoy's dynamic-module ABI, it
loads with the ABI version Envoy expects, it rejects configurations it cannot run, and a panic in
the module fails the request closed without taking Envoy down.

The filter's behaviour itself (identity, header hygiene, model access, refusals, rate limits) is
proven by the same suites the wasm build runs: `test_identity.py`, `test_models.py` and
`test_limits.py` run every test on both builds (the `build` fixture in conftest.py)."""

from __future__ import annotations

import subprocess

import pytest
import requests

from tests.e2e.conftest import KEYS, PROVIDER_SECRET, base_policy, chat
from tests.harness import envoy as E

ALICE = {"authorization": f"Bearer {KEYS['alice']}"}
FAULTS_MODULE = E.REPO / "dist" / "test-faults" / "libcordon_dynamic.so"


def start(gateways, upstream, filters, module=E.DYNAMIC_MODULE, concurrency=1):
    cfg = E.bootstrap([E.listener("main", filters, "model")], [E.cluster("model", upstream.port)])
    env = E.Envoy.start(cfg, env={"CORDON_TEST_PROVIDER_KEY": PROVIDER_SECRET, **E.dynamic_module_env(module)}, concurrency=concurrency)
    gateways.running.append(env)
    return env


def test_abi_symbols_match_the_pinned_envoy():
    # Every callback the library imports exists in this Envoy, every hook it looks up is exported.
    out = subprocess.run([str(E.REPO / "scripts" / "check-dynamic-abi.sh"), str(E.DYNAMIC_MODULE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "all match" in out.stdout


def test_loads_with_the_abi_version_envoy_expects(gateways, upstream, jwt_keys):
    env = start(gateways, upstream, [E.dynamic_filter("cordon.identity", {"policy": base_policy(jwt_keys)})])
    # Envoy only warns on a mismatch; a newer Envoy that bumps the ABI version fails here.
    assert "Dynamic module ABI version v0.2.0 matched" in env.log()
    assert "is deprecated" not in env.log()
    r = requests.post(env.url() + "/v1/chat/completions", json=chat(), headers=ALICE, timeout=10)
    assert r.status_code == 200, r.text


def test_an_unknown_filter_name_rejects_the_configuration(gateways, upstream):
    with pytest.raises(RuntimeError) as err:
        start(gateways, upstream, [E.dynamic_filter("cordon.nonesuch", {})])
    assert "unknown filter_name 'cordon.nonesuch'" in str(err.value)


def test_a_missing_module_fails_the_configuration(gateways, upstream, tmp_path):
    flt = E.dynamic_filter("cordon.identity", {})
    cfg = E.bootstrap([E.listener("main", [flt], "model")], [E.cluster("model", upstream.port)])
    with pytest.raises(RuntimeError) as err:
        # An empty search path: Envoy must not fall back to something else.
        E.Envoy.start(cfg, env={"ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(tmp_path)})
    assert "libcordon_dynamic.so" in str(err.value)


def test_loads_from_an_absolute_path_without_a_search_path(gateways, upstream, jwt_keys):
    # What production configs use (envoy/sidecar-dynamic.yaml): `module.local.filename`, so no
    # search path or system library path can supply a different lib<name>.so.
    flt = E.dynamic_filter("cordon.identity", {"policy": base_policy(jwt_keys)})
    flt["typed_config"]["dynamic_module_config"] = {"module": {"local": {"filename": str(E.DYNAMIC_MODULE)}}, "metrics_namespace": "cordon"}
    cfg = E.bootstrap([E.listener("main", [flt], "model")], [E.cluster("model", upstream.port)])
    env = E.Envoy.start(cfg, env={"CORDON_TEST_PROVIDER_KEY": PROVIDER_SECRET})
    gateways.running.append(env)
    assert requests.post(env.url() + "/v1/chat/completions", json=chat(), headers=ALICE, timeout=10).status_code == 200
    assert requests.post(env.url() + "/v1/chat/completions", json=chat(), timeout=10).status_code == 401


@pytest.fixture(scope="module", params=["cordon.identity", "cordon.gateway"])
def faulty(request, gateways, upstream, jwt_keys):
    """The fault-injecting module running identity alone, or the combined role (whose hooks run
    identity's and redaction's in one filter: a panic in either is caught the same way)."""
    if not FAULTS_MODULE.exists():
        pytest.fail(f"{FAULTS_MODULE} is missing: build it with scripts/build-dynamic.sh --test-faults")
    return start(gateways, upstream, [E.dynamic_filter(request.param, {"policy": base_policy(jwt_keys)})], module=FAULTS_MODULE)


def test_a_panic_in_the_request_hook_fails_closed_and_envoy_carries_on(faulty, upstream):
    upstream.clear()
    r = requests.post(faulty.url() + "/v1/chat/completions", json=chat(), headers={**ALICE, "x-cordon-test-panic": "request"}, timeout=10)
    assert r.status_code == 500
    assert r.headers["x-cordon-error"] == "filter_failure"
    assert r.json()["error"]["code"] == "filter_failure"
    assert upstream.received == [], "a request whose filter failed never reaches the upstream"
    assert "cordon: panic: " in faulty.log() and "test fault" in faulty.log()
    # The same worker, the same module: the next request is served as usual.
    r = requests.post(faulty.url() + "/v1/chat/completions", json=chat(), headers=ALICE, timeout=10)
    assert r.status_code == 200, r.text
    assert faulty.proc.poll() is None


def test_a_panic_in_the_response_hook_does_not_deliver_the_response(faulty, upstream):
    upstream.clear()
    r = requests.post(faulty.url() + "/v1/chat/completions", json=chat(), headers={**ALICE, "x-cordon-test-panic": "response"}, timeout=10)
    # The response headers were held by the failed hook: the client gets the failure, not the
    # upstream's answer.
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "filter_failure"
    assert len(upstream.received) == 1
    r = requests.post(faulty.url() + "/v1/chat/completions", json=chat(), headers=ALICE, timeout=10)
    assert r.status_code == 200
    assert faulty.proc.poll() is None
