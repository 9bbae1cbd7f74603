"""Identity through the real Envoy: API keys, JWTs, mesh identity, header hygiene, credentials."""

import time

import pytest
import requests

from tests.e2e.conftest import KEYS, PROVIDER_SECRET, chat
from tests.harness.fake_upstream import Script
from tests.harness.identity import AUDIENCE


def post(gw, headers, body=None, path="/v1/chat/completions", listener="main", **kw):
    return requests.post(gw.url(listener) + path, json=body or chat(), headers=headers, timeout=10, **kw)


def error_code(resp):
    assert resp.headers["content-type"] == "application/json"
    err = resp.json()["error"]
    assert set(err) >= {"message", "type", "code"}
    return err["code"]


def test_valid_key_reaches_upstream_with_principal_and_provider_credential(gateway, upstream):
    upstream.clear()
    r = post(gateway, {"authorization": f"Bearer {KEYS['alice']}"})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "chat.completion"
    got = upstream.last().headers
    assert got["x-cordon-user"] == "alice"
    assert got["x-cordon-team"] == "research"
    assert got["x-cordon-app"] == "notebook"
    assert got["x-cordon-key-id"] == "k-alice"
    assert got["x-cordon-auth"] == "api_key"
    # The app's Cordon key never reaches the provider; the provider key comes from the runtime secret.
    assert got["authorization"] == f"Bearer {PROVIDER_SECRET}"
    assert KEYS["alice"] not in str(got)


def test_x_api_key_header_is_accepted_and_removed(gateway, upstream):
    upstream.clear()
    r = post(gateway, {"x-api-key": KEYS["alice"]})
    assert r.status_code == 200, r.text
    got = upstream.last().headers
    assert "x-api-key" not in got
    assert got["x-cordon-user"] == "alice"


@pytest.mark.parametrize(
    "headers,code",
    [
        ({}, "missing_credentials"),
        ({"authorization": "Bearer sk-cordon-unknown"}, "invalid_api_key"),
        ({"authorization": f"Bearer {KEYS['bob']}"}, "revoked_api_key"),
        ({"x-api-key": KEYS["carol"]}, "expired_api_key"),
    ],
)
def test_key_refusals_are_401_and_never_reach_upstream(gateway, upstream, headers, code):
    upstream.clear()
    r = post(gateway, headers)
    assert r.status_code == 401
    assert error_code(r) == code
    assert r.json()["error"]["type"] == "authentication_error"
    assert upstream.received == []


def test_spoofed_principal_headers_are_replaced(gateway, upstream):
    upstream.clear()
    r = post(gateway, {"authorization": f"Bearer {KEYS['alice']}", "x-cordon-user": "root", "x-cordon-team": "admins", "x-cordon-key-id": "k-root", "x-cordon-extra": "1"})
    assert r.status_code == 200
    got = upstream.last().headers
    assert got["x-cordon-user"] == "alice"
    assert got["x-cordon-team"] == "research"
    assert got["x-cordon-key-id"] == "k-alice"
    assert "x-cordon-extra" not in got


def test_spoofed_headers_do_not_authenticate(gateway, upstream):
    upstream.clear()
    r = post(gateway, {"x-cordon-user": "alice", "x-cordon-team": "research"})
    assert r.status_code == 401
    assert upstream.received == []


