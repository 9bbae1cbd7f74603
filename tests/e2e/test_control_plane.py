"""The live policy stream end to end: the real control plane, the real Envoy with the real
module, cordonctl, and the fake model upstream. Every test runs against both builds (the `build`
fixture): the wasm module (policy-stream singleton + identity filter, the stream over an Envoy
cluster) and the native dynamic module (the identity filter's own background stream)."""

import json
import shutil
import time

import pytest
import requests

from tests.harness import envoy as E
from tests.harness.control_plane import ControlPlane, native_control_plane, policy_stream_extension
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
def stack(request, build):
    """Control plane + upstream + Envoy (no static policy: everything comes over the stream).
    `envoy(faults=True)` loads the build with test-only fault injection."""
    cp = ControlPlane().start()
    up = FakeUpstream()
    started = []

    def envoy(trusted=None, faults=False):
        if build == "dynamic":
            module = E.FAULTS_DYNAMIC_MODULE if faults else E.DYNAMIC_MODULE
            assert module.exists(), f"{module} is missing: build it with scripts/build-dynamic.sh --test-faults"
            flt = E.dynamic_filter("cordon.identity", {"control_plane": native_control_plane(cp, [trusted or cp.trusted_key], NODE)})
            cfg = E.bootstrap([E.listener("main", [flt], "model")], [E.cluster("model", up.port)], extra={"node": {"id": NODE, "cluster": "e2e"}})
            env = E.Envoy.start(cfg, env=E.dynamic_module_env(module))
        else:
            wasm = E.FAULTS_WASM if faults else E.WASM
            assert wasm.exists(), f"{wasm} is missing: build it with scripts/build-wasm.sh --test-faults"
            ext = policy_stream_extension("cordon_control_plane", [trusted or cp.trusted_key], wasm)
            flt = E.wasm_filter("cordon.identity", {}, [], wasm=wasm)
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


def test_a_policy_the_filter_cannot_publish_is_nacked_with_the_version_it_runs(stack):
    """Regression: the NACK for a bundle that verified but could not be handed to the workers
    carried the *new* version, so the control plane showed the node running a policy it did not."""
    cp, up, envoy = stack
    cp.apply(POLICY_V1)
    key = cp.ctl("keys", "create", "--id", "k-pub", "--user", "pia", "--team", "research")
    v1 = key["version"]["version"]
    env = envoy(faults=True)
    cp.wait_node(NODE, lambda n: n["state"] == "SYNCED" and n["acked_version"] == v1)
    hdr = {"authorization": f"Bearer {key['plaintext']}"}

    v2 = cp.apply(POLICY_V1.replace('"gpt-4o-mini"', '"gpt-4o-mini", "cordon-test-fault-publish"'))["version"]["version"]
    status = cp.wait_node(NODE, lambda n: n["state"] == "NACKED")
    assert status["acked_version"] == v1, f"the node runs {v1}, not {v2}"
    assert "could not publish" in status["last_nack_error"]
    # After a reconnect the node still reports the version it runs.
    cp.stop()
    cp.start()
    status = cp.wait_node(NODE, lambda n: n["connected"] and n["state"] == "NACKED")
    assert status["acked_version"] == v1
    # And traffic runs under v1: the model only v2 allows is refused.
    r = requests.post(env.url() + "/v1/chat/completions", json=chat("cordon-test-fault-publish"), headers=hdr, timeout=10)
    assert r.status_code == 403


def test_a_replayed_older_bundle_is_nacked_and_the_revoked_key_stays_refused(stack):
    """An older, validly signed bundle (here: a control plane restored from a backup taken before
    a key was revoked) must not roll the node back."""
    cp, up, envoy = stack
    cp.apply(POLICY_V1)
    key = cp.ctl("keys", "create", "--id", "k-replay", "--user", "rex", "--team", "research")
    v_before = key["version"]["version"]
    env = envoy()
    cp.wait_node(NODE, lambda n: n["state"] == "SYNCED" and n["acked_version"] == v_before)
    assert wait_status(env, key["plaintext"], 200).status_code == 200

    cp.stop()
    backup = cp.data_dir.parent / (cp.data_dir.name + "-backup")
    shutil.copytree(cp.data_dir, backup)
    cp.start()
    v_after = cp.ctl("keys", "revoke", "k-replay")["version"]["version"]
    cp.wait_node(NODE, lambda n: n["state"] == "SYNCED" and n["acked_version"] == v_after)
    assert wait_status(env, key["plaintext"], 401).status_code == 401

    # The backup comes back on the same address and serves the pre-revocation bundle.
    cp.stop()
    old = ControlPlane(data_dir=backup, port=cp.port).start()
    try:
        status = old.wait_node(NODE, lambda n: n["connected"] and n["state"] == "NACKED")
        assert f"serial {v_before} is not newer than serial {v_after}" in status["last_nack_error"]
        table = old.ctl("status", json_out=False).stdout
        assert "NACKED" in table
        r = requests.post(env.url() + "/v1/chat/completions", json=chat(), headers={"authorization": f"Bearer {key['plaintext']}"}, timeout=10)
        assert r.status_code == 401 and r.json()["error"]["code"] == "revoked_api_key"
    finally:
        old.stop()
        shutil.rmtree(backup, ignore_errors=True)


def test_a_failed_filter_keeps_the_pushed_policy(stack, build):
    """wasm, failure_policy FAIL_RELOAD: the request that trapped is refused, the VM is recreated,
    and the new VM runs the policy the control plane pushed (not a cold start that refuses all).
    Native: a hook that panics fails its request closed; the next ones run the pushed policy."""
    cp, up, envoy = stack
    cp.apply(POLICY_V1)
    key = cp.ctl("keys", "create", "--id", "k-trap", "--user", "tia", "--team", "research")
    env = envoy(faults=True)
    cp.wait_node(NODE, lambda n: n["state"] == "SYNCED" and n["acked_version"] == key["version"]["version"])
    hdr = {"authorization": f"Bearer {key['plaintext']}"}
    assert wait_status(env, key["plaintext"], 200).status_code == 200

    fault = {"x-cordon-test-panic": "request"} if build == "dynamic" else {"x-cordon-test-trap": "1"}
    r = requests.post(env.url() + "/v1/chat/completions", json=chat(), headers={**hdr, **fault}, timeout=10)
    assert r.status_code >= 500, "the request that failed the filter is refused, never passed through"
    assert ("cordon: panic: " if build == "dynamic" else "test fault: trapping the VM") in env.log()
    # After the reload backoff the same worker serves again, under the pushed policy.
    r = wait_status(env, key["plaintext"], 200)
    assert r.status_code == 200, r.text
    r = requests.post(env.url() + "/v1/chat/completions", json=chat("gpt-4o"), headers=hdr, timeout=10)
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    r = requests.post(env.url() + "/v1/chat/completions", json=chat(), headers={"authorization": "Bearer nope"}, timeout=10)
    assert r.status_code == 401
