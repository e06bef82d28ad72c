"""The pinned npm packages under ``tests/node``, installed together by one ``npm ci``.

``tests/node/package.json`` pins each package exactly and ``package-lock.json`` locks the whole
tree. `ensure_node_packages` runs ``npm ci --prefix tests/node --no-audit --no-fund`` when any
top-level dependency is missing or installed at a version other than the locked one, so every
package the tests need arrives in one install.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = REPO_ROOT / "tests" / "node"
NODE_MODULES = NODE_DIR / "node_modules"
LOOPBACK_PRELOAD = Path(__file__).resolve().parent / "loopback.cjs"
NPM_CI_TIMEOUT = 300.0


def node_executable() -> str:
    """The ``node`` on PATH (Node.js >= 20)."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not on PATH; the npm test servers need Node.js >= 20")
    return node


def locked_versions() -> dict[str, str]:
    """Top-level dependency name -> version, as ``package-lock.json`` locks them."""
    lock = json.loads((NODE_DIR / "package-lock.json").read_text(encoding="utf-8"))
    packages: dict[str, dict[str, object]] = lock["packages"]
    names = packages[""].get("dependencies", {})
    assert isinstance(names, dict)
    return {name: str(packages[f"node_modules/{name}"]["version"]) for name in names}


def installed_version(name: str) -> str | None:
    """The version of ``name`` in ``tests/node/node_modules``, or ``None`` if it is absent."""
    try:
        manifest = json.loads((NODE_MODULES / name / "package.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    version: str = manifest["version"]
    return version


def ensure_node_packages() -> Path:
    """Install every locked package with ``npm ci`` unless all are already there.

    Returns the ``node_modules`` directory.
    """
    stale = {
        name: version
        for name, version in locked_versions().items()
        if installed_version(name) != version
    }
    if stale:
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is not on PATH; cannot install tests/node dependencies")
        subprocess.run(
            [npm, "ci", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"],
            check=True,
            capture_output=True,
            timeout=NPM_CI_TIMEOUT,
        )
    return NODE_MODULES
