"""mTLS between the real Envoy and the real control plane, with certificates made here.

The control plane serves TLS and requires a client certificate from the test CA on every
connection (`--tls-client-ca`); cordonctl presents one too. Envoy's `cordon_control_plane`
cluster carries an UpstreamTlsContext with its own client certificate (wasm build); the native
dynamic module dials the control plane itself with the same files (`control_plane.tls`)."""

import time

import pytest
import requests

from tests.harness import envoy as E
from tests.harness import identity as I
from tests.harness.control_plane import ControlPlane, control_plane_tls_socket, native_control_plane, policy_stream_extension
from tests.harness.fake_upstream import FakeUpstream

NODE = "envoy-mtls-node"

POLICY = """
routes:
  - name: openai
    path_prefix: /v1/
    accept: [[api_key]]
models:
  - match: {team: research}
    allow: ["gpt-4o-mini"]
"""


def chat():
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def stack(request, tmp_path, build):
    pki = I.make_pki(tmp_path / "pki")  # CA, server cert (SANs localhost, 127.0.0.1), clients
    other = I.make_pki(tmp_path / "other-pki")  # a different CA
    ctl_cert, ctl_key = pki.client("cordonctl", None)
    cp = ControlPlane(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca,
                      ctl_ca_cert=pki.ca, ctl_client_cert=ctl_cert, ctl_client_key=ctl_key).start()
    up = FakeUpstream()
    started = []

    def envoy(client_pki: I.Pki, name: str):
        cert, key = client_pki.client(name, None)
        if build == "dynamic":
            tls = {"ca_file": str(pki.ca), "cert_file": str(cert), "key_file": str(key), "server_name": "localhost"}
            flt = E.dynamic_filter("cordon.identity", {"control_plane": native_control_plane(cp, [cp.trusted_key], NODE, tls=tls)})
            cfg = E.bootstrap([E.listener("main", [flt], "model")], [E.cluster("model", up.port)])
            env = E.Envoy.start(cfg, env=E.dynamic_module_env())
            started.append(env)
            return env
        cluster = E.cluster("cordon_control_plane", cp.port, http2=True)
        # The server's certificate is always checked against the real CA; only Envoy's own
        # client certificate varies.
        cluster["transport_socket"] = control_plane_tls_socket(pki.ca, cert, key, sni="localhost")
        ext = policy_stream_extension("cordon_control_plane", [cp.trusted_key], E.WASM)
        flt = E.wasm_filter("cordon.identity", {}, [])
        cfg = E.bootstrap(
            [E.listener("main", [flt], "model")],
            [E.cluster("model", up.port), cluster],
            extra={"bootstrap_extensions": [ext], "node": {"id": NODE, "cluster": "e2e-mtls"}},
        )
        env = E.Envoy.start(cfg)
        started.append(env)
        return env

    yield cp, pki, other, envoy
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for e in started:
            print(f"\n===== envoy log =====\n{e.log()[-6000:]}")
        print(f"\n===== control plane log =====\n{cp.log()[-4000:]}")
    for e in started:
        e.cleanup()
    up.stop()
    cp.stop()


