"""The Dockerfile and docker-compose.yml, checked without a Docker engine.

- The Dockerfile passes hadolint, and its stages keep their promises: a pinned base, every
  install step a call of deploy/docker/install.sh, a final stage with no build tools that runs
  as a numeric non-root user with a health check and the gateway as entrypoint.
- The build itself: the context is made through .dockerignore, and the builder stages' COPY and
  RUN lines, read from the Dockerfile, run here into a temporary root (the venvs at
  <root>/opt/...). What they install is what the image would hold.
- docker-compose.yml validates against the Compose Specification's JSON schema (the copy
  vendored in check-jsonschema), keeps every service hardened, and agrees with the configs,
  dex, nginx and the secrets it mounts.
- Each gateway service's command (ENTRYPOINT + CMD, or its own), with the venv built above and
  its mounted config, starts and answers /healthz on loopback; the replicas share state through
  a real Redis that runs with the compose stack's ACL.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import redis
import yaml

from gateway.oauth.users import LocalUsers
from tests.support.processes import LOOPBACK, ManagedProcess, free_port
from tests.support.redis import ensure_redis_server
from tests.support.secrets import remember

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_DIR = ROOT / "deploy" / "compose"
INSTALL_SCRIPT = "deploy/docker/install.sh"
DEV_BIN = Path(sys.executable).parent  # the dev venv: hadolint, check-jsonschema
CONFIG_PATH = "/etc/mcp-gateway/gateway.yaml"
SECRETS_MOUNT = "/run/secrets"
GATEWAY_IMAGE = "mcp-auth-gateway"
SECRET_REF = re.compile(r"\$\{SECRETS_DIR:-/run/secrets\}/([A-Za-z0-9._-]+)")
PINNED_TAG = re.compile(r"^[a-z0-9./-]+:v?\d+\.\d+\.\d+(-[a-z0-9.]+)?$")
BUILD_TOOLS = ("gcc", "cc ", "make", "apt-get", "pip ", "uv ", "build-essential", "curl", "wget")

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]


# --- the Dockerfile, parsed ----------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    flags: dict[str, str]
    args: str
    line: int

    def exec_form(self) -> list[str]:
        """JSON (exec) form arguments; fails on the shell form."""
        value = json.loads(self.args)
        assert isinstance(value, list), f"line {self.line}: {self.keyword} is not in exec form"
        return [str(item) for item in value]


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def _split_flags(args: str) -> tuple[dict[str, str], str]:
    flags: dict[str, str] = {}
    while args.startswith("--"):
        token, _, args = args.partition(" ")
        name, _, value = token[2:].partition("=")
        flags[name] = value
        args = args.lstrip()
    return flags, args


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages): enough of the Dockerfile grammar for this Dockerfile."""
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped, as Docker does
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append((start, pending + stripped))
        pending = ""
    assert not pending, "the Dockerfile ends inside a line continuation"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in logical:
        keyword, _, rest = line.partition(" ")
        flags, args = _split_flags(rest.strip())
        instruction = Instruction(keyword.upper(), flags, " ".join(args.split()), number)
        if instruction.keyword == "FROM":
            base, _, name = instruction.args.partition(" AS ")
            stages.append(Stage(name.strip() or str(len(stages)), base.strip()))
        elif not stages and instruction.keyword == "ARG":
            name, _, default = instruction.args.partition("=")
            global_args[name] = default
        else:
            assert stages, f"line {number}: {keyword} before the first FROM"
            stages[-1].instructions.append(instruction)
    return global_args, stages


GLOBAL_ARGS, STAGES = parse_dockerfile(DOCKERFILE.read_text())
BY_NAME = {stage.name: stage for stage in STAGES}
FINAL = STAGES[-1]


def ancestry(stage: Stage) -> list[Stage]:
    """The stage and the stages it is built FROM, base first."""
    chain = [stage]
    while chain[0].base in BY_NAME:
        chain.insert(0, BY_NAME[chain[0].base])
    return chain


