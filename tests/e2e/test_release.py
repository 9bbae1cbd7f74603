"""`scripts/release.sh`: the OCI image layouts a mesh pulls, read back with an independent client
(skopeo), pushed to a real registry (Debian's docker-registry) and pulled back by digest; the
module that comes back is the one Envoy runs; the control-plane image runs as a non-root user."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import KEYS, PROVIDER_SECRET, base_policy, chat
from tests.harness import envoy as E
from tests.harness.control_plane import BIN_DIR, free_port
from tests.harness.envoy import REPO, stop_process

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
EPOCH = "1767225600"  # 2026-01-01T00:00:00Z
MODULE = REPO / "dist" / "cordon.wasm"  # what release.sh --no-build packs


def skopeo(*args: str) -> str:
    r = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"skopeo {' '.join(args)}:\n{r.stderr}"
    return r.stdout


def release(out: Path, bin_dir: Path) -> dict[str, str]:
    env = {**os.environ, "CORDON_RELEASE_OUT": str(out), "CORDON_RELEASE_BIN_DIR": str(bin_dir), "SOURCE_DATE_EPOCH": EPOCH}
    r = subprocess.run(["bash", str(REPO / "scripts" / "release.sh"), "--no-build"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return dict(line.rsplit(" ", 1) for line in (out / "release.txt").read_text().splitlines())


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """Two independent runs of the release script into different directories."""
    a, b = tmp_path_factory.mktemp("release-a"), tmp_path_factory.mktemp("release-b")
    # The tests' binaries are debug builds: without their debug info they pack in seconds.
    bin_dir = tmp_path_factory.mktemp("bin")
    for name in ("cordon-control-plane", "cordonctl"):
        subprocess.run(["strip", "-o", str(bin_dir / name), str(BIN_DIR / name)], check=True, timeout=120)
    return (a, release(a, bin_dir)), (b, release(b, bin_dir))


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_release_runs_give_byte_identical_layouts_and_digests(layouts):
    (a, rel_a), (b, rel_b) = layouts
    assert rel_a == rel_b
    assert rel_a["oci cordon-wasm"].startswith("sha256:") and rel_a["oci cordon-control-plane"].startswith("sha256:")
    for name in ("cordon-wasm", "cordon-control-plane"):
        ta, tb = tree(a / name), tree(b / name)
        assert ta.keys() == tb.keys()
        assert [k for k in ta if ta[k] != tb[k]] == []
        # The independent client sees the same digest the script recorded.
        version = rel_a["version"]
        assert json.loads(skopeo("inspect", f"oci:{a / name}:{version}"))["Digest"] == rel_a[f"oci {name}"]


def layer_files(blob: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as t:
        return {m.name: m for m in t.getmembers()}


def read_layer_file(blob: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as t:
        f = t.extractfile(name)
        assert f is not None
        return f.read()


def test_wasm_image_is_the_compat_variant_with_the_module_as_plugin_wasm(layouts, tmp_path):
    (a, rel), _ = layouts
    ref = f"oci:{a / 'cordon-wasm'}:{rel['version']}"
    manifest = json.loads(skopeo("inspect", "--raw", ref))
    # What Istio's and Envoy Gateway's fetchers require of the "compat" variant.
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
    assert [l["mediaType"] for l in manifest["layers"]] == [OCI_LAYER]
    config = json.loads(skopeo("inspect", "--config", "--raw", ref))
    assert (config["architecture"], config["os"]) == ("wasm", "wasip1")
    # Let skopeo copy it out (it verifies every blob against its digest), then unpack the layer.
    skopeo("copy", ref, f"dir:{tmp_path / 'copy'}")
    layer = (tmp_path / "copy" / manifest["layers"][0]["digest"].split(":", 1)[1]).read_bytes()
    files = layer_files(layer)
    assert list(files) == ["plugin.wasm"]
    member = files["plugin.wasm"]
    assert (member.uid, member.gid, member.uname, member.gname, member.mtime) == (0, 0, "", "", int(EPOCH))
    module = read_layer_file(layer, "plugin.wasm")
    assert module == MODULE.read_bytes()
    assert hashlib.sha256(module).hexdigest() == rel["cordon.wasm"].removeprefix("sha256:")
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()]


@pytest.fixture
def registry(tmp_path):
    """Debian's docker-registry (the CNCF distribution registry) on a free loopback port."""
    binary = shutil.which("docker-registry")
    assert binary, "docker-registry is not installed (scripts/apt-packages.txt)"
    port = free_port()
    cfg = tmp_path / "registry.yml"
    cfg.write_text(json.dumps({"version": 0.1, "log": {"level": "warn"}, "storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}},
                               "http": {"addr": f"127.0.0.1:{port}", "secret": "test-only"}}))
    log = (tmp_path / "registry.log").open("wb")
    proc = subprocess.Popen([binary, "serve", str(cfg)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / "registry.log").read_text())
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)
        log.close()


