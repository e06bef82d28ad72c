"""A one-shot MCP client on the 1.x Python SDK, run with the `.venv-mcp1` interpreter.

    client.py URL [--call TOOL [--args JSON]] [--header 'Name: value' ...] [--timeout SECONDS]

Extra headers may also come as a JSON object in the MCP1_CLIENT_HEADERS environment variable
(how tests pass bearer tokens, keeping them out of process listings); --header wins on a clash.

Connects over Streamable HTTP, initializes, lists tools, optionally calls one tool, and prints
exactly one JSON object on stdout:

    {"protocol_version": "...", "server_name": "...", "tools": [...],
     "call": {"content": [...], "structured_content": ..., "is_error": false} | null}

On failure it prints ``{"error": {"type": ..., "message": ..., "status": ...}}`` and exits 1;
``status`` is the HTTP status when the failure was an HTTP error response, else null.

This file must not import anything from the repository: it runs against mcp 1.x, which cannot
share an environment with the 2.x SDK the rest of the tests use.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import anyio
import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import McpError


def _parse_header(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {raw!r}")
    return name.strip(), value.strip()


async def run(
    url: str, call: str | None, arguments: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    http_client = create_mcp_http_client(headers=headers or None)
    async with (
        http_client,
        streamable_http_client(url, http_client=http_client) as (read, write, _session_id),
        ClientSession(read, write) as session,
    ):
        init = await session.initialize()
        tools = await session.list_tools()
        out: dict[str, Any] = {
            "protocol_version": init.protocolVersion,
            "server_name": init.serverInfo.name,
            "tools": [tool.name for tool in tools.tools],
            "call": None,
        }
        if call is not None:
            result = await session.call_tool(call, arguments)
            out["call"] = {
                "content": [
                    block.model_dump(mode="json", by_alias=True, exclude_none=True)
                    for block in result.content
                ],
                "structured_content": result.structuredContent,
                "is_error": result.isError,
            }
        return out


def _leaf(exc: BaseException) -> BaseException:
    """The first non-group exception: anyio task groups wrap transport errors."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> dict[str, Any]:
    leaf = _leaf(exc)
    status = leaf.response.status_code if isinstance(leaf, httpx.HTTPStatusError) else None
    code = leaf.error.code if isinstance(leaf, McpError) else None
    return {"type": type(leaf).__name__, "message": str(leaf), "status": status, "code": code}


def main() -> int:
    parser = argparse.ArgumentParser(description="One-shot MCP 1.x client")
    parser.add_argument("url")
    parser.add_argument("--call", metavar="TOOL")
    parser.add_argument("--args", default="{}", metavar="JSON", help="tool arguments object")
    parser.add_argument(
        "--header", action="append", type=_parse_header, default=[], metavar="'Name: value'"
    )
    parser.add_argument("--timeout", type=float, default=30.0)
    ns = parser.parse_args()
    arguments = json.loads(ns.args)
    if not isinstance(arguments, dict):
        parser.error("--args must be a JSON object")

    headers: dict[str, str] = json.loads(os.environ.get("MCP1_CLIENT_HEADERS") or "{}")
    headers.update(ns.header)

    async def bounded() -> dict[str, Any]:
        with anyio.fail_after(ns.timeout):
            return await run(ns.url, ns.call, arguments, headers)

    try:
        out = anyio.run(bounded)
    except Exception as exc:  # report every failure as data; the caller decides
        print(json.dumps({"error": _describe(exc)}))
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
