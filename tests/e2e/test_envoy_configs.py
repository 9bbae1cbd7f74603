"""The Envoy configuration we ship for operators must load in the real Envoy with the real module."""

import re
import subprocess

from tests.harness.envoy import ENVOY_BIN, REPO, WASM


def validate(config_text: str, tmp_path) -> subprocess.CompletedProcess:
    cfg = tmp_path / "envoy.yaml"
    cfg.write_text(config_text.replace("/etc/cordon/cordon.wasm", str(WASM)))
    return subprocess.run([str(ENVOY_BIN), "--mode", "validate", "-c", str(cfg), "--use-dynamic-base-id"],
                          capture_output=True, text=True, timeout=120)


def test_sidecar_example_validates_with_the_module(tmp_path):
    r = validate((REPO / "envoy" / "sidecar.yaml").read_text(), tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "loaded static policy" in r.stdout + r.stderr


def test_sidecar_example_with_a_broken_policy_is_rejected(tmp_path):
    text = (REPO / "envoy" / "sidecar.yaml").read_text()
    broken = re.sub(r'"path_prefix": "/v1/"', '"path_prefix": "v1/"', text)
    assert broken != text
    r = validate(broken, tmp_path)
    assert r.returncode != 0
    assert "policy field `routes[0].path_prefix`: must start with '/'" in r.stdout + r.stderr


def test_control_plane_example_validates_with_the_module(tmp_path):
    r = validate((REPO / "envoy" / "sidecar-with-control-plane.yaml").read_text(), tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_policy_stream_without_trusted_keys_is_refused_at_start():
    """Envoy's validate mode does not configure bootstrap services, so this starts the real thing:
    a singleton that could never accept a bundle must not start."""
    import pytest

    from tests.harness import envoy as E
    from tests.harness.control_plane import free_port, policy_stream_extension

    ext = policy_stream_extension("cp", [], E.WASM)
    cfg = E.bootstrap([E.listener("main", [E.wasm_filter("cordon.identity", {})], "cp")], [E.cluster("cp", free_port(), http2=True)],
                      extra={"bootstrap_extensions": [ext]})
    with pytest.raises(RuntimeError) as err:
        E.Envoy.start(cfg).cleanup()
    assert "control_plane.trusted_keys is empty" in str(err.value)


def test_dynamic_module_sidecar_example_validates_with_the_library(tmp_path):
    from tests.harness.envoy import DYNAMIC_MODULE

    text = (REPO / "envoy" / "sidecar-dynamic.yaml").read_text().replace("/etc/cordon/libcordon_dynamic.so", str(DYNAMIC_MODULE))
    r = validate(text, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cordon.identity loaded static policy" in r.stdout + r.stderr
    assert "cordon.redact loaded static policy" in r.stdout + r.stderr
