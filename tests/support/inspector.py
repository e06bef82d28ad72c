"""The MCP Inspector CLI 2.x (`@modelcontextprotocol/inspector`, npm), run with the Node 22 that
``tests/node`` pins (the Inspector 2.x needs Node >= 22.19; on Node 20 npm would pick 0.x).

It lives in its own tree, ``tests/node/inspector`` (package.json and lock pinned there), because
it is large and only the step-up tests use it. `run_inspector` runs one ``--cli`` command against
an MCP URL with a home directory of its own, so nothing is read from or written to the user's.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.node import NODE_DIR, ensure_node_packages

INSPECTOR_DIR = NODE_DIR / "inspector"
LAUNCHER = (
    INSPECTOR_DIR / "node_modules" / "@modelcontextprotocol" / "inspector" / "clients" / "launcher"
    / "build" / "index.js"
)  # fmt: skip
NODE22 = NODE_DIR / "node_modules" / "node" / "bin" / "node"
INSTALL_TIMEOUT = 300.0
RUN_TIMEOUT = 60.0


def ensure_inspector() -> Path:
    """Install the pinned Inspector with ``npm ci`` unless it is there; return the launcher."""
    ensure_node_packages()  # the Node 22 binary
    if not LAUNCHER.is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is not on PATH; cannot install the MCP Inspector")
        subprocess.run(
            [npm, "ci", "--prefix", str(INSPECTOR_DIR), "--no-audit", "--no-fund"],
            check=True,
            capture_output=True,
            timeout=INSTALL_TIMEOUT,
            env={**os.environ, "PATH": f"{NODE22.parent}:{os.environ.get('PATH', '')}"},
        )
    return LAUNCHER


@dataclass(frozen=True)
class InspectorRun:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


async def run_inspector(url: str, home: Path, *args: str) -> InspectorRun:
    """``inspector --cli URL ARGS...`` with its secrets in memory and ``home`` as HOME."""
    launcher = ensure_inspector()
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": f"{NODE22.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "NO_COLOR": "1",
        "MCP_INSPECTOR_SECRET_STORE": "memory",
    }
    process = await asyncio.create_subprocess_exec(
        str(NODE22),
        str(launcher),
        "--cli",
        url,
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return InspectorRun(process.returncode, stdout.decode(), stderr.decode())
