"""Isolation under concurrency: over a hundred clients of ten principals at once, through one
gateway to three real upstreams, all using the same JSON-RPC ids and the same progress tokens.

Every client checks that it got exactly its own results (echo and release texts unique to it;
slow-call results carrying its own step count, and on server-everything its own duration) and
exactly its own progress notifications (the right number, in order, with its own total), so only
correct routing of each exchange can satisfy all of them.

The mix: fast and gated-slow tool calls; the 2026-07-28 stateless era and the 2025-11-25
stateful one; JSON and SSE response bodies; the official `mcp` SDK client (which drops messages
for ids it does not know) and raw HTTP clients (which see every message the gateway sends).
Nothing here depends on session id values.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from mcp.client.client import ConnectMode
from mcp_types import CallToolResult

from tests.conftest import Gateway, StartGateway
from tests.support.crowd import (
    MODERN,
    STATEFUL,
    Crowd,
    Era,
    Exchange,
    Inbox,
    Message,
    RawMcpClient,
    sdk_client,
)
from tests.support.local_issuer import LocalIssuer
from tests.support.processes import HttpServerProcess

JSON_ROUTE = "/json/mcp"
SSE_ROUTE = "/sse/mcp"
EVERYTHING_ROUTE = "/everything/mcp"
SCOPE = "mcp:tools"

PRINCIPALS = [(f"user-{n}", app) for n in range(1, 6) for app in ("desktop-app", "cli-app")]

STEP_TIMEOUT = 30.0
"""Seconds any one request may take, and the longest wait for the crowd at a phase."""
PHASES = ("connected", "in_flight")

# The raw clients' JSON-RPC ids and progress token: the same for every one of them.
OPEN_ID, FIRST_ECHO_ID, SLOW_ID, SECOND_ECHO_ID, RELEASE_ID, LAST_ECHO_ID = range(1, 7)
PROGRESS_TOKEN = SLOW_ID  # as the SDK client does, the request id doubles as the token

EVERYTHING_STEP_SECONDS = 0.6
"""server-everything's long-running operation cannot be held open: each step takes this long."""


@dataclass(frozen=True)
class Kind:
    """A group of clients that behave alike."""

    name: str
    client: Literal["sdk", "raw"]
    route: str
    era: Era
    """The era the client must end up in."""
    count: int
    progress: bool
    """Whether its slow call asks for (and must get) progress notifications."""
    mode: ConnectMode = "auto"
    """SDK clients: "auto" probes 2026-07-28 first; "legacy" goes straight to initialize."""


KINDS = (
    Kind("sdk-modern-sse", "sdk", SSE_ROUTE, "modern", 14, progress=True),
    Kind("sdk-modern-json", "sdk", JSON_ROUTE, "modern", 10, progress=False),
    Kind("sdk-legacy-sse", "sdk", SSE_ROUTE, "stateful", 10, progress=True, mode="legacy"),
    Kind("sdk-legacy-json", "sdk", JSON_ROUTE, "stateful", 8, progress=False, mode="legacy"),
    Kind("sdk-everything", "sdk", EVERYTHING_ROUTE, "stateful", 12, progress=True),
    Kind("raw-modern-sse", "raw", SSE_ROUTE, "modern", 14, progress=True),
    Kind("raw-modern-json", "raw", JSON_ROUTE, "modern", 10, progress=False),
    Kind("raw-stateful-sse", "raw", SSE_ROUTE, "stateful", 10, progress=True),
    Kind("raw-stateful-json", "raw", JSON_ROUTE, "stateful", 8, progress=False),
    Kind("raw-everything", "raw", EVERYTHING_ROUTE, "stateful", 14, progress=True),
)


@dataclass(frozen=True)
class Call:
    """A tool call and the text its result must carry."""

    tool: str
    arguments: dict[str, Any]
    text: str


@dataclass
class Member:
    """One client of the crowd: who it is, what it calls, and what went wrong for it."""

    kind: Kind
    number: int
    """Its number within its kind."""
    index: int
    """Its number in the whole crowd."""
    principal: tuple[str, str]
    """(subject, client_id)"""
    run: str
    """Unique to the test run, so texts and gate keys are unique to it too."""
    token: str = field(default="", repr=False)
    problems: list[str] = field(default_factory=list)
    step: str = "starting"

    @property
    def name(self) -> str:
        subject, client_id = self.principal
        return f"{self.kind.name}#{self.number:02d} ({subject}/{client_id})"

    @property
    def steps(self) -> int:
        """Progress steps of its slow call: 2 to 4, so a stream crossed in from another
        client often has the wrong count and total, not only the wrong result."""
        return 2 + self.index % 3

    @property
    def everything(self) -> bool:
        return self.kind.route == EVERYTHING_ROUTE

    @property
    def gate(self) -> str:
        return f"{self.run}-{self.kind.name}-{self.number}"

    def echo(self, n: int) -> Call:
        text = f"{self.kind.name} {self.number} of {self.run}, call {n}"
        if self.everything:
            return Call("echo", {"message": text}, f"Echo: {text}")
        return Call("echo", {"text": text}, text)

    def slow(self) -> Call:
        if self.everything:
            # A duration unique to the client makes its result text unique too.
            duration = round(self.steps * EVERYTHING_STEP_SECONDS + self.index / 1000, 3)
            return Call(
                "trigger-long-running-operation",
                {"duration": duration, "steps": self.steps},
                f"Long running operation completed. Duration: {duration} seconds, "
                f"Steps: {self.steps}.",
            )
        return Call(
            "slow_progress",
            {"steps": self.steps, "key": self.gate},
            f"completed {self.steps} steps",
        )

    def release(self) -> Call | None:
        if self.everything:
            return None  # it ends on its own timer
        return Call("release", {"key": self.gate}, f"released {self.gate}")

    def progress(self) -> list[tuple[float, float]]:
        """The (progress, total) pairs its slow call must produce, in order."""
        if not self.kind.progress:
            return []
        return [(step, self.steps) for step in range(1, self.steps + 1)]

    def expect(self, what: str, actual: object, expected: object) -> None:
        if actual != expected:
            self.problems.append(f"{self.name} {what}: expected {expected!r}, got {actual!r}")


