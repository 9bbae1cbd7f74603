"""The live policy stream end to end: the real control plane, the real Envoy with the real
module (policy-stream singleton + identity filter), cordonctl, and the fake model upstream."""

import json
import time

import pytest
import requests

from tests.harness import envoy as E
from tests.harness.control_plane import ControlPlane, policy_stream_extension
from tests.harness.fake_upstream import FakeUpstream

NODE = "envoy-e2e-node"

POLICY_V1 = """
routes:
  - name: openai
    path_prefix: /v1/
    accept: [[api_key]]
models:
  - match: {team: research}
    allow: ["gpt-4o-mini"]
"""


def chat(model="gpt-4o-mini"):
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def stack(request):
    """Control plane + upstream + Envoy (no static policy: everything comes over the stream)."""
    cp = ControlPlane().start()
    up = FakeUpstream()
    started = []

    def envoy(trusted=None):
        ext = policy_stream_extension("cordon_control_plane", [trusted or cp.trusted_key], E.WASM)
        flt = E.wasm_filter("cordon.identity", {}, [])
        cfg = E.bootstrap(
            [E.listener("main", [flt], "model")],
            [E.cluster("model", up.port), E.cluster("cordon_control_plane", cp.port, http2=True)],
            extra={"bootstrap_extensions": [ext], "node": {"id": NODE, "cluster": "e2e"}},
        )
        env = E.Envoy.start(cfg)
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


def wait_status(env, key, want, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        r = requests.post(env.url() + "/v1/chat/completions", json=chat(), headers={"authorization": f"Bearer {key}"}, timeout=10)
        if r.status_code == want or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def test_cold_start_then_push_then_revoke(stack):
    cp, up, envoy = stack
    env = envoy()
    # Connected, nothing pushed yet: fail closed.
    r = requests.post(env.url() + "/v1/chat/completions", json=chat(), headers={"authorization": "Bearer x"}, timeout=10)
    assert r.status_code == 503 and r.json()["error"]["code"] == "policy_unavailable"

    cp.apply(POLICY_V1)
    key = cp.ctl("keys", "create", "--id", "k-e2e", "--user", "erin", "--team", "research")
    plaintext = key["plaintext"]
    version = key["version"]["version"]
    status = cp.wait_node(NODE, lambda n: n["state"] == "SYNCED" and n["acked_version"] == version)
    assert status["connected"]

    r = requests.post(env.url() + "/v1/chat/completions", json=chat(), headers={"authorization": f"Bearer {plaintext}"}, timeout=10)
    assert r.status_code == 200, r.text
    assert up.last().headers["x-cordon-user"] == "erin"
    # Only the digest travelled: the plaintext is nowhere in the control plane's store or logs.
    assert plaintext not in cp.log() and plaintext not in env.log()

    revoked = cp.ctl("keys", "revoke", "k-e2e")
    new_version = revoked["version"]["version"] if "version" in revoked else None
    cp.wait_node(NODE, lambda n: n["state"] == "SYNCED" and (new_version is None or n["acked_version"] == new_version))
    # The very next request after the ACK is refused.
    r = requests.post(env.url() + "/v1/chat/completions", json=chat(), headers={"authorization": f"Bearer {plaintext}"}, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "revoked_api_key"


def test_untrusted_bundle_is_nacked_and_traffic_keeps_the_last_good_policy(stack):
    cp, up, envoy = stack
    cp.apply(POLICY_V1)
    key = cp.ctl("keys", "create", "--id", "k-nack", "--user", "nia", "--team", "research")
    v1 = key["version"]["version"]
    env = envoy()
    cp.wait_node(NODE, lambda n: n["state"] == "SYNCED" and n["acked_version"] == v1)
    assert wait_status(env, key["plaintext"], 200).status_code == 200

    # The control plane comes back with a signing key this Envoy does not trust.
    cp.stop()
    cp.env["CORDON_SIGNING_KEY"] = "11" * 32
    cp.start()
    cp.apply(POLICY_V1.replace('"gpt-4o-mini"', '"gpt-4o-mini", "gpt-4o"'))
    status = cp.wait_node(NODE, lambda n: n["state"] == "NACKED")
    assert status["acked_version"] == v1
    assert "unknown key" in status["last_nack_error"]
    # cordonctl's table shows it too.
    table = cp.ctl("status", json_out=False).stdout
    assert "NACKED" in table and NODE in table
    # Traffic flows under the last good version: gpt-4o-mini allowed, gpt-4o (only in the NACKed one) not.
    hdr = {"authorization": f"Bearer {key['plaintext']}"}
    assert requests.post(env.url() + "/v1/chat/completions", json=chat(), headers=hdr, timeout=10).status_code == 200
    r = requests.post(env.url() + "/v1/chat/completions", json=chat("gpt-4o"), headers=hdr, timeout=10)
    assert r.status_code == 403


def test_control_plane_down_traffic_flows_and_nodes_resync(stack):
    cp, up, envoy = stack
    cp.apply(POLICY_V1)
    key = cp.ctl("keys", "create", "--id", "k-down", "--user", "dov", "--team", "research")
    env = envoy()
    cp.wait_node(NODE, lambda n: n["state"] == "SYNCED" and n["acked_version"] == key["version"]["version"])
    hdr = {"authorization": f"Bearer {key['plaintext']}"}

    cp.stop()
    for _ in range(5):
        assert requests.post(env.url() + "/v1/chat/completions", json=chat(), headers=hdr, timeout=10).status_code == 200

    cp.start()
    # While it was down nothing changed; the node reconnects, reports the version it runs, and is SYNCED.
    status = cp.wait_node(NODE, lambda n: n["connected"] and n["state"] == "SYNCED")
    assert status["acked_version"] == key["version"]["version"]
    # A change made after the restart reaches the node.
    cp.apply(POLICY_V1.replace('"gpt-4o-mini"', '"gpt-4o-mini", "gpt-4o"'))
    cp.wait_node(NODE, lambda n: n["state"] == "SYNCED" and n["acked_version"] != key["version"]["version"])
    assert requests.post(env.url() + "/v1/chat/completions", json=chat("gpt-4o"), headers=hdr, timeout=10).status_code == 200
