"""Run a real OpenID provider (``tests/node/oidc/provider.mjs``, oidc-provider v9) on loopback.

The issuer is exactly ``http://127.0.0.1:PORT`` (no trailing slash). Discovery advertises
dynamic registration (``/reg``), PKCE S256, ``authorization_response_iss_parameter_supported``
and the JWKS at ``/jwks``. Any ``http://127.0.0.1...`` URL is a resource server: an access
token requested with ``resource=<url>`` is an RS256 JWT (``typ: at+jwt``) whose ``aud`` is
exactly that URL. Login and consent are headless (user ``alice`` unless the authorization request
carries ``login_hint=bob``), see `tests.support.oauth_client`.

Claims requested by scope (``email``, ``groups``) come from UserInfo (``/me``) only, as with a
stock provider (OpenID Connect Core 5.4); ``claims_in_id_token=True`` puts them in the ID token
too. User ``eve`` (groups ``eng``) has a UserInfo that answers ``sub: "alice"``.

Signing keys are generated here with joserfc when the provider first starts, written to a
private temporary directory and passed in by path, so ``handle.process.stop()`` followed by
``handle.process.start()`` brings the provider back on the same port with the same keys (a "JWKS
endpoint down, then back" test). The directory is deleted when the handle exits. State
(sessions, grants, registered clients, refresh tokens) lives in the provider's memory and does
not survive a restart.

A confidential client ``test-cc`` (secret in `OidcProviderProcess.cc_client_secret`) may use
the ``client_credentials`` grant: `client_credentials_token` gets a token for any resource
without a browser flow. Any token request may carry the provider's non-standard ``ttl`` form
field (seconds) to shorten the token's lifetime.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx2
from joserfc.jwk import KeySet, RSAKey

from .node import LOOPBACK_PRELOAD, NODE_DIR, ensure_node_packages, node_executable
from .processes import LOOPBACK, ManagedProcess, free_port

PROVIDER_SCRIPT = NODE_DIR / "oidc" / "provider.mjs"
RESOURCE_SCOPES = ("mcp:tools", "files:read", "files:write", "files:admin")
DEFAULT_SCOPE = "mcp:tools"
DEFAULT_TOKEN_TTL = 300
CC_CLIENT_ID = "test-cc"
TEST_USERS = {
    "alice": ("alice@example.test", ("eng",)),
    "bob": ("bob@example.test", ("sales",)),
    "eve": ("eve@example.test", ("eng",)),
}
"""Users the provider can log in: name -> (email, groups); ``alice`` is the default. ``eve``'s
UserInfo lies: it answers ``sub: "alice"``."""
USERINFO_PATH = "/me"

_HTTP_TIMEOUT = 10.0


def generate_signing_key() -> dict[str, Any]:
    """A fresh RSA-2048 private JWK for RS256 signing, with a thumbprint ``kid``."""
    key = RSAKey.generate_key(2048, private=True, auto_kid=True)
    jwk: dict[str, Any] = dict(key.as_dict(private=True))
    jwk.update(use="sig", alg="RS256")
    return jwk


def write_keys(path: Path, keys: list[dict[str, Any]]) -> None:
    """Write a private JWK set the provider reads at start-up; the first key signs."""
    path.write_text(json.dumps({"keys": keys}), encoding="utf-8")
    path.chmod(0o600)


class OidcProviderProcess:
    """A handle on the provider process; ready on entry (``with`` / ``async with``).

    ``process`` is the underlying `ManagedProcess`: stop and start it to take the provider
    down and bring it back on the same port with the same signing keys.
    """

    def __init__(
        self,
        *,
        port: int,
        resource_scopes: tuple[str, ...],
        default_scope: str,
        token_ttl: int,
        keys_file: Path | None,
        registered_scope_ceiling: bool,
        claims_in_id_token: bool,
        ready_timeout: float,
    ) -> None:
        self.port = port
        self.issuer = f"http://{LOOPBACK}:{port}"
        self.discovery_url = f"{self.issuer}/.well-known/openid-configuration"
        self.jwks_uri = f"{self.issuer}/jwks"
        self.authorization_endpoint = f"{self.issuer}/auth"
        self.token_endpoint = f"{self.issuer}/token"
        self.registration_endpoint = f"{self.issuer}/reg"
        self.userinfo_endpoint = f"{self.issuer}{USERINFO_PATH}"
        self.claims_in_id_token = claims_in_id_token
        self.resource_scopes = resource_scopes
        self.token_ttl = token_ttl
        self.cc_client_id = CC_CLIENT_ID
        self.cc_client_secret = secrets.token_urlsafe(24)
        self._owned_dir: Path | None = None
        self._keys_file = keys_file
        env = {
            "PORT": str(port),
            "RESOURCE_SCOPES": " ".join(resource_scopes),
            "DEFAULT_SCOPE": default_scope,
            "TOKEN_TTL": str(token_ttl),
            "CC_CLIENT_SECRET": self.cc_client_secret,
            "REGISTERED_SCOPE_CEILING": "1" if registered_scope_ceiling else "0",
            "CLAIMS_IN_ID_TOKEN": "1" if claims_in_id_token else "0",
            "NODE_ENV": "test",
        }
        self.process = ManagedProcess(
            [node_executable(), "-r", str(LOOPBACK_PRELOAD), str(PROVIDER_SCRIPT)],
            env=env,
            cwd=NODE_DIR,
            # The provider listens only once configured (keys loaded): any answer is a 200.
            ready_url=self.discovery_url,
            ready_timeout=ready_timeout,
            name="oidc-provider",
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.issuer}>"

    async def requests_seen(self) -> dict[str, int]:
        """``"METHOD /path"`` -> how many such requests the provider has received so far."""
        async with httpx2.AsyncClient(timeout=10) as http:
            response = await http.get(f"{self.issuer}/test/requests")
        response.raise_for_status()
        seen: dict[str, int] = response.json()
        return seen

    @property
    def keys_file(self) -> Path:
        """The private JWK set file the provider signs with (generated at first start)."""
        if self._keys_file is None:
            self._owned_dir = Path(tempfile.mkdtemp(prefix="oidc-provider-keys-"))
            self._keys_file = self._owned_dir / "jwks.json"
            write_keys(self._keys_file, [generate_signing_key()])
        return self._keys_file

    def public_jwks(self) -> KeySet:
        """The public half of the keys in `keys_file` (what ``/jwks`` serves after a start)."""
        data = json.loads(self.keys_file.read_text(encoding="utf-8"))
        return KeySet.import_key_set(
            {"keys": [RSAKey.import_key(jwk).as_dict(private=False) for jwk in data["keys"]]}
        )

    def rotate_keys(self, *, keep_old: bool = True) -> str:
        """Put a new signing key first in `keys_file` (old ones kept unless ``keep_old=False``).

        Takes effect when the provider next starts; returns the new key's ``kid``.
        """
        data = json.loads(self.keys_file.read_text(encoding="utf-8"))
        new = generate_signing_key()
        write_keys(self.keys_file, [new, *data["keys"]] if keep_old else [new])
        kid: str = new["kid"]
        return kid

    def _prepare(self) -> None:
        ensure_node_packages()
        assert self.process.env is not None
        self.process.env["JWKS_FILE"] = str(self.keys_file)

    def _discard_keys(self) -> None:
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None
            self._keys_file = None

    def __enter__(self) -> Self:
        self._prepare()
        self.process.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.process.stop()
        finally:
            self._discard_keys()

    async def __aenter__(self) -> Self:
        self._prepare()
        await self.process.start_async()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.process.stop_async()
        finally:
            self._discard_keys()


def oidc_provider(
    port: int | None = None,
    *,
    resource_scopes: tuple[str, ...] = RESOURCE_SCOPES,
    default_scope: str = DEFAULT_SCOPE,
    token_ttl: int = DEFAULT_TOKEN_TTL,
    keys_file: Path | None = None,
    registered_scope_ceiling: bool = True,
    claims_in_id_token: bool = False,
    ready_timeout: float = 30.0,
) -> OidcProviderProcess:
    """An unstarted OpenID provider on 127.0.0.1; enter it (``with`` / ``async with``).

    ``resource_scopes`` are the scopes every loopback resource server accepts (the provider also
    supports ``openid`` and ``offline_access``); ``default_scope`` is what an authorization
    request without ``scope`` gets; ``token_ttl`` is the access-token lifetime in seconds.
    ``keys_file`` is a private JWK set to sign with (kept); without it one is generated at
    first start and deleted on exit. ``registered_scope_ceiling=False`` makes the provider drop
    ``scope`` from dynamic registrations, so a client that registered with a narrow scope can
    still step up later (stock oidc-provider treats the registered scope as a ceiling).
    ``claims_in_id_token=True`` puts the claims requested by scope (``email``, ``groups``) in the
    ID token as well as UserInfo (``conformIdTokenClaims: false``); by default they come from
    UserInfo only, as with a stock provider.
    """
    return OidcProviderProcess(
        port=free_port() if port is None else port,
        resource_scopes=resource_scopes,
        default_scope=default_scope,
        token_ttl=token_ttl,
        keys_file=keys_file,
        registered_scope_ceiling=registered_scope_ceiling,
        claims_in_id_token=claims_in_id_token,
        ready_timeout=ready_timeout,
    )


async def client_credentials_token(
    provider: OidcProviderProcess,
    resource: str,
    scope: str | None = None,
    *,
    ttl: int | None = None,
) -> str:
    """A JWT access token for ``resource`` from the ``client_credentials`` grant (RFC 6749 §4.4).

    ``sub`` and ``client_id`` are ``test-cc``; ``scope`` is the requested scope narrowed to the
    resource's scopes (no ``scope`` requested: no ``scope`` claim). ``ttl`` (seconds) shortens
    the lifetime through the provider's non-standard ``ttl`` field.
    """
    form = {"grant_type": "client_credentials", "resource": resource}
    if scope is not None:
        form["scope"] = scope
    if ttl is not None:
        form["ttl"] = str(ttl)
    async with httpx2.AsyncClient(timeout=_HTTP_TIMEOUT) as http:
        response = await http.post(
            provider.token_endpoint,
            data=form,
            auth=(provider.cc_client_id, provider.cc_client_secret),
        )
    if response.status_code != 200:
        raise RuntimeError(f"client_credentials failed ({response.status_code}): {response.text}")
    token: str = response.json()["access_token"]
    return token
