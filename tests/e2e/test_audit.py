"""The audit trail in the log stream of a gateway that is its own authorization server: the
official `mcp` client registers, its user signs in and calls a tool; the sign-in and token
events and the call are records, and the checkpoints verify with the gateway's published
JWKS."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from gateway.cli import main
from tests.audit.support import start_audited
from tests.conftest import gateway_log
from tests.support.facade import ROUTE, write_users
from tests.support.oauth_client import SignIn, oauth_list_and_call
from tests.support.processes import HttpServerProcess
from tests.support.secrets import remember

PASSWORD = remember("audited horse battery staple")
SECRET_TEXT = remember("echoed-secret-argument-41f9a2")


async def test_sign_in_token_events_and_calls_are_records_in_the_log_stream(
    tmp_path: Path, sdk_json: HttpServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    users = write_users(tmp_path / "users.yaml", PASSWORD)
    auth = {
        "authorization_server": {
            "login": {"local": {"users_file": str(users)}},
            "grants": [{"scopes": ["mcp:tools"]}],
        }
    }
    policy = {"audit": {"tools": {"echo": {"hash": ["text"], "keep": "all"}}}}
    audit = {"checkpoint_records": 3}
    running, base = await start_audited(None, sdk_json.url, audit, auth=auth, policy=policy)
    try:
        outcome, record = await oauth_list_and_call(
            base + ROUTE, "echo", {"text": SECRET_TEXT}, sign_in=SignIn("alice", PASSWORD)
        )
        for token in (record.access_token, record.refresh_token):
            if token:
                remember(token)
        assert outcome.call is not None
        assert outcome.call.text == SECRET_TEXT
        async with aiohttp.ClientSession() as http, http.get(base + "/oauth/jwks") as resp:
            jwks = await resp.read()
        live = tmp_path / "live.log"
        live.write_text(gateway_log())
        capsys.readouterr()
        # While it runs: the periodic checkpoints verify with the JWKS fetched from the
        # gateway, and the open end is reported (no final checkpoint yet).
        argv = ["audit", "verify", str(live), "--jwks", base + "/oauth/jwks"]
        assert await asyncio.to_thread(main, argv) == 1
        output = capsys.readouterr().err
        assert "the gateway was killed or still runs" in output
        assert "signature" not in output
    finally:
        await running.stop()
    lines = [line for line in gateway_log().splitlines() if '"audit_record"' in line]
    audit_log = tmp_path / "gateway.log"
    audit_log.write_text("\n".join(lines) + "\n")
    found = [json.loads(line)["record"] for line in lines]
    events = {r["event"] for r in found if r["kind"] == "event"}
    assert {"signed_in", "consent_given", "token_issued"} <= events
    calls = [r for r in found if r["kind"] == "request" and r["name"] == "echo"]
    assert len(calls) == 1
    assert calls[0]["decision"] == "allow"
    assert calls[0]["principal"]["iss"] == base
    assert calls[0]["principal"]["sub"] == "alice"
    assert calls[0]["arguments"]["text"].startswith("hmac-sha256:")
    assert SECRET_TEXT not in gateway_log()
    (tmp_path / "jwks.json").write_bytes(jwks)
    code = main(["audit", "verify", str(audit_log), "--jwks", str(tmp_path / "jwks.json")])
    assert code == 0
    edited = audit_log.read_text().replace('"decision":"allow"', '"decision":"deny"', 1)
    audit_log.write_text(edited)
    assert main(["audit", "verify", str(audit_log), "--jwks", str(tmp_path / "jwks.json")]) == 1
