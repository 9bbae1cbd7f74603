"""envoy/sidecar-remote-module.yaml as shipped: Envoy fetches the module over HTTPS from an
artifact server (here one the test starts on loopback, with the test CA), checks its sha256,
and enforces the policy; a module with another digest is never run."""

from __future__ import annotations

import hashlib
import http.server
import ssl
import threading

import pytest
import requests
import yaml

from tests.e2e.conftest import chat
from tests.harness import envoy as E
from tests.harness import identity as I
from tests.harness.envoy import REPO

MODULE = REPO / "dist" / "cordon.wasm"
PATH = "/cordon/0.1.0/cordon.wasm"
KEY = "foo"  # the example policy's key k-alice has sha256("foo")
PROVIDER_KEY = "sk-provider-remote-test"


class ArtifactServer:
    """An HTTPS server with one file, counting the GETs for it."""

    def __init__(self, pki: I.Pki, body: bytes):
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != PATH:
                    self.send_error(404)
                    return
                outer.hits += 1
                self.send_response(200)
                self.send_header("content-type", "application/wasm")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.server_cert, pki.server_key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def artifacts(pki):
    s = ArtifactServer(pki, MODULE.read_bytes())
    yield s
    s.close()


def shipped_config(sha256: str, artifacts: ArtifactServer, pki: I.Pki, upstream_port: int) -> dict:
    """The shipped file with only addresses, the CA path and the digest filled in."""
    text = (REPO / "envoy" / "sidecar-remote-module.yaml").read_text()
    assert "REPLACE_WITH_SHA256_OF_CORDON_WASM" in text
    text = text.replace("REPLACE_WITH_SHA256_OF_CORDON_WASM", sha256)
    # The test server's certificate is for "localhost": the name the config checks becomes that.
    text = text.replace("artifacts.cordon.internal", "localhost").replace("/etc/cordon/internal-ca.pem", str(pki.ca))
    cfg = yaml.safe_load(text)
    cfg["admin"]["address"]["socket_address"]["port_value"] = 0
    for listener in cfg["static_resources"]["listeners"]:
        listener["address"]["socket_address"]["port_value"] = 0
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    art = clusters["cordon_artifacts"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    art.update(address="127.0.0.1", port_value=artifacts.port)
    # The provider is the fake upstream (plain HTTP on loopback) instead of api.openai.com.
    cfg["static_resources"]["clusters"] = [E.cluster("openai", upstream_port), clusters["cordon_artifacts"]]
    assert "uri: https://localhost/cordon/0.1.0/cordon.wasm" in yaml.safe_dump(cfg)
    return cfg


def test_module_fetched_over_https_with_its_sha256_serves_the_policy(artifacts, pki, upstream):
    sha = hashlib.sha256(MODULE.read_bytes()).hexdigest()
    env = E.Envoy.start(shipped_config(sha, artifacts, pki, upstream.port), env={"OPENAI_API_KEY": PROVIDER_KEY})
    try:
        assert artifacts.hits >= 1
        upstream.clear()
        ok = requests.post(env.url("model_egress") + "/v1/chat/completions", json=chat("gpt-4o-mini"),
                           headers={"authorization": f"Bearer {KEY}"}, timeout=10)
        assert ok.status_code == 200, ok.text
        got = upstream.last().headers
        assert got["x-cordon-user"] == "alice"
        assert got["authorization"] == f"Bearer {PROVIDER_KEY}"
        denied = requests.post(env.url("model_egress") + "/v1/chat/completions", json=chat("claude-3-opus"),
                               headers={"authorization": f"Bearer {KEY}"}, timeout=10)
        assert denied.status_code == 403
        assert requests.post(env.url("model_egress") + "/v1/chat/completions", json=chat(), timeout=10).status_code == 401
    finally:
        env.cleanup()


def test_module_with_another_sha256_is_never_run_and_no_traffic_passes(artifacts, pki, upstream):
    wrong = hashlib.sha256(b"some other module").hexdigest()
    env = E.Envoy(config=shipped_config(wrong, artifacts, pki, upstream.port), env={"OPENAI_API_KEY": PROVIDER_KEY})
    upstream.clear()
    try:
        with pytest.raises(RuntimeError) as err:
            env._launch(timeout=8)
        # Envoy fetched the module, found another digest, kept retrying, and never went live:
        # no listener was opened, so nothing reached the provider.
        assert "not ready" in str(err.value)
        assert artifacts.hits >= 2
        assert "model_egress" not in env.ports
        assert upstream.received == []
    finally:
        env.cleanup()
