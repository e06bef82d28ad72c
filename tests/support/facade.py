"""The gateway as authorization server with local users, as the facade tests set it up.

`write_users` writes a users file (scrypt hashes of one test password); `facade_gateway` starts
a gateway in facade mode in front of `upstream_url` at `ROUTE`, where everyone signed in may
get `mcp:tools`, users in group `eng` also `files:write`, and the tool `add` needs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.oauth.users import hash_password
from tests.conftest import Gateway, StartGateway

ROUTE = "/files/mcp"
GROUPS = {"alice": ["eng"], "bob": ["sales"]}


def write_users(path: Path, password: str, groups: Mapping[str, list[str]] = GROUPS) -> Path:
    encoded = hash_password(password)
    lines = [f'  {user}: {{password_hash: "{encoded}", claims: {{groups: {list(member)}}}}}'
             for user, member in groups.items()]  # fmt: skip
    path.write_text("users:\n" + "\n".join(lines) + "\n")
    return path


async def facade_gateway(
    start: StartGateway,
    upstream_url: str,
    users_file: Path,
    server: dict[str, Any] | None = None,
    **settings: Any,
) -> Gateway:
    """`settings` go into `auth.authorization_server` (e.g. `signing_key`)."""
    authorization_server: dict[str, Any] = {
        "login": {"local": {"users_file": str(users_file)}},
        "grants": [
            {"scopes": ["mcp:tools"]},
            {"when": {"groups": ["eng"]}, "scopes": ["files:write"]},
        ],
        **settings,
    }
    return await start(
        {
            "name": "files",
            "route": ROUTE,
            "url": upstream_url,
            "scopes": ["mcp:tools"],
            "policy": {"tools": {"add": ["files:write"]}},
        },
        server=server,
        auth={"authorization_server": authorization_server},
    )
