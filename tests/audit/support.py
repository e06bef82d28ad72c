"""A real gateway writing an audit trail: a local issuer's tokens, a recording upstream, the
`files` route with redaction rules, and requests that get each kind of decision."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.oauth.signing import SigningKey
from gateway.session.seal import new_key
from gateway.web.app import create_app
from gateway.web.server import RunningGateway, start_gateway
from tests.support.configs import gateway_document, validated
from tests.support.local_issuer import LocalIssuer
from tests.support.processes import free_port
from tests.support.secrets import remember

ROUTE = "/files/mcp"
POLICY: dict[str, Any] = {
    "tools": {
        "create_issue": ["mcp:tools"],
        "admin_reset": ["admin:write"],
        "drop_db": "deny",
    },
    "audit": {
        "tools": {
            "create_issue": {"keep": ["title"], "drop": ["token"]},
            "search_*": {"keep": "all", "drop": ["password"]},
        }
    },
}


async def answer(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if isinstance(body, list):
        return web.json_response([{"jsonrpc": "2.0", "id": m["id"], "result": {}} for m in body])
    return web.json_response({"jsonrpc": "2.0", "id": body.get("id"), "result": {}})


@dataclass
class AuditSetup:
    """Key files for a gateway's `audit` section, made fresh per test."""

    directory: Path
    signing_key: SigningKey
    hash_key: str

    @classmethod
    def make(cls, directory: Path) -> AuditSetup:
        key = SigningKey.generate("ES256")
        hash_key = remember(new_key())
        (directory / "audit-signing.pem").write_text(key.to_pem())
        (directory / "audit-hash.key").write_text(hash_key + "\n")
        remember(key.to_pem())
        return cls(directory, key, hash_key)

    @property
    def key_file(self) -> Path:
        return self.directory / "audit-signing.pem"

    @property
    def audit_file(self) -> Path:
        return self.directory / "audit.jsonl"

    def section(self, **overrides: Any) -> dict[str, Any]:
        return {
            "sink": "file",
            "file": str(self.audit_file),
            "signing_key_file": str(self.key_file),
            "hash_key_file": str(self.directory / "audit-hash.key"),
            **overrides,
        }


async def start_audited(
    issuer: LocalIssuer | None,
    upstream_url: str,
    audit: dict[str, Any],
    *,
    data_plane: str = "lean",
    auth: dict[str, Any] | None = None,
    policy: dict[str, Any] = POLICY,
) -> tuple[RunningGateway, str]:
    """A gateway with the `files` route under `policy` and `audit`, trusting `issuer` (or
    with `auth`); (running, base URL). The test stops it."""
    port = free_port()
    if auth is None:
        assert issuer is not None
        auth = {"resource_server": {"authorization_servers": [issuer.auth_server()]}}
    document = gateway_document(
        {
            "name": "files",
            "route": ROUTE,
            "url": upstream_url,
            "scopes": ["mcp:tools"],
            "policy": policy,
        },
        port=port,
        server={"data_plane": data_plane},
        auth=auth,
    )
    document["audit"] = audit
    config = validated(document)
    running = await start_gateway(config, create_app(config, registry=CollectorRegistry()))
    return running, f"http://127.0.0.1:{port}"


def call(name: str, arguments: dict[str, Any] | None = None, rpc_id: int = 1) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name}
    if arguments is not None:
        params["arguments"] = arguments
    return {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call", "params": params}


async def post(base: str, token: str, body: dict[str, Any]) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(base + ROUTE, json=body, headers=headers) as resp,
    ):
        await resp.read()
        return resp.status


SECRET_TOKEN_ARGUMENT = remember("ghp_dropped-secret-argument-6d1f0c")
SECRET_BODY_ARGUMENT = remember("hashed-secret-argument-93be17aa")


async def serve_each_decision(base: str, issuer: LocalIssuer) -> None:
    """allow (with arguments to redact), deny, insufficient_scope, an invalid token, and a
    call under a `keep: all` rule."""
    token = issuer.mint(issuer.claims(base + ROUTE, scope="mcp:tools"))
    arguments = {"title": "Crash on save", "token": SECRET_TOKEN_ARGUMENT,
                 "body": SECRET_BODY_ARGUMENT}  # fmt: skip
    assert await post(base, token, call("create_issue", arguments)) == 200
    assert await post(base, token, call("drop_db", {"really": True})) == 403
    assert await post(base, token, call("admin_reset", {"pin": "1234"})) == 403
    assert await post(base, remember("not-a-valid-token"), call("create_issue")) == 401
    search = {"query": "open bugs", "password": SECRET_TOKEN_ARGUMENT}
    assert await post(base, token, call("search_issues", search)) == 200


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]
