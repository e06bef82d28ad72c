"""The gateway without the optional `otel` extra: it runs with tracing off (passing a client's
trace context through as ever), and `check` says what tracing on needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.support.configs import gateway_document, write_yaml
from tests.support.http_upstream import recording_upstream
from tests.support.processes import ManagedProcess, free_port

WITHOUT_OTEL = [sys.executable, "-m", "tests.support.without_otel"]
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ROOT = Path(__file__).resolve().parents[2]


def config(path: Path, url: str, port: int = 0, **tracing: object) -> Path:
    document = gateway_document({"name": "up", "route": "/up/mcp", "url": url}, port=port,
                                tracing=tracing or None)  # fmt: skip
    return write_yaml(path / "gateway.yaml", document)


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WITHOUT_OTEL, "check", "--config", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


@pytest.mark.parametrize("enabled", [True, False])
def test_check_says_tracing_needs_the_extra_only_when_it_is_on(
    tmp_path: Path, enabled: bool
) -> None:
    done = check(config(tmp_path, "http://127.0.0.1:9/mcp", enabled=enabled,
                        endpoint="http://127.0.0.1:4318/v1/traces"))  # fmt: skip
    assert "No module named" not in done.stderr
    if enabled:
        assert done.returncode == 1
        assert "tracing.enabled" in done.stderr
        assert "pip install 'mcp-auth-gateway[otel]'" in done.stderr
    else:
        assert done.returncode == 0, done.stderr
        assert "ok (1 upstream(s))" in done.stdout


async def test_the_gateway_serves_without_the_extra_when_tracing_is_off(tmp_path: Path) -> None:
    async def ok(request: web.Request) -> web.StreamResponse:
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}})

    port = free_port()
    async with recording_upstream(ok) as upstream:
        path = config(tmp_path, upstream.url, port)
        process = ManagedProcess([*WITHOUT_OTEL, "serve", "--config", str(path)], cwd=ROOT,
                                 ready_url=f"http://127.0.0.1:{port}/healthz")  # fmt: skip
        async with process:
            body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
            headers = {"traceparent": TRACEPARENT, "Accept": "application/json, text/event-stream"}
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"http://127.0.0.1:{port}/up/mcp", json=body, headers=headers) as resp,
            ):
                assert resp.status == 200
            assert await process.stop_async() == 0
        logged = process.stderr_text()
        assert '"request_completed"' in logged
        assert "trace_id" not in logged
    assert upstream.requests[0].headers["traceparent"] == TRACEPARENT
