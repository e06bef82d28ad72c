"""Demo MCP server for the quickstart: an in-memory file store worth putting a gateway in front of.

    python examples/demo_server.py --port 8001

Serves MCP (Streamable HTTP, built on the official ``mcp`` 2.x SDK) at
``http://127.0.0.1:8001/mcp``. It has no authentication of its own: the point is to keep it on
loopback and let the gateway decide who may read, write or delete. Its tools range from harmless
to destructive, so a policy can allow ``list_files``/``read_file`` to readers and keep
``write_file``/``delete_file`` for writers. The store lives in memory and starts with a few files
every time.

Because it binds 127.0.0.1, the SDK's DNS-rebinding protection is on: requests must carry a
``Host`` of ``127.0.0.1:<port>`` or ``localhost:<port>`` (421 otherwise) and no foreign
``Origin`` (403). SIGTERM and SIGINT shut it down gracefully with exit status 0.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import PurePosixPath
from types import FrameType

import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations

SEED_FILES = {
    "README.md": "# Team notes\nEverything here lives in memory and resets on restart.\n",
    "notes/todo.txt": "- put the MCP Auth Gateway in front of this server\n",
    "secrets/api-key.txt": "demo-not-a-real-key-0000\n",
}
MAX_FILE_BYTES = 64 * 1024

files: dict[str, str] = dict(SEED_FILES)

mcp = MCPServer(
    "demo-files",
    version="1.0.0",
    instructions="An in-memory file store. Paths are relative, slash-separated, e.g. notes/a.txt.",
)

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True)


def _normalise(path: str) -> str:
    """Canonical store key for ``path``; rejects absolute paths and ``..`` segments."""
    pure = PurePosixPath(path.strip())
    if not path.strip() or pure.is_absolute() or ".." in pure.parts or str(pure) == ".":
        raise ToolError(f"invalid path {path!r}: use a relative path such as notes/todo.txt")
    return str(pure)


@mcp.tool(annotations=READ_ONLY)
def list_files() -> list[str]:
    """List every file path in the store, sorted."""
    return sorted(files)


@mcp.tool(annotations=READ_ONLY)
def read_file(path: str) -> str:
    """Return the content of the file at ``path``."""
    key = _normalise(path)
    try:
        return files[key]
    except KeyError:
        raise ToolError(f"no such file: {key}") from None


@mcp.tool(annotations=WRITE)
def write_file(path: str, content: str) -> str:
    """Create or replace the file at ``path`` with ``content``."""
    key = _normalise(path)
    if len(content.encode()) > MAX_FILE_BYTES:
        raise ToolError(f"content exceeds {MAX_FILE_BYTES} bytes")
    created = key not in files
    files[key] = content
    return f"{'created' if created else 'updated'} {key} ({len(content)} characters)"


@mcp.tool(annotations=DESTRUCTIVE)
def delete_file(path: str) -> str:
    """Delete the file at ``path``."""
    key = _normalise(path)
    if files.pop(key, None) is None:
        raise ToolError(f"no such file: {key}")
    return f"deleted {key}"


def _signal_already_handled(signum: int, frame: FrameType | None) -> None:
    """Uvicorn re-raises the signal that stopped it once shutdown is complete; end quietly."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="In-memory file store MCP server (demo)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (keep it loopback)")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--json-response", action="store_true", help="plain JSON replies instead of SSE streams"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    args = parser.parse_args(argv)

    app = mcp.streamable_http_app(json_response=args.json_response, host=args.host)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        # Do not let an open SSE stream hold shutdown hostage.
        timeout_graceful_shutdown=5,
    )
    # Uvicorn installs its own SIGINT/SIGTERM handlers while serving (graceful shutdown) and
    # restores these afterwards, then re-raises the signal; these make that a clean exit 0.
    signal.signal(signal.SIGINT, _signal_already_handled)
    signal.signal(signal.SIGTERM, _signal_already_handled)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
