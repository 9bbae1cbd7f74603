"""End-to-end fixtures: the real Envoy binary with the real Cordon module, and the fake model
upstream. Each Envoy binds its own ports (port 0), so tests run in parallel (pytest -n)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.harness import envoy as E
from tests.harness import identity as I
from tests.harness.fake_upstream import FakeUpstream

PROVIDER_SECRET = "sk-provider-test-secret"

KEYS = {
    "alice": "sk-cordon-alice-0123456789",
    "bob": "sk-cordon-bob-revoked",
    "carol": "sk-cordon-carol-expired",
    "svc": "sk-cordon-svc",
}


def base_policy(jwt_keys: list[I.SigningKey]) -> dict:
    return {
        "identity": {
            "api_keys": [
                {"id": "k-alice", "sha256": I.key_digest(KEYS["alice"]), "principal": {"user": "alice", "team": "research", "app": "notebook"}},
                {"id": "k-bob", "sha256": I.key_digest(KEYS["bob"]), "principal": {"user": "bob", "team": "research"}, "status": "revoked"},
                {"id": "k-carol", "sha256": I.key_digest(KEYS["carol"]), "principal": {"user": "carol", "team": "research"}, "expires_at": 1_000_000_000},
                {"id": "k-svc", "sha256": I.key_digest(KEYS["svc"]), "principal": {"user": "svc-account", "team": "support"}},
            ],
            "jwt_providers": [I.jwt_provider(jwt_keys)],
            "spiffe": [{"id": "spiffe://cordon.test/ns/prod/sa/*", "principal": {"app": "prod-chat", "team": "support"}}],
        },
        "routes": [
            {"name": "internal", "path_prefix": "/internal/", "accept": [["mesh", "api_key"]]},
            {"name": "openai", "path_prefix": "/v1/", "accept": [["api_key"], ["jwt"], ["mesh"]]},
        ],
        "models": [
            {"match": {"team": "research"}, "allow": ["gpt-4o*", "text-embedding-*"]},
            {"match": {"team": "support"}, "allow": ["gpt-4o-mini"]},
        ],
        "upstreams": [{"cluster": "model", "secret_env": "CORDON_TEST_PROVIDER_KEY"}],
        "limits": {"max_request_body_bytes": 64 * 1024},
    }


@pytest.fixture(scope="session")
def jwt_keys() -> list[I.SigningKey]:
    return I.signing_keys()


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> I.Pki:
    return I.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream() as up:
        yield up


class Gateways:
    """Starts Envoys for a test module and prints their logs when a test fails."""

    def __init__(self):
        self.running: list[E.Envoy] = []

    def start(self, policy: dict | None, upstream: FakeUpstream, pki: I.Pki | None = None, config_extra: dict | None = None,
              build: str = "wasm") -> E.Envoy:
        """`build`: "wasm" (dist/cordon.wasm in V8) or "dynamic" (the native dynamic module,
        dist/libcordon_dynamic.so), same configuration JSON."""
        configuration = {"policy": policy} if policy is not None else {}
        configuration.update(config_extra or {})
        env_vars = {"CORDON_TEST_PROVIDER_KEY": PROVIDER_SECRET}
        if build == "dynamic":
            flt = E.dynamic_filter("cordon.identity", configuration)
            env_vars.update(E.dynamic_module_env())
        else:
            flt = E.wasm_filter("cordon.identity", configuration, ["CORDON_TEST_PROVIDER_KEY"])
        listeners = [E.listener("main", [flt], "model")]
        if pki is not None:
            listeners.append(E.listener("mtls", [flt], "model", tls=I.mtls_context(pki)))
        cfg = E.bootstrap(listeners, [E.cluster("model", upstream.port)])
        env = E.Envoy.start(cfg, env=env_vars)
        self.running.append(env)
        return env

    def dump_logs(self) -> None:
        for e in self.running:
            print(f"\n===== envoy log ({e.workdir}) =====\n{e.log()[-8000:]}")

    def close(self) -> None:
        for e in self.running:
            e.cleanup()


@pytest.fixture(scope="module")
def gateways(request):
    g = Gateways()
    yield g
    g.close()


@pytest.fixture(autouse=True)
def _envoy_log_on_failure(request):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed and "gateways" in request.fixturenames:
        request.getfixturevalue("gateways").dump_logs()


# Every test that takes `gateway` runs against both builds of the same filter: the wasm module
# and the native dynamic module. Same configuration, same assertions.
BUILDS = ["wasm", "dynamic"]


@pytest.fixture(scope="module", params=BUILDS)
def build(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def gateway(gateways, upstream, jwt_keys, pki, build):
    """One Envoy with the identity filter over plain HTTP ('main') and mTLS ('mtls')."""
    return gateways.start(base_policy(jwt_keys), upstream, pki=pki, build=build)


def chat(model: str = "gpt-4o-mini", stream: bool = False, **extra) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello"}], **extra}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
