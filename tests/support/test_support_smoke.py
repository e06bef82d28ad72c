"""Smoke tests for the real-component test harness, with no gateway in between."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx2
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from .everything import HARMLESS_GZIP_DOMAIN, REPO_ROOT, everything_server
from .mcp1 import Mcp1ClientError, ensure_mcp1_venv, run_mcp1_client
from .processes import HttpServerProcess, ManagedProcess, ProcessStartError, free_port
from .sdk_client import ProgressEvent, call_with_progress, connect, list_and_call
from .sdk_server import (
    FAIL_PREFIX,
    GREETING_TEXT,
    GREETING_URI,
    SDK_TOOLS,
    release_slow_progress,
    sdk_server,
)

MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def everything() -> Iterator[HttpServerProcess]:
    with everything_server() as server:
        yield server


@pytest.fixture(scope="module", params=[False, True], ids=["sse", "json"])
def sdk(request: pytest.FixtureRequest) -> Iterator[HttpServerProcess]:
    with sdk_server(json_response=request.param) as server:
        yield server


@pytest.fixture(scope="module")
def sdk_sse() -> Iterator[HttpServerProcess]:
    with sdk_server() as server:
        yield server


@pytest.fixture(scope="session")
def mcp1_python() -> Path:
    return ensure_mcp1_venv()


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on ``port``, read from /proc/net/tcp{,6}."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:
                found.add(addr)
    return found


# -- processes ---------------------------------------------------------------------------


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    assert _listening_addresses(port) == set()


def test_process_that_dies_reports_status_and_stderr() -> None:
    code = "import sys; sys.stderr.write('boom: no config'); sys.exit(3)"
    process = ManagedProcess([sys.executable, "-c", code], ready_port=free_port(), name="dies")
    with pytest.raises(ProcessStartError, match=r"(?s)dies exited with status 3.*boom: no config"):
        process.start()
    assert process.returncode == 3


async def test_process_that_never_listens_times_out() -> None:
    code = "import sys, time; print('waiting', flush=True); time.sleep(60)"
    process = ManagedProcess(
        [sys.executable, "-c", code], ready_port=free_port(), ready_timeout=0.5, name="idle"
    )
    with pytest.raises(ProcessStartError, match=r"(?s)idle was not ready.*waiting"):
        await process.start_async()
    assert process.returncode is not None  # stopped by the failed start, not left running


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_process_ignoring_sigterm_is_killed(use_async: bool) -> None:
    port = free_port()
    code = (
        "import signal, socket, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"s = socket.create_server(('127.0.0.1', {port}))\n"
        "time.sleep(60)\n"
    )
    process = ManagedProcess([sys.executable, "-c", code], ready_port=port, stop_timeout=0.3)
    if use_async:
        async with process:
            assert process.is_running()
    else:
        with process:
            assert process.is_running()
    assert process.returncode == -9


async def test_killed_server_restarts_on_the_same_port() -> None:
    server = sdk_server(json_response=True)
    async with server:
        first_pid = server.process.pid
        assert server.process.kill() == -9
        with pytest.raises(httpx2.ConnectError):  # nothing listens any more
            await list_and_call(server.url)
        await server.process.start_async()
        assert server.process.pid != first_pid
        outcome = await list_and_call(server.url, "add", {"a": 1, "b": 1})
        assert outcome.call is not None
        assert outcome.call.structured_content == {"result": 2}
    assert not server.process.is_running()


# -- server-everything -------------------------------------------------------------------


def test_everything_listens_on_loopback_only(everything: HttpServerProcess) -> None:
    assert _listening_addresses(everything.port) == {"0100007F"}  # 127.0.0.1, little-endian


async def test_everything_answers_initialize(everything: HttpServerProcess) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": HANDSHAKE,
            "capabilities": {},
            "clientInfo": {"name": "smoke", "version": "0"},
        },
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(everything.url, json=body, headers=MCP_HEADERS) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Mcp-Session-Id"]
        text = await response.text()
    data = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    messages = [json.loads(d) for d in data if d]
    assert messages[-1]["id"] == 1
    assert messages[-1]["result"]["protocolVersion"] == HANDSHAKE


async def test_everything_with_sdk2_client(everything: HttpServerProcess) -> None:
    outcome = await list_and_call(everything.url, "echo", {"message": "hello"})
    assert outcome.protocol_version == HANDSHAKE
    assert outcome.server_name == "mcp-servers/everything"
    assert {"echo", "get-sum", "get-env"} <= set(outcome.tools)
    assert outcome.call is not None
    assert outcome.call.text == "Echo: hello"
    assert not outcome.call.is_error


async def test_everything_environment_holds_no_secrets(everything: HttpServerProcess) -> None:
    outcome = await list_and_call(everything.url, "get-env", {})
    assert outcome.call is not None
    env = json.loads(outcome.call.text)
    assert set(env) <= {"PORT", "GZIP_ALLOWED_DOMAINS", "NODE_ENV"}
    assert env["GZIP_ALLOWED_DOMAINS"] == HARMLESS_GZIP_DOMAIN


async def test_everything_with_sdk1_client(
    everything: HttpServerProcess, mcp1_python: Path
) -> None:
    report = await run_mcp1_client(everything.url, call="get-sum", arguments={"a": 2, "b": 40})
    assert report["protocol_version"] == HANDSHAKE
    assert "echo" in report["tools"]
    assert report["call"]["content"] == [{"type": "text", "text": "The sum of 2 and 40 is 42."}]
    assert report["call"]["is_error"] is False


# -- SDK server (both response modes) ----------------------------------------------------


async def test_sdk_server_with_sdk2_client(sdk: HttpServerProcess) -> None:
    text = f"echo-{uuid.uuid4()}"
    outcome = await list_and_call(sdk.url, "echo", {"text": text})
    assert outcome.protocol_version == MODERN
    assert outcome.server_name == "sdk-test-server"
    assert set(outcome.tools) == SDK_TOOLS
    assert outcome.call is not None
    assert outcome.call.text == text
    assert outcome.call.structured_content == {"result": text}


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_sdk_server_tools_resources_prompts(sdk: HttpServerProcess, mode: str) -> None:
    async with connect(sdk.url, mode=mode) as client:
        assert client.protocol_version == (MODERN if mode == "auto" else HANDSHAKE)
        added = await client.call_tool("add", {"a": 2, "b": 3})
        assert added.structured_content == {"result": 5}
        failed = await client.call_tool("fail", {"message": "nope"})
        assert failed.is_error
        assert failed.content[0].model_dump()["text"] == f"{FAIL_PREFIX}nope"
        resource = await client.read_resource(GREETING_URI)
        assert resource.contents[0].model_dump()["text"] == GREETING_TEXT
        prompt = await client.get_prompt("greet", {"name": "Ada"})
        assert "Ada" in prompt.messages[0].content.model_dump()["text"]


async def test_sdk_server_with_sdk1_client(sdk: HttpServerProcess, mcp1_python: Path) -> None:
    report = await run_mcp1_client(sdk.url, call="echo", arguments={"text": "from 1.x"})
    assert report["protocol_version"] == HANDSHAKE
    assert set(report["tools"]) == SDK_TOOLS
    assert report["call"] == {
        "content": [{"type": "text", "text": "from 1.x"}],
        "structured_content": {"result": "from 1.x"},
        "is_error": False,
    }


async def test_sdk1_client_reports_http_errors(sdk: HttpServerProcess, mcp1_python: Path) -> None:
    report = await run_mcp1_client(f"{sdk.base_url}/nowhere", check=False)
    assert report["error"]["type"] == "McpError"  # 1.x maps a 404 to "Session terminated"
    with pytest.raises(Mcp1ClientError) as caught:
        await run_mcp1_client(f"{sdk.base_url}/nowhere")
    assert caught.value.returncode == 1
    assert caught.value.result == report


async def test_sdk2_client_error_is_unwrapped(sdk: HttpServerProcess) -> None:
    with pytest.raises(MCPError):
        await list_and_call(f"{sdk.base_url}/nowhere")


# -- progress ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_progress_arrives_before_result_over_sse(
    sdk_sse: HttpServerProcess, mode: str
) -> None:
    key = str(uuid.uuid4())

    async def release_after_first(event: ProgressEvent, client: Client) -> None:
        if event.progress == 1:  # the tool cannot finish before this release
            await client.call_tool("release", {"key": key})

    outcome = await call_with_progress(
        sdk_sse.url,
        "slow_progress",
        {"steps": 3, "key": key},
        on_progress=release_after_first,
        mode=mode,
    )
    assert outcome.protocol_version == (MODERN if mode == "auto" else HANDSHAKE)
    assert outcome.result.text == "completed 3 steps"
    assert [e.progress for e in outcome.events] == [1, 2, 3]
    assert outcome.events[0] == ProgressEvent(1, 3, "started")
    assert outcome.events_before_result == 3


async def test_out_of_band_release(sdk_sse: HttpServerProcess) -> None:
    key = str(uuid.uuid4())
    started = asyncio.Event()

    async def note_start(event: ProgressEvent, client: Client) -> None:
        started.set()

    call = asyncio.create_task(
        call_with_progress(
            sdk_sse.url, "slow_progress", {"steps": 1, "key": key}, on_progress=note_start
        )
    )
    async with asyncio.timeout(10):
        await started.wait()
        assert not call.done()
        await release_slow_progress(sdk_sse.base_url, key)
        outcome = await call
    assert outcome.result.text == "completed 1 steps"


async def test_json_mode_delivers_no_progress() -> None:
    key = str(uuid.uuid4())
    async with sdk_server(json_response=True) as server:  # also exercises the async start/stop
        await release_slow_progress(server.base_url, key)  # a latch: remembered until the call
        outcome = await call_with_progress(
            server.url, "slow_progress", {"steps": 2, "key": key}, timeout=10
        )
    assert outcome.result.text == "completed 2 steps"
    assert outcome.events == []  # report_progress ran, but a JSON response has no room for it
    assert server.process.returncode is not None


# -- examples/demo_server.py -------------------------------------------------------------


async def test_demo_server_tools_and_clean_sigterm() -> None:
    port = free_port()
    demo = ManagedProcess(
        [sys.executable, str(REPO_ROOT / "examples" / "demo_server.py"), "--port", str(port)],
        ready_port=port,
        name="demo-server",
    )
    async with demo, connect(f"http://127.0.0.1:{port}/mcp") as client:
        assert client.protocol_version == MODERN
        listing = await client.list_tools()
        tools = {tool.name: tool for tool in listing.tools}
        assert set(tools) == {"list_files", "read_file", "write_file", "delete_file"}
        assert tools["delete_file"].annotations is not None
        assert tools["delete_file"].annotations.destructive_hint is True
        written = await client.call_tool("write_file", {"path": "a/b.txt", "content": "hi"})
        assert not written.is_error
        read = await client.call_tool("read_file", {"path": "a/b.txt"})
        assert read.structured_content == {"result": "hi"}
        deleted = await client.call_tool("delete_file", {"path": "a/b.txt"})
        assert deleted.structured_content == {"result": "deleted a/b.txt"}
        escaped = await client.call_tool("read_file", {"path": "../etc/passwd"})
        assert escaped.is_error
    assert demo.returncode == 0  # SIGTERM ends it gracefully
    assert "Application shutdown complete" in demo.stderr_text()
