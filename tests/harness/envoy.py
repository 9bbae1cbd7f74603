"""Runs the real Envoy binary with the real Cordon wasm module on loopback.

Every port is bound by Envoy itself (port 0) and read back from its admin API, so tests run in
parallel without port clashes. Envoy's log is kept in a file and printed when a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
WASM = Path(os.environ.get("CORDON_WASM", REPO / "dist" / "cordon.wasm"))
# The same module with test-only fault injection (`--features test-faults`, see
# filters/wasm/src/faults.rs): a request header traps the VM; a marked policy fails to publish.
FAULTS_WASM = REPO / "dist" / "cordon-test-faults.wasm"
ENVOY_BIN = Path(os.environ.get("CORDON_ENVOY", REPO / ".venv" / "bin" / "envoy"))
# The native build of the same filter, an Envoy dynamic module (scripts/build-dynamic.sh).
DYNAMIC_MODULE = Path(os.environ.get("CORDON_DYNAMIC_MODULE", REPO / "dist" / "libcordon_dynamic.so"))
# The native module with test-only fault injection (scripts/build-dynamic.sh --test-faults): a
# request header makes a hook panic; a marked policy fails to publish.
FAULTS_DYNAMIC_MODULE = REPO / "dist" / "test-faults" / "libcordon_dynamic.so"
# The module's name in Envoy's config: Envoy loads lib<name>.so from ENVOY_DYNAMIC_MODULES_SEARCH_PATH.
DYNAMIC_MODULE_NAME = "cordon_dynamic"
# What the module's counters are prefixed with (dynamic_module_config.metrics_namespace).
DYNAMIC_METRICS_NAMESPACE = "cordon"


def stop_process(proc: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL after 10 s: every process a test starts is gone when it ends."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read_log(path: Path, missing: str = "") -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return missing


def vm_config(wasm: Path = WASM, env_keys: list[str] | None = None) -> dict:
    """The one VM every Cordon role shares: HTTP roles and the policy-stream singleton must name
    the same vm_id to see the same shared data."""
    return {
        "vm_id": "cordon",
        "runtime": "envoy.wasm.runtime.v8",
        "code": {"local": {"filename": str(wasm)}},
        "environment_variables": {"host_env_keys": env_keys or []},
    }


def string_config(configuration: dict | None) -> dict:
    """A plugin configuration as the StringValue the module parses as JSON."""
    return {
        "@type": "type.googleapis.com/google.protobuf.StringValue",
        "value": json.dumps(configuration) if configuration is not None else "",
    }


def wasm_filter(root_id: str, configuration: dict | None, env_keys: list[str] | None = None, wasm: Path = WASM) -> dict:
    """An HTTP filter entry running one Cordon role from the module."""
    return {
        "name": root_id,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": root_id,
                "root_id": root_id,
                # A trapped VM is recreated (the request that hit the trap is refused), as in
                # every shipped config; never fail open.
                "failure_policy": "FAIL_RELOAD",
                "reload_config": {"backoff": {"base_interval": "0.2s", "max_interval": "1s"}},
                # Lets the filter hold the request headers while it reads the body for the model
                # (Envoy >= 1.35); without it a paused header phase never sees the body.
                "allow_on_headers_stop_iteration": True,
                "vm_config": vm_config(wasm, env_keys),
                "configuration": string_config(configuration),
            },
        },
    }


def dynamic_filter(filter_name: str, configuration: dict | None) -> dict:
    """An HTTP filter entry running one Cordon role from the native dynamic module; the
    configuration is the same JSON the wasm plugin takes. Envoy finds the library through
    ENVOY_DYNAMIC_MODULES_SEARCH_PATH (see `dynamic_module_env`)."""
    return {
        "name": filter_name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": DYNAMIC_MODULE_NAME, "metrics_namespace": DYNAMIC_METRICS_NAMESPACE},
            "filter_name": filter_name,
            "filter_config": string_config(configuration),
        },
    }


def dynamic_module_env(module: Path = DYNAMIC_MODULE) -> dict[str, str]:
    """The environment Envoy needs to find the module (`lib<name>.so` in the search path)."""
    if not module.exists():
        raise RuntimeError(f"{module} is missing: build it with scripts/build-dynamic.sh")
    if module.name != f"lib{DYNAMIC_MODULE_NAME}.so":
        raise RuntimeError(f"{module} must be named lib{DYNAMIC_MODULE_NAME}.so")
    return {"ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(module.parent)}


def router() -> dict:
    return {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def cluster(name: str, port: int, http2: bool = False, host: str = "127.0.0.1") -> dict:
    c: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}],
        },
    }
    if http2:
        c["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return c


def listener(name: str, filters: list[dict], cluster_name: str, tls: dict | None = None, stream_idle_timeout: str = "30s") -> dict:
    hcm = {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": name,
            "stream_idle_timeout": stream_idle_timeout,
            "route_config": {
                "name": "local",
                "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster_name, "timeout": "60s"}}]}],
            },
            "http_filters": filters + [router()],
        },
    }
    chain: dict[str, Any] = {"filters": [hcm]}
    if tls:
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", **tls},
        }
    return {"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}, "filter_chains": [chain]}


def bootstrap(listeners: list[dict], clusters: list[dict], extra: dict | None = None) -> dict:
    b = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
    b.update(extra or {})
    return b


@dataclass
class Envoy:
    """A running Envoy. Use `Envoy.start(...)` and `stop()` (or a `with` block)."""

    config: dict
    env: dict[str, str] = field(default_factory=dict)
    concurrency: int = 1
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cordon-envoy-")))
    proc: subprocess.Popen | None = None
    admin_port: int = 0
    ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def start(cls, config: dict, env: dict[str, str] | None = None, concurrency: int = 1, timeout: float = 30.0) -> "Envoy":
        e = cls(config=config, env=env or {}, concurrency=concurrency)
        e._launch(timeout)
        return e

    @property
    def log_path(self) -> Path:
        return self.workdir / "envoy.log"

    def command_prefix(self) -> list[str]:
        """What runs Envoy (e.g. `taskset` in benchmarks); nothing by default."""
        return []

    def log_args(self) -> list[str]:
        """Wasm and dynamic-module logs at debug: tests print them when they fail."""
        return ["--log-level", "warning", "--component-log-level", "wasm:debug,dynamic_modules:debug"]

    def _launch(self, timeout: float) -> None:
        if not WASM.exists():
            raise RuntimeError(f"{WASM} is missing: build it with scripts/build-wasm.sh")
        cfg = self.workdir / "envoy.json"
        cfg.write_text(json.dumps(self.config, indent=1))
        admin_file = self.workdir / "admin.txt"
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        env.update(self.env)
        self.proc = subprocess.Popen(
            [*self.command_prefix(), str(ENVOY_BIN), "-c", str(cfg), "--concurrency", str(self.concurrency), "--use-dynamic-base-id",
             "--admin-address-path", str(admin_file), *self.log_args(), "--disable-hot-restart"],
            # stderr, not --log-path: the file sink flushes lazily and a failing test would
            # print a log that stops before the interesting part.
            stdout=subprocess.DEVNULL, stderr=self.log_path.open("wb"), env=env, cwd=self.workdir,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.proc.returncode}:\n{self.log()}")
            if admin_file.exists() and admin_file.read_text().strip():
                self.admin_port = int(admin_file.read_text().strip().rsplit(":", 1)[1])
                try:
                    if self.admin_get("/ready").strip() == "LIVE":
                        self._read_ports()
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"envoy not ready after {timeout}s:\n{self.log()}")

    def _read_ports(self) -> None:
        listeners = json.loads(self.admin_get("/listeners?format=json"))
        for l in listeners.get("listener_statuses", []):
            self.ports[l["name"]] = int(l["local_address"]["socket_address"]["port_value"])

    def admin_get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as r:
            return r.read().decode()

    def url(self, listener: str = "main") -> str:
        return f"http://127.0.0.1:{self.ports[listener]}"

    def port(self, listener: str = "main") -> int:
        return self.ports[listener]

    def stat(self, name: str) -> int | None:
        """A counter from /stats/prometheus by its exact metric name (labels ignored). The
        dynamic module's counters carry Envoy's `envoy_` prefix before their namespace
        (`cordon_decision_allowed` is `envoy_cordon_decision_allowed` there)."""
        found: dict[str, int] = {}
        for line in self.admin_get("/stats/prometheus").splitlines():
            if line.startswith("#"):
                continue
            metric, _, value = line.rpartition(" ")
            found.setdefault(metric.split("{", 1)[0], int(float(value)))
        return found.get(name, found.get(f"envoy_{name}"))

    def log(self) -> str:
        return read_log(self.log_path, "(no envoy log)")

    def stop(self) -> None:
        stop_process(self.proc)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Envoy":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()