def crowd_of(gw: Gateway, issuer: LocalIssuer) -> list[Member]:
    """Every client, each with its own token for its principal and its route's resource."""
    run = uuid.uuid4().hex[:8]
    members: list[Member] = []
    for kind in KINDS:
        for number in range(kind.count):
            index = len(members)
            member = Member(kind, number, index, PRINCIPALS[index % len(PRINCIPALS)], run)
            subject, client_id = member.principal
            resource = gw.url(kind.route)
            claims = issuer.claims(resource, sub=subject, client_id=client_id, scope=SCOPE)
            member.token = issuer.mint(claims)
            members.append(member)
    return members


# -- the SDK client ---------------------------------------------------------------------------


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


async def sdk_member(member: Member, gw: Gateway, crowd: Crowd) -> None:
    kind = member.kind
    inbox = Inbox()
    seen: list[tuple[float, float | None]] = []
    started = asyncio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))
        started.set()

    async def call(step: str, expected: Call) -> None:
        member.step = step
        async with asyncio.timeout(STEP_TIMEOUT):
            result = await client.call_tool(expected.tool, expected.arguments)
        member.expect(f"{step} result", text_of(result), expected.text)

    member.step = "connect"
    async with sdk_client(
        gw.url(kind.route), member.token, inbox=inbox, mode=kind.mode, timeout=STEP_TIMEOUT
    ) as client:
        member.expect("protocol version", client.protocol_version, era_version(kind.era))
        member.step = "meeting the crowd, connected"
        await crowd.meet("connected")
        await call("first echo", member.echo(1))

        # A slow call with a JSON body shows nothing until it ends, so the crowd cannot wait
        # for it to be in flight; its gate is a latch, so a release that comes first still counts.
        slow = member.slow()
        callback = on_progress if kind.progress else None
        in_flight = asyncio.create_task(
            client.call_tool(slow.tool, slow.arguments, progress_callback=callback)
        )
        in_flight.add_done_callback(lambda _: started.set())
        try:
            if kind.progress:
                member.step = "waiting for the first progress"
                async with asyncio.timeout(STEP_TIMEOUT):
                    await started.wait()
            member.step = "meeting the crowd, slow calls in flight"
            await crowd.meet("in_flight")
            await call("second echo", member.echo(2))
            if (release := member.release()) is not None:
                await call("release", release)
            member.step = "slow call"
            async with asyncio.timeout(STEP_TIMEOUT):
                result = await in_flight
        finally:
            await settle(in_flight)
        member.expect("slow call result", text_of(result), slow.text)
        await call("last echo", member.echo(3))

    member.expect("progress callbacks", seen, member.progress())
    member.expect(
        "progress notifications received",
        [(n.params.progress, n.params.total) for n in inbox.progress],
        member.progress(),
    )
    member.expect("transport faults", inbox.faults, [])


async def settle(task: asyncio.Task[Any]) -> None:
    """Stop a slow call left behind when its client failed (a no-op once it has finished)."""
    task.cancel()
    await asyncio.wait([task], timeout=STEP_TIMEOUT)
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: it is reported through the step that failed


def era_version(era: Era) -> str:
    return MODERN if era == "modern" else STATEFUL


# -- the raw client ---------------------------------------------------------------------------


