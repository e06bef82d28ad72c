"""An mcp 2.x `MCPServer` that is itself an OAuth protected resource, trusting one provider.

Run it as ``python tests/servers/sdk_protected_server.py --port N --issuer URL
[--required-scope S ...]``; it listens on 127.0.0.1 and serves MCP at ``/mcp``. The SDK's own
auth layer answers an unauthenticated request with 401 and ``WWW-Authenticate: Bearer
resource_metadata=".../.well-known/oauth-protected-resource/mcp"`` and serves that RFC 9728
document (``resource`` = this server's ``/mcp`` URL, ``authorization_servers`` = [issuer],
``scopes_supported`` = the required scopes). Bearer tokens are RS256 JWT access tokens
(RFC 9068) checked here with joserfc against the issuer's JWKS: ``typ``, signature,
``iss``, ``aud`` (exactly the resource URL), ``exp``.

It exists to exercise the SDK client's OAuth flow against a real resource server without the
gateway; ``whoami`` reports the principal the server saw.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import httpx2
import uvicorn
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

HOST = "127.0.0.1"
ALGORITHMS = ["RS256"]


class JwtAccessTokenVerifier:
    """A `mcp.server.auth.provider.TokenVerifier` for RFC 9068 JWT access tokens.

    The JWKS is fetched on first use and again whenever a token names an unknown ``kid``.
    """

    def __init__(self, issuer: str, audience: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self._keys: KeySet | None = None

    async def _fetch_keys(self) -> KeySet:
        async with httpx2.AsyncClient(timeout=5.0, trust_env=False) as http:
            discovery = (await http.get(f"{self.issuer}/.well-known/openid-configuration")).json()
            jwks = (await http.get(discovery["jwks_uri"])).json()
        self._keys = KeySet.import_key_set(jwks)
        return self._keys

    async def _keys_for(self, kid: str | None) -> KeySet:
        keys = self._keys
        if keys is None or not any(key.kid == kid for key in keys.keys):
            keys = await self._fetch_keys()
        return keys

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
            if header.get("typ") != "at+jwt":
                return None
            decoded = jwt.decode(token, await self._keys_for(header.get("kid")), ALGORITHMS)
        except (JoseError, ValueError, httpx2.HTTPError):
            return None
        claims: dict[str, Any] = decoded.claims
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        exp = claims.get("exp")
        if (
            claims.get("iss") != self.issuer
            or self.audience not in audiences
            or not isinstance(exp, int)
            or exp <= time.time()
        ):
            return None
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id")),
            scopes=str(claims.get("scope", "")).split(),
            expires_at=exp,
            resource=self.audience,
            subject=claims.get("sub"),
            claims=claims,
        )


def build_server(port: int, issuer: str, required_scopes: list[str]) -> MCPServer:
    resource = f"http://{HOST}:{port}/mcp"
    server = MCPServer(
        "sdk-protected-server",
        version="1.0.0",
        log_level="WARNING",
        auth=AuthSettings(
            issuer_url=issuer,  # type: ignore[arg-type]  # pydantic validates the str
            resource_server_url=resource,  # type: ignore[arg-type]
            required_scopes=required_scopes or None,
            validate_token_resource=True,
        ),
        token_verifier=JwtAccessTokenVerifier(issuer, resource),
    )

    @server.tool()
    def echo(text: str) -> str:
        """Return ``text`` unchanged."""
        return text

    @server.tool()
    def whoami() -> str:
        """``<sub> <client_id> <space-separated scopes>`` of the caller's access token."""
        token = get_access_token()
        if token is None:
            return "anonymous"
        return f"{token.subject} {token.client_id} {' '.join(token.scopes)}"

    @server.custom_route("/healthz", methods=["GET"])  # type: ignore[untyped-decorator]
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--required-scope", action="append", default=[])
    parser.add_argument("--json-response", action="store_true")
    args = parser.parse_args(argv)
    server = build_server(args.port, args.issuer, args.required_scope)
    app = server.streamable_http_app(json_response=args.json_response, host=HOST)
    config = uvicorn.Config(
        app, host=HOST, port=args.port, log_level="warning", timeout_graceful_shutdown=1
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
