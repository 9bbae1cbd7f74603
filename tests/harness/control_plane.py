"""Runs the real control plane (`cordon-control-plane`, embedded SQLite mode) and `cordonctl`."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.envoy import REPO, read_log, stop_process, string_config, vm_config

BIN_DIR = Path(os.environ.get("CORDON_BIN_DIR", REPO / "target" / "debug"))


def free_port() -> int:
    # The control plane is restarted on the same port in tests, so the port is chosen here.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ControlPlane:
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cordon-cp-")))
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    trusted_key: dict | None = None
    # TLS (all optional; without tls_cert the server is plaintext, as before). With
    # tls_client_ca every connection needs a client certificate from that CA, cordonctl's too.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    ctl_ca_cert: Path | None = None
    ctl_client_cert: Path | None = None
    ctl_client_key: Path | None = None
    tls_host: str = "127.0.0.1"  # must be a SAN of tls_cert
    extra_args: list[str] = field(default_factory=list)  # e.g. ["--ratelimit-redis-url", url]

    @property
    def url(self) -> str:
        if self.tls_cert:
            return f"https://{self.tls_host}:{self.port}"
        return f"http://127.0.0.1:{self.port}"

    def _tls_args(self) -> list[str]:
        args: list[str] = []
        if self.tls_cert:
            args += ["--tls-cert", str(self.tls_cert), "--tls-key", str(self.tls_key)]
        if self.tls_client_ca:
            args += ["--tls-client-ca", str(self.tls_client_ca)]
        return args

    def _ctl_tls_args(self) -> list[str]:
        args: list[str] = []
        if self.ctl_ca_cert:
            args += ["--ca-cert", str(self.ctl_ca_cert)]
        if self.ctl_client_cert:
            args += ["--client-cert", str(self.ctl_client_cert), "--client-key", str(self.ctl_client_key)]
        return args

    @property
    def log_path(self) -> Path:
        return self.data_dir / "control-plane.log"

    def start(self, timeout: float = 30.0) -> "ControlPlane":
        binary = BIN_DIR / "cordon-control-plane"
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: cargo build -p cordon-control-plane -p cordonctl --bins")
        out = self.log_path.open("ab")
        offset = self.log_path.stat().st_size  # a restart appends: only read what this run wrote
        env = {**os.environ, "CORDON_LOG": "info", "NO_COLOR": "1", **self.env}
        self.proc = subprocess.Popen([str(binary), "--data-dir", str(self.data_dir), "--listen", f"127.0.0.1:{self.port}", "--poll-interval-ms", "200", *self._tls_args(), *self.extra_args],
                                     stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"control plane exited {self.proc.returncode}:\n{self.log()}")
            m = re.search(r"listening on \S+ trusted_key=(\{.*\})", self.log()[offset:])
            if m:
                self.trusted_key = json.loads(m.group(1).splitlines()[0])
                return self
            time.sleep(0.05)
        raise RuntimeError(f"control plane not ready:\n{self.log()}")

    def stop(self) -> None:
        stop_process(self.proc)

    def log(self) -> str:
        return read_log(self.log_path)

    def ctl(self, *args: str, check: bool = True, json_out: bool = True) -> subprocess.CompletedProcess | dict | list:
        cmd = [str(BIN_DIR / "cordonctl"), "--server", self.url, "--token-file", str(self.data_dir / "admin.token"), *self._ctl_tls_args(), *(["-o", "json"] if json_out else []), *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if check and r.returncode != 0:
            raise RuntimeError(f"cordonctl {' '.join(args)} failed ({r.returncode}): {r.stdout}{r.stderr}")
        if json_out and r.returncode == 0 and r.stdout.strip():
            return json.loads(r.stdout)
        return r

    def apply(self, yaml_text: str, message: str = "test") -> dict:
        f = self.data_dir / f"policy-{time.monotonic_ns()}.yaml"
        f.write_text(yaml_text)
        return self.ctl("apply", "-f", str(f), "-m", message)

    def node_status(self, node_id: str) -> dict | None:
        st = self.ctl("status")
        nodes = st.get("nodes", st) if isinstance(st, dict) else st
        for n in nodes:
            if n.get("node_id", n.get("id")) == node_id:
                return n
        return None

    def wait_node(self, node_id: str, pred, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.node_status(node_id)
            if last is not None and pred(last):
                return last
            time.sleep(0.1)
        raise AssertionError(f"node {node_id} never reached the expected state; last status: {last}\n{self.log()[-4000:]}")


def control_plane_tls_socket(ca: Path | str, cert: Path | str, key: Path | str, sni: str = "localhost") -> dict:
    """The `transport_socket` of Envoy's `cordon_control_plane` cluster for mTLS: Envoy's client
    certificate, the CA that issued the control plane's certificate, SNI, and ALPN h2 (gRPC)."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": sni,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [{"certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}],
                "validation_context": {
                    "trusted_ca": {"filename": str(ca)},
                    "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": sni}}],
                },
            },
        },
    }


def policy_stream_extension(cluster: str, trusted_keys: list[dict], wasm: Path, env_keys: list[str] | None = None, audit: dict | None = None) -> dict:
    """The `cordon.policy_stream` singleton: one stream per Envoy, shared with the HTTP roles;
    with `audit` (e.g. {"node_key_env": "CORDON_NODE_KEY"}) it also ships the audit trail."""
    configuration: dict = {"control_plane": {"cluster": cluster, "trusted_keys": trusted_keys, "reconnect_initial_ms": 200, "reconnect_max_ms": 1000}}
    if audit is not None:
        configuration["audit"] = audit
    return {
        "name": "envoy.bootstrap.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.wasm.v3.WasmService",
            "singleton": True,
            "config": {
                "name": "cordon.policy_stream",
                "root_id": "cordon.policy_stream",
                "vm_config": vm_config(wasm, env_keys),
                "configuration": string_config(configuration),
            },
        },
    }


def native_control_plane(cp: ControlPlane, trusted_keys: list[dict], node: str, tls: dict | None = None) -> dict:
    """The `control_plane` section for the native dynamic module, which dials the control plane
    itself (no Envoy cluster, no singleton): its address, the TLS files, and the node id (the
    dynamic-module ABI does not expose Envoy's `node.id`). `tls`: {"ca_file", "cert_file",
    "key_file", "server_name"}; the address is https:// exactly when it is given."""
    section = {"address": cp.url if tls is None else f"https://{cp.tls_host}:{cp.port}", "node_id": node, "trusted_keys": trusted_keys,
               "reconnect_initial_ms": 200, "reconnect_max_ms": 1000}
    if tls is not None:
        section["tls"] = tls
    return section


def node_key(cp: ControlPlane, node: str) -> str:
    """Makes a node key with `cordonctl nodes keygen`, registers its public key for `node`, and
    returns the secret seed (for the Envoy's node-key variable)."""
    seed_file = cp.data_dir / f"{node}.seed"
    out = cp.ctl("nodes", "keygen", "--seed-out", str(seed_file), json_out=False).stdout
    public = re.search(r"public key: (\S+)", out).group(1)
    cp.ctl("nodes", "register", "--node", node, "--public-key", public)
    return seed_file.read_text().strip()
