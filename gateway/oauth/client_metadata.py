"""Client metadata of an RFC 7591 dynamic registration request, checked strictly.

Only the members below are read (RFC 7591 section 2 and OpenID Connect Registration's
`application_type`); any other member is ignored, as RFC 7591 section 2 allows, and never stored
(`contacts`, `jwks`, `software_statement`, localized `client_name#fr`...). JSON `null` counts as
an absent member. Types are strict: a string where a list belongs, or `true` where a string
belongs, is an error, not something to coerce.

Defaults follow RFC 7591 section 2: `token_endpoint_auth_method` is `client_secret_basic`, so a
client that wants to be public (most MCP clients) must say `none`; `grant_types` is
`["authorization_code"]` and `response_types` `["code"]`. `application_type` (default `web`) is
recorded for the consent page but does not restrict redirect URIs: the redirect URI rules are the
same for every client (`gateway.oauth.redirects`).

Errors carry the RFC 7591 section 3.2.2 code and a description built only from the member's name
and a fixed reason, never from the submitted value (the client name is shown to users).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from gateway.oauth.redirects import (
    RedirectReason,
    RedirectUriError,
    check_https_uri,
    check_registered_redirect,
)

MAX_REDIRECT_URIS = 20
MAX_LIST_ITEMS = 10
MAX_CLIENT_NAME = 100
MAX_TEXT = 256
MAX_SCOPE = 1024

# RFC 6749 section 3.3: scope-token = 1*NQCHAR; the same rule as the config's scope names.
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")

AuthMethod = Literal["none", "client_secret_basic", "client_secret_post"]
GrantType = Literal["authorization_code", "refresh_token"]
ResponseType = Literal["code"]
ApplicationType = Literal["web", "native"]

DEFAULT_AUTH_METHOD: AuthMethod = "client_secret_basic"
"""RFC 7591 section 2: the method of a client that does not name one."""
PUBLIC_AUTH_METHOD: AuthMethod = "none"

_AUTH_METHODS = frozenset({"none", "client_secret_basic", "client_secret_post"})
_GRANT_TYPES = frozenset({"authorization_code", "refresh_token"})
_RESPONSE_TYPES = frozenset({"code"})
_APPLICATION_TYPES = frozenset({"web", "native"})

MetadataReason = (
    Literal[
        "not_an_object",
        "missing",
        "not_a_list",
        "empty",
        "too_many",
        "unsupported_value",
        "authorization_code_required",
        "invalid_scope_token",
    ]
    | RedirectReason
)
RegistrationErrorCode = Literal["invalid_redirect_uri", "invalid_client_metadata"]

_UNPRINTABLE = frozenset({"Zl", "Zp"})
"""Line and paragraph separators; every "C" category (controls, format, surrogates, private use,
unassigned) is refused too."""

_T = TypeVar("_T")


class ClientMetadataError(ValueError):
    """A registration request to refuse with HTTP 400 (RFC 7591 section 3.2.2).

    `error` is the RFC 7591 error code; `member` and `reason` say what was wrong, and
    `description` (safe to send as `error_description`) is made of those two alone.
    """

    def __init__(
        self,
        member: str,
        reason: MetadataReason,
        *,
        error: RegistrationErrorCode = "invalid_client_metadata",
    ) -> None:
        self.error: RegistrationErrorCode = error
        self.member = member
        self.reason: MetadataReason = reason
        self.description = f"{member}: {reason}"
        super().__init__(self.description)


@dataclass(frozen=True, slots=True)
class ClientMetadata:
    """The metadata a registered client is held to; every field already checked."""

    redirect_uris: tuple[str, ...]
    token_endpoint_auth_method: AuthMethod = DEFAULT_AUTH_METHOD
    grant_types: tuple[GrantType, ...] = ("authorization_code",)
    response_types: tuple[ResponseType, ...] = ("code",)
    client_name: str | None = None
    client_uri: str | None = None
    logo_uri: str | None = None
    scope: tuple[str, ...] | None = None
    """Scope tokens the client says it may ask for, in order, without repeats."""
    application_type: ApplicationType = "web"
    software_id: str | None = None
    software_version: str | None = None

    @property
    def is_public(self) -> bool:
        """A client without a secret (`none`): PKCE is its only proof at the token endpoint."""
        return self.token_endpoint_auth_method == PUBLIC_AUTH_METHOD


def parse_client_metadata(document: Any) -> ClientMetadata:
    """The checked metadata of a registration request's parsed JSON body, or `ClientMetadataError`.

    `redirect_uris` is required (1 to `MAX_REDIRECT_URIS`, each as `check_registered_redirect`
    says, repeats dropped); `grant_types` must include `authorization_code` and `response_types`
    be `["code"]`, the pairing RFC 7591 section 2.1 requires; `client_uri` and `logo_uri` are
    https; `client_name` and the software strings are bounded and free of control and format
    characters; `scope` is RFC 6749 section 3.3 scope tokens separated by single spaces.
    """
    if not isinstance(document, dict):
        raise ClientMetadataError("(request body)", "not_an_object")
    redirect_uris = _redirect_uris(document.get("redirect_uris"))
    auth_method = _choice(document, "token_endpoint_auth_method", _AUTH_METHODS)
    grant_types = _choices(document, "grant_types", _GRANT_TYPES, ("authorization_code",))
    if "authorization_code" not in grant_types:
        raise ClientMetadataError("grant_types", "authorization_code_required")
    response_types = _choices(document, "response_types", _RESPONSE_TYPES, ("code",))
    application_type = _choice(document, "application_type", _APPLICATION_TYPES)
    return ClientMetadata(
        redirect_uris=redirect_uris,
        token_endpoint_auth_method=cast(AuthMethod, auth_method or DEFAULT_AUTH_METHOD),
        grant_types=cast(tuple[GrantType, ...], grant_types),
        response_types=cast(tuple[ResponseType, ...], response_types),
        client_name=_optional(document, "client_name", _client_name),
        client_uri=_optional(document, "client_uri", _https_uri),
        logo_uri=_optional(document, "logo_uri", _https_uri),
        scope=_optional(document, "scope", _scope),
        application_type=cast(ApplicationType, application_type or "web"),
        software_id=_optional(document, "software_id", _software_text),
        software_version=_optional(document, "software_version", _software_text),
    )


def _optional(
    document: Mapping[str, Any], member: str, check: Callable[[Any, str], _T]
) -> _T | None:
    value = document.get(member)
    return None if value is None else check(value, member)


def _string(value: Any, member: str) -> str:
    if not isinstance(value, str):
        raise ClientMetadataError(member, "not_a_string")
    return value


def _choice(document: Mapping[str, Any], member: str, allowed: Collection[str]) -> str | None:
    value = _optional(document, member, _string)
    if value is not None and value not in allowed:
        raise ClientMetadataError(member, "unsupported_value")
    return value


def _choices(
    document: Mapping[str, Any], member: str, allowed: Collection[str], default: tuple[str, ...]
) -> tuple[str, ...]:
    values = document.get(member)
    if values is None:
        return default
    if not isinstance(values, list):
        raise ClientMetadataError(member, "not_a_list")
    if not values:
        raise ClientMetadataError(member, "empty")
    if len(values) > MAX_LIST_ITEMS:
        raise ClientMetadataError(member, "too_many")
    for value in values:
        if _string(value, member) not in allowed:
            raise ClientMetadataError(member, "unsupported_value")
    return tuple(dict.fromkeys(values))


def _redirect_uris(values: Any) -> tuple[str, ...]:
    member = "redirect_uris"
    if values is None:
        raise ClientMetadataError(member, "missing", error="invalid_redirect_uri")
    if not isinstance(values, list):
        raise ClientMetadataError(member, "not_a_list", error="invalid_redirect_uri")
    if not values:
        raise ClientMetadataError(member, "empty", error="invalid_redirect_uri")
    if len(values) > MAX_REDIRECT_URIS:
        raise ClientMetadataError(member, "too_many", error="invalid_redirect_uri")
    for index, uri in enumerate(values):
        try:
            check_registered_redirect(uri)
        except RedirectUriError as exc:
            raise ClientMetadataError(
                f"{member}[{index}]", exc.reason, error="invalid_redirect_uri"
            ) from exc
    return tuple(dict.fromkeys(values))


def _https_uri(value: Any, member: str) -> str:
    try:
        return check_https_uri(value)
    except RedirectUriError as exc:
        raise ClientMetadataError(member, exc.reason) from exc


def _text(value: Any, member: str, max_length: int) -> str:
    """Text a person will read: no controls, bidi overrides or other format characters."""
    text = _string(value, member)
    if not text.strip():
        raise ClientMetadataError(member, "empty")
    if len(text) > max_length:
        raise ClientMetadataError(member, "too_long")
    if any(
        unicodedata.category(c) in _UNPRINTABLE or unicodedata.category(c)[0] == "C" for c in text
    ):
        raise ClientMetadataError(member, "invalid_characters")
    return text


def _client_name(value: Any, member: str) -> str:
    return _text(value, member, MAX_CLIENT_NAME)


def _software_text(value: Any, member: str) -> str:
    return _text(value, member, MAX_TEXT)


def _scope(value: Any, member: str) -> tuple[str, ...]:
    scope = _string(value, member)
    if len(scope) > MAX_SCOPE:
        raise ClientMetadataError(member, "too_long")
    tokens = scope.split(" ")
    if not all(_SCOPE_TOKEN.fullmatch(token) for token in tokens):
        raise ClientMetadataError(member, "invalid_scope_token")
    return tuple(dict.fromkeys(tokens))
