"""Run `@modelcontextprotocol/server-everything` (npm) in streamableHttp mode on loopback.

The package is pinned in ``tests/node/package.json`` / ``package-lock.json`` and installed,
with the other npm test packages, by `ensure_node_packages` (one ``npm ci``);
`ensure_everything_installed` is a thin wrapper that returns its entry point.

It speaks MCP 2025-11-25, stateful (``Mcp-Session-Id``). Its ``get-env`` tool returns its whole
environment, so it runs with a minimal one; ``GZIP_ALLOWED_DOMAINS`` names a domain that cannot
resolve, so ``gzip-file-as-resource`` fetches nothing. It calls ``app.listen(PORT)`` with no
host; the ``loopback.cjs`` preload makes that bind 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path

from .node import LOOPBACK_PRELOAD, NODE_DIR, NODE_MODULES, ensure_node_packages, node_executable
from .node import REPO_ROOT as REPO_ROOT
from .processes import HttpServerProcess, ManagedProcess, free_port

PACKAGE = "@modelcontextprotocol/server-everything"
PACKAGE_DIR = NODE_MODULES / PACKAGE
ENTRY = PACKAGE_DIR / "dist" / "index.js"
HARMLESS_GZIP_DOMAIN = "gzip.example.invalid"


def ensure_everything_installed() -> Path:
    """Install the locked npm test packages if needed; return server-everything's entry point."""
    ensure_node_packages()
    if not ENTRY.is_file():
        raise RuntimeError(f"npm ci did not install {ENTRY}")
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
        [node_executable(), "-r", str(LOOPBACK_PRELOAD), str(entry), "streamableHttp"],
        env=everything_env(port),
        cwd=NODE_DIR,
        # Any HTTP answer means express is listening; GET / is a harmless 404.
        ready_url=f"http://127.0.0.1:{port}/",
        ready_timeout=ready_timeout,
        name="server-everything",
    )
    return HttpServerProcess(process, port=port)
