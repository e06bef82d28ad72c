"""The official MCP conformance suite, directly and through the gateway: the gateway may add
nothing an upstream would not do, so every check that passes against an upstream directly must
also pass through the gateway.

Every server scenario of the 2025-11-25 and 2026-07-28 revisions, and every extension scenario
(tasks, skills), runs against server-everything (stateful, 2025-11-25) and a stateless `mcp`
SDK server (2026-07-28 and the stateless form of 2025-11-25), once directly and once through a
gateway route that requires a bearer token (the runner sends one on every request; see
`tests/support/conformance.py`). A failure lists exactly the checks that passed directly but
failed through the gateway.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import StartGateway
from tests.support.conformance import (
    EXTENSIONS,
    GROUPS,
    PASSED,
    REVISIONS,
    lost_through_gateway,
    run_server_suite,
    server_scenarios,
)
from tests.support.local_issuer import LocalIssuer
from tests.support.processes import HttpServerProcess
from tests.support.sdk_server import sdk_server

ROUTE = "/up/mcp"
# One runner process leaves the sessions and GET streams of some scenarios open until it exits
# (against server-everything nine sessions, and more streams than the default limit of eight
# per principal). Limits are policy, not conformance: they are set out of the way here (they
# have tests of their own), so that only what the gateway does to the protocol is compared.
ROOMY = {"max_per_principal": 1000, "max_streams_per_principal": 1000}
TOKEN_LIFETIME = 900


@pytest.fixture(scope="module")
def sdk_stateless() -> Iterator[HttpServerProcess]:
    """An `mcp` 2.x SDK server in stateless mode (no `Mcp-Session-Id`, even on initialize)."""
    with sdk_server(stateless=True) as server:
        yield server


async def test_every_server_scenario_is_in_a_group_that_runs() -> None:
    scenarios = await server_scenarios()
    assert "server-stateless" in scenarios  # the listing is read at all
    outside = {name for name, tags in scenarios.items() if not tags & {*REVISIONS, "extension"}}
    assert not outside, f"server scenarios no group runs: {sorted(outside)}"


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("upstream", ["everything", "sdk_stateless"])
async def test_every_check_that_passes_directly_passes_through_the_gateway(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    upstream: str,
    group: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    server: HttpServerProcess = request.getfixturevalue(upstream)
    gw = await start_gateway_for(
        {"name": "up", "route": ROUTE, "url": server.url},
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
        sessions=ROOMY,
    )
    url = gw.url(ROUTE)
    token = issuer.mint(issuer.claims(url, exp=int(time.time()) + TOKEN_LIFETIME))

    direct = await run_server_suite(server.url, group, tmp_path / "direct")
    through = await run_server_suite(url, group, tmp_path / "gateway", bearer=token)

    if group != EXTENSIONS:  # server-everything implements no extension: none of those pass
        passed = [check for check in direct.values() if check.status == PASSED]
        assert passed, "nothing passed directly: the comparison would prove nothing"
    lost = lost_through_gateway(direct, through)
    assert not lost, "passed directly, failed through the gateway:\n" + "\n".join(lost)