def test_module_pushed_to_a_registry_comes_back_by_digest_and_serves_traffic(layouts, registry, tmp_path, upstream, jwt_keys):
    (a, rel), _ = layouts
    digest = rel["oci cordon-wasm"]
    skopeo("copy", "--dest-tls-verify=false", f"oci:{a / 'cordon-wasm'}:{rel['version']}", f"docker://{registry}/cordon/wasm:{rel['version']}")
    # The registry serves the same manifest bytes, so the digest a WasmPlugin pins is the layout's.
    raw = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{registry}/cordon/wasm:{rel['version']}"],
                         capture_output=True, timeout=60, check=True).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry}/cordon/wasm@{digest}", f"dir:{tmp_path / 'pulled'}")
    manifest = json.loads((tmp_path / "pulled" / "manifest.json").read_text())
    layer = (tmp_path / "pulled" / manifest["layers"][0]["digest"].split(":", 1)[1]).read_bytes()
    module = tmp_path / "plugin.wasm"
    module.write_bytes(read_layer_file(layer, "plugin.wasm"))

    # Envoy runs the module that came back from the registry, and it enforces the policy.
    flt = E.wasm_filter("cordon.identity", {"policy": base_policy(jwt_keys)}, ["CORDON_TEST_PROVIDER_KEY"], wasm=module)
    env = E.Envoy.start(E.bootstrap([E.listener("main", [flt], "model")], [E.cluster("model", upstream.port)]),
                        env={"CORDON_TEST_PROVIDER_KEY": PROVIDER_SECRET})
    try:
        ok = requests.post(env.url() + "/v1/chat/completions", json=chat(), headers={"authorization": f"Bearer {KEYS['alice']}"}, timeout=10)
        assert ok.status_code == 200, ok.text
        refused = requests.post(env.url() + "/v1/chat/completions", json=chat(), headers={"authorization": "Bearer sk-cordon-unknown"}, timeout=10)
        assert refused.status_code == 401
    finally:
        env.cleanup()


def test_control_plane_image_runs_as_a_non_root_user_and_serves_health(layouts, tmp_path):
    (a, rel), _ = layouts
    ref = f"oci:{a / 'cordon-control-plane'}:{rel['version']}"
    config = json.loads(skopeo("inspect", "--config", "--raw", ref))
    assert config["config"]["User"] == "65532:65532"
    assert config["config"]["Entrypoint"] == ["/usr/local/bin/cordon-control-plane"]
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    skopeo("copy", ref, f"dir:{tmp_path / 'copy'}")
    manifest = json.loads((tmp_path / "copy" / "manifest.json").read_text())
    assert len(manifest["layers"]) == 1
    layer = (tmp_path / "copy" / manifest["layers"][0]["digest"].split(":", 1)[1]).read_bytes()
    files = layer_files(layer)
    assert {"usr/local/bin/cordon-control-plane", "usr/local/bin/cordonctl", "etc/passwd"} <= files.keys()
    # Only the data directory belongs to the service user; nothing it runs is writable by it.
    assert sorted(n for n, m in files.items() if m.uid != 0) == ["var/lib/cordon"]
    assert all(m.mode & 0o022 == 0 for n, m in files.items() if m.isfile())
    assert "cordon:x:65532:65532:" in read_layer_file(layer, "etc/passwd").decode()

    if os.geteuid() != 0:
        pytest.skip("starting the image's binary in a chroot needs root")
    # Run the image's own file system (its libraries, not the host's) as the image's user.
    rootfs = tmp_path / "rootfs"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as t:
        t.extractall(rootfs, numeric_owner=True, filter="fully_trusted")
    port = free_port()
    log = (tmp_path / "cp.log").open("wb")
    proc = subprocess.Popen([shutil.which("chroot") or "/usr/sbin/chroot", f"--userspec={config['config']['User']}", str(rootfs), *config["config"]["Entrypoint"],
                             "--data-dir", "/var/lib/cordon", "--listen", f"127.0.0.1:{port}"],
                            stdout=log, stderr=log, env={"PATH": "/usr/local/bin"})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((tmp_path / "cp.log").read_text())
                time.sleep(0.1)
        assert r.status_code == 200 and r.text == "ok\n"
        # It wrote its store as the service user, into the one directory it owns.
        db = [p for p in (rootfs / "var/lib/cordon").iterdir()]
        assert db and all(p.stat().st_uid == 65532 for p in db)
    finally:
        stop_process(proc)
        log.close()
