"""The `mcp-auth-gateway` command as a user runs it."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.oauth.users import verify_password
from tests.support.examples import EXAMPLES, example_env
from tests.support.http_upstream import recording_upstream
from tests.support.local_issuer import LocalIssuer
from tests.support.processes import ManagedProcess, free_port
from tests.support.secrets import remember

CLI = [sys.executable, "-m", "gateway"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, env={**os.environ}
    )


def test_check_lists_every_problem_with_its_path(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        textwrap.dedent(
            """
            server: {port: -1, public_url: "not a url"}
            logging: {level: loud}
            upstreams:
              - {name: files, route: /files/mcp, url: "http://127.0.0.1:1/mcp", retries: 3}
              - {name: files, route: /files/mcp}
            """
        )
    )
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == f"{config}: 9 problem(s)"
    paths = [line.split(" ", 3)[3].split(" (line")[0] for line in lines[1:]]
    assert paths == [
        "server.port",
        "server.public_url",
        "logging",
        "upstreams[0].retries",
        "upstreams[0]",  # requires tokens: no auth configured
        "upstreams[1]",  # neither url nor command
        "upstreams[1].name",  # the same name, and route, as upstreams[0]
        "upstreams[1].route",
        "upstreams[1]",  # requires tokens
    ]
    assert lines[3].endswith("logging (line 3): unknown key (did you mean 'log'?)")
    assert "give exactly one of url (an HTTP server) or command (a stdio one)" in lines[6]
    assert "requires tokens, but neither auth.resource_server" in lines[9]


def test_check_reports_planted_problems_of_seven_kinds_in_one_run(tmp_path: Path) -> None:
    """Issue 17: a typo, a bad type, a bad reference, a duplicate route, an ambiguous pattern,
    an unset variable and an unreadable file, all in one `check`, each at its path and line,
    and nothing else."""
    config = tmp_path / "seven.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            server:
              public_url: https://mcp.example.com
              metrics_prot: 9090
            auth:
              resource_server:
                authorization_servers:
                  - {{name: corp, issuer: "https://idp.example.com"}}
            sessions:
              keys: ["${{UNSET_SESSION_KEY}}"]
              max_total: many
            upstreams:
              - name: files
                route: /files/mcp
                url: http://127.0.0.1:3001/mcp
                headers_file: {{X-Api-Key: {tmp_path / "absent-key"}}}
                authorization_servers: [corp, crop]
                policy:
                  tools: {{"read_*": [files:read], "*_file": [files:write]}}
              - name: notes
                route: /files/mcp
                url: http://127.0.0.1:3002/mcp
            """
        )
    )
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{config}: 7 problem(s)",
        "  - server.metrics_prot (line 3): unknown key (did you mean 'metrics_port'?)",
        "  - sessions.keys[0] (line 9): environment variable UNSET_SESSION_KEY is unset",
        "  - sessions.max_total (line 10): Input should be a valid integer, unable to parse "
        "string as an integer",
        f"  - upstreams[0].headers_file.X-Api-Key (line 15): cannot read secret file "
        f"'{tmp_path / 'absent-key'}': No such file or directory",
        "  - upstreams[0].authorization_servers[1] (line 16): no authorization server is named "
        "'crop' (did you mean 'corp'?)",
        "  - upstreams[0].policy.tools.*_file (line 18): 'read_*' and '*_file' can match the "
        "same name and have equally many literal characters, so neither wins: give the one "
        "that should win more literal characters, or change one so that they cannot both match",
        "  - upstreams[1].route (line 20): '/files/mcp' is already the route of upstreams[0]",
    ]


