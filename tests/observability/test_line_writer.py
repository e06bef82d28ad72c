"""Buffered log lines on real pipes: written after the delay, by size, at once for a warning,
through without an event loop, in the order they were logged, and never raising on a write
error."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import aiohttp
import pytest
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.config.fields import LogFormat, LogLevel
from gateway.config.server import LogSettings
from gateway.observability.line_writer import LineWriter
from gateway.observability.logging import ACCESS_LOG, configure_logging
from gateway.web.app import create_app
from gateway.web.server import start_gateway
from tests.conftest import LOG_SINK
from tests.support.configs import gateway_document, validated
from tests.support.http_upstream import recording_upstream
from tests.support.processes import free_port

LONG = 3600.0
"""A flush delay no test outlives: whatever reaches the pipe was written by something else."""


@dataclass
class Pipe:
    """A real pipe: `sink` is its write end as a binary stream, `read_now` drains the read end
    without blocking."""

    read_fd: int
    sink: BinaryIO

    def read_now(self) -> bytes:
        try:
            return os.read(self.read_fd, 1 << 20)
        except BlockingIOError:
            return b""

    async def lines(self, count: int) -> list[bytes]:
        """Wait (at most 5 s) until `count` lines have arrived; nothing writes to the pipe
        meanwhile but the writer under test."""
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        data = bytearray(self.read_now())
        loop.add_reader(self.read_fd, readable.set)
        try:
            async with asyncio.timeout(5):
                while data.count(b"\n") < count:
                    await readable.wait()
                    readable.clear()
                    data += self.read_now()
        finally:
            loop.remove_reader(self.read_fd)
        return bytes(data).splitlines()


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    sink = open(write_fd, "wb")  # noqa: SIM115 - closed below, errors and all
    try:
        yield Pipe(read_fd, sink)
    finally:
        with contextlib.suppress(OSError, ValueError):
            sink.close()
        with contextlib.suppress(OSError):
            os.close(read_fd)


async def test_lines_go_out_after_the_delay_without_another_write(pipe: Pipe) -> None:
    writer = LineWriter(pipe.sink)
    writer.write(b"one\n")
    writer.write(b"two\n")
    assert pipe.read_now() == b""  # buffered: no write system call per line
    assert await pipe.lines(2) == [b"one", b"two"]
    assert writer.pending_lines == 0


async def test_a_full_buffer_is_written_before_the_delay(pipe: Pipe) -> None:
    writer = LineWriter(pipe.sink, flush_delay=LONG, flush_bytes=100)
    for n in range(3):
        writer.write(b"%02d" % n + b"x" * 37 + b"\n")  # 40 bytes each: the third passes 100
    assert pipe.read_now().splitlines() == [b"%02d" % n + b"x" * 37 for n in range(3)]
    writer.write(b"next\n")
    assert pipe.read_now() == b""
    assert writer.pending_lines == 1
    writer.flush()
    assert pipe.read_now() == b"next\n"


async def test_an_urgent_line_goes_out_at_once_after_the_lines_before_it(pipe: Pipe) -> None:
    writer = LineWriter(pipe.sink, flush_delay=LONG)
    writer.write(b"info\n")
    assert pipe.read_now() == b""
    writer.write(b"error\n", urgent=True)
    assert pipe.read_now() == b"info\nerror\n"


def test_without_an_event_loop_a_line_is_written_through(pipe: Pipe) -> None:
    writer = LineWriter(pipe.sink, flush_delay=LONG)
    writer.write(b"start-up\n")
    assert pipe.read_now() == b"start-up\n"


async def test_a_line_from_another_thread_goes_out_after_the_buffered_ones(pipe: Pipe) -> None:
    writer = LineWriter(pipe.sink, flush_delay=LONG)
    writer.write(b"loop\n")
    await asyncio.to_thread(writer.write, b"thread\n")  # no running loop there: written through
    assert pipe.read_now() == b"loop\nthread\n"


def test_lines_left_on_a_closed_loop_go_out_with_the_next_line(pipe: Pipe) -> None:
    """The timer of a loop that closed never fires: the next line, on another loop, must not
    wait behind it."""
    writer = LineWriter(pipe.sink, flush_delay=LONG)

    async def log(line: bytes) -> None:
        writer.write(line)

    asyncio.run(log(b"first loop\n"))
    assert pipe.read_now() == b""
    asyncio.run(log(b"second loop\n"))
    assert pipe.read_now() == b"first loop\nsecond loop\n"


@pytest.mark.parametrize("broken", ["reader-gone", "stream-closed"])
async def test_a_write_error_drops_the_batch_and_raises_nothing(pipe: Pipe, broken: str) -> None:
    if broken == "reader-gone":
        os.close(pipe.read_fd)  # EPIPE on write
    else:
        pipe.sink.close()  # ValueError: write to closed file
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        writer = LineWriter(pipe.sink, flush_delay=0)
        writer.write(b"urgent\n", urgent=True)
        writer.write(b"by the timer\n")
        async with asyncio.timeout(5):
            while writer.pending_lines:
                await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert errors == []
    assert writer.dropped_lines == 2


@pytest.fixture
def json_logging() -> Iterator[tuple[Pipe, TextIO]]:
    """The process's logging configured as `serve` does, on a pipe, with a delay no test
    outlives; the suite's text sink is restored after."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    stream = open(write_fd, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    settings = LogSettings(level=LogLevel.DEBUG, format=LogFormat.JSON)
    configure_logging(settings, stream=stream, flush_delay=LONG)
    try:
        yield Pipe(read_fd, stream.buffer), stream  # type: ignore[arg-type]
    finally:
        configure_logging(settings, stream=LOG_SINK)  # type: ignore[arg-type]
        with contextlib.suppress(OSError):
            stream.close()
        os.close(read_fd)


