"""Run the official MCP conformance runner (`@modelcontextprotocol/conformance`, npm) against
an MCP server URL and read its machine-readable results.

The runner and the Node.js 22 it needs (it uses `fs.globSync`; the machine's node is 20) are
pinned in ``tests/node`` and installed by `ensure_node_packages`. One runner invocation runs
every server scenario of one protocol revision (``--suite all --spec-version V``: the scenarios
applicable at V, each on V's wire: the initialize handshake up to 2025-11-25, stateless
per-request ``_meta`` at 2026-07-28). Extension scenarios (tasks, skills) belong to no revision's
suite; the ``extensions`` group runs each of them with ``--scenario``. Each scenario writes
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
EXTENSIONS = "extensions"
GROUPS = (*REVISIONS, EXTENSIONS)
RUN_TIMEOUT = 240.0
SCENARIO_TIMEOUT_MS = 15_000
PASSED = "SUCCESS"
# Most severe first: repeated occurrences of a check collapse to the most severe verdict.
_SEVERITY = {
    status: rank for rank, status in enumerate(("FAILURE", "WARNING", "SKIPPED", "INFO", PASSED))
}
_RESULT_DIR = re.compile(r"server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T[0-9-]+Z")
_RAN = re.compile(r"^Running client scenario '(?P<name>[^']+)' against server", re.MULTILINE)
NO_RESULTS = "(no results)"
"""The check id recorded for a scenario that ran but wrote no checks (it threw)."""
_LISTED = re.compile(r"^  - (?P<name>\S+) \[(?P<tags>[^\]]*)\]$", re.MULTILINE)


class ConformanceRunError(RuntimeError):
    """The runner could not be run, overran, or ran no scenario."""


@dataclass(frozen=True, slots=True)
class Check:
    """One check of one scenario, its occurrences collapsed to the most severe verdict."""

    group: str
    """The revision the scenario ran at, or `EXTENSIONS`."""
    scenario: str
    check_id: str
    status: str
    message: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group, self.scenario, self.check_id)

    def __str__(self) -> str:
        where = f"{self.group} {self.scenario}: {self.check_id}"
        return f"{where} [{self.status}] {self.message}".rstrip()


async def server_scenarios() -> dict[str, set[str]]:
    """Every server scenario the runner knows, with the revisions it applies to (or
    ``{"extension"}``), as ``conformance list --server`` prints them."""
    _ensure_installed()
    listed = await _node([str(ENTRY), "list", "--server"], _base_env())
    return {m["name"]: set(m["tags"].split(",")) for m in _LISTED.finditer(listed)}


async def run_server_suite(
    url: str, group: str, out_dir: Path, *, bearer: str | None = None
) -> dict[tuple[str, str, str], Check]:
    """Every server scenario of `group` (a revision, or `EXTENSIONS`) against `url`; returns
    the checks by key. A scenario that ran but wrote no checks (the runner reports an error
    and moves on) counts as one failed `NO_RESULTS` check.

    Raises `ConformanceRunError` if the runner fails to start or overruns.
    """
    _ensure_installed()
    if group != EXTENSIONS:
        runs = [["--suite", "all", "--spec-version", group]]
    else:
        listed = await server_scenarios()
        extensions = sorted(name for name, tags in listed.items() if "extension" in tags)
        runs = [["--scenario", scenario] for scenario in extensions]
    ran: set[str] = set()
    text = ""
    for options in runs:
        text = await _run(url, options, out_dir, bearer)
        ran.update(_RAN.findall(text))
    if not ran:
        raise ConformanceRunError(f"the runner ran no scenario:\n{text[-4000:]}")
    checks, reported = read_results(out_dir, group)
    for scenario in ran - reported:
        check = Check(group, scenario, NO_RESULTS, "FAILURE", "the scenario wrote no checks")
        checks[check.key] = check
    return checks


def _ensure_installed() -> None:
    ensure_node_packages()
    for needed in (ENTRY, NODE22):
        if not needed.is_file():
            raise ConformanceRunError(f"npm ci did not install {needed}")


def _base_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NO_COLOR": "1"}


async def _run(url: str, options: list[str], out_dir: Path, bearer: str | None) -> str:
    """One runner invocation of ``server`` against `url`; its output. Its exit code is not
    read: it is non-zero whenever a check fails, which is what the caller compares."""
    env = _base_env()
    argv: list[str] = []
    if bearer is not None:
        parts = urlsplit(url)
        env.update(
            CONFORMANCE_BEARER=bearer,
            CONFORMANCE_ORIGIN=f"{parts.scheme}://{parts.netloc}",
            CONFORMANCE_PACKAGE_DIR=str(PACKAGE_DIR),
        )
        argv += ["--import", BEARER_PRELOAD.as_uri()]
    argv += [
        str(ENTRY), "server", "--url", url, *options,
        "--timeout", str(SCENARIO_TIMEOUT_MS), "--output-dir", str(out_dir),
    ]  # fmt: skip
    return await _node(argv, env)


async def _node(argv: list[str], env: dict[str, str]) -> str:
    """Node 22 with `argv`, awaited without blocking the event loop (a gateway under test may
    run on it); its output, whatever its exit code."""
    process = await asyncio.create_subprocess_exec(
        str(NODE22),
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
    return output.decode("utf-8", errors="replace")


def read_results(out_dir: Path, group: str) -> tuple[dict[tuple[str, str, str], Check], set[str]]:
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
                group, scenario, str(raw["id"]), status, str(raw.get("errorMessage") or "")
            )
            earlier = checks.get(check.key)
            if earlier is None or _SEVERITY.get(status, 0) < _SEVERITY.get(earlier.status, 0):
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
            lost.append(f"{check.group} {check.scenario}: {check.check_id} [not run]")
        elif seen.status != PASSED:
            lost.append(str(seen))
    return lost
