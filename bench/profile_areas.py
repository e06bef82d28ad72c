"""Where a profile's samples go: collapsed stacks (`py-spy record --format raw`) grouped by area.

Each sample is charged to one area: walking its stack from the innermost frame outwards, the
first frame that a rule of `AREAS` matches decides (rules are tried in table order for each
frame). So a frame inside the JSON decoder or prometheus_client counts for that library wherever
it is called from, a socket write counts as a write whoever asked for it, and the event loop gets
only what runs with no Python frame above it (uvloop's own C code: epoll, socket reads, callback
dispatch). Frames no rule knows (`<string>` dataclass methods, stdlib helpers) pass the sample on
to their caller. Pure: no I/O, table-tested in tests/bench/test_profile_areas.py.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Area:
    name: str
    files: tuple[str, ...]  # path prefixes as py-spy prints them (relative to site-packages)
    functions: tuple[str, ...] = ()  # only these functions of those files; empty: any

    def matches(self, file: str, function: str) -> bool:
        return file.startswith(self.files) and (not self.functions or function in self.functions)


ACCESS_LOG = ("gateway/observability/logging.py", "gateway/observability/line_writer.py")
METRICS = ("gateway/observability/metrics.py", "gateway/observability/loop_metrics.py")
# Tried in this order for each frame, so the specific rules come before the broad ones.
AREAS: tuple[Area, ...] = (
    Area("socket write, upstream", ("gateway/proxy/connection.py",), ("UpstreamConnection.send",)),
    Area("upstream pool (gateway/proxy)", ("gateway/proxy/",)),
    Area("socket write, client", ("aiohttp/http_writer.py",)),
    Area("socket write, client", ("gateway/web/plane/connection.py",), ("ClientConnection.write",)),
    Area("access log", (*ACCESS_LOG, "structlog/", "logging/")),
    Area("metrics", (*METRICS, "prometheus_client/")),
    Area("authentication", ("gateway/auth/", "joserfc/", "cryptography/")),
    Area("policy", ("gateway/policy/",)),
    Area("MCP inspection", ("gateway/mcp_request.py", "gateway/mcp_methods.py")),
    Area("JSON parsing", ("json/", "gateway/jsonrpc.py")),
    Area("sessions", ("gateway/session/",)),
    Area("aiohttp server", ("aiohttp/", "multidict/", "yarl/", "propcache/")),
    Area("lean data plane (gateway/web/plane)", ("gateway/web/plane/",)),
    Area("our glue (gateway/web, rest of gateway/)", ("gateway/",)),
    Area("event loop (uvloop's C code)", ("asyncio/", "uvloop/")),
)
OTHER = "other (no known frame)"


@dataclass(frozen=True)
class Share:
    area: str
    samples: int
    fraction: float
    top: tuple[tuple[str, int], ...]  # the innermost known frames charged most, with samples


def frame_location(frame: str) -> tuple[str, str]:
    """`function (file:line)` -> (file, function); a frame without a location gives ("", it)."""
    function, _, where = frame.rpartition(" (")
    if not function:
        return "", frame
    return where.rstrip(")").rpartition(":")[0] or where.rstrip(")"), function


def area_of(frames: list[str]) -> tuple[str, str]:
    """(area, the frame that decided) for one stack, frames outermost first."""
    for frame in reversed(frames):
        file, function = frame_location(frame)
        for area in AREAS:
            if area.matches(file, function):
                return area.name, f"{function} ({file})"
    return OTHER, frames[-1] if frames else ""


def summarize(lines: list[str], top: int = 3) -> tuple[list[Share], int]:
    """Shares per area, largest first, and the total samples, from collapsed-stack lines
    (`frame;frame;... COUNT`, outermost frame first)."""
    samples: Counter[str] = Counter()
    deciders: dict[str, Counter[str]] = {}
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        area, decider = area_of(stack.split(";"))
        samples[area] += int(count)
        deciders.setdefault(area, Counter())[decider] += int(count)
    total = sum(samples.values())
    shares = [
        Share(area, n, n / total, tuple(deciders[area].most_common(top)))
        for area, n in samples.most_common()
    ]
    return shares, total


def render(shares: list[Share], header: str) -> str:
    """The summary as committed in bench/profile.txt: one line per area, then its top frames."""
    lines = [
        header,
        "",
        " share  area (the innermost frames it was charged for, share of the area)",
    ]
    for share in shares:
        lines.append(f"{share.fraction:6.1%}  {share.area}")
        lines.extend(
            f"          {n / share.samples:4.0%} {frame}" for frame, n in share.top if share.samples
        )
    return "\n".join(lines) + "\n"