@pytest.mark.parametrize("alg_index", [0, 1, 2], ids=["RS256", "ES256", "EdDSA"])
def test_jwt_valid_for_each_algorithm(gateway, upstream, jwt_keys, alg_index):
    upstream.clear()
    token = jwt_keys[alg_index].mint()
    r = post(gateway, {"authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    got = upstream.last().headers
    assert got["x-cordon-user"] == "dana"
    assert got["x-cordon-team"] == "research"
    assert got["x-cordon-auth"] == "jwt"
    assert token not in str(got)


def test_jwt_refusals(gateway, upstream, jwt_keys):
    from tests.harness.identity import signing_keys

    rogue = signing_keys("rogue-")[1]
    rogue.kid = jwt_keys[1].kid  # same kid, different key: a forged signature
    now = int(time.time())
    cases = {
        "invalid_token_signature": rogue.mint(),
        "token_expired": jwt_keys[0].mint(exp=now - 60),
        "token_not_yet_valid": jwt_keys[2].mint(nbf=now + 600),
        "invalid_token_audience": jwt_keys[1].mint(aud="someone-else"),
        "invalid_token_issuer": jwt_keys[1].mint(iss="https://evil.example"),
    }
    upstream.clear()
    for code, token in cases.items():
        r = post(gateway, {"authorization": f"Bearer {token}"})
        assert r.status_code == 401, (code, r.text)
        assert error_code(r) == code
    assert upstream.received == []


def test_jwt_audience_list_is_accepted(gateway, upstream, jwt_keys):
    r = post(gateway, {"authorization": f"Bearer {jwt_keys[0].mint(aud=['x', AUDIENCE])}"})
    assert r.status_code == 200


def test_mesh_identity_allowed_and_denied(gateway, upstream, pki):
    upstream.clear()
    good = pki.client("prod-web", "spiffe://cordon.test/ns/prod/sa/web")
    url = f"https://127.0.0.1:{gateway.port('mtls')}/v1/chat/completions"
    r = requests.post(url, json=chat(), cert=good, verify=str(pki.ca), timeout=10)
    assert r.status_code == 200, r.text
    got = upstream.last().headers
    assert got["x-cordon-app"] == "prod-chat"
    assert got["x-cordon-auth"] == "mesh"

    bad = pki.client("dev-web", "spiffe://cordon.test/ns/dev/sa/web")
    r = requests.post(url, json=chat(), cert=bad, verify=str(pki.ca), timeout=10)
    assert r.status_code == 401
    assert error_code(r) == "unknown_mesh_identity"

    no_spiffe = pki.client("plain", None)
    r = requests.post(url, json=chat(), cert=no_spiffe, verify=str(pki.ca), timeout=10)
    assert r.status_code == 401
    assert error_code(r) == "missing_credentials"


def test_mesh_and_api_key_combination(gateway, upstream, pki):
    url = f"https://127.0.0.1:{gateway.port('mtls')}/internal/chat/completions"
    mesh = pki.client("prod-batch", "spiffe://cordon.test/ns/prod/sa/batch")
    # Mesh identity alone is not enough on /internal/.
    r = requests.post(url, json=chat(), cert=mesh, verify=str(pki.ca), timeout=10)
    assert r.status_code == 401 and error_code(r) == "missing_credentials"
    # An API key alone over plain HTTP is not enough either.
    r = requests.post(gateway.url() + "/internal/chat/completions", json=chat(), headers={"x-api-key": KEYS["svc"]}, timeout=10)
    assert r.status_code == 401 and error_code(r) == "mesh_identity_missing"
    upstream.clear()
    upstream.push(Script(body={"ok": True}))  # the fake has no /internal/ API of its own
    r = requests.post(url, json=chat(), cert=mesh, verify=str(pki.ca), headers={"x-api-key": KEYS["svc"]}, timeout=10)
    assert r.status_code == 200, r.text
    got = upstream.last().headers
    assert got["x-cordon-auth"] == "mesh,api_key"
    assert got["x-cordon-app"] == "prod-chat"
    assert got["x-cordon-user"] == "svc-account"


def test_decisions_are_counted_in_prometheus_stats(gateway):
    names = ["cordon_decision_allowed", "cordon_decision_revoked_api_key", "cordon_decision_invalid_api_key"]
    before = {n: gateway.stat(n) or 0 for n in names}
    for _ in range(3):
        assert post(gateway, {"authorization": f"Bearer {KEYS['bob']}"}).status_code == 401
    for _ in range(2):
        assert post(gateway, {"authorization": f"Bearer {KEYS['alice']}"}).status_code == 200
    after = {n: gateway.stat(n) or 0 for n in names}
    moved = {n: after[n] - before[n] for n in names}
    # Exactly one count per request, under its own code, and none elsewhere.
    assert moved == {"cordon_decision_allowed": 2, "cordon_decision_revoked_api_key": 3, "cordon_decision_invalid_api_key": 0}


def test_keys_and_tokens_never_reach_the_log(gateway, upstream, jwt_keys):
    token = jwt_keys[0].mint()
    for headers in ({"authorization": f"Bearer {KEYS['alice']}"}, {"x-api-key": KEYS["bob"]}, {"authorization": f"Bearer {token}"},
                    {"authorization": "Bearer sk-cordon-unknown-secret"}):
        post(gateway, headers)
    log = gateway.log()
    assert "refused 401 (revoked_api_key)" in log, "decisions are logged"
    for secret in [*KEYS.values(), token, "sk-cordon-unknown-secret", PROVIDER_SECRET]:
        assert secret not in log
