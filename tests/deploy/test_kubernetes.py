"""deploy/k8s: each overlay renders with the real Kustomize (``kubectl kustomize``), every object
is valid against the Kubernetes JSON schemas (strict: unknown fields are errors), the Pods keep
their security properties, every reference resolves, and the gateway config that the ConfigMap
carries passes ``mcp-auth-gateway check`` with the files the Pod would mount.

The manifests are rendered from a copy of deploy/k8s whose secrets/ hold inputs generated here
(fresh keys, a users file with a random password), as an operator would create them; the
repository itself holds only ``*.example`` placeholders.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.oauth.users import hash_password
from gateway.session.seal import new_key
from tests.support.kustomize import render
from tests.support.secrets import remember

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.37.0"  # the newest schemas kubernetes-validate bundles
VARIANTS = ["sidecar", "replicated"]
GATEWAY_IMAGE = "mcp-auth-gateway:0.1.0"
GATEWAY_UID = 10001
MONITORED = "monitored"  # a test-only overlay: the sidecar plus components/podmonitor

Obj = dict[str, Any]


# --- rendering -------------------------------------------------------------------------------


def _write_secret_inputs(tree: Path) -> None:
    """What an operator puts in secrets/ (see deploy/README.md), freshly generated."""
    base = tree / "base" / "secrets"
    keys = [remember(new_key()), remember(new_key())]  # newest first: a rotation in progress
    (base / "session-keys").write_text("\n".join(keys) + "\n")
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (base / "signing-key.pem").write_bytes(pem)
    password_hash = hash_password(remember(secrets.token_urlsafe(16)))
    (base / "users.yaml").write_text(
        f'users:\n  alice: {{password_hash: "{password_hash}", claims: {{groups: [editors]}}}}\n'
    )
    replicated = tree / "overlays" / "replicated" / "secrets"
    password = remember(secrets.token_hex(32))
    (replicated / "redis-password").write_text(password)
    (replicated / "redis-url").write_text(f"redis://:{password}@redis:6379/0")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/k8s with generated secret inputs (any real ones of a developer's
    checkout are left behind) and the test-only monitored overlay."""
    copy = tmp_path_factory.mktemp("k8s") / "k8s"

    def only_placeholders(directory: str, names: list[str]) -> list[str]:
        if Path(directory).name != "secrets":
            return []
        return [name for name in names if not name.endswith(".example")]

    shutil.copytree(K8S, copy, ignore=only_placeholders)
    _write_secret_inputs(copy)
    # The sidecar overlay with the PodMonitor component added, as components/podmonitor says.
    monitored = copy / "overlays" / MONITORED
    shutil.copytree(copy / "overlays" / "sidecar", monitored)
    with (monitored / "kustomization.yaml").open("a") as file:
        file.write("\ncomponents:\n  - ../../components/podmonitor\n")
    return copy


@pytest.fixture(scope="module")
def rendered(tree: Path) -> dict[str, list[Obj]]:
    return {name: render(tree / "overlays" / name) for name in [*VARIANTS, MONITORED]}


@pytest.fixture(params=VARIANTS)
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def objects(rendered: dict[str, list[Obj]], variant: str) -> list[Obj]:
    return rendered[variant]


