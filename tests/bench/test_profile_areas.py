"""bench/profile_areas.py: which area a sampled stack is charged to, and the shares."""

from __future__ import annotations

import pytest

from tests.bench.modules import bench_module

areas = bench_module("profile_areas")

LOOP = (
    "<module> (mcp-auth-gateway:10);main (gateway/cli.py:128);Runner.run (asyncio/runners.py:118)"
)
HANDLER = LOOP + ";RequestHandler._handle_request (aiohttp/web_protocol.py:577)"
MIDDLEWARE = HANDLER + ";request_context_middleware (gateway/web/middleware.py:64)"
FORWARD = (
    MIDDLEWARE + ";McpEndpoint.handle (gateway/web/app.py:68);forward (gateway/web/forward.py:56)"
)
PIPELINE = MIDDLEWARE + ";run_pipeline (gateway/web/pipeline.py:120)"
LEAN = (
    LOOP + ";ClientConnection._serve (gateway/web/plane/connection.py:245)"
    ";McpLane.serve (gateway/web/plane/lane.py:87)"
)

CASES = {
    "uvloop's own C code": (LOOP, "event loop (uvloop's C code)"),
    "aiohttp's parser callback": (
        LOOP + ";RequestHandler.data_received (aiohttp/web_protocol.py:430)",
        "aiohttp server",
    ),
    "a middleware": (MIDDLEWARE, "our glue (gateway/web, rest of gateway/)"),
    "the response write": (
        FORWARD + ";StreamResponse.write (aiohttp/web_response.py:560)"
        ";StreamWriter._writelines (aiohttp/http_writer.py:100)",
        "socket write, client",
    ),
    "the upstream request write": (
        FORWARD + ";UpstreamPool.request (gateway/proxy/pool.py:80)"
        ";UpstreamConnection.send (gateway/proxy/connection.py:172)",
        "socket write, upstream",
    ),
    "waiting in the pool": (
        FORWARD + ";UpstreamResponse.wait_headers (gateway/proxy/connection.py:70)",
        "upstream pool (gateway/proxy)",
    ),
    "a dataclass __init__ counts for its caller": (
        MIDDLEWARE + ";AccessLog.emit (gateway/observability/logging.py:211)"
        ";__create_fn__.<locals>.__init__ (<string>:3)",
        "access log",
    ),
    "the JSON decoder wherever it is called from": (
        PIPELINE + ";parse_message (gateway/jsonrpc.py:40);decode (json/decoder.py:337)"
        ";JSONDecoder.raw_decode (json/decoder.py:353)",
        "JSON parsing",
    ),
    "prometheus_client under our metrics": (
        MIDDLEWARE + ";GatewayMetrics.count_request (gateway/observability/metrics.py:150)"
        ";MutexValue.inc (prometheus_client/values.py:28)",
        "metrics",
    ),
    "the token cache": (
        PIPELINE + ";RouteAuthenticator.authenticate (gateway/auth/authenticator.py:50)"
        ";TokenCache.get (gateway/auth/token_cache.py:30)",
        "authentication",
    ),
    "the policy decision": (
        PIPELINE + ";RoutePolicy.decide (gateway/policy/decision.py:90)",
        "policy",
    ),
    "MCP request checks": (
        PIPELINE + ";inspect_request (gateway/mcp_request.py:200)",
        "MCP inspection",
    ),
    "the lean plane's response write": (
        LEAN + ";LeanResponder.answer (gateway/web/plane/responder.py:70)"
        ";ClientConnection.write (gateway/web/plane/connection.py:177)",
        "socket write, client",
    ),
    "the lean plane's own code": (
        LEAN + ";McpLane._answer (gateway/web/plane/lane.py:105)",
        "lean data plane (gateway/web/plane)",
    ),
    "a pipeline step called by the lean plane": (
        LEAN + ";inspect_message (gateway/web/pipeline.py:298)",
        "our glue (gateway/web, rest of gateway/)",
    ),
    "nothing known": ("0x7fc847febcc0 (?);realloc (libc.so.6)", areas.OTHER),
}


@pytest.mark.parametrize(("stack", "expected"), list(CASES.values()), ids=list(CASES))
def test_a_stack_is_charged_to_the_innermost_known_frame(stack: str, expected: str) -> None:
    assert areas.area_of(stack.split(";"))[0] == expected


def test_shares_are_fractions_of_all_samples_largest_first() -> None:
    write = CASES["the response write"][0]
    lines = [
        f"{write} 5",
        f"{write.replace('http_writer.py:100', 'http_writer.py:120')} 1",  # another line, same area
        f"{LOOP} 3",
        f"{MIDDLEWARE} 1",
        "",  # py-spy ends its file with a newline
    ]
    shares, total = areas.summarize(lines)
    assert total == 10
    assert [(s.area, s.samples, s.fraction) for s in shares] == [
        ("socket write, client", 6, 0.6),
        ("event loop (uvloop's C code)", 3, 0.3),
        ("our glue (gateway/web, rest of gateway/)", 1, 0.1),
    ]
    assert shares[0].top == (("StreamWriter._writelines (aiohttp/http_writer.py)", 6),)


def test_the_rendered_summary_names_each_area_with_its_share() -> None:
    shares, _ = areas.summarize([f"{LOOP} 3", f"{MIDDLEWARE} 1"])
    text = areas.render(shares, "header line")
    assert text.splitlines()[0] == "header line"
    assert " 75.0%  event loop (uvloop's C code)" in text.splitlines()
    assert " 25.0%  our glue (gateway/web, rest of gateway/)" in text.splitlines()
