"""Run the official MCP conformance runner (`@modelcontextprotocol/conformance`, npm) against
an MCP server URL and read its machine-readable results.

The runner and the Node.js 22 it needs (it uses `fs.globSync`; the machine's node is 20) are
pinned in ``tests/node`` and installed by `ensure_node_packages`. One runner invocation runs
every server scenario of one protocol revision (``--suite all --spec-version V``: the scenarios
applicable at V, each on V's wire: the initialize handshake up to 2025-11-25, stateless
per-request ``_meta`` at 2026-07-28); extension scenarios (tasks, skills) are optional by
definition and are not part of a revision's suite. Each scenario writes
``server-<scenario>-<timestamp>/checks.json`` into the output directory.

The runner has no option for request headers: with ``bearer``, the ``conformance_bearer.mjs``
preload adds ``Authorization: Bearer ...`` to every request it sends to the target's origin
(fetch, undici and ``http.request`` alike), in the client, so nothing else on the wire changes.
The runner reaches only the URL it is given: nothing beyond loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .node import NODE_DIR, NODE_MODULES, ensure_node_packages

PACKAGE_DIR = NODE_MODULES / "@modelcontextprotocol" / "conformance"
ENTRY = PACKAGE_DIR / "dist" / "index.js"
NODE22 = NODE_MODULES / "node" / "bin" / "node"
BEARER_PRELOAD = Path(__file__).resolve().parent / "conformance_bearer.mjs"
REVISIONS = ("2025-11-25", "2026-07-28")
RUN_TIMEOUT = 240.0
SCENARIO_TIMEOUT_MS = 15_000
PASSED = "SUCCESS"
# Most severe first: repeated occurrences of a check collapse to the most severe verdict.
_SEVERITY = ("FAILURE", "WARNING", "SKIPPED", "INFO", PASSED)
_RESULT_DIR = re.compile(r"server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T[0-9-]+Z")
_SUITE_SIZE = re.compile(r"Running \w+ suite \((?P<count>\d+) scenarios\)")


class ConformanceRunError(RuntimeError):
    """The runner could not be run, or it did not report on every scenario it announced."""


@dataclass(frozen=True, slots=True)
class Check:
    """One check of one scenario, its occurrences collapsed to the most severe verdict."""

    revision: str
    scenario: str
    check_id: str
    status: str
    message: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.revision, self.scenario, self.check_id)

    def __str__(self) -> str:
        where = f"{self.revision} {self.scenario}: {self.check_id}"
        return f"{where} [{self.status}] {self.message}".rstrip()


async def run_server_suite(
    url: str, revision: str, out_dir: Path, *, bearer: str | None = None
) -> dict[tuple[str, str, str], Check]:
    """Every server scenario of `revision` against `url`; returns the checks by key.

    Raises `ConformanceRunError` if the runner fails to start, overruns, or leaves a scenario
    it announced without results.
    """
    ensure_node_packages()
    for needed in (ENTRY, NODE22):
        if not needed.is_file():
            raise ConformanceRunError(f"npm ci did not install {needed}")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NO_COLOR": "1"}
    argv = [str(NODE22)]
    if bearer is not None:
        parts = urlsplit(url)
        env.update(
            CONFORMANCE_BEARER=bearer,
            CONFORMANCE_ORIGIN=f"{parts.scheme}://{parts.netloc}",
            CONFORMANCE_PACKAGE_DIR=str(PACKAGE_DIR),
        )
        argv += ["--import", BEARER_PRELOAD.as_uri()]
    argv += [
        str(ENTRY), "server", "--url", url, "--suite", "all", "--spec-version", revision,
        "--timeout", str(SCENARIO_TIMEOUT_MS), "--output-dir", str(out_dir),
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=str(NODE_DIR),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise ConformanceRunError(f"the runner did not finish within {RUN_TIMEOUT:g}s") from None
    text = output.decode("utf-8", errors="replace")
    announced = _SUITE_SIZE.search(text)
    checks, scenarios = read_results(out_dir, revision)
    if announced is None or int(announced["count"]) != len(scenarios):
        raise ConformanceRunError(
            f"the runner (exit {process.returncode}) reported on {len(scenarios)} scenarios "
            f"of {announced['count'] if announced else 'an unknown number'}:\n{text[-4000:]}"
        )
    return checks


def read_results(
    out_dir: Path, revision: str
) -> tuple[dict[tuple[str, str, str], Check], set[str]]:
    """The checks in every ``checks.json`` under `out_dir`, and the scenarios they came from."""
    checks: dict[tuple[str, str, str], Check] = {}
    scenarios: set[str] = set()
    for path in sorted(out_dir.glob("server-*/checks.json")):
        match = _RESULT_DIR.fullmatch(path.parent.name)
        if match is None:
            raise ConformanceRunError(f"unexpected result directory {path.parent.name}")
        scenario = match["scenario"]
        scenarios.add(scenario)
        for raw in json.loads(path.read_text(encoding="utf-8")):
            status = str(raw["status"])
            check = Check(
                revision, scenario, str(raw["id"]), status, str(raw.get("errorMessage") or "")
            )
            earlier = checks.get(check.key)
            if earlier is None or _SEVERITY.index(status) < _SEVERITY.index(earlier.status):
                checks[check.key] = check
    return checks, scenarios


def lost_through_gateway(
    direct: dict[tuple[str, str, str], Check], through: dict[tuple[str, str, str], Check]
) -> list[str]:
    """Every check that passed directly but not through the gateway, with what the gateway
    run reported for it (or that it never ran)."""
    lost = []
    for key, check in sorted(direct.items()):
        if check.status != PASSED:
            continue
        seen = through.get(key)
        if seen is None:
            lost.append(f"{check.revision} {check.scenario}: {check.check_id} [not run]")
        elif seen.status != PASSED:
            lost.append(str(seen))
    return lost
