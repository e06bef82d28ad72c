"""The provider's UserInfo endpoint (OpenID Connect Core 1.0 section 5.3), for the grant rules.

Claims a client asks for by scope (`email`, `profile`, custom ones such as `groups`) are returned
from UserInfo rather than in the ID token once an access token is issued (section 5.4), which is
what stock providers do. The gateway fetches it once per sign-in, with the provider's access
token as a Bearer header, no redirects, a size bound and a timeout; takes only JSON (decoded
strictly) or a signed JWT (checked by the caller like the ID token, then by `check_jwt_claims`);
requires its `sub` to be the ID token's (section 5.3.4); and merges its claims over the ID
token's, never the sign-in claims (`merge_claims`).

Everything here but `fetch_userinfo` is pure. Each failure is a `UserInfoError` with a stable
reason code for the log; no token or response body is ever part of it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from gateway.auth.claims import audiences
from gateway.auth.fetch import read_bounded
from gateway.jsonrpc import MessageError, decode_json

ClaimSource = Literal["id_token", "userinfo"]

MAX_USERINFO_BYTES = 256 * 1024
LEEWAY = 60.0

SIGN_IN_CLAIMS = frozenset(
    {"iss", "sub", "aud", "azp", "exp", "iat", "nbf", "auth_time", "nonce", "acr", "amr", "sid"}
    | {"at_hash", "c_hash", "s_hash", "jti", "typ", "cnf"}
)
"""Claims about the sign-in itself, not the user: taken from the verified ID token only, never
from UserInfo (which may repeat them with its own meaning, e.g. a signed response's `aud`)."""


class UserInfoError(Exception):
    """UserInfo could not be had or cannot be trusted; `reason` is a stable code for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class UserInfoResponse:
    media_type: Literal["application/json", "application/jwt"]
    body: bytes


async def fetch_userinfo(
    session: aiohttp.ClientSession, endpoint: str, access_token: str, *, within: float
) -> UserInfoResponse:
    """GET the UserInfo endpoint with the access token in the header (RFC 6750 section 2.1,
    never in the query). Only a 200 with a JSON or JWT body of at most 256 KiB is taken;
    redirects are not followed."""
    try:
        async with session.get(
            endpoint,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=within),
            headers={
                "Authorization": f"Bearer {access_token}",
                "Accept": "application/json, application/jwt",
            },
        ) as response:
            if response.status != 200:
                raise UserInfoError("userinfo_http_status")
            kind = media_type(response.headers.get("Content-Type", ""))
            if kind is None:
                raise UserInfoError("userinfo_content_type")
            body = await read_bounded(
                response.content, MAX_USERINFO_BYTES, declared=response.content_length
            )
            if body is None:
                raise UserInfoError("userinfo_too_large")
    except TimeoutError:
        raise UserInfoError("userinfo_timeout") from None
    except aiohttp.ClientError:
        raise UserInfoError("userinfo_unreachable") from None
    return UserInfoResponse(kind, body)


def media_type(content_type: str) -> Literal["application/json", "application/jwt"] | None:
    """The response's media type if it is one UserInfo may use (section 5.3.2), else None.
    A JSON body must be UTF-8 (RFC 8259 section 8.1): another declared charset is refused."""
    kind, _, parameters = content_type.partition(";")
    kind = kind.strip().lower()
    if kind == "application/jwt":
        return "application/jwt"
    if kind != "application/json":
        return None
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            return None
    return "application/json"


def json_claims(body: bytes) -> dict[str, Any]:
    """A JSON UserInfo response's claims, decoded strictly (`gateway.jsonrpc.decode_json`:
    no repeated keys, NaN, lone surrogates or deep nesting, so no two readings of it)."""
    try:
        claims = decode_json(body)
    except MessageError:
        raise UserInfoError("userinfo_not_json") from None
    if not isinstance(claims, dict):
        raise UserInfoError("userinfo_not_json")
    return claims


def check_jwt_claims(
    claims: Mapping[str, Any], *, issuer: str, client_id: str, now: float | None = None
) -> None:
    """A signed UserInfo response's own claims (section 5.3.2): `iss` the provider's and `aud`
    holding our client id when present, `exp` not passed when present."""
    now = time.time() if now is None else now
    if "iss" in claims and claims["iss"] != issuer:
        raise UserInfoError("userinfo_jwt_claims")
    if "aud" in claims and client_id not in audiences(claims):
        raise UserInfoError("userinfo_jwt_claims")
    if "exp" in claims:
        expiry = claims["exp"]
        if type(expiry) not in (int, float) or expiry + LEEWAY <= now:
            raise UserInfoError("userinfo_jwt_claims")


def check_subject(id_token_subject: str, claims: Mapping[str, Any]) -> None:
    """UserInfo must describe the user the ID token names (section 5.3.4): the same `sub`,
    exactly, or its claims are another user's and must not be used."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or subject != id_token_subject:
        raise UserInfoError("userinfo_sub_mismatch")


def merge_claims(
    id_token: Mapping[str, Any],
    userinfo: Mapping[str, Any] | None,
    sources: Iterable[ClaimSource],
) -> dict[str, Any]:
    """The claims the grant rules see.

    Both sources: the ID token's, with UserInfo's (when there is a response) over them except
    `SIGN_IN_CLAIMS`. UserInfo alone: its claims without `SIGN_IN_CLAIMS`, plus the ID token's
    `sub`. ID token alone: the ID token's. `userinfo` is None when it was not fetched.
    """
    chosen = frozenset(sources)
    if "userinfo" not in chosen or userinfo is None:
        if "id_token" not in chosen:
            raise UserInfoError("userinfo_endpoint_missing")
        return dict(id_token)
    about_user = {k: v for k, v in userinfo.items() if k not in SIGN_IN_CLAIMS}
    if "id_token" not in chosen:
        return {"sub": id_token["sub"], **about_user}
    return {**id_token, **about_user}
