"""A stand-in browser for the MCP Inspector CLI's own OAuth sign-in: ``$BROWSER`` for it.

Without a TTY the Inspector CLI 2.x signs in only with ``MCP_AUTO_OPEN_ENABLED=true``; it then
opens the authorization URL with the ``open`` package, whose bundled ``xdg-open`` runs
``$BROWSER URL`` when no desktop is detected. Run as ``python -m tests.support.inspector_browser
URL`` (``$BROWSER`` may hold a command with arguments), this plays the user as
`tests.support.oauth_client.follow_authorization` does: GET the authorization URL, fill in the
gateway's consent and sign-in forms (with ``Origin`` set to the page's origin, cookies kept),
follow the redirects, and finally GET the redirect back to the Inspector's loopback callback
listener, which exchanges the code.

It talks to the test through the directory named by ``INSPECTOR_BROWSER_DIR``: it reads
``sign_in.json`` (``{"username": ..., "password": ...}``), appends its PID to ``pids`` as it
starts (so the test can wait for it and stop it), and appends one JSON line per authorization to
``visits.jsonl``: the authorization URL, each request and its status, the callback's status, and
the error if the flow failed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2

from tests.support.oauth_client import (
    AuthorizationError,
    HttpExchange,
    SignIn,
    follow_authorization,
)

DIR_ENV = "INSPECTOR_BROWSER_DIR"
SIGN_IN_FILE = "sign_in.json"
PIDS_FILE = "pids"
VISITS_FILE = "visits.jsonl"
_CALLBACK_TIMEOUT = 10.0


async def visit(authorization_url: str, sign_in: SignIn) -> dict[str, Any]:
    """Follow one authorization to the client's callback and deliver the answer there (the code,
    or the authorization server's error), exactly as the server's last redirect says."""
    redirect_uri = parse_qs(urlsplit(authorization_url).query)["redirect_uri"][0]
    exchanges: list[HttpExchange] = []
    targets: list[str] = []

    def keep(url: str) -> str:
        targets.append(url)
        return url

    record: dict[str, Any] = {"authorization_url": authorization_url}
    try:
        await follow_authorization(
            authorization_url, redirect_uri, exchanges=exchanges, sign_in=sign_in, rewrite=keep
        )
    except AuthorizationError as error:
        record |= {"error": str(error), "oauth_error": error.error}
    if targets and targets[-1].split("?")[0] == redirect_uri:
        async with httpx2.AsyncClient(timeout=_CALLBACK_TIMEOUT, trust_env=False) as http:
            record["callback_status"] = (await http.get(targets[-1])).status_code
    record["exchanges"] = [asdict(exchange) for exchange in exchanges]
    return record


def main() -> int:
    directory = Path(os.environ[DIR_ENV])
    with (directory / PIDS_FILE).open("a") as pids:
        pids.write(f"{os.getpid()}\n")
    user = json.loads((directory / SIGN_IN_FILE).read_text())
    try:
        record = asyncio.run(visit(sys.argv[1], SignIn(user["username"], user["password"])))
    except Exception as error:  # reported to the test through the record, whatever it is
        record = {"authorization_url": sys.argv[1], "error": repr(error)}
    with (directory / VISITS_FILE).open("a") as visits:
        visits.write(json.dumps(record) + "\n")
    return 0 if "error" not in record else 1


if __name__ == "__main__":
    sys.exit(main())