def events(data: bytes) -> list[str]:
    return [json.loads(line)["event"] for line in data.splitlines()]


async def test_every_json_line_keeps_its_place_behind_buffered_access_lines(
    json_logging: tuple[Pipe, TextIO],
) -> None:
    """structlog's events and the standard library's records go through the same buffer as the
    access lines: none overtakes a line logged before it."""
    pipe, _ = json_logging
    ACCESS_LOG.emit({"path": "/first", "status": 200})
    structlog.get_logger("tests.order").info("thing_happened")
    logging.getLogger("tests.order").info("library said something")
    ACCESS_LOG.emit({"path": "/second", "status": 200})
    assert pipe.read_now() == b""
    structlog.get_logger("tests.order").debug("detail_noted")
    assert pipe.read_now() == b""
    structlog.get_logger("tests.order").warning("thing_went_wrong")  # written at once
    assert events(pipe.read_now()) == [
        "request_completed",
        "thing_happened",
        "library said something",
        "request_completed",
        "detail_noted",
        "thing_went_wrong",
    ]


@pytest.mark.parametrize("source", ["structlog-error", "stdlib-warning"])
async def test_a_warning_or_error_is_written_at_once(
    json_logging: tuple[Pipe, TextIO], source: str
) -> None:
    pipe, _ = json_logging
    ACCESS_LOG.emit({"path": "/before", "status": 500})
    assert pipe.read_now() == b""
    if source == "structlog-error":
        structlog.get_logger("tests.urgent").error("request_failed")
        expected = "request_failed"
    else:
        logging.getLogger("tests.urgent").warning("library warned")
        expected = "library warned"
    assert events(pipe.read_now()) == ["request_completed", expected]


async def test_stopping_the_gateway_writes_the_buffered_access_lines(tmp_path: Path) -> None:
    """`RunningGateway.stop` (the path `serve` takes on SIGTERM) flushes what is buffered."""
    path = tmp_path / "access.log"
    with open(path, "wb") as sink:
        writer = LineWriter(sink, flush_delay=LONG)
        ACCESS_LOG.configure(writer, logging.DEBUG)
        try:
            async with recording_upstream(_answer) as upstream:
                up = {"name": "up", "route": "/up/mcp", "url": upstream.url}
                config = validated(gateway_document(up, port=free_port()))
                app = create_app(config, registry=CollectorRegistry())
                running = await start_gateway(config, app)
                try:
                    await _ping(f"http://127.0.0.1:{running.port}/up/mcp")
                    assert writer.pending_lines == 1
                    assert path.read_bytes() == b""
                finally:
                    await running.stop()
        finally:
            ACCESS_LOG.configure(None, logging.DEBUG)
        written = path.read_bytes()
    LOG_SINK.write(written.decode())  # still scanned for leaked secrets
    [line] = [json.loads(raw) for raw in written.splitlines()]
    assert (line["event"], line["path"], line["status"]) == ("request_completed", "/up/mcp", 200)


async def _answer(request: web.Request) -> web.StreamResponse:
    return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}})


async def _ping(url: str) -> None:
    headers = {"Accept": "application/json, text/event-stream"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json=body, headers=headers) as response,
    ):
        assert response.status == 200
