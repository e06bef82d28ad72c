"""A stdio MCP server (JSON-RPC lines on stdin and stdout) that answers every `tools/call` with
the `params._meta` it received, as text: what a tracing gateway put there reaches the test."""

from __future__ import annotations

import json
import sys
from typing import Any


def answer(message: dict[str, Any]) -> dict[str, Any] | None:
    method, params = message.get("method"), message.get("params") or {}
    if "id" not in message:
        return None  # a notification
    result: dict[str, Any] = {}
    if method == "initialize":
        result = {
            "protocolVersion": params.get("protocolVersion", "2025-11-25"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "trace-recorder", "version": "1.0.0"},
            "instructions": json.dumps(params.get("_meta", {})),
        }
    elif method == "tools/call":
        text = json.dumps(params.get("_meta", {}))
        result = {"content": [{"type": "text", "text": text}]}
    return {"jsonrpc": "2.0", "id": message["id"], "result": result}


def main() -> None:
    for line in sys.stdin:
        reply = answer(json.loads(line))
        if reply is not None:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