async def raw_member(member: Member, gw: Gateway, crowd: Crowd) -> None:
    kind = member.kind
    started = asyncio.Event()

    def on_message(message: Message) -> None:
        if message.get("method") == "notifications/progress":
            started.set()

    async def echo(step: str, rpc_id: int, call: Call) -> None:
        member.step = step
        async with asyncio.timeout(STEP_TIMEOUT):
            exchange = await raw.call_tool(rpc_id, call.tool, call.arguments)
        expect_exchange(member, step, exchange, [("result", rpc_id, call.text)])

    async with RawMcpClient(gw.url(kind.route), member.token, era=kind.era) as raw:
        member.step = "open"
        async with asyncio.timeout(STEP_TIMEOUT):
            opened = await raw.open(OPEN_ID)
        expect_exchange(member, "open", opened[0], [("result", OPEN_ID, None)])
        if kind.era == "stateful":
            protocol = opened[0].messages[0].get("result", {}).get("protocolVersion")
            member.expect("negotiated version", protocol, STATEFUL)
            member.expect("session id received", raw.session_id is not None, True)
            member.expect("initialized", (opened[1].status, opened[1].messages), (202, []))
        if member.problems:
            raise RuntimeError("it could not open, so it leaves the crowd")

        member.step = "meeting the crowd, connected"
        await crowd.meet("connected")
        await echo("first echo", FIRST_ECHO_ID, member.echo(1))

        slow = member.slow()
        token = PROGRESS_TOKEN if kind.progress else None
        in_flight = asyncio.create_task(
            raw.call_tool(
                SLOW_ID, slow.tool, slow.arguments, progress_token=token, on_message=on_message
            )
        )
        in_flight.add_done_callback(lambda _: started.set())
        try:
            if kind.progress:
                member.step = "waiting for the first progress"
                async with asyncio.timeout(STEP_TIMEOUT):
                    await started.wait()
            member.step = "meeting the crowd, slow calls in flight"
            await crowd.meet("in_flight")
            await echo("second echo", SECOND_ECHO_ID, member.echo(2))
            if (release := member.release()) is not None:
                await echo("release", RELEASE_ID, release)
            member.step = "slow call"
            async with asyncio.timeout(STEP_TIMEOUT):
                exchange = await in_flight
        finally:
            await settle(in_flight)
        expected = [("progress", PROGRESS_TOKEN, p, t) for p, t in member.progress()]
        expect_exchange(member, "slow call", exchange, [*expected, ("result", SLOW_ID, slow.text)])
        await echo("last echo", LAST_ECHO_ID, member.echo(3))

        if kind.era == "stateful":
            member.step = "end session"
            async with asyncio.timeout(STEP_TIMEOUT):
                status = await raw.end_session()
            ended = "2xx" if status is not None and 200 <= status < 300 else status
            member.expect("session end status", ended, "2xx")


def expect_exchange(
    member: Member, step: str, exchange: Exchange, expected: list[tuple[Any, ...]]
) -> None:
    """Exactly the expected messages, in order: nothing missing, nothing extra."""
    member.expect(f"{step} status", exchange.status, 200)
    member.expect(f"{step} messages", exchange.summaries(), expected)


# -- the crowd --------------------------------------------------------------------------------


async def attend(member: Member, gw: Gateway, crowd: Crowd, given_up: list[str]) -> None:
    """Run one client; any failure is one of its problems, and releases the others from
    waiting for it."""
    run = sdk_member if member.kind.client == "sdk" else raw_member
    try:
        await run(member, gw, crowd)
    except Exception as error:
        leaves = list(leaves_of(error))
        if all(isinstance(leaf, asyncio.BrokenBarrierError) for leaf in leaves):
            if not member.problems:
                given_up.append(member.name)
            return
        described = "; ".join(f"{type(leaf).__name__}: {leaf}".rstrip(": ") for leaf in leaves)
        member.problems.append(f"{member.name} failed at {member.step}: {described}")
        await crowd.abandon()


def leaves_of(error: BaseException) -> Iterator[BaseException]:
    """The exceptions inside any exception groups (the SDK client's task groups make them)."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaves_of(inner)
    else:
        yield error


def report(members: list[Member], given_up: list[str]) -> str:
    problems = [problem for member in members for problem in member.problems]
    failing = sum(1 for member in members if member.problems)
    lines = [f"{len(problems)} problems for {failing} of {len(members)} clients:", *problems]
    if given_up:
        lines.append(f"{len(given_up)} clients stopped when another failed: {', '.join(given_up)}")
    return "\n".join(lines)


@pytest.fixture
async def gateway(
    start_gateway_for: StartGateway,
    issuer: LocalIssuer,
    sdk_json: HttpServerProcess,
    sdk_sse: HttpServerProcess,
    everything: HttpServerProcess,
) -> Gateway:
    """One gateway with token auth in front of all three upstreams."""
    return await start_gateway_for(
        {"name": "sdk-json", "route": JSON_ROUTE, "url": sdk_json.url, "scopes": [SCOPE]},
        {"name": "sdk-sse", "route": SSE_ROUTE, "url": sdk_sse.url, "scopes": [SCOPE]},
        {"name": "everything", "route": EVERYTHING_ROUTE, "url": everything.url, "scopes": [SCOPE]},
        auth={"resource_server": {"authorization_servers": [issuer.auth_server()]}},
    )


async def test_every_client_gets_exactly_its_own_results_and_notifications(
    gateway: Gateway, issuer: LocalIssuer
) -> None:
    members = crowd_of(gateway, issuer)
    crowd = Crowd(len(members), PHASES, timeout=STEP_TIMEOUT)
    given_up: list[str] = []

    await asyncio.gather(*(attend(member, gateway, crowd, given_up) for member in members))

    assert len(members) >= 100
    assert len({member.principal for member in members}) == len(PRINCIPALS)
    problems = [problem for member in members for problem in member.problems]
    assert not problems, report(members, given_up)
