"""deploy/istio and deploy/envoy-gateway, with no cluster here:

- every manifest validates against the CRD's published OpenAPI schema (tests/data/crds, copied
  from istio/api 1.30.3 and envoyproxy/gateway v1.9.0), strictly: an unknown field is an error,
  as `kubectl apply --validate=strict` makes it;
- the Envoy configuration Istio renders from the resources is rebuilt as a plain bootstrap (the
  filters delivered by ECDS, from a file instead of istiod) and served by the real Envoy: the
  WasmPlugins as Istio renders them hang every request (no `allow_on_headers_stop_iteration`),
  the EnvoyFilter's filters serve them;
- the pieces agree with each other (image, digest placeholder, vm_id, cluster names, egress).
"""

from __future__ import annotations

import copy
import json
import re
import time
from pathlib import Path

import jsonschema
import pytest
import requests
import yaml

from tests.e2e.conftest import KEYS, PROVIDER_SECRET, base_policy, chat
from tests.harness import envoy as E
from tests.harness.envoy import REPO

CRDS = REPO / "tests" / "data" / "crds"
DEPLOY = REPO / "deploy"
DIGEST = "0ea7619ad9c0f9110d9cbbc2f0d9953f18a81cd98dc6c6179c90688cacd2a92a"  # any manifest digest, hex
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
CORE_KINDS = {("v1", "ConfigMap")}  # no CRD: checked by the consistency tests below


def load_schemas() -> dict[tuple[str, str], dict]:
    out = {}
    for f in sorted(CRDS.rglob("*.yaml")):
        crd = yaml.safe_load(f.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            if v.get("served", True):
                out[(f"{group}/{v['name']}", kind)] = v["schema"]["openAPIV3Schema"]
    return out


SCHEMAS = load_schemas()


def strict(schema: dict) -> dict:
    """The schema with unknown fields rejected wherever the API server would prune them."""
    s = copy.deepcopy(schema)
    # Every object has these (the API server's own schema); some CRDs leave them out of theirs.
    for key, typ in (("apiVersion", "string"), ("kind", "string"), ("metadata", "object")):
        s.setdefault("properties", {}).setdefault(key, {"type": typ})

    def walk(node):
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(s)
    return s


def fill(text: str) -> str:
    return text.replace("REPLACE_WITH_WASM_IMAGE_DIGEST", DIGEST)


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(fill(path.read_text())) if d]


MANIFESTS = sorted((DEPLOY / "istio").glob("*.yaml")) + sorted((DEPLOY / "envoy-gateway").glob("*.yaml"))
DOCS = [(p, i, d) for p in MANIFESTS for i, d in enumerate(documents(p))]


def schema_errors(doc: dict) -> list[str]:
    schema = SCHEMAS[(doc["apiVersion"], doc["kind"])]
    v = jsonschema.Draft7Validator(strict(schema))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(doc)]


def test_every_manifest_kind_has_a_published_schema_here():
    assert len(DOCS) >= 12
    missing = {(d["apiVersion"], d["kind"]) for _, _, d in DOCS} - SCHEMAS.keys() - CORE_KINDS
    assert missing == set()


CUSTOM = [(p, i, d) for p, i, d in DOCS if (d["apiVersion"], d["kind"]) not in CORE_KINDS]


@pytest.mark.parametrize("path,index,doc", CUSTOM, ids=[f"{p.parent.name}/{p.name}#{i}:{d['kind']}" for p, i, d in CUSTOM])
def test_manifest_validates_against_its_crd_schema(path, index, doc):
    assert doc["metadata"]["name"] and doc["metadata"]["namespace"]
    assert schema_errors(doc) == []


def wasmplugins() -> list[dict]:
    return documents(DEPLOY / "istio" / "wasmplugins.yaml")


