"""Memory given back once a burst of connections has ended (`gateway.web.memory`).

The C library's own `malloc_trim` is called for real where it exists (glibc); the wiring is
tried with real TCP connections to a real listener, with a trim that records its calls so the
test can see when it runs. Timing is only ever waited on, never asserted.
"""

from __future__ import annotations

import asyncio
import platform
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from gateway.web.listener import DeadlineSite
from gateway.web.memory import MemoryRelease, OpenConnections, malloc_trim

BOUND = 10  # seconds: an outcome that takes longer is a failure, not a hang


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim")
def test_the_c_library_gives_freed_memory_back() -> None:
    """40 MB freed in the middle of the heap (blocks past pymalloc's 512 bytes, so glibc's,
    with live ones after them) stays resident until `malloc_trim` hands its pages back."""
    trim = malloc_trim()
    assert trim is not None
    freed = [bytearray(600) for _ in range(70_000)]
    kept = [bytearray(600) for _ in range(1_000)]  # above the freed ones: the heap cannot shrink
    trim()
    before = rss_kib()
    del freed
    after_free = rss_kib()
    assert trim() == 1
    after_trim = rss_kib()
    assert before - after_free < 10_000  # free() alone gave little back
    assert after_free - after_trim > 30_000  # the trim gave back most of the 40 MB
    assert len(kept) == 1_000


class Recorder:
    def __init__(self) -> None:
        self.calls = 0
        self.called = asyncio.Event()

    def __call__(self) -> int:
        self.calls += 1
        self.called.set()
        return 1


async def test_a_release_is_made_once_enough_connections_have_ended() -> None:
    trim = Recorder()
    release = MemoryRelease(asyncio.get_running_loop(), trim, after=3, delay=0.01)
    release.ended()
    release.ended()
    assert not release.pending
    release.ended()
    assert release.pending
    release.ended()  # a burst still ending: the same release covers it
    await asyncio.wait_for(trim.called.wait(), BOUND)
    assert trim.calls == 1
    assert not release.pending
    release.ended()
    release.ended()
    assert not release.pending  # counted afresh from the release


async def test_a_stopped_listener_makes_no_release() -> None:
    trim = Recorder()
    release = MemoryRelease(asyncio.get_running_loop(), trim, after=1, delay=0.05)
    connections: OpenConnections[object] = OpenConnections(release)
    first, second = object(), object()
    connections.add(first)
    connections.add(second)
    connections.discard(first)
    assert release.pending
    connections.close()
    assert not release.pending
    connections.discard(second)
    assert not release.pending
    await asyncio.sleep(0.2)
    assert trim.calls == 0


async def answer_ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, Recorder]]:
    """A real listener (the gateway's `DeadlineSite`) whose release falls due after four
    connections have ended."""
    trim = Recorder()
    app = web.Application()
    app.router.add_get("/x", answer_ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    release = MemoryRelease(asyncio.get_running_loop(), trim, after=4, delay=0.01)
    site = DeadlineSite(
        runner,
        "127.0.0.1",
        0,
        header_timeout=5,
        keepalive_timeout=5,
        shutdown_timeout=1,
        release=release,
    )
    await site.start()
    try:
        yield runner.addresses[0][1], trim
    finally:
        await runner.cleanup()


async def one_request(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = await reader.readuntil(b"ok")
    writer.close()
    await writer.wait_closed()
    return answer


async def test_connections_ending_at_the_listener_make_a_release(
    listener: tuple[int, Recorder],
) -> None:
    port, trim = listener
    async with asyncio.timeout(BOUND):
        for _ in range(3):
            assert (await one_request(port)).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(0.1)
        assert trim.calls == 0  # three ended: not yet due
        await one_request(port)
        await trim.called.wait()
    assert trim.calls == 1