# --- helpers ---------------------------------------------------------------------------------


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def workloads(objects: list[Obj]) -> Iterator[Obj]:
    return (o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet"))


def pod_labels(workload: Obj) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def gateway_deployment(objects: list[Obj]) -> Obj:
    return named(objects, "Deployment", "mcp-gateway")


def container(workload: Obj, name: str) -> Obj:
    found = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    assert len(found) == 1, f"{workload['metadata']['name']} has no container {name}"
    return found[0]


def port_named(cont: Obj, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in cont.get("ports", [])}
    assert name in ports, f"container {cont['name']} has no port named {name}"
    return int(ports[name])


def resolve_port(port: int | str, cont: Obj) -> int:
    return port_named(cont, port) if isinstance(port, str) else port


def arg_after(cont: Obj, flag: str) -> str:
    args = list(cont.get("args", []))
    assert flag in args, f"{cont['name']} has no {flag}"
    return str(args[args.index(flag) + 1])


def object_data(objects: list[Obj], volume: Obj) -> dict[str, str]:
    """The files a configMap or secret volume holds."""
    if "configMap" in volume:
        return dict(named(objects, "ConfigMap", volume["configMap"]["name"])["data"])
    secret = named(objects, "Secret", volume["secret"]["secretName"])
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def gateway_config(objects: list[Obj]) -> tuple[str, dict[str, Any]]:
    """The path the gateway container is started with, and the config at that path."""
    deployment = gateway_deployment(objects)
    gateway = container(deployment, "gateway")
    path = arg_after(gateway, "--config")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    for mount in gateway["volumeMounts"]:
        directory = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(directory) and "configMap" in volumes[mount["name"]]:
            text = object_data(objects, volumes[mount["name"]])[path.removeprefix(directory)]
            return path, yaml.safe_load(text)
    raise AssertionError(f"{path} is not in a ConfigMap mounted in the gateway container")


# --- schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", [*VARIANTS, MONITORED])
def test_every_object_is_valid_against_the_kubernetes_schemas(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    problems = []
    checked = 0
    for obj in rendered[overlay]:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: no schema in Kubernetes itself (test_podmonitor_... checks it)
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            checked += 1
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(p) for p in error.path)
            problems.append(f"{obj['kind']}/{obj['metadata']['name']} {path}: {error.message}")
    assert not problems, "\n".join(problems)
    assert checked >= 7


def test_the_variants_have_the_objects_they_promise(rendered: dict[str, list[Obj]]) -> None:
    def kinds(objects: list[Obj]) -> set[str]:
        return {f"{o['kind']}/{o['metadata']['name']}" for o in objects}

    common = {
        "Namespace/mcp-gateway",
        "ServiceAccount/mcp-gateway",
        "ConfigMap/mcp-gateway-config",
        "Deployment/mcp-gateway",
        "Service/mcp-gateway",
        "NetworkPolicy/mcp-gateway",
    }
    sidecar = kinds(rendered["sidecar"])
    assert common <= sidecar
    assert not any(k.startswith(("StatefulSet/", "HorizontalPodAutoscaler/")) for k in sidecar)
    replicated = kinds(rendered["replicated"])
    only_replicated = {
        "Deployment/mcp-server",
        "Service/mcp-server",
        "NetworkPolicy/mcp-server",
        "StatefulSet/redis",
        "Service/redis",
        "NetworkPolicy/redis",
        "HorizontalPodAutoscaler/mcp-gateway",
        "PodDisruptionBudget/mcp-gateway",
    }
    assert common | only_replicated <= replicated
    for objects in rendered.values():
        assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {
            "mcp-gateway"
        }


# --- Pod security ----------------------------------------------------------------------------


def test_every_pod_and_container_is_locked_down(objects: list[Obj]) -> None:
    found = list(workloads(objects))
    assert found
    for workload in found:
        spec = workload["spec"]["template"]["spec"]
        where = workload["metadata"]["name"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["runAsUser"] > 0, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(flag), where
        assert "initContainers" not in spec, where
        for cont in spec["containers"]:
            at = f"{where}/{cont['name']}"
            context = cont["securityContext"]
            assert context["runAsNonRoot"] is True, at
            assert context["runAsUser"] > 0, at
            assert context["readOnlyRootFilesystem"] is True, at
            assert context["allowPrivilegeEscalation"] is False, at
            assert context.get("privileged", False) is False, at
            assert context["capabilities"] == {"drop": ["ALL"]}, at
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, at
            for kind in ("requests", "limits"):
                assert set(cont["resources"][kind]) >= {"cpu", "memory"}, f"{at} {kind}"
            assert "livenessProbe" in cont, at
            assert ":" in cont["image"], at  # a pinned tag, never an implicit latest
            assert not cont["image"].endswith(":latest"), at


def test_the_gateway_container(objects: list[Obj]) -> None:
    deployment = gateway_deployment(objects)
    spec = deployment["spec"]["template"]["spec"]
    gateway = container(deployment, "gateway")
    assert gateway["image"] == GATEWAY_IMAGE
    assert gateway["args"][0] == "serve"
    assert spec["securityContext"]["runAsUser"] == GATEWAY_UID
    assert gateway["securityContext"]["runAsUser"] == GATEWAY_UID
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert port_named(gateway, "http") == 8080
    # Writable scratch space despite the read-only root: /tmp is an emptyDir.
    volumes = {v["name"]: v for v in spec["volumes"]}
    tmp = [m for m in gateway["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert len(tmp) == 1
    assert "emptyDir" in volumes[tmp[0]["name"]]
    # Config and secrets are read-only; the secret files are readable by the group only.
    for mount in gateway["volumeMounts"]:
        if mount["mountPath"] != "/tmp":
            assert mount.get("readOnly") is True, mount
    secret_volumes = [v for v in spec["volumes"] if "secret" in v]
    assert secret_volumes
    assert all(v["secret"]["defaultMode"] == 0o440 for v in secret_volumes)
    # Prometheus annotations name the metrics port.
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == port_named(gateway, "metrics")


def test_the_service_exposes_the_gateway_port_only(objects: list[Obj]) -> None:
    deployment = gateway_deployment(objects)
    service = named(objects, "Service", "mcp-gateway")
    ports = service["spec"]["ports"]
    assert len(ports) == 1
    gateway = container(deployment, "gateway")
    assert resolve_port(ports[0]["targetPort"], gateway) == port_named(gateway, "http")
    assert service["spec"]["type"] == "ClusterIP"
    assert selects(service["spec"]["selector"], pod_labels(deployment))
    # No other Service reaches the gateway Pods (nor, in the sidecar, the MCP server in them).
    for other in of_kind(objects, "Service"):
        if other is not service:
            assert not selects(other["spec"]["selector"], pod_labels(deployment))


# --- network policies ------------------------------------------------------------------------


def _ports(rule: Obj, cont: Obj | None = None) -> set[int | str]:
    return {resolve_port(p["port"], cont) if cont is not None else p["port"] for p in rule["ports"]}


def test_network_policies(objects: list[Obj], variant: str) -> None:
    policies = of_kind(objects, "NetworkPolicy")
    # Every Pod is selected by a policy that restricts its ingress.
    for workload in workloads(objects):
        assert any(
            "Ingress" in p["spec"]["policyTypes"]
            and selects(p["spec"]["podSelector"]["matchLabels"], pod_labels(workload))
            for p in policies
        ), workload["metadata"]["name"]

    deployment = gateway_deployment(objects)
    gateway = container(deployment, "gateway")
    policy = named(objects, "NetworkPolicy", "mcp-gateway")
    spec = policy["spec"]
    assert selects(spec["podSelector"]["matchLabels"], pod_labels(deployment))
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    # Ingress: the gateway port from anywhere, the metrics port from monitoring only.
    open_rules = [r for r in spec["ingress"] if "from" not in r]
    assert [_ports(r, gateway) for r in open_rules] == [{8080}]
    for rule in spec["ingress"]:
        assert _ports(rule, gateway) <= {8080, port_named(gateway, "metrics")}
    # Egress: DNS, public HTTPS (metadata and private ranges closed), and per variant the rest.
    egress = spec["egress"]
    dns = [r for r in egress if _ports(r) == {53}]
    assert len(dns) == 1
    assert {p["protocol"] for p in dns[0]["ports"]} == {"UDP", "TCP"}
    https = [r for r in egress if _ports(r) == {443}]
    assert len(https) == 1
    block = https[0]["to"][0]["ipBlock"]
    assert block["cidr"] == "0.0.0.0/0"
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(
        block["except"]
    )
    others = [r for r in egress if r not in dns and r not in https]
    if variant == "sidecar":
        assert others == []  # the MCP server is on the Pod's loopback
        return
    targets = {}
    for rule in others:
        (peer,) = rule["to"]
        (port,) = _ports(rule)
        (target,) = [w for w in workloads(objects)
                     if selects(peer["podSelector"]["matchLabels"], pod_labels(w))]  # fmt: skip
        targets[target["metadata"]["name"]] = port
    assert targets == {"mcp-server": 8001, "redis": 6379}
    # The MCP server and Redis admit the gateway Pods only; Redis calls nobody.
    for name, port_name in (("mcp-server", "mcp"), ("redis", "redis")):
        spec = named(objects, "NetworkPolicy", name)["spec"]
        (rule,) = spec["ingress"]
        (peer,) = rule["from"]
        assert set(peer) == {"podSelector"}
        assert selects(peer["podSelector"]["matchLabels"], pod_labels(deployment))
        assert _ports(rule) == {port_name}
    assert named(objects, "NetworkPolicy", "redis")["spec"]["egress"] == []


# --- references ------------------------------------------------------------------------------


def test_every_reference_resolves(objects: list[Obj]) -> None:
    for workload in workloads(objects):
        spec = workload["spec"]["template"]["spec"]
        assert selects(workload["spec"]["selector"]["matchLabels"], pod_labels(workload))
        if "serviceAccountName" in spec:
            named(objects, "ServiceAccount", spec["serviceAccountName"])
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for cont in spec["containers"]:
            for mount in cont.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in claims, mount
                assert "subPath" not in mount  # subPath mounts never see updates
            for env in cont.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in named(objects, "Secret", ref["name"])["data"]
        for volume in volumes.values():
            if "configMap" in volume or "secret" in volume:
                assert object_data(objects, volume)
    for service in of_kind(objects, "Service"):
        backends = [w for w in workloads(objects)
                    if selects(service["spec"]["selector"], pod_labels(w))]  # fmt: skip
        assert len(backends) == 1, service["metadata"]["name"]
        containers = backends[0]["spec"]["template"]["spec"]["containers"]
        named_ports = {p["name"] for c in containers for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in named_ports, (service["metadata"]["name"], port)


def test_the_config_reloads_in_place_and_new_keys_roll_the_pods(objects: list[Obj]) -> None:
    # The ConfigMap keeps its name, so `kubectl apply -k` updates the mounted directory in place
    # and the gateway's polling picks the new policy up; the Secret's name has a content hash,
    # so new keys (read only at start) make a new Pod template and a rollout.
    (config_map,) = of_kind(objects, "ConfigMap")
    assert config_map["metadata"]["name"] == "mcp-gateway-config"
    spec = gateway_deployment(objects)["spec"]["template"]["spec"]
    secret_names = [v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v]
    assert secret_names
    assert all(re.fullmatch(r"mcp-gateway-secrets-[a-z0-9]{10}", n) for n in secret_names)
    _, config = gateway_config(objects)
    assert config["server"]["reload_interval"] > 0


# --- the gateway config ----------------------------------------------------------------------


def test_the_gateway_config_passes_check_with_the_files_the_pod_mounts(
    objects: list[Obj], tmp_path: Path
) -> None:
    """Write each ConfigMap and Secret mounted in the gateway container under tmp_path at its
    mount path, point the config's paths there, and run `mcp-auth-gateway check` on it: any
    path the config names that the Pod does not mount, or a key the Secret lacks, fails."""
    deployment = gateway_deployment(objects)
    gateway = container(deployment, "gateway")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounted = []
    for mount in gateway["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" not in volume and "secret" not in volume:
            continue
        directory = tmp_path / mount["mountPath"].lstrip("/")
        directory.mkdir(parents=True)
        for key, text in object_data(objects, volume).items():
            (directory / key).write_text(text)
        mounted.append(mount["mountPath"].rstrip("/") + "/")
    config_path, _ = gateway_config(objects)
    local = tmp_path / config_path.lstrip("/")
    text = local.read_text()
    for directory in mounted:
        text = text.replace(directory, f"{tmp_path}{directory}")
    local.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GATEWAY_")}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(local)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_config_matches_the_pod(objects: list[Obj], variant: str) -> None:
    deployment = gateway_deployment(objects)
    gateway = container(deployment, "gateway")
    _, config = gateway_config(objects)
    server = config["server"]
    assert server["host"] == "0.0.0.0"
    assert server["port"] == port_named(gateway, "http")
    assert server["metrics_port"] == port_named(gateway, "metrics")
    secrets_dir = next(
        m["mountPath"] for m in gateway["volumeMounts"] if m["name"] == "secrets"
    ).rstrip("/")
    facade = config["auth"]["authorization_server"]
    for path in (
        config["sessions"]["keys_file"],
        facade["signing_key_file"],
        facade["login"]["local"]["users_file"],
    ):
        assert path.startswith(secrets_dir + "/"), path
    (upstream,) = config["upstreams"]
    url = urlsplit(upstream["url"])
    if variant == "sidecar":
        mcp = container(deployment, "mcp-server")
        assert "ports" not in mcp  # nothing but the gateway in the Pod reaches it
        assert arg_after(mcp, "--host") == url.hostname == "127.0.0.1"
        assert int(arg_after(mcp, "--port")) == url.port
        assert deployment["spec"]["replicas"] == 1  # the memory store is per process
        assert config.get("store", {}).get("backend", "memory") == "memory"
    else:
        service = named(objects, "Service", url.hostname or "")
        (port,) = service["spec"]["ports"]
        assert port["port"] == url.port
        assert config["store"]["backend"] == "redis"
        assert config["store"]["url_file"].startswith(secrets_dir + "/")


# --- the replicated variant ------------------------------------------------------------------


def test_the_replicated_gateway_scales_on_shared_state(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["replicated"]
    deployment = gateway_deployment(objects)
    names = [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert names == ["gateway"]
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    hpa = named(objects, "HorizontalPodAutoscaler", "mcp-gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "mcp-gateway",
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    pdb = named(objects, "PodDisruptionBudget", "mcp-gateway")
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(deployment))
    assert pdb["spec"]["maxUnavailable"] == 1
    # Redis: password from a Secret (never in the manifest), append-only file on a volume.
    redis = named(objects, "StatefulSet", "redis")
    (cont,) = redis["spec"]["template"]["spec"]["containers"]
    assert arg_after(cont, "--appendonly") == "yes"
    assert arg_after(cont, "--requirepass") == "$(REDIS_PASSWORD)"
    env = {e["name"]: e for e in cont["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"].startswith("redis-auth-")
    data = next(m for m in cont["volumeMounts"] if m["mountPath"] == arg_after(cont, "--dir"))
    assert data["name"] in {t["metadata"]["name"] for t in redis["spec"]["volumeClaimTemplates"]}
    # The documented Redis URL points at this Service.
    example = (K8S / "overlays/replicated/secrets/redis-url.example").read_text().strip()
    service = named(objects, "Service", "redis")
    assert urlsplit(example).hostname == service["metadata"]["name"]
    assert urlsplit(example).port == service["spec"]["ports"][0]["port"]


def test_the_podmonitor_component_scrapes_the_gateway(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered[MONITORED]
    deployment = gateway_deployment(objects)
    (monitor,) = of_kind(objects, "PodMonitor")
    assert selects(monitor["spec"]["selector"]["matchLabels"], pod_labels(deployment))
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    port_named(container(deployment, "gateway"), endpoint["port"])
    assert endpoint["path"] == "/metrics"


# --- no secrets in the repository ------------------------------------------------------------


def _generator_files(kustomization: Path) -> Iterator[Path]:
    spec = yaml.safe_load(kustomization.read_text())
    for generator in spec.get("secretGenerator", []):
        for entry in generator.get("files", []):
            yield kustomization.parent / entry.split("=", 1)[-1]


def test_secret_inputs_ship_as_placeholders_only() -> None:
    inputs = [f for k in sorted(K8S.rglob("kustomization.yaml")) for f in _generator_files(k)]
    assert len(inputs) == 5
    for path in inputs:
        placeholder = path.with_name(path.name + ".example")
        assert placeholder.is_file(), f"{placeholder} is missing"
        text = placeholder.read_text()
        assert "PLACEHOLDER" in text
        assert "PRIVATE KEY-----" not in text
        assert not re.search(r"(?m)^[A-Za-z0-9_-]{43}$", text)  # a session key's shape
        assert not re.search(r"scrypt\$\d", text)  # a real password hash's shape
    # The real inputs are ignored by git (deploy/k8s/.gitignore); the placeholders are not.
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        return
    for path in inputs:
        for candidate, ignored in ((path, True), (path.with_name(path.name + ".example"), False)):
            check = subprocess.run(
                [git, "check-ignore", "-q", "--no-index", str(candidate.relative_to(ROOT))],
                cwd=ROOT,
                check=False,
            )
            assert check.returncode == (0 if ignored else 1), (candidate, ignored)
