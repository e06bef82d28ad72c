"""Run `@modelcontextprotocol/server-everything` (npm) in streamableHttp mode on loopback.

The package is pinned in ``tests/node/package.json`` / ``package-lock.json`` and installed with
``npm ci --prefix tests/node --no-audit --no-fund``; `ensure_everything_installed` does that
when the installed copy is missing or differs from the lock file.

It speaks MCP 2025-11-25, stateful (``Mcp-Session-Id``). Its ``get-env`` tool returns its whole
environment, so it runs with a minimal one; ``GZIP_ALLOWED_DOMAINS`` names a domain that cannot
resolve, so ``gzip-file-as-resource`` fetches nothing. It calls ``app.listen(PORT)`` with no
host; the ``loopback.cjs`` preload makes that bind 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from .processes import HttpServerProcess, ManagedProcess, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = REPO_ROOT / "tests" / "node"
PACKAGE = "@modelcontextprotocol/server-everything"
PACKAGE_DIR = NODE_DIR / "node_modules" / PACKAGE
ENTRY = PACKAGE_DIR / "dist" / "index.js"
LOOPBACK_PRELOAD = Path(__file__).resolve().parent / "loopback.cjs"
HARMLESS_GZIP_DOMAIN = "gzip.example.invalid"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not on PATH; server-everything needs Node.js >= 20")
    return node


def _locked_version() -> str:
    lock = json.loads((NODE_DIR / "package-lock.json").read_text(encoding="utf-8"))
    version: str = lock["packages"][f"node_modules/{PACKAGE}"]["version"]
    return version


def _installed_version() -> str | None:
    try:
        manifest = json.loads((PACKAGE_DIR / "package.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    version: str = manifest["version"]
    return version


def ensure_everything_installed() -> Path:
    """Install the locked server-everything with ``npm ci`` unless it is already there.

    Returns the path of its ``dist/index.js`` entry point.
    """
    if _installed_version() != _locked_version() or not ENTRY.is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is not on PATH; cannot install tests/node dependencies")
        subprocess.run(
            [npm, "ci", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return ENTRY


def everything_env(port: int) -> dict[str, str]:
    """The complete environment server-everything runs with: nothing secret in it."""
    return {
        "PORT": str(port),
        "GZIP_ALLOWED_DOMAINS": HARMLESS_GZIP_DOMAIN,
        "NODE_ENV": "test",
    }


def everything_server(port: int | None = None, *, ready_timeout: float = 20.0) -> HttpServerProcess:
    """An unstarted server-everything on 127.0.0.1; enter it (``with`` / ``async with``).

    The handle's ``url`` is the MCP endpoint, ``http://127.0.0.1:PORT/mcp``.
    """
    entry = ensure_everything_installed()
    port = free_port() if port is None else port
    process = ManagedProcess(
        [_node(), "-r", str(LOOPBACK_PRELOAD), str(entry), "streamableHttp"],
        env=everything_env(port),
        cwd=NODE_DIR,
        # Any HTTP answer means express is listening; GET / is a harmless 404.
        ready_url=f"http://127.0.0.1:{port}/",
        ready_timeout=ready_timeout,
        name="server-everything",
    )
    return HttpServerProcess(process, port=port)
