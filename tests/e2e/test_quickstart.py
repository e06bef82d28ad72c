"""The README's first command, run as a new user runs it: `./dev demo` starts the gateway as its
own authorization server with demo users, and a real MCP client (the `mcp` 2.x SDK) signs in as
a printed demo user, calls tools, and steps up where the user's grants allow it."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.oauth_client import (
    AuthorizationError,
    InMemoryTokenStorage,
    OAuthRecord,
    SignIn,
    oauth_list_and_call,
)
from tests.support.processes import ManagedProcess, free_port
from tests.support.secrets import remember

REPO_ROOT = Path(__file__).resolve().parents[2]
BANNER_USER = re.compile(r"^\s+(alice|bob)\s+(\S+)\s+\(", re.MULTILINE)


@dataclass
class Demo:
    url: str
    passwords: dict[str, str]
    process: ManagedProcess


@pytest.fixture
async def demo() -> AsyncIterator[Demo]:
    port = free_port()
    process = ManagedProcess(
        [sys.executable, str(REPO_ROOT / "dev"), "demo"],
        env={**_environment(), "MCP_GATEWAY_SERVER__PORT": str(port)},
        cwd=REPO_ROOT,
        ready_url=f"http://127.0.0.1:{port}/healthz",
        ready_timeout=60.0,
        stop_timeout=20.0,
        name="dev demo",
    )
    async with process:
        banner = await _banner(process)
        passwords = {user: remember(password) for user, password in BANNER_USER.findall(banner)}
        assert f"http://127.0.0.1:{port}/demo/mcp" in banner
        yield Demo(f"http://127.0.0.1:{port}/demo/mcp", passwords, process)
    assert not list((REPO_ROOT / ".cache" / "demo").glob(f"users-{port}.yaml"))


def _environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("MCP_GATEWAY")}


async def _banner(process: ManagedProcess) -> str:
    """The banner is printed right after /healthz answers; wait until both users are in it."""
    for _ in range(200):
        text = process.stdout_text()
        if len(BANNER_USER.findall(text)) == 2:
            return text
        await asyncio.sleep(0.05)
    raise AssertionError(f"no demo users in the banner:\n{process.stdout_text()}")


async def test_a_demo_user_signs_in_from_a_real_mcp_client(demo: Demo) -> None:
    assert set(demo.passwords) == {"alice", "bob"}
    outcome, record = await oauth_list_and_call(
        demo.url, "read_file", {"path": "README.md"}, sign_in=SignIn("bob", demo.passwords["bob"])
    )
    assert outcome.call is not None
    assert "Team notes" in outcome.call.text
    assert set(outcome.tools) == {"list_files", "read_file"}  # writes hidden from a reader
    assert record.issuer is not None
    assert demo.url.startswith(record.issuer.rstrip("/"))
    assert record.access_token is not None
    remember(record.access_token)
    logs = demo.process.stdout_text() + demo.process.stderr_text()
    assert "demo/mcp" in logs  # the gateway's access lines are there...
    assert record.access_token not in logs  # ...and never the token


async def test_alice_steps_up_to_write_and_bob_is_refused(demo: Demo) -> None:
    record = OAuthRecord()
    outcome, _ = await oauth_list_and_call(
        demo.url,
        "write_file",
        {"path": "notes/new.txt", "content": "from the quickstart"},
        sign_in=SignIn("alice", demo.passwords["alice"]),
        storage=InMemoryTokenStorage(),
        record=record,
    )
    assert outcome.call is not None
    assert "notes/new.txt" in outcome.call.text
    assert record.scope is not None
    assert "files:write" in record.scope.split()
    with pytest.raises(AuthorizationError) as refused:
        await oauth_list_and_call(
            demo.url,
            "write_file",
            {"path": "notes/x.txt", "content": "no"},
            sign_in=SignIn("bob", demo.passwords["bob"]),
        )
    assert refused.value.error == "access_denied"