def stage_env(stage: Stage) -> dict[str, str]:
    """ENV key=value pairs in effect at the end of `stage` (values unexpanded)."""
    env: dict[str, str] = {}
    for member in ancestry(stage):
        for instruction in member.all("ENV"):
            for pair in shlex.split(instruction.args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def builder_stages() -> list[Stage]:
    """Stages the runtime images COPY from, with their ancestors, in Dockerfile order."""
    needed: set[str] = set()
    for stage in STAGES:
        for copy in stage.all("COPY"):
            if "from" in copy.flags:
                needed.update(s.name for s in ancestry(BY_NAME[copy.flags["from"]]))
    return [stage for stage in STAGES if stage.name in needed]


def runtime_stages() -> list[Stage]:
    return [stage for stage in STAGES if stage.last("ENTRYPOINT") is not None]


# --- .dockerignore -------------------------------------------------------------------------


def _pattern(text: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(text):
        if text.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif text.startswith("**", i):
            out, i = out + ".*", i + 2
        elif text[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif text[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(text[i]), i + 1
    return re.compile(out)


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes, pattern) in file order; the last rule matching a path or a parent wins."""
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((not negated, _pattern(line.lstrip("!").strip("/"))))
    return rules


def in_context(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = relative.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for excludes, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            excluded = excludes
    return not excluded


def build_context(target: Path) -> list[str]:
    """Copy the files Docker would send as the build context into `target`."""
    rules = dockerignore_rules()
    sent = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        base = Path(dirpath).relative_to(ROOT)
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            relative = (base / name).as_posix()
            if in_context(relative, rules):
                destination = target / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / relative, destination)
                sent.append(relative)
    return sent


# --- the build, replayed ---------------------------------------------------------------------


@dataclass(frozen=True)
class Build:
    root: Path  # stands for the image's /
    context: Path

    def host(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")

    @property
    def venv(self) -> Path:
        return self.host("/opt/venv")

    @property
    def demo(self) -> Path:
        return self.host("/opt/demo")


def _map_paths(value: str, build: Build) -> str:
    """`/opt/...` elements of a PATH-like value, to the stand-in root."""
    return ":".join(
        str(build.host(part)) if part.startswith("/opt/") else part for part in value.split(":")
    )


def _expand(value: str, env: Mapping[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m[1] or m[2], ""), value)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    if "UV_CACHE_DIR" in os.environ:
        env["UV_CACHE_DIR"] = os.environ["UV_CACHE_DIR"]
    # `python3` is the interpreter the venvs are built on, as the base image's is in the image.
    env["PATH"] = os.pathsep.join([str(Path(sys.base_prefix) / "bin"), env.get("PATH", "")])
    return env


def replay_builders(build: Build) -> None:
    """Run the builder stages' WORKDIR, ENV, COPY and RUN lines, in Dockerfile order."""
    base_env = _clean_env()
    for stage in builder_stages():
        env = dict(base_env)
        workdir = "/"
        for member in ancestry(stage):
            for instruction in member.instructions:
                if member is not stage and instruction.keyword in ("COPY", "RUN"):
                    continue  # done when that stage was replayed
                if instruction.keyword == "WORKDIR":
                    workdir = instruction.args
                    build.host(workdir).mkdir(parents=True, exist_ok=True)
                elif instruction.keyword == "ENV":
                    for pair in shlex.split(instruction.args):
                        key, _, value = pair.partition("=")
                        env[key] = _expand(_map_paths(value, build), env)
                elif instruction.keyword == "COPY":
                    *sources, destination = shlex.split(instruction.args)
                    target = build.host(workdir) / destination
                    for source in sources:
                        origin = build.context / source.rstrip("/")
                        if origin.is_dir():
                            shutil.copytree(origin, target, dirs_exist_ok=True)
                        else:
                            target.mkdir(parents=True, exist_ok=True)
                            shutil.copy2(origin, target / origin.name)
                elif instruction.keyword == "RUN":
                    argv = shlex.split(instruction.args)
                    argv = [str(build.host(a)) if a.startswith("/opt/") else a for a in argv]
                    subprocess.run(argv, cwd=build.host(workdir), env=env, check=True)


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """The image's venvs, built by the Dockerfile's own steps (about 20 s with a warm cache)."""
    top = tmp_path_factory.mktemp("image")
    result = Build(root=top / "root", context=top / "context")
    result.root.mkdir()
    build_context(result.context)
    replay_builders(result)
    return result


@pytest.fixture(scope="session")
def secrets_dir(build: Build, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/compose/secrets as init_secrets.py writes it, run on the image's Python."""
    directory = tmp_path_factory.mktemp("compose") / "secrets"
    result = subprocess.run(
        [build.venv / "bin" / "python", COMPOSE_DIR / "init_secrets.py", directory],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path_factory.getbasetemp(),
    )
    for line in result.stdout.splitlines():
        if line.startswith("  ") and len(line.split()) == 2:
            remember(line.split()[1])  # the demo users' passwords
    remember((directory / "session-keys").read_text().strip())
    return directory


# --- compose, loaded -----------------------------------------------------------------------


COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def is_gateway(service: Mapping[str, Any]) -> bool:
    return str(service.get("image", "")).startswith(GATEWAY_IMAGE + ":")


GATEWAYS = sorted(name for name, service in SERVICES.items() if is_gateway(service))


def bind_mounts(service: Mapping[str, Any]) -> dict[str, tuple[Path, bool]]:
    """Container path -> (host path, read-only) for the service's bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *options = volume.split(":")
        if source.startswith("./"):
            mounts[target] = (ROOT / source, "ro" in options)
    return mounts


def gateway_config(service: Mapping[str, Any]) -> Path:
    return bind_mounts(service)[CONFIG_PATH][0]


def published(service: Mapping[str, Any]) -> dict[int, str]:
    """Container port -> host address:port."""
    ports = {}
    for entry in service.get("ports", []):
        address, host_port, container_port = entry.split(":")
        ports[int(container_port)] = f"{address}:{host_port}"
    return ports


# --- Dockerfile ------------------------------------------------------------------------------


def test_hadolint_passes_and_would_catch_a_bad_line() -> None:
    hadolint = [str(DEV_BIN / "hadolint"), "--no-color", "--failure-threshold", "style"]
    result = subprocess.run([*hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = "FROM python:3.11-slim\nRUN apt-get install -y curl\n"
    result = subprocess.run([*hadolint, "-"], input=bad, capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3008" in result.stdout


def test_base_image_is_pinned_to_an_exact_python_311_tag() -> None:
    image = GLOBAL_ARGS["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", image), image
    for stage in STAGES:
        assert stage.base in BY_NAME or stage.base == "${PYTHON_IMAGE}", stage.base


def test_every_build_step_is_a_call_of_the_install_script() -> None:
    for stage in builder_stages():
        for run in stage.all("RUN"):
            argv = shlex.split(run.args)
            assert argv[:2] == ["sh", INSTALL_SCRIPT], f"line {run.line}: {run.args}"
    steps = [shlex.split(r.args)[2] for s in builder_stages() for r in s.all("RUN")]
    assert sorted(steps) == ["demo", "dependencies", "gateway", "uv"]


def test_uv_is_the_version_dev_uses() -> None:
    dev = re.search(r'^UV_VERSION = "([^"]+)"', (ROOT / "dev").read_text(), re.MULTILINE)
    requirements = (ROOT / "deploy" / "docker" / "uv-requirements.txt").read_text()
    pinned = re.search(r"^uv==(\S+)", requirements, re.MULTILINE)
    assert dev
    assert pinned
    assert pinned[1] == dev[1]


def test_final_stage_runs_the_gateway_unprivileged_with_a_health_check() -> None:
    assert FINAL.name == "gateway"  # the default target
    user = FINAL.last("USER")
    assert user is not None
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user.args), user.args
    after_user = FINAL.instructions[FINAL.instructions.index(user) :]
    assert all(i.keyword not in ("RUN", "COPY") for i in after_user)
    env = stage_env(FINAL)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert any(s.all("WORKDIR") for s in ancestry(FINAL))
    assert [e.args for e in FINAL.all("EXPOSE")] == ["8080"]
    healthcheck = FINAL.last("HEALTHCHECK")
    assert healthcheck is not None
    probe = healthcheck.args.removeprefix("CMD ")
    assert "/healthz" in probe
    assert "urllib" in probe
    assert "curl" not in probe
    entrypoint, cmd = FINAL.last("ENTRYPOINT"), FINAL.last("CMD")
    assert entrypoint is not None
    assert entrypoint.exec_form() == ["mcp-auth-gateway"]
    assert cmd is not None
    assert cmd.exec_form() == ["serve", "--config", CONFIG_PATH]


@pytest.mark.parametrize("stage", [s.name for s in runtime_stages()])
def test_runtime_stages_hold_no_build_tools(stage: str) -> None:
    chain = ancestry(BY_NAME[stage])
    assert chain[0].base == "${PYTHON_IMAGE}"
    assert all(s not in builder_stages() for s in chain), "a runtime image built FROM a builder"
    for member in chain:
        for run in member.all("RUN"):
            assert not any(tool in run.args + " " for tool in BUILD_TOOLS), run.args
        for copy in member.all("COPY"):
            if "from" in copy.flags:
                source, destination = shlex.split(copy.args)
                assert source == destination, copy
                assert re.fullmatch(r"/opt/(venv|demo)", source), copy
            else:
                assert copy.args.startswith("examples/"), copy  # the demo script only
    user = chain[-1].last("USER")
    assert user is not None
    assert not user.args.startswith("0")


def test_dockerignore_sends_only_what_the_build_copies(tmp_path: Path) -> None:
    sent = build_context(tmp_path)
    excluded_paths = (".venv/", ".cache/", ".git/", "tests/", "node_modules/", "bench/")
    excluded_paths += ("deploy/compose/secrets/", "docker-compose.yml", "__pycache__/")
    for excluded in excluded_paths:
        assert not [p for p in sent if p.startswith(excluded) or f"/{excluded}" in p], excluded
    for stage in STAGES:
        for copy in stage.all("COPY"):
            if "from" not in copy.flags:
                for source in shlex.split(copy.args)[:-1]:
                    assert (tmp_path / source).exists(), f"COPY {source}: not in the context"
    assert "gateway/cli.py" in sent
    assert "examples/demo_server.py" in sent


# --- the build, replayed ---------------------------------------------------------------------


def test_the_venv_holds_the_gateway_and_its_runtime_dependencies_only(build: Build) -> None:
    bin_dir = build.venv / "bin"
    version = subprocess.run(
        [bin_dir / "mcp-auth-gateway", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert version.split() == ["mcp-auth-gateway", VERSION]
    probe = (
        "import importlib.util as u, gateway; print(gateway.__file__); "
        "print([m for m in ('pytest', 'mcp', 'ruff', 'uv', 'pip') if u.find_spec(m)]); "
        "print(u.find_spec('opentelemetry.sdk.trace') is not None)"
    )
    where, extras, traces = subprocess.run(
        [bin_dir / "python", "-c", probe], capture_output=True, text=True, check=True, cwd="/"
    ).stdout.splitlines()
    assert Path(where).is_relative_to(build.venv)  # installed, not the checkout's copy
    assert extras == "[]"
    assert traces == "True"  # the otel extra: the image can trace
    assert not (bin_dir / "uv").exists()
    assert not (bin_dir / "pip").exists()


def test_the_demo_venv_holds_the_locked_mcp_and_serves(build: Build) -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = next(p["version"] for p in lock["package"] if p["name"] == "mcp")
    python = build.demo / "bin" / "python"
    installed = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('mcp'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert installed == locked
    demo = BY_NAME["demo"]
    entrypoint = demo.last("ENTRYPOINT")
    assert entrypoint is not None
    argv = entrypoint.exec_form()
    assert argv[0] == "/opt/demo/bin/python"
    assert argv[1] == "/app/demo_server.py"
    port = free_port()  # the image's CMD binds 0.0.0.0:8001; here loopback, as k8s args may
    script = ROOT / "examples" / "demo_server.py"
    with ManagedProcess(
        [str(python), str(script), "--host", LOOPBACK, "--port", str(port)],
        ready_port=port,
        name="demo",
    ) as server:
        assert server.is_running()
    assert server.returncode == 0


def test_the_gateway_command_validates_every_compose_config(
    build: Build, secrets_dir: Path
) -> None:
    configs = sorted(COMPOSE_DIR.glob("gateway*.yaml"))
    assert {gateway_config(SERVICES[name]) for name in GATEWAYS} == set(configs)
    result = subprocess.run(
        [build.venv / "bin" / "mcp-auth-gateway", "check", "--config", *configs],
        capture_output=True,
        text=True,
        env={**_clean_env(), "SECRETS_DIR": str(secrets_dir)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok (") == len(configs)


# --- init_secrets.py -------------------------------------------------------------------------


def test_init_secrets_writes_every_compose_secret_readable_and_keeps_them(
    build: Build, secrets_dir: Path
) -> None:
    declared = {Path(s["file"]).name for s in COMPOSE["secrets"].values()}
    assert {p.name for p in secrets_dir.iterdir()} == declared
    assert secrets_dir.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in secrets_dir.iterdir()} == {0o644}
    url = urlsplit((secrets_dir / "redis-url").read_text().strip())
    assert (url.username, url.hostname, url.port) == ("gateway", "redis", 6379)
    digest = hashlib.sha256((url.password or "").encode()).hexdigest()
    assert f"user gateway on #{digest} " in (secrets_dir / "redis.acl").read_text()
    before = {p.name: p.read_bytes() for p in secrets_dir.iterdir()}
    again = subprocess.run(
        [build.venv / "bin" / "python", COMPOSE_DIR / "init_secrets.py", secrets_dir],
        capture_output=True,
        text=True,
        check=True,
        cwd=secrets_dir,
    )
    assert {p.name: p.read_bytes() for p in secrets_dir.iterdir()} == before
    assert "alice" not in again.stdout  # passwords are shown once, when they are made


def test_init_secrets_prints_the_passwords_that_sign_in(build: Build, tmp_path: Path) -> None:
    result = subprocess.run(
        [build.venv / "bin" / "python", COMPOSE_DIR / "init_secrets.py", tmp_path / "s"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    passwords = dict(line.split() for line in result.stdout.splitlines() if line[:2] == "  ")
    users = LocalUsers.load(tmp_path / "s" / "users.yaml")
    for name, password in passwords.items():
        remember(password)
        user = users.authenticate(name, password)
        assert user is not None
        assert user.username == name
    alice = users.authenticate("alice", passwords["alice"])
    assert alice is not None
    assert alice.claims == {"groups": ["editors"]}
    assert users.authenticate("alice", passwords["bob"]) is None
    assert users.authenticate("alice", "") is None
    assert sorted(passwords) == ["alice", "bob"]


# --- docker-compose.yml ----------------------------------------------------------------------


def test_compose_file_validates_against_the_compose_specification(tmp_path: Path) -> None:
    check = [str(DEV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec"]
    result = subprocess.run([*check, str(COMPOSE_FILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = dict(COMPOSE, services={**SERVICES, "demo": {**SERVICES["demo"], "readonly": True}})
    (tmp_path / "compose.yml").write_text(yaml.safe_dump(broken))
    result = subprocess.run([*check, str(tmp_path / "compose.yml")], capture_output=True)
    assert result.returncode != 0  # the schema does reject unknown keys


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_is_hardened_and_pinned(name: str) -> None:
    service = SERVICES[name]
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    image = service["image"]
    assert PINNED_TAG.fullmatch(image), f"{image}: pin an exact version"
    if "build" in service:
        assert service["build"]["context"] == "."
        assert service["build"]["target"] in BY_NAME
        assert image.endswith(":" + VERSION)  # the tag deploy/k8s deploys
    for address in published(service).values():
        assert address.startswith("127.0.0.1:")
    if service.get("user") is not None:
        assert service["user"] not in ("root", "0")
    for target, (source, read_only) in bind_mounts(service).items():
        assert source.is_file(), target
        assert read_only, target


def test_profiles_add_the_federated_and_replicated_variants() -> None:
    by_profile: dict[str, set[str]] = {}
    for name, service in SERVICES.items():
        for profile in service.get("profiles", ["default"]):
            by_profile.setdefault(profile, set()).add(name)
    assert by_profile == {
        "default": {"gateway", "demo"},
        "federated": {"gateway-federated", "dex"},
        "replicated": {"gateway-a", "gateway-b", "redis", "lb"},
    }


@pytest.mark.parametrize("name", GATEWAYS)
def test_gateway_services_mount_their_config_and_secrets(name: str) -> None:
    service = SERVICES[name]
    assert service["build"]["target"] == FINAL.name
    assert "/tmp" in service["tmpfs"]
    assert "command" not in service
    assert "entrypoint" not in service
    config = gateway_config(service)
    assert config.parent == COMPOSE_DIR
    needed = set(SECRET_REF.findall(config.read_text()))
    assert needed
    assert needed <= set(service["secrets"]), sorted(needed)
    raw = yaml.safe_load(config.read_text())
    assert raw["server"]["host"] == "0.0.0.0"
    assert raw["server"]["port"] == 8080
    public = urlsplit(raw["server"]["public_url"])
    entry = published(service).get(8080) or published(SERVICES["lb"])[8080]
    assert public.hostname == "localhost"
    assert f"127.0.0.1:{public.port}" == entry
    for upstream in raw["upstreams"]:
        assert urlsplit(upstream["url"]).hostname in SERVICES  # a compose service


def test_federated_gateway_and_dex_agree() -> None:
    gateway = yaml.safe_load(gateway_config(SERVICES["gateway-federated"]).read_text())
    dex = yaml.safe_load((COMPOSE_DIR / "dex.yaml").read_text())
    oidc = gateway["auth"]["authorization_server"]["login"]["oidc"]
    assert oidc["issuer"] == dex["issuer"]
    issuer = urlsplit(dex["issuer"])
    service = SERVICES["dex"]
    assert issuer.hostname in service["networks"]["default"]["aliases"]
    assert issuer.hostname.endswith(".localhost")  # browsers resolve it to the host
    assert published(service)[issuer.port] == f"127.0.0.1:{issuer.port}"
    assert bind_mounts(service)[service["command"][-1]][0] == COMPOSE_DIR / "dex.yaml"
    (client,) = [c for c in dex["staticClients"] if c["id"] == oidc["client_id"]]
    callback = gateway["server"]["public_url"].rstrip("/") + "/oauth/callback"
    assert client["redirectURIs"] == [callback]
    assert client["public"] is True
    assert "client_secret" not in oidc
    assert dex["storage"]["type"] == "memory"  # its container is read-only


def test_replicas_share_config_store_and_keys_behind_nginx() -> None:
    a, b = SERVICES["gateway-a"], SERVICES["gateway-b"]
    assert gateway_config(a) == gateway_config(b)
    assert a["secrets"] == b["secrets"]
    raw = yaml.safe_load(gateway_config(a).read_text())
    assert raw["store"]["backend"] == "redis"
    nginx = (COMPOSE_DIR / "nginx.conf").read_text()
    upstreams = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", nginx, re.MULTILINE)
    assert sorted(upstreams) == [("gateway-a", "8080"), ("gateway-b", "8080")]
    assert re.search(r"^\s*listen\s+8080;", nginx, re.MULTILINE)
    assert "proxy_buffering off;" in nginx  # SSE passes through as it streams
    assert bind_mounts(SERVICES["lb"])["/etc/nginx/nginx.conf"][0] == COMPOSE_DIR / "nginx.conf"
    command = SERVICES["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    aclfile = command[command.index("--aclfile") + 1]
    assert aclfile == f"{SECRETS_MOUNT}/redis.acl"
    assert "redis.acl" in SERVICES["redis"]["secrets"]
    key_prefix = raw["store"]["key_prefix"]
    acl = (COMPOSE_DIR / "init_secrets.py").read_text()
    assert f'KEY_PREFIX = "{key_prefix}"' in acl


# --- the gateway services, started -----------------------------------------------------------


def service_argv(name: str, build: Build) -> list[str]:
    """The container's command for service `name`, with host paths for the image's and the
    mounts' container paths."""
    service = SERVICES[name]
    image_entrypoint, image_cmd = FINAL.last("ENTRYPOINT"), FINAL.last("CMD")
    assert image_entrypoint is not None
    assert image_cmd is not None
    entrypoint = service.get("entrypoint") or image_entrypoint.exec_form()
    command = service.get("command") or image_cmd.exec_form()
    mounts = bind_mounts(service)
    return [image_which(entrypoint[0], build)] + [
        str(mounts[a][0]) if a in mounts else a for a in entrypoint[1:] + command
    ]


def image_which(program: str, build: Build) -> str:
    """Where the final stage's PATH finds `program`: it must be in the image's venv."""
    path = _map_paths(stage_env(FINAL)["PATH"].replace("${PATH}", ""), build)
    found = shutil.which(program, path=path)
    assert found is not None, program
    assert Path(found).is_relative_to(build.venv)
    return found


def start_gateway(argv: list[str], secrets: Path, name: str) -> tuple[ManagedProcess, int]:
    port = free_port()
    env = {
        **_clean_env(),
        "SECRETS_DIR": str(secrets),
        "MCP_GATEWAY_SERVER__HOST": LOOPBACK,
        "MCP_GATEWAY_SERVER__PORT": str(port),
    }
    process = ManagedProcess(
        argv, env=env, ready_url=f"http://{LOOPBACK}:{port}/healthz", name=name
    )
    return process, port


def healthcheck_passes(build: Build, port: int) -> bool:
    """The image's HEALTHCHECK command, run as Docker would (python from the image's PATH)."""
    healthcheck = FINAL.last("HEALTHCHECK")
    assert healthcheck is not None
    argv = json.loads(healthcheck.args.removeprefix("CMD "))
    assert argv[0] == "python"
    env = {**_clean_env(), "MCP_GATEWAY_SERVER__PORT": str(port)}
    argv[0] = image_which(argv[0], build)
    result = subprocess.run(argv, env=env, capture_output=True, timeout=30)
    return result.returncode == 0


@pytest.mark.parametrize("name", GATEWAYS)
def test_gateway_service_command_starts_and_is_healthy(
    name: str, build: Build, secrets_dir: Path
) -> None:
    argv = service_argv(name, build)
    assert argv[1:3] == ["serve", "--config"]
    assert Path(argv[3]).parent == COMPOSE_DIR
    process, port = start_gateway(argv, secrets_dir, name)
    with process:
        assert healthcheck_passes(build, port)
        logs = process.stderr_text() + process.stdout_text()
        assert '"event":"gateway_started"' in logs.replace(" ", "")
    assert process.returncode == 0  # SIGTERM: a clean stop
    assert not healthcheck_passes(build, port)  # and the check does notice a dead gateway
    session_key = (secrets_dir / "session-keys").read_text().strip()
    assert session_key not in process.stderr_text() + process.stdout_text()


@pytest.fixture
def compose_redis(secrets_dir: Path, tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A real Redis started with the compose service's arguments (its ACL secret, AOF on), on
    loopback; yields a copy of the secrets whose redis-url points at it."""
    port = free_port()
    secrets = tmp_path / "secrets"
    shutil.copytree(secrets_dir, secrets)
    url = urlsplit((secrets / "redis-url").read_text().strip())
    local = url._replace(netloc=f"{url.username}:{url.password}@{LOOPBACK}:{port}")
    (secrets / "redis-url").write_text(local.geturl() + "\n")
    remember(url.password or "")
    command = [
        str(secrets / a.removeprefix(SECRETS_MOUNT + "/")) if a.startswith(SECRETS_MOUNT) else a
        for a in SERVICES["redis"]["command"][1:]
    ]
    data = tmp_path / "data"
    data.mkdir()
    argv = [
        ensure_redis_server(),
        *command,
        "--port",
        str(port),
        "--bind",
        LOOPBACK,
        "--dir",
        str(data),
    ]
    with ManagedProcess(argv, cwd=data, ready_port=port, name="redis"):
        yield secrets, port


def _request(
    port: int, method: str, path: str, body: str | None = None, host: str = "localhost:8082"
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        headers = {"Host": host, "Content-Type": "application/json"}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_replicas_share_state_through_redis_with_the_compose_acl(
    build: Build, compose_redis: tuple[Path, int]
) -> None:
    secrets, redis_port = compose_redis
    (a, a_port), (b, b_port) = (
        start_gateway(service_argv(name, build), secrets, name)
        for name in ("gateway-a", "gateway-b")
    )
    with a, b:
        for port in (a_port, b_port):
            status, _, body = _request(port, "GET", "/readyz")
            assert json.loads(body)["store"] == "ok", body  # the demo upstream is not here
        redirect = "http://127.0.0.1:9/callback"
        registration = {"redirect_uris": [redirect], "token_endpoint_auth_method": "none"}
        status, _, body = _request(a_port, "POST", "/oauth/register", json.dumps(registration))
        assert status == 201, body
        client_id = json.loads(body)["client_id"]

        def authorize_on_b(client: str) -> tuple[int, dict[str, str]]:
            query = urlencode(
                {
                    "client_id": client,
                    "redirect_uri": redirect,
                    "state": "s1",
                    "response_type": "code",
                }
            )
            status, headers, _ = _request(b_port, "GET", f"/oauth/authorize?{query}")
            return status, headers

        # B knows the client A registered: it redirects back to it (PKCE is missing), where an
        # unknown client gets an error page and no redirect at all.
        status, headers = authorize_on_b(client_id)
        assert status in (302, 303), status
        location = urlsplit(headers["Location"])
        assert location._replace(query="").geturl() == redirect
        assert parse_qs(location.query)["error"] == ["invalid_request"]
        assert authorize_on_b("never-registered")[0] == 400
    password = urlsplit((secrets / "redis-url").read_text().strip()).password
    assert password
    for replica in (a, b):
        assert password not in replica.stdout_text() + replica.stderr_text()

    # The ACL: the gateway's user reaches its own keys only; `default` may only PING.
    url = (secrets / "redis-url").read_text().strip()
    with redis.Redis.from_url(url) as client:
        client.set("mcp-gateway:probe", b"1", px=60_000)
        assert client.get("mcp-gateway:probe") == b"1"
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.get("elsewhere")
    with redis.Redis(host=LOOPBACK, port=redis_port) as anonymous:
        assert anonymous.ping() is True
        with pytest.raises(redis.exceptions.NoPermissionError):
            anonymous.get("mcp-gateway:probe")
