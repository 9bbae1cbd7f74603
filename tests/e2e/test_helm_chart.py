"""deploy/helm/cordon-control-plane, rendered and linted by the real Helm engine (Helm's Go SDK,
from PyPI helm-python-sdk), checked with values.schema.json by Helm itself, and the Deployment it
renders started as the real control plane: the env, files and probes it names are the ones the
binary reads and serves."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import helm_python as helm
import pytest
import requests
import yaml

from tests.harness.control_plane import BIN_DIR, free_port
from tests.harness.envoy import REPO, stop_process

CHART = REPO / "deploy" / "helm" / "cordon-control-plane"
SECRETS = {
    "signingKey": {"existingSecret": "cordon-signing", "key": "signing.seed"},
    "adminTokens": {"existingSecret": "cordon-admin", "key": "admin-tokens"},
}
TLS = {"enabled": True, "existingSecret": "cordon-tls", "clientAuth": True}


def values(**over) -> dict:
    return {**SECRETS, "tls": TLS, **over}


def render(v: dict) -> dict[str, dict]:
    """Rendered objects by kind (one each here)."""
    with helm.Chart.load(CHART) as chart:
        out = chart.render(v, name="cordon", namespace="cordon-system", is_install=True)
    objs = [d for path, text in out.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    by_kind = {d["kind"]: d for d in objs}
    assert len(by_kind) == len(objs)
    return by_kind


def schema_error(v: dict) -> str:
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmError) as err:
            chart.render(v, name="cordon", namespace="cordon-system")
    return str(err.value)


def container(objs) -> dict:
    return objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def test_chart_lints_clean():
    report = helm.lint(CHART, values(), strict=True, namespace="cordon-system")
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == [], report


def test_default_is_one_sqlite_replica_on_a_kept_volume_non_root_and_locked_down():
    objs = render(values())
    assert set(objs) == {"Deployment", "Service", "PersistentVolumeClaim", "NetworkPolicy", "ServiceAccount"}
    dep = objs["Deployment"]["spec"]
    assert dep["replicas"] == 1 and dep["strategy"]["type"] == "Recreate"
    pod = dep["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 65532
    assert pod["automountServiceAccountToken"] is False
    c = container(objs)
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["CORDON_DATA_DIR"] == "/var/lib/cordon" and "CORDON_DATABASE_URL" not in env
    assert objs["PersistentVolumeClaim"]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # mTLS by default, so the kubelet (which has no client certificate) probes with TCP.
    assert env["CORDON_TLS_CLIENT_CA"] == "/etc/cordon/tls/ca.crt"
    assert c["livenessProbe"]["tcpSocket"] == {"port": "grpc"} and c["readinessProbe"]["tcpSocket"] == {"port": "grpc"}
    # Only the Envoys and operators may connect; with SQLite it connects nowhere.
    np = objs["NetworkPolicy"]["spec"]
    assert np["policyTypes"] == ["Ingress", "Egress"] and np["egress"] == []
    assert np["ingress"][0]["ports"] == [{"port": "grpc", "protocol": "TCP"}]


def test_postgres_profile_takes_the_url_from_a_secret_and_may_scale():
    objs = render(values(store="postgres", replicaCount=3, postgres={"existingSecret": "cordon-db", "to": [{"podSelector": {"matchLabels": {"app": "pg"}}}]}))
    assert "PersistentVolumeClaim" not in objs
    dep = objs["Deployment"]["spec"]
    assert dep["replicas"] == 3 and "strategy" not in dep
    env = {e["name"]: e for e in container(objs)["env"]}
    assert env["CORDON_DATABASE_URL"]["valueFrom"] == {"secretKeyRef": {"name": "cordon-db", "key": "database-url"}}
    assert "CORDON_DATA_DIR" not in env
    egress = objs["NetworkPolicy"]["spec"]["egress"]
    assert egress[0]["ports"] == [{"port": 5432, "protocol": "TCP"}] and egress[0]["to"] == [{"podSelector": {"matchLabels": {"app": "pg"}}}]


@pytest.mark.parametrize("bad,needle", [
    ({"signingKey": {"value": "c2VjcmV0"}}, "value"),                        # a secret inline: no such key
    ({"adminTokens": {"existingSecret": "", "key": "admin-tokens"}}, "existingSecret"),
    ({"store": "sqlite", "replicaCount": 2}, "replicaCount"),                 # SQLite is one writer
    ({"store": "postgres"}, "existingSecret"),                                # no connection string
    ({"tls": {"enabled": True, "clientAuth": True}}, "existingSecret"),
    ({"image": {"repository": "r", "digest": "latest"}}, "digest"),
])
def test_values_schema_refuses_unsafe_or_impossible_values(bad, needle):
    assert needle in schema_error({**values(), **bad})


def test_no_secret_material_is_rendered():
    with helm.Chart.load(CHART) as chart:
        out = chart.render(values(), name="cordon", namespace="cordon-system")
    text = "\n".join(out.values())
    assert "kind: Secret" not in text
    for word in ("BEGIN", "password", "token:"):
        assert word not in text


def keygen(path: Path) -> None:
    subprocess.run([str(BIN_DIR / "cordon-control-plane"), "keygen", "--out", str(path)], check=True, capture_output=True, timeout=60)


def run_rendered(objs: dict, tmp_path: Path, files: dict[str, bytes]) -> tuple[subprocess.Popen, int, Path]:
    """Starts the control plane as the rendered Deployment would: its env, with each mounted
    path mapped to a directory here holding what the Secret would."""
    root = tmp_path / "pod"
    for path, data in files.items():
        f = root / path.lstrip("/")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
    for m in container(objs)["volumeMounts"]:
        (root / m["mountPath"].lstrip("/")).mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {"PATH": os.environ["PATH"], "NO_COLOR": "1"}
    for e in container(objs)["env"]:
        value = e.get("value")
        if value is None:
            raise AssertionError(f"{e['name']} comes from a Secret: not used in this test")
        if value.startswith("/"):
            value = str(root / value.lstrip("/"))
        env[e["name"]] = value
    assert env.pop("CORDON_LISTEN") == f"0.0.0.0:{container(objs)['ports'][0]['containerPort']}"
    env["CORDON_LISTEN"] = f"127.0.0.1:{port}"
    log = tmp_path / "cp.log"
    proc = subprocess.Popen([str(BIN_DIR / "cordon-control-plane")], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while "listening on" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise AssertionError(log.read_text())
        time.sleep(0.05)
    return proc, port, log


def test_rendered_deployment_without_tls_serves_its_http_probe(tmp_path):
    objs = render(values(tls={"enabled": False}))
    probe = container(objs)["readinessProbe"]["httpGet"]
    assert probe["scheme"] == "HTTP"
    keygen(tmp_path / "seed")
    proc, port, _ = run_rendered(objs, tmp_path, {"/etc/cordon/signing/signing.seed": (tmp_path / "seed").read_bytes(),
                                                  "/etc/cordon/admin/admin-tokens": b"ops operator tok-0123456789abcdef\n"})
    try:
        r = requests.get(f"http://127.0.0.1:{port}{probe['path']}", timeout=5)
        assert r.status_code == 200 and r.text == "ok\n"
        # The data directory the chart mounts is where the SQLite store is.
        assert any((tmp_path / "pod" / "var/lib/cordon").iterdir())
    finally:
        stop_process(proc)


def test_rendered_deployment_with_mtls_refuses_clients_without_a_certificate_so_it_probes_tcp(tmp_path, pki):
    objs = render(values())
    assert "tcpSocket" in container(objs)["livenessProbe"]
    keygen(tmp_path / "seed")
    files = {"/etc/cordon/signing/signing.seed": (tmp_path / "seed").read_bytes(),
             "/etc/cordon/admin/admin-tokens": b"ops operator tok-0123456789abcdef\n",
             "/etc/cordon/tls/tls.crt": Path(pki.server_cert).read_bytes(),
             "/etc/cordon/tls/tls.key": Path(pki.server_key).read_bytes(),
             "/etc/cordon/tls/ca.crt": Path(pki.ca).read_bytes()}
    proc, port, _ = run_rendered(objs, tmp_path, files)
    try:
        # What the kubelet's TCP probe does succeeds ...
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        # ... while an HTTPS GET /healthz without a client certificate (all the kubelet has) fails,
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            requests.get(f"https://127.0.0.1:{port}/healthz", verify=str(pki.ca), timeout=5)
        # and one with a certificate from the client CA gets the health answer.
        cert = pki.client("probe", None)
        r = requests.get(f"https://127.0.0.1:{port}/healthz", verify=str(pki.ca), cert=cert, timeout=5)
        assert r.status_code == 200 and r.text == "ok\n"
    finally:
        stop_process(proc)
