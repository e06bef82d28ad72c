"""Signing users in at the company's OpenID provider: the gateway as an OpenID Connect client.

Discovery with an exact issuer check, and a provider that does not advertise PKCE S256
(`code_challenge_methods_supported`, RFC 8414 section 2) refused unless the config vouches for
it; authorization-code flow with PKCE S256 (sent either way), a single-use
`state` (the store's login transaction) and a `nonce`; at the callback the RFC 9207 `iss` check
comes first, before the code goes anywhere; then the code is redeemed and the ID token verified
(signature from the provider's JWKS, exact `iss`, `aud` holding our client id, `exp`, `nonce`).
Then, when `claims_from` names `userinfo` and the provider has a UserInfo endpoint, its claims
are fetched with the provider's access token and merged over the ID token's for the grant rules
(`gateway.oauth.userinfo`; OpenID Connect Core 5.3-5.4).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from gateway.auth.authenticator import HttpSessionHolder
from gateway.auth.claims import audiences
from gateway.auth.fetch import FetchError, fetch_json
from gateway.auth.jwks import JwksCache, KeysUnavailableError
from gateway.auth.jwt import TokenError, check_header, parse_jwt, verify_with_any
from gateway.auth.metadata import discover
from gateway.config.auth import OidcLogin
from gateway.config.fields import ASYMMETRIC_ALGORITHMS
from gateway.oauth.userinfo import (
    UserInfoError,
    check_jwt_claims,
    check_subject,
    fetch_userinfo,
    json_claims,
    merge_claims,
)
from gateway.observability.logging import get_logger

log = get_logger("gateway.audit")

LEEWAY = 60.0


class UpstreamLoginError(Exception):
    """The provider's answer cannot be trusted or used; `reason` is for the audit log only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UpstreamProviderUnusableError(UpstreamLoginError):
    """The provider answered, but the gateway will not sign users in there as it is
    configured (e.g. it does not advertise PKCE S256): an operator must act."""


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    iss_supported: bool | None
    """`authorization_response_iss_parameter_supported`, None when not advertised."""
    userinfo_endpoint: str | None = None
    """None when not advertised (or not wanted: `claims_from` without `userinfo`)."""


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge), RFC 7636 sections 4.1-4.2."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class UpstreamProvider:
    def __init__(self, settings: OidcLogin, redirect_uri: str, http: HttpSessionHolder) -> None:
        self.settings = settings
        self.redirect_uri = redirect_uri
        self._http = http
        self._within = settings.fetch_timeout
        self._metadata: ProviderMetadata | None = None
        self._jwks = JwksCache(self._fetch_jwks, cache_ttl=600.0, cooldown=30.0)

    async def metadata(self) -> ProviderMetadata:
        if self._metadata is None:
            try:
                document = await discover(
                    self._http.get(), self.settings.issuer, within=self._within
                )
            except FetchError as exc:
                raise UpstreamLoginError(f"discovery failed: {exc}") from None
            endpoints = {}
            for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                value = document.get(name)
                if not isinstance(value, str) or not value.startswith(("https://", "http://")):
                    raise UpstreamLoginError(f"discovery document has no usable {name}")
                endpoints[name] = value
            methods = document.get("code_challenge_methods_supported")
            s256 = isinstance(methods, list) and "S256" in methods
            if not s256 and not self.settings.allow_unadvertised_pkce:
                raise UpstreamProviderUnusableError(
                    "discovery document does not list S256 in code_challenge_methods_supported"
                )
            if not s256:  # once: the metadata is kept from here on
                log.warning("upstream_pkce_unadvertised_allowed", issuer=self.settings.issuer)
            advertised = document.get("authorization_response_iss_parameter_supported")
            self._metadata = ProviderMetadata(
                issuer=self.settings.issuer,
                iss_supported=None if advertised is None else advertised is not False,
                userinfo_endpoint=self._userinfo_endpoint(document),
                **endpoints,
            )
        return self._metadata

    def _userinfo_endpoint(self, document: Mapping[str, Any]) -> str | None:
        if "userinfo" not in self.settings.claims_from:
            return None
        value = document.get("userinfo_endpoint")
        if value is None:
            if "id_token" not in self.settings.claims_from:
                raise UpstreamProviderUnusableError(
                    "discovery document has no userinfo_endpoint, and claims_from is [userinfo]"
                )
            return None
        if not isinstance(value, str) or not value.startswith(("https://", "http://")):
            raise UpstreamProviderUnusableError(
                "discovery document has no usable userinfo_endpoint"
            )
        return value

    async def authorization_url(
        self, state: str, nonce: str, challenge: str, *, fresh: Mapping[str, str] | None = None
    ) -> str:
        """`fresh`: the client's `prompt=login` / `max_age`, passed on so that the provider
        signs the user in again rather than through its own session."""
        metadata = await self.metadata()
        params = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": " ".join(self.settings.scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **(fresh or {}),
        }
        separator = "&" if "?" in metadata.authorization_endpoint else "?"
        return metadata.authorization_endpoint + separator + urlencode(params)

    async def redeem(
        self, code: str, verifier: str, nonce: str, *, max_age: int | None = None
    ) -> Mapping[str, Any]:
        """Exchange the code; the claims for the grant rules: the verified ID token's, with
        UserInfo's merged over them as `claims_from` says (`gateway.oauth.userinfo`).
        `max_age`: what the sign-in asked the provider for (`auth_time` must show it)."""
        metadata = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": verifier,
            "client_id": self.settings.client_id,
        }
        authorization = None
        secret = self.settings.client_secret
        if secret is not None:
            pair = f"{self.settings.client_id}:{secret.get_secret_value()}".encode()
            authorization = "Basic " + base64.b64encode(pair).decode("ascii")
        try:
            answer = await fetch_json(
                self._http.get(),
                "POST",
                metadata.token_endpoint,
                within=self._within,
                form=form,
                authorization=authorization,
            )
        except FetchError as exc:
            raise UpstreamLoginError(f"token request failed: {exc}") from None
        id_token = answer.get("id_token")
        if not isinstance(id_token, str):
            raise UpstreamLoginError("no id_token in the token response")
        claims = await self._verify_id_token(id_token, nonce, max_age)
        try:
            userinfo = await self._userinfo(metadata, answer, str(claims["sub"]))
            return merge_claims(claims, userinfo, self.settings.claims_from)
        except UserInfoError as exc:
            raise UpstreamLoginError(exc.reason) from None

    async def _userinfo(
        self, metadata: ProviderMetadata, answer: Mapping[str, Any], subject: str
    ) -> dict[str, Any] | None:
        """UserInfo's claims about `subject`, or None when they are not wanted or the provider
        has no UserInfo endpoint (`merge_claims` decides whether that is enough)."""
        if metadata.userinfo_endpoint is None:
            return None
        access_token = answer.get("access_token")
        token_type = answer.get("token_type", "Bearer")
        if not isinstance(access_token, str) or not access_token:
            raise UserInfoError("userinfo_no_access_token")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise UserInfoError("userinfo_token_type")
        response = await fetch_userinfo(
            self._http.get(), metadata.userinfo_endpoint, access_token, within=self._within
        )
        if response.media_type == "application/json":
            claims = json_claims(response.body)
        else:
            claims = await self._verify_signed_userinfo(response.body)
        check_subject(subject, claims)
        return claims

    async def _verify_signed_userinfo(self, body: bytes) -> dict[str, Any]:
        """A signed UserInfo response (OpenID Connect Core 5.3.2): verified with the
        provider's keys, like the ID token, then its `iss`, `aud` and `exp` when present."""
        try:
            jwt = parse_jwt(body.decode("ascii").strip())
            check_header(jwt, algorithms=frozenset(ASYMMETRIC_ALGORITHMS), require_at_jwt=False)
            try:
                keys = await self._jwks.keys_for(jwt.kid)
            except KeysUnavailableError:
                raise UserInfoError("userinfo_keys_unavailable") from None
            verify_with_any(jwt, keys)
        except (UnicodeDecodeError, TokenError):
            raise UserInfoError("userinfo_jwt_invalid") from None
        check_jwt_claims(jwt.claims, issuer=self.settings.issuer, client_id=self.settings.client_id)
        return dict(jwt.claims)

    async def _verify_id_token(
        self, id_token: str, nonce: str, max_age: int | None
    ) -> Mapping[str, Any]:
        try:
            jwt = parse_jwt(id_token)
            check_header(jwt, algorithms=frozenset(ASYMMETRIC_ALGORITHMS), require_at_jwt=False)
            try:
                keys = await self._jwks.keys_for(jwt.kid)
            except KeysUnavailableError as exc:
                raise UpstreamLoginError(f"provider keys unavailable: {exc}") from None
            verify_with_any(jwt, keys)
        except TokenError as exc:
            raise UpstreamLoginError(f"id_token: {exc.reason}") from None
        claims = jwt.claims
        now = time.time()
        expiry = claims.get("exp")
        checks = {
            "iss": claims.get("iss") == self.settings.issuer,
            "aud": self.settings.client_id in audiences(claims),
            "azp": len(audiences(claims)) == 1 or claims.get("azp") == self.settings.client_id,
            "exp": isinstance(expiry, int | float) and expiry + LEEWAY > now,
            "sub": isinstance(claims.get("sub"), str) and bool(claims.get("sub")),
            "nonce": isinstance(claims.get("nonce"), str)
            and hmac.compare_digest(str(claims.get("nonce")), nonce),
            "auth_time": auth_time_fits(claims.get("auth_time"), max_age, now),
        }
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            raise UpstreamLoginError(f"id_token claims refused: {', '.join(failed)}")
        return claims

    async def _fetch_jwks(self) -> dict[str, Any]:
        metadata = await self.metadata()
        return await fetch_json(self._http.get(), "GET", metadata.jwks_uri, within=self._within)


def auth_time_fits(auth_time: object, max_age: int | None, now: float) -> bool:
    """An ID token's `auth_time` is a number, not in the future; when the sign-in asked for
    `max_age`, it must be there and no older (OpenID Connect Core sections 2 and 3.1.3.7: a
    provider that reused an older sign-in of its own refuses the sign-in, not the client's
    demand). Without `max_age`, a token without one is fine (providers add it only then)."""
    if auth_time is None:
        return max_age is None
    when = _number(auth_time)
    if when is None or when > now + LEEWAY:
        return False
    return max_age is None or now - when <= max_age + LEEWAY


def provider_auth_time(claims: Mapping[str, Any]) -> float | None:
    """When the user last signed in at the provider: the `auth_time` of its checked ID token
    (`auth_time_fits`), if it has one."""
    return _number(claims.get("auth_time"))


def _number(value: object) -> float | None:
    """A JSON number (not a boolean) as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