def test_envoy_with_a_client_certificate_from_the_ca_syncs_over_mtls(stack):
    cp, pki, _other, envoy = stack
    assert cp.url.startswith("https://")
    cp.apply(POLICY)
    key = cp.ctl("keys", "create", "--id", "k-mtls", "--user", "mia", "--team", "research")
    env = envoy(pki, "envoy-good")
    status = cp.wait_node(NODE, lambda n: n["state"] == "SYNCED" and n["acked_version"] == key["version"]["version"])
    assert status["connected"]
    assert "SYNCED" in cp.ctl("status", json_out=False).stdout

    # The key created through cordonctl (over mTLS) works through Envoy.
    hdr = {"authorization": f"Bearer {key['plaintext']}"}
    r = requests.post(env.url() + "/v1/chat/completions", json=chat(), headers=hdr, timeout=10)
    assert r.status_code == 200, r.text

    # A revocation travels the same mTLS stream.
    revoked = cp.ctl("keys", "revoke", "k-mtls")
    cp.wait_node(NODE, lambda n: n["state"] == "SYNCED" and n["acked_version"] == revoked["version"]["version"])
    r = requests.post(env.url() + "/v1/chat/completions", json=chat(), headers=hdr, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "revoked_api_key"


def test_envoy_with_a_client_certificate_from_another_ca_is_refused(stack):
    cp, _pki, other, envoy = stack
    cp.apply(POLICY)
    env = envoy(other, "envoy-foreign")

    # Envoy keeps trying (reconnect with backoff); every handshake is refused, so the node never
    # shows up and the filter stays in its cold-start state: 503 policy_unavailable.
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:
        assert cp.node_status(NODE) is None, "a node with a foreign client certificate must never connect"
        r = requests.post(env.url() + "/v1/chat/completions", json=chat(), headers={"authorization": "Bearer x"}, timeout=10)
        assert r.status_code == 503 and r.json()["error"]["code"] == "policy_unavailable", r.text
        time.sleep(0.25)
    # The stream was attempted and refused at the TLS layer, not merely never opened.
    assert "TLS handshake refused" in cp.log()


def test_plaintext_envoy_cluster_is_refused_by_a_tls_control_plane(stack, build):
    cp, pki, _other, _envoy = stack
    cp.apply(POLICY)
    if build == "dynamic":
        # The native module told to dial the TLS port in plaintext (http://).
        up = FakeUpstream()
        plain = native_control_plane(cp, [cp.trusted_key], NODE)
        plain["address"] = f"http://127.0.0.1:{cp.port}"
        flt = E.dynamic_filter("cordon.identity", {"control_plane": plain})
        cfg = E.bootstrap([E.listener("main", [flt], "model")], [E.cluster("model", up.port)])
        with E.Envoy.start(cfg, env=E.dynamic_module_env()) as env:
            deadline = time.monotonic() + 15
            while "policy stream: closed (" not in env.log() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "policy stream: closed (" in env.log(), env.log()[-3000:]
            assert cp.node_status(NODE) is None, "the control plane never accepted this node"
            r = requests.post(env.url() + "/v1/chat/completions", json=chat(), headers={"authorization": "Bearer x"}, timeout=10)
            assert r.status_code == 503 and r.json()["error"]["code"] == "policy_unavailable"
        up.stop()
        return
    # Same node, but its cluster has no transport socket: plaintext h2c to a TLS port.
    ext = policy_stream_extension("cordon_control_plane", [cp.trusted_key], E.WASM)
    flt = E.wasm_filter("cordon.identity", {}, [])
    up = FakeUpstream()
    cfg = E.bootstrap(
        [E.listener("main", [flt], "model")],
        [E.cluster("model", up.port), E.cluster("cordon_control_plane", cp.port, http2=True)],
        extra={"bootstrap_extensions": [ext], "node": {"id": NODE, "cluster": "e2e-plain"}},
    )
    with E.Envoy.start(cfg) as env:
        # Positively: the stream was attempted, and it was closed on the filter with a gRPC error.
        deadline = time.monotonic() + 15
        while "policy stream: closed (grpc status" not in env.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "policy stream: closed (grpc status" in env.log(), env.log()[-3000:]
        stats = env.admin_get("/stats?filter=^cluster\\.cordon_control_plane\\.upstream_cx_total$")
        assert int(stats.split(":")[-1]) >= 1, f"a connection to the control plane was attempted: {stats!r}"
        assert cp.node_status(NODE) is None, "the control plane never accepted this node"
        r = requests.post(env.url() + "/v1/chat/completions", json=chat(), headers={"authorization": "Bearer x"}, timeout=10)
        assert r.status_code == 503 and r.json()["error"]["code"] == "policy_unavailable"
    up.stop()