def test_keygen_prints_a_fresh_key_that_check_accepts(tmp_path: Path) -> None:
    keys = [run_cli("keygen").stdout.strip() for _ in range(2)]
    assert keys[0] != keys[1]
    assert len(base64.urlsafe_b64decode(keys[0] + "=")) == 32
    remember(keys[0])
    remember(keys[1])
    key_file = tmp_path / "session-keys"
    key_file.write_text("\n".join(keys) + "\n")
    config = tmp_path / "gateway.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            sessions: {{keys_file: {key_file}}}
            upstreams:
              - {{name: a, route: /a/mcp, url: "http://127.0.0.1:1/mcp", allow_anonymous: true}}
            """
        )
    )
    assert run_cli("check", "--config", str(config)).returncode == 0
    key_file.write_text(keys[0][:-1] + "\n")
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1
    assert "sessions.keys" in result.stderr
    assert keys[0][:-1] not in result.stderr


def test_hash_password_reads_stdin_and_prints_a_verifiable_hash() -> None:
    result = subprocess.run(
        [*CLI, "hash-password"], input="s3cret pass\n", capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    encoded = result.stdout.strip()
    assert verify_password("s3cret pass", encoded)
    assert not verify_password("s3cret pass\n", encoded)
    assert "s3cret" not in encoded


def test_check_accepts_the_example_configs() -> None:
    configs = [str(path) for path in EXAMPLES]
    result = subprocess.run(
        [*CLI, "check", "--config", *configs],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **example_env()},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok (") == len(configs)


async def test_serve_writes_one_access_line_per_request_without_secrets(tmp_path: Path) -> None:
    async def ok(request: web.Request) -> web.StreamResponse:
        return web.json_response({"jsonrpc": "2.0", "id": 5, "result": {}})

    async with recording_upstream(ok) as upstream:
        port = free_port()
        config = tmp_path / "gw.yaml"
        config.write_text(
            textwrap.dedent(
                f"""
                server: {{host: 127.0.0.1, port: {port}}}
                log: {{level: info, format: json}}
                upstreams:
                  - {{name: up, route: /up/mcp, url: "{upstream.url}", allow_anonymous: true}}
                """
            )
        )
        process = ManagedProcess(
            [*CLI, "serve", "--config", str(config)],
            ready_url=f"http://127.0.0.1:{port}/healthz",
            stop_timeout=30,
        )
        async with process:
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"http://127.0.0.1:{port}/up/mcp?code=query-secret",
                    json={
                        "jsonrpc": "2.0",
                        "id": 5,
                        "method": "tools/call",
                        "params": {"name": "x"},
                    },
                    headers={"Authorization": "Bearer token-secret", "Cookie": "c=cookie-secret"},
                ) as resp,
            ):
                assert resp.status == 200
                request_id = resp.headers["X-Request-Id"]
            assert await process.stop_async() == 0  # SIGTERM: a clean, graceful exit
            text = process.stderr_text()

    for secret in ("query-secret", "token-secret", "cookie-secret", "code="):
        assert secret not in text
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert names[0] == "gateway_started"
    assert names[-2:] == ["gateway_stopping", "gateway_stopped"]
    [access] = [e for e in events if e["event"] == "request_completed" and e["path"] != "/healthz"]
    assert access["request_id"] == request_id
    assert access["path"] == "/up/mcp"
    assert access["upstream"] == "up"
    assert access["rpc_method"] == "tools/call"
    assert (access["status"], access["upstream_status"]) == (200, 200)


async def test_sighup_reloads_the_policy(tmp_path: Path, issuer: LocalIssuer) -> None:
    async def ok(request: web.Request) -> web.StreamResponse:
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}})

    async with recording_upstream(ok) as upstream:
        port = free_port()
        config = tmp_path / "gw.yaml"

        def write(scope: str) -> None:
            config.write_text(
                textwrap.dedent(
                    f"""
                    server: {{host: 127.0.0.1, port: {port}, public_url: "http://127.0.0.1:{port}",
                              reload_interval: 0}}
                    auth:
                      resource_server:
                        authorization_servers: [{{name: l, issuer: "{issuer.issuer}"}}]
                    upstreams:
                      - name: up
                        route: /up/mcp
                        url: "{upstream.url}"
                        policy: {{tools: {{write_file: [{scope}]}}}}
                    """
                )
            )

        write("files:write")
        process = ManagedProcess(
            [*CLI, "serve", "--config", str(config)], ready_url=f"http://127.0.0.1:{port}/healthz"
        )
        url = f"http://127.0.0.1:{port}/up/mcp"
        token = issuer.mint(issuer.claims(url, scope="files:read"))
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "write_file"}}

        async def status(http: aiohttp.ClientSession) -> int:
            async with http.post(
                url, json=body, headers={"Authorization": f"Bearer {token}"}
            ) as resp:
                return resp.status

        async with process, aiohttp.ClientSession() as http:
            assert await status(http) == 403
            write("files:read")
            assert await status(http) == 403  # no watcher (reload_interval: 0): not yet
            os.kill(process.pid, signal.SIGHUP)
            deadline = time.monotonic() + 10
            while (code := await status(http)) == 403 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert code == 200