def test_schemas_reject_what_the_api_server_would():
    """The validation is not vacuous: a wrong enum, a missing required field, and the flag
    Cordon needs, which WasmPlugin simply does not have."""
    plugin = wasmplugins()[0]
    bad = copy.deepcopy(plugin)
    bad["spec"]["failStrategy"] = "FAIL_SOMETIMES"
    assert any("FAIL_SOMETIMES" in e for e in schema_errors(bad))
    flag = copy.deepcopy(plugin)
    flag["spec"]["allowOnHeadersStopIteration"] = True
    assert any("allowOnHeadersStopIteration" in e for e in schema_errors(flag))
    tls = next(d for d in documents(DEPLOY / "envoy-gateway" / "control-plane-backend.yaml") if d["kind"] == "BackendTLSPolicy")
    del tls["spec"]["validation"]["hostname"]
    assert any("hostname" in e for e in schema_errors(tls))


# --- The Envoy configuration Istio renders, as a plain bootstrap -------------------------------

def ecds_filter(name: str, directory: Path) -> dict:
    """An HTTP filter whose configuration comes by ECDS, from a file instead of istiod's ADS."""
    return {"name": name, "config_discovery": {"config_source": {"path_config_source": {"path": str(ecds_path(directory, name))}, "resource_api_version": "V3"},
                                               "type_urls": [WASM_TYPE]}}


def write_ecds(directory: Path, configs: list[dict]) -> None:
    """One file per resource (a filesystem ECDS subscription takes exactly one), named after it."""
    for c in configs:
        body = {"version_info": "1", "resources": [{"@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig", **c}]}
        ecds_path(directory, c["name"]).write_text(json.dumps(body))


def ecds_path(directory: Path, name: str) -> Path:
    return directory / f"ecds-{name}.json"


def istio_renders_wasmplugin(doc: dict, module: Path, configuration: dict) -> dict:
    """The ECDS resource Istio (pilot/pkg/model/extensions.go) renders from a WasmPlugin, with the
    module rewritten to the local file the istio-agent pulled, as the agent does."""
    spec = doc["spec"]
    env = {"ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION": "1"}
    if spec.get("imagePullPolicy"):
        env["ISTIO_META_WASM_IMAGE_PULL_POLICY"] = spec["imagePullPolicy"]
    host = [e["name"] for e in spec.get("vmConfig", {}).get("env", []) if e.get("valueFrom") == "HOST"]
    name = f"{doc['metadata']['namespace']}.{doc['metadata']['name']}"
    return {
        "name": name,
        "typed_config": {
            "@type": WASM_TYPE,
            "config": {
                "name": name,
                "root_id": spec["pluginName"],
                "configuration": E.string_config(configuration),
                "failure_policy": spec["failStrategy"],
                "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(module)}},
                              "environment_variables": {"key_values": env, "host_env_keys": host}},
            },
        },
    }


def envoyfilter() -> dict:
    return documents(DEPLOY / "istio" / "cordon-filters.yaml")[0]


def istio_renders_envoyfilter(doc: dict, module: Path, configuration: dict, ecds_dir: Path) -> tuple[list[dict], list[dict]]:
    """(ECDS resources, HTTP filters before the router) from the EnvoyFilter's patches."""
    configs, filters = [], []
    for p in doc["spec"]["configPatches"]:
        value = copy.deepcopy(p["patch"]["value"])
        if p["applyTo"] == "EXTENSION_CONFIG":
            assert p["patch"]["operation"] == "ADD"
            # The istio-agent unwraps the TypedStruct into the Wasm message when it rewrites the
            # module to its local file (pkg/wasm/convert.go).
            ts = value["typed_config"]
            assert ts["@type"] == "type.googleapis.com/udpa.type.v1.TypedStruct" and ts["type_url"] == WASM_TYPE
            value["typed_config"] = {"@type": WASM_TYPE, **ts["value"]}
            cfg = value["typed_config"]["config"]
            remote = cfg["vm_config"]["code"]["remote"]
            assert remote["http_uri"]["uri"].startswith("oci://") and remote["sha256"] == DIGEST
            cfg["vm_config"]["code"] = {"local": {"filename": str(module)}}  # what the agent does
            cfg["configuration"] = E.string_config(configuration)
            configs.append(value)
        elif p["applyTo"] == "HTTP_FILTER":
            assert p["patch"]["operation"] == "INSERT_BEFORE"
            assert p["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == "envoy.filters.http.router"
            filters.append(ecds_filter(value["name"], ecds_dir))
    return configs, filters


def start(filters: list[dict], upstream, tmp_path, idle: str = "3s") -> E.Envoy:
    listener = E.listener("main", filters, "model", stream_idle_timeout=idle)
    # A node as Istio names a sidecar (ECDS needs one).
    node = {"node": {"id": "sidecar~127.0.0.1~app-0.apps~apps.svc.cluster.local", "cluster": "app.apps"}}
    return E.Envoy.start(E.bootstrap([listener], [E.cluster("model", upstream.port)], extra=node), env={"OPENAI_API_KEY": PROVIDER_SECRET, "CORDON_NODE_KEY": ""})


def policy(jwt_keys) -> dict:
    p = base_policy(jwt_keys)
    p["upstreams"] = [{"cluster": "model", "secret_env": "OPENAI_API_KEY"}]
    return {"policy": p}


MODULE = REPO / "dist" / "cordon.wasm"


def test_istio_wasmplugins_as_rendered_hang_every_request(tmp_path, upstream, jwt_keys):
    """What applying wasmplugins.yaml alone would do: Istio renders the filters without
    allow_on_headers_stop_iteration, the role's pause stops the whole stream, and the request
    never reaches the provider (Envoy answers the stream idle timeout instead)."""
    plugins = sorted(wasmplugins(), key=lambda d: (["AUTHN", "AUTHZ", "STATS"].index(d["spec"]["phase"]), -d["spec"]["priority"]))
    assert [d["spec"]["pluginName"] for d in plugins] == ["cordon.identity", "cordon.redact"]
    configs = [istio_renders_wasmplugin(d, MODULE, policy(jwt_keys)) for d in plugins]
    write_ecds(tmp_path, configs)
    env = start([ecds_filter(c["name"], tmp_path) for c in configs], upstream, tmp_path)
    try:
        upstream.clear()
        r = requests.post(env.url() + "/v1/chat/completions", json=chat(), headers={"authorization": f"Bearer {KEYS['alice']}"}, timeout=20)
        # Envoy's stream idle timeout answers, never the provider.
        assert r.status_code in (408, 504) and "timeout" in r.text, r.text
        assert upstream.received == []
    finally:
        env.cleanup()


def test_istio_envoyfilter_filters_serve_requests_with_the_flag(tmp_path, upstream, jwt_keys):
    doc = envoyfilter()
    configs, filters = istio_renders_envoyfilter(doc, MODULE, policy(jwt_keys), tmp_path)
    assert [f["name"] for f in filters] == ["cordon.identity", "cordon.redact"]
    assert all(c["typed_config"]["config"]["allow_on_headers_stop_iteration"] is True for c in configs)
    write_ecds(tmp_path, configs)
    env = start(filters, upstream, tmp_path)
    try:
        upstream.clear()
        r = requests.post(env.url() + "/v1/chat/completions", json=chat(), headers={"authorization": f"Bearer {KEYS['alice']}"}, timeout=20)
        assert r.status_code == 200, r.text
        got = upstream.last().headers
        assert got["x-cordon-user"] == "alice" and got["authorization"] == f"Bearer {PROVIDER_SECRET}"
        denied = requests.post(env.url() + "/v1/chat/completions", json=chat("o1-preview"), headers={"authorization": f"Bearer {KEYS['alice']}"}, timeout=20)
        assert denied.status_code == 403
        assert requests.post(env.url() + "/v1/chat/completions", json=chat(), timeout=20).status_code == 401
    finally:
        env.cleanup()


# --- The pieces agree ---------------------------------------------------------------------------

def test_istio_resources_agree_with_each_other():
    ef = envoyfilter()
    role_cfgs = [p["patch"]["value"]["typed_config"]["value"]["config"] for p in ef["spec"]["configPatches"] if p["applyTo"] == "EXTENSION_CONFIG"]
    # One VM: every role has the same vm_config (same image, digest, env, vm_id).
    assert len({json.dumps(c["vm_config"], sort_keys=True) for c in role_cfgs}) == 1
    vm = role_cfgs[0]["vm_config"]
    # The WasmPlugins name the same image and digest.
    for wp in wasmplugins():
        assert wp["spec"]["url"] == vm["code"]["remote"]["http_uri"]["uri"]
        assert wp["spec"]["sha256"] == vm["code"]["remote"]["sha256"]
        assert wp["spec"]["selector"]["matchLabels"] == ef["spec"]["workloadSelector"]["labels"]
    # The singleton shares the roles' vm_id and talks to the cluster Istio builds for the
    # control plane's ServiceEntry.
    cm = documents(DEPLOY / "istio" / "bootstrap-policy-stream.yaml")[0]
    boot = json.loads(cm["data"]["custom_bootstrap.json"])
    singleton = boot["bootstrap_extensions"][0]["typed_config"]
    assert singleton["singleton"] is True and singleton["config"]["root_id"] == "cordon.policy_stream"
    assert singleton["config"]["vm_config"]["vm_id"] == vm["vm_id"] == "cordon"
    se, dr = documents(DEPLOY / "istio" / "control-plane-mtls.yaml")
    host, port = se["spec"]["hosts"][0], se["spec"]["ports"][0]
    assert port["protocol"] == "GRPC"
    cp_cfg = json.loads(singleton["config"]["configuration"]["value"])["control_plane"]
    assert cp_cfg["cluster"] == f"outbound|{port['number']}||{host}"
    assert cp_cfg["authority"] == host  # Istio's cluster names are no valid :authority
    assert dr["spec"]["host"] == host and dr["spec"]["trafficPolicy"]["tls"]["mode"] == "MUTUAL"
    assert "credentialName" in dr["spec"]["trafficPolicy"]["tls"]  # a Secret, never inline keys
    # The Sidecar lets the governed workloads reach exactly the provider and the control plane.
    sidecar = documents(DEPLOY / "istio" / "sidecar.yaml")[0]
    assert sidecar["spec"]["outboundTrafficPolicy"]["mode"] == "REGISTRY_ONLY"
    hosts = {h for e in sidecar["spec"]["egress"] for h in e["hosts"]}
    provider = documents(DEPLOY / "istio" / "provider-egress.yaml")[0]["spec"]["hosts"][0]
    assert hosts == {f"./{provider}", f"./{host}", "istio-system/*"}
    # The filters run on the provider's plain-HTTP port, where the sidecar originates TLS.
    ports = {p["match"]["listener"]["portNumber"] for p in ef["spec"]["configPatches"] if p["applyTo"] == "HTTP_FILTER"}
    assert ports == {80} and {m["ports"][0]["number"] for wp in wasmplugins() for m in wp["spec"]["match"]} == {80}


def test_envoy_gateway_resources_agree_with_each_other():
    eep = documents(DEPLOY / "envoy-gateway" / "envoyextensionpolicy.yaml")[0]
    assert [w["rootID"] for w in eep["spec"]["wasm"]] == ["cordon.identity", "cordon.redact"]
    assert all(w["failOpen"] is False and w["code"]["image"]["sha256"] == DIGEST for w in eep["spec"]["wasm"])
    epp = documents(DEPLOY / "envoy-gateway" / "envoypatchpolicy.yaml")[0]
    assert epp["spec"]["targetRef"] == eep["spec"]["targetRefs"][0]
    ops = {p["operation"]["path"]: p["operation"]["value"] for p in epp["spec"]["jsonPatches"]}
    assert ops == {"/allow_on_headers_stop_iteration": True, "/vm_id": "cordon"}
    backend, tls = documents(DEPLOY / "envoy-gateway" / "control-plane-backend.yaml")
    assert tls["spec"]["targetRefs"][0]["name"] == backend["metadata"]["name"]


# --- The Envoy configuration Envoy Gateway renders, as a plain bootstrap -------------------------

JSONPATH = re.compile(r"^\.\.http_filters\[\?\(@\.name =~ '([^']+)'\)\]((?:\.[a-z_]+)+)$")


def eg_renders_wasm(eep: dict, module: Path, configuration: dict) -> list[dict]:
    """The HTTP filters Envoy Gateway v1.9 (internal/xds/translator/wasm.go) renders for an
    EnvoyExtensionPolicy, the module served to Envoy replaced by the local file."""
    ns, name = eep["metadata"]["namespace"], eep["metadata"]["name"]
    filters = []
    for i, w in enumerate(eep["spec"]["wasm"]):
        ir_name = f"envoyextensionpolicy/{ns}/{name}/wasm/{i}"
        filters.append({"name": f"envoy.filters.http.wasm/{ir_name}", "typed_config": {"@type": WASM_TYPE, "config": {
            "name": w["name"], "root_id": w["rootID"], "fail_open": w["failOpen"], "configuration": E.string_config(configuration),
            "vm_config": {"vm_id": ir_name, "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(module)}},
                          "environment_variables": {"host_env_keys": w["env"]["hostKeys"]}}}}})
    return filters


def apply_eg_patch(filters: list[dict], epp: dict) -> int:
    """Applies the EnvoyPatchPolicy's operations to the HTTP filters, for the one JSONPath shape
    it uses (Envoy Gateway's dialect: `=~` is a regular-expression search). Returns how many
    places were patched."""
    patched = 0
    for p in epp["spec"]["jsonPatches"]:
        op = p["operation"]
        m = JSONPATH.match(op["jsonPath"])
        assert m, op["jsonPath"]
        for f in filters:
            if not re.search(m.group(1), f["name"]):
                continue
            node = f
            for key in m.group(2).strip(".").split("."):
                node = node[key]
            key = op["path"].lstrip("/")
            assert (key in node) == (op["op"] == "replace")
            node[key] = op["value"]
            patched += 1
    return patched


def test_envoy_gateway_filters_with_the_patch_serve_requests_in_one_vm(tmp_path, upstream, jwt_keys):
    eep = documents(DEPLOY / "envoy-gateway" / "envoyextensionpolicy.yaml")[0]
    epp = documents(DEPLOY / "envoy-gateway" / "envoypatchpolicy.yaml")[0]
    filters = eg_renders_wasm(eep, MODULE, policy(jwt_keys))
    # As rendered: two VMs (a vm_id per filter) and no flag.
    assert len({f["typed_config"]["config"]["vm_config"]["vm_id"] for f in filters}) == 2
    assert apply_eg_patch(filters, epp) == 4  # both operations matched both filters
    cfgs = [f["typed_config"]["config"] for f in filters]
    assert {c["vm_config"]["vm_id"] for c in cfgs} == {"cordon"} and all(c["allow_on_headers_stop_iteration"] for c in cfgs)
    env = start(filters, upstream, tmp_path)
    try:
        upstream.clear()
        r = requests.post(env.url() + "/v1/chat/completions", json=chat(), headers={"authorization": f"Bearer {KEYS['alice']}"}, timeout=20)
        assert r.status_code == 200, r.text
        assert upstream.last().headers["x-cordon-user"] == "alice"
        shared = active_vms(env)
    finally:
        env.cleanup()
    # Without the vm_id operation each role gets its own VMs (twice as many), so the roles could
    # not share the singleton's policy or one audit record per request.
    only_flag = {**epp, "spec": {**epp["spec"], "jsonPatches": epp["spec"]["jsonPatches"][:1]}}
    split = eg_renders_wasm(eep, MODULE, policy(jwt_keys))
    apply_eg_patch(split, only_flag)
    env = start(split, upstream, tmp_path)
    try:
        assert active_vms(env) == 2 * shared
    finally:
        env.cleanup()


def active_vms(env: E.Envoy) -> int:
    for line in env.admin_get("/stats").splitlines():
        if line.startswith("wasm.envoy.wasm.runtime.v8.active: "):
            return int(line.rsplit(" ", 1)[1])
    raise AssertionError("no wasm VM gauge")


# --- The Istio pieces together: singleton bootstrap + EnvoyFilter roles + mTLS to the control plane

ISTIO_POLICY = """
routes:
  - name: openai
    path_prefix: /v1/
    accept: [[api_key]]
models:
  - match: {team: research}
    allow: ["gpt-4o-mini"]
upstreams:
  - cluster: model
    secret_env: OPENAI_API_KEY
"""


def serve_through_the_singleton(tmp_path, upstream, build) -> None:
    """A real control plane over mTLS (test CA); `build(cp, pki, node, tmp_path)` returns the
    singleton extension, the clusters and HTTP filters of a bootstrap. A policy and a key made
    with cordonctl must reach the roles through the singleton and serve a request."""
    from tests.harness import identity as I
    from tests.harness.control_plane import ControlPlane, node_key

    pki = I.make_pki(tmp_path / "pki")
    ctl_cert, ctl_key = pki.client("cordonctl", None)
    cp = ControlPlane(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca,
                      ctl_ca_cert=pki.ca, ctl_client_cert=ctl_cert, ctl_client_key=ctl_key).start()
    env = None
    try:
        node = "sidecar~127.0.0.1~app-0.apps~apps.svc.cluster.local"
        seed = node_key(cp, node)
        ext, clusters, filters = build(cp, pki, tmp_path)
        cfg = E.bootstrap([E.listener("main", filters, "model")], [E.cluster("model", upstream.port), *clusters],
                          extra={"bootstrap_extensions": [ext], "node": {"id": node, "cluster": "app.apps"}})
        env = E.Envoy.start(cfg, env={"OPENAI_API_KEY": PROVIDER_SECRET, "CORDON_NODE_KEY": seed})
        cp.apply(ISTIO_POLICY)
        key = cp.ctl("keys", "create", "--id", "k-mesh", "--user", "ivy", "--team", "research")
        version = key["version"]["version"]
        cp.wait_node(node, lambda n: n["state"] == "SYNCED" and n["acked_version"] == version, timeout=20)
        deadline = time.monotonic() + 15
        while True:
            r = requests.post(env.url() + "/v1/chat/completions", json=chat(), headers={"authorization": f"Bearer {key['plaintext']}"}, timeout=10)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        assert upstream.last().headers["x-cordon-user"] == "ivy"
    except BaseException:
        if env is not None:
            print(f"\n===== envoy log =====\n{env.log()[-6000:]}")
        print(f"\n===== control plane log =====\n{cp.log()[-3000:]}")
        raise
    finally:
        if env is not None:
            env.cleanup()
        cp.stop()


def local_singleton(ext: dict, trusted_key: dict) -> dict:
    """The shipped singleton with the module as a local file and the control plane's real key."""
    sconf = ext["typed_config"]["config"]
    sconf["vm_config"]["code"] = {"local": {"filename": str(MODULE)}}
    stream_cfg = json.loads(sconf["configuration"]["value"])
    stream_cfg["control_plane"]["trusted_keys"] = [trusted_key]
    sconf["configuration"]["value"] = json.dumps(stream_cfg)
    return ext


def test_istio_singleton_bootstrap_feeds_the_envoyfilter_roles_over_mtls(tmp_path, upstream):
    """bootstrap-policy-stream.yaml's singleton, the EnvoyFilter's two roles (no policy of their
    own) and the cluster Istio builds from control-plane-mtls.yaml (DestinationRule MUTUAL)."""
    from tests.harness.control_plane import control_plane_tls_socket

    def build(cp, pki, tmp):
        cm = documents(DEPLOY / "istio" / "bootstrap-policy-stream.yaml")[0]
        ext = local_singleton(json.loads(cm["data"]["custom_bootstrap.json"])["bootstrap_extensions"][0], cp.trusted_key)
        # The cluster Istio builds for the ServiceEntry + DestinationRule (GRPC port: HTTP/2;
        # MUTUAL: the node's client certificate), under the name the singleton uses.
        _, dr = documents(DEPLOY / "istio" / "control-plane-mtls.yaml")
        assert dr["spec"]["trafficPolicy"]["tls"]["mode"] == "MUTUAL"
        name = json.loads(ext["typed_config"]["config"]["configuration"]["value"])["control_plane"]["cluster"]
        cluster = E.cluster(name, cp.port, http2=True)
        cert, key = pki.client("node", None)
        cluster["transport_socket"] = control_plane_tls_socket(pki.ca, cert, key, sni="localhost")
        # The roles, from the EnvoyFilter as shipped (configuration "{}": policy from the stream).
        configs, filters = istio_renders_envoyfilter(envoyfilter(), MODULE, {}, tmp)  # "{}", as shipped
        write_ecds(tmp, configs)
        return ext, [cluster], filters

    serve_through_the_singleton(tmp_path, upstream, build)


def test_envoy_gateway_singleton_bootstrap_feeds_the_patched_roles_over_mtls(tmp_path, upstream):
    """envoyproxy.yaml's bootstrap merge (singleton + its mTLS cluster) with the roles Envoy
    Gateway renders from envoyextensionpolicy.yaml, patched by envoypatchpolicy.yaml."""
    ep = documents(DEPLOY / "envoy-gateway" / "envoyproxy.yaml")[0]
    merge = yaml.safe_load(ep["spec"]["bootstrap"]["value"])
    eep = documents(DEPLOY / "envoy-gateway" / "envoyextensionpolicy.yaml")[0]
    epp = documents(DEPLOY / "envoy-gateway" / "envoypatchpolicy.yaml")[0]

    def build(cp, pki, tmp):
        ext = local_singleton(merge["bootstrap_extensions"][0], cp.trusted_key)
        name = json.loads(ext["typed_config"]["config"]["configuration"]["value"])["control_plane"]["cluster"]
        cluster = next(c for c in merge["static_resources"]["clusters"] if c["name"] == name)
        # Its address and the files mounted from the Secret, here the test's.
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"].update(address="127.0.0.1", port_value=cp.port)
        cluster["type"] = "STATIC"
        tls = cluster["transport_socket"]["typed_config"]
        tls["sni"] = "localhost"
        cert, key = pki.client("node", None)
        ctx = tls["common_tls_context"]
        ctx["tls_certificates"] = [{"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}]
        ctx["validation_context"]["trusted_ca"] = {"filename": str(pki.ca)}
        ctx["validation_context"]["match_typed_subject_alt_names"][0]["matcher"]["exact"] = "localhost"
        filters = eg_renders_wasm(eep, MODULE, eep["spec"]["wasm"][0]["config"])  # "{}": policy from the stream
        assert apply_eg_patch(filters, epp) == 4
        assert {f["typed_config"]["config"]["vm_config"]["vm_id"] for f in filters} == {ext["typed_config"]["config"]["vm_config"]["vm_id"]}
        return ext, [cluster], filters

    serve_through_the_singleton(tmp_path, upstream, build)
