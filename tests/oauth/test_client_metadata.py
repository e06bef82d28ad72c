"""RFC 7591 registration requests: strict types, RFC defaults, unknown members dropped."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from gateway.oauth.client_metadata import (
    MAX_CLIENT_NAME,
    MAX_LIST_ITEMS,
    MAX_REDIRECT_URIS,
    MAX_SCOPE,
    MAX_TEXT,
    ClientMetadata,
    ClientMetadataError,
    parse_client_metadata,
)

CB = "http://localhost:3030/callback"
MINIMAL = {"redirect_uris": [CB]}


def doc(**members: Any) -> dict[str, Any]:
    return {**MINIMAL, **members}


def test_a_minimal_request_gets_the_rfc_7591_defaults() -> None:
    assert parse_client_metadata(MINIMAL) == ClientMetadata(
        redirect_uris=(CB,),
        token_endpoint_auth_method="client_secret_basic",
        grant_types=("authorization_code",),
        response_types=("code",),
        client_name=None,
        client_uri=None,
        logo_uri=None,
        scope=None,
        application_type="web",
        software_id=None,
        software_version=None,
    )
    assert not parse_client_metadata(MINIMAL).is_public


def test_what_the_mcp_python_sdk_sends_is_accepted() -> None:
    body = json.loads(
        """{"redirect_uris": ["http://localhost:3030/callback"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "scope": "mcp:tools offline_access",
            "client_name": "Example MCP Client",
            "application_type": "native"}"""
    )
    metadata = parse_client_metadata(body)
    assert metadata.is_public
    assert metadata.grant_types == ("authorization_code", "refresh_token")
    assert metadata.scope == ("mcp:tools", "offline_access")
    assert metadata.client_name == "Example MCP Client"
    assert metadata.application_type == "native"


def test_every_supported_member_is_kept() -> None:
    metadata = parse_client_metadata(
        doc(
            redirect_uris=["https://app.example.com/cb", CB, "https://app.example.com/cb"],
            token_endpoint_auth_method="client_secret_post",
            grant_types=["refresh_token", "authorization_code", "refresh_token"],
            response_types=["code", "code"],
            client_name="Équipe Données 📁",
            client_uri="https://app.example.com/",
            logo_uri="https://cdn.example.com/logo.png",
            scope="files:read files:write files:read",
            application_type="web",
            software_id="4NRB1-0XZABZI9E6-5SM3R",
            software_version="2.1.0",
        )
    )
    assert metadata == ClientMetadata(
        redirect_uris=("https://app.example.com/cb", CB),
        token_endpoint_auth_method="client_secret_post",
        grant_types=("refresh_token", "authorization_code"),
        response_types=("code",),
        client_name="Équipe Données 📁",
        client_uri="https://app.example.com/",
        logo_uri="https://cdn.example.com/logo.png",
        scope=("files:read", "files:write"),
        application_type="web",
        software_id="4NRB1-0XZABZI9E6-5SM3R",
        software_version="2.1.0",
    )


def test_unknown_members_are_ignored_and_never_stored() -> None:
    extra = doc(
        contacts=["ops@example.com"],
        jwks={"keys": []},
        software_statement="eyJ...",
        client_secret="chosen-by-client",
        client_id="chosen-by-client",
        **{"client_name#fr": "<b>Mon client</b>", "x-custom": {"nested": True}},
    )
    metadata = parse_client_metadata(extra)
    assert metadata == parse_client_metadata(MINIMAL)
    stored = {field.name for field in dataclasses.fields(metadata)}
    assert stored.isdisjoint(extra.keys() - MINIMAL.keys())


def test_null_members_count_as_absent() -> None:
    nulls = {
        name: None
        for name in (
            "token_endpoint_auth_method",
            "grant_types",
            "response_types",
            "client_name",
            "client_uri",
            "logo_uri",
            "scope",
            "application_type",
            "software_id",
            "software_version",
        )
    }
    assert parse_client_metadata(doc(**nulls)) == parse_client_metadata(MINIMAL)


def test_metadata_is_frozen() -> None:
    metadata = parse_client_metadata(MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        metadata.client_name = "changed"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("members", "name", "size"),
    [
        ({"redirect_uris": [f"{CB}{i}" for i in range(MAX_REDIRECT_URIS)]}, "redirect_uris", 0),
        ({"client_name": "n" * MAX_CLIENT_NAME}, "client_name", 0),
        ({"software_id": "s" * MAX_TEXT}, "software_id", 0),
        ({"scope": "s" * MAX_SCOPE}, "scope", 0),
        ({"grant_types": ["authorization_code"] * MAX_LIST_ITEMS}, "grant_types", 1),
    ],
    ids=["max-redirect-uris", "max-client-name", "max-software-id", "max-scope", "max-list-items"],
)
def test_sizes_up_to_the_limits_are_accepted(members: dict[str, Any], name: str, size: int) -> None:
    """`size` 0: the value is kept as given; else the number of values left after repeats."""
    (value,) = members.values()
    kept = getattr(parse_client_metadata(doc(**members)), name)
    if size:
        assert len(kept) == size
    else:
        assert kept in (value, tuple(value), (value,))


BAD_URI = "https://app.example.com/cb#<script>alert(1)</script>"
INVALID_REDIRECT = [
    ({"redirect_uris": None}, "redirect_uris", "missing", "redirect-uris-null"),
    ({"redirect_uris": CB}, "redirect_uris", "not_a_list", "redirect-uris-string"),
    ({"redirect_uris": {"0": CB}}, "redirect_uris", "not_a_list", "redirect-uris-object"),
    ({"redirect_uris": []}, "redirect_uris", "empty", "redirect-uris-empty"),
    (
        {"redirect_uris": [f"{CB}{i}" for i in range(MAX_REDIRECT_URIS + 1)]},
        "redirect_uris",
        "too_many",
        "redirect-uris-too-many",
    ),
    (
        {"redirect_uris": [CB] * (MAX_REDIRECT_URIS + 1)},
        "redirect_uris",
        "too_many",
        "redirect-uris-too-many-repeats-counted",
    ),
    ({"redirect_uris": [CB, 7]}, "redirect_uris[1]", "not_a_string", "redirect-uri-number"),
    ({"redirect_uris": [True]}, "redirect_uris[0]", "not_a_string", "redirect-uri-bool"),
    ({"redirect_uris": [[CB]]}, "redirect_uris[0]", "not_a_string", "redirect-uri-nested"),
    ({"redirect_uris": [BAD_URI]}, "redirect_uris[0]", "invalid_characters", "redirect-uri-html"),
    (
        {"redirect_uris": [CB, "http://localhost.evil.com/cb"]},
        "redirect_uris[1]",
        "http_not_loopback",
        "redirect-uri-localhost-lookalike",
    ),
    (
        {"redirect_uris": ["https://user@app.example.com/cb"]},
        "redirect_uris[0]",
        "userinfo",
        "redirect-uri-userinfo",
    ),
    (
        {"redirect_uris": ["https://app.example.com/cb#frag"]},
        "redirect_uris[0]",
        "fragment",
        "redirect-uri-fragment",
    ),
    (
        {"redirect_uris": ["https://*.example.com/cb"]},
        "redirect_uris[0]",
        "wildcard",
        "redirect-uri-wildcard",
    ),
    (
        {"redirect_uris": ["JAVASCRIPT:alert(1)"]},
        "redirect_uris[0]",
        "scheme_not_allowed",
        "redirect-uri-javascript",
    ),
    (
        {"redirect_uris": ["com.example.app:/cb"]},
        "redirect_uris[0]",
        "scheme_not_allowed",
        "redirect-uri-private-use-scheme",
    ),
    (
        {"redirect_uris": ["https://app.example.com/cb?code=1"]},
        "redirect_uris[0]",
        "reserved_query_parameter",
        "redirect-uri-reserved-query",
    ),
]


@pytest.mark.parametrize(
    ("members", "member", "reason"),
    [(m, n, r) for m, n, r, _ in INVALID_REDIRECT],
    ids=[i for *_, i in INVALID_REDIRECT],
)
def test_bad_redirect_uris_are_invalid_redirect_uri(
    members: dict[str, Any], member: str, reason: str
) -> None:
    with pytest.raises(ClientMetadataError) as caught:
        parse_client_metadata(doc(**members))
    assert (caught.value.error, caught.value.member, caught.value.reason) == (
        "invalid_redirect_uri",
        member,
        reason,
    )
    assert caught.value.description == f"{member}: {reason}"


def test_a_request_without_redirect_uris_is_invalid_redirect_uri() -> None:
    with pytest.raises(ClientMetadataError) as caught:
        parse_client_metadata({"client_name": "No Callback"})
    assert (caught.value.error, caught.value.reason) == ("invalid_redirect_uri", "missing")


INVALID_METADATA = [
    ({"token_endpoint_auth_method": "private_key_jwt"}, "unsupported_value", "auth-private-key"),
    ({"token_endpoint_auth_method": "None"}, "unsupported_value", "auth-case"),
    ({"token_endpoint_auth_method": ""}, "unsupported_value", "auth-empty"),
    ({"token_endpoint_auth_method": ["none"]}, "not_a_string", "auth-list"),
    ({"token_endpoint_auth_method": False}, "not_a_string", "auth-bool"),
    ({"grant_types": "authorization_code"}, "not_a_list", "grants-string"),
    ({"grant_types": []}, "empty", "grants-empty"),
    ({"grant_types": ["authorization_code", "implicit"]}, "unsupported_value", "grants-implicit"),
    ({"grant_types": ["authorization_code", "password"]}, "unsupported_value", "grants-password"),
    (
        {"grant_types": ["client_credentials", "authorization_code"]},
        "unsupported_value",
        "grants-client-credentials",
    ),
    (
        {"grant_types": ["urn:ietf:params:oauth:grant-type:device_code"]},
        "unsupported_value",
        "grants-device",
    ),
    ({"grant_types": ["refresh_token"]}, "authorization_code_required", "grants-refresh-only"),
    ({"grant_types": ["authorization_code", None]}, "not_a_string", "grants-null-item"),
    (
        {"grant_types": ["authorization_code"] * (MAX_LIST_ITEMS + 1)},
        "too_many",
        "grants-too-many",
    ),
    ({"response_types": "code"}, "not_a_list", "responses-string"),
    ({"response_types": []}, "empty", "responses-empty"),
    ({"response_types": ["token"]}, "unsupported_value", "responses-token"),
    ({"response_types": ["code", "id_token"]}, "unsupported_value", "responses-id-token"),
    ({"response_types": ["code id_token"]}, "unsupported_value", "responses-hybrid"),
    ({"client_name": 42}, "not_a_string", "name-number"),
    ({"client_name": True}, "not_a_string", "name-bool"),
    ({"client_name": ""}, "empty", "name-empty"),
    ({"client_name": " \u3000 "}, "empty", "name-blank"),
    ({"client_name": "n" * (MAX_CLIENT_NAME + 1)}, "too_long", "name-too-long"),
    ({"client_name": "Good\nClient"}, "invalid_characters", "name-newline"),
    ({"client_name": "Good\x00"}, "invalid_characters", "name-nul"),
    ({"client_name": "Good\x1b[31m"}, "invalid_characters", "name-escape"),
    ({"client_name": "Good\u202eesreveR"}, "invalid_characters", "name-bidi-override"),
    ({"client_name": "Goo\u200bgle"}, "invalid_characters", "name-zero-width"),
    ({"client_name": "Good\u2028Client"}, "invalid_characters", "name-line-separator"),
    ({"client_name": "Good\ue000"}, "invalid_characters", "name-private-use"),
    ({"client_uri": "http://app.example.com/"}, "scheme_not_allowed", "client-uri-http"),
    ({"client_uri": "javascript:alert(1)"}, "scheme_not_allowed", "client-uri-javascript"),
    ({"client_uri": "https://ok.example@evil.example/"}, "userinfo", "client-uri-userinfo"),
    ({"client_uri": ["https://app.example.com/"]}, "not_a_string", "client-uri-list"),
    ({"logo_uri": "http://localhost/logo.png"}, "scheme_not_allowed", "logo-uri-http-loopback"),
    ({"logo_uri": "data:image/png;base64,iVBOR"}, "scheme_not_allowed", "logo-uri-data"),
    ({"logo_uri": "https://cdn.example.com/a b.png"}, "invalid_characters", "logo-uri-space"),
    ({"scope": ["files:read"]}, "not_a_string", "scope-list"),
    ({"scope": ""}, "invalid_scope_token", "scope-empty"),
    ({"scope": "files:read  files:write"}, "invalid_scope_token", "scope-double-space"),
    ({"scope": " files:read"}, "invalid_scope_token", "scope-leading-space"),
    ({"scope": "files:read\tfiles:write"}, "invalid_scope_token", "scope-tab"),
    ({"scope": 'files:"read"'}, "invalid_scope_token", "scope-quote"),
    ({"scope": "files\\read"}, "invalid_scope_token", "scope-backslash"),
    ({"scope": "fichiers:lëcture"}, "invalid_scope_token", "scope-non-ascii"),
    ({"scope": "s" * (MAX_SCOPE + 1)}, "too_long", "scope-too-long"),
    ({"application_type": "desktop"}, "unsupported_value", "app-type-unknown"),
    ({"application_type": "Native"}, "unsupported_value", "app-type-case"),
    ({"application_type": 1}, "not_a_string", "app-type-number"),
    ({"software_id": 12345}, "not_a_string", "software-id-number"),
    ({"software_id": "s" * (MAX_TEXT + 1)}, "too_long", "software-id-too-long"),
    ({"software_version": "1.0\r\n"}, "invalid_characters", "software-version-crlf"),
    ({"software_version": {"major": 1}}, "not_a_string", "software-version-object"),
]


@pytest.mark.parametrize(
    ("members", "reason"),
    [(m, r) for m, r, _ in INVALID_METADATA],
    ids=[i for *_, i in INVALID_METADATA],
)
def test_bad_members_are_invalid_client_metadata(members: dict[str, Any], reason: str) -> None:
    with pytest.raises(ClientMetadataError) as caught:
        parse_client_metadata(doc(**members))
    (member,) = members
    assert (caught.value.error, caught.value.member, caught.value.reason) == (
        "invalid_client_metadata",
        member,
        reason,
    )


@pytest.mark.parametrize(
    "body",
    [None, [], [MINIMAL], "redirect_uris", 1, True],
    ids=["null", "array", "array-of-object", "string", "number", "bool"],
)
def test_the_body_must_be_a_json_object(body: Any) -> None:
    with pytest.raises(ClientMetadataError) as caught:
        parse_client_metadata(body)
    assert (caught.value.error, caught.value.reason) == ("invalid_client_metadata", "not_an_object")


@pytest.mark.parametrize(
    "members",
    [
        {"client_name": "<img src=x onerror=alert(1)>" + "\x00"},
        {"client_uri": "javascript:alert('<img src=x onerror=alert(1)>')"},
        {"redirect_uris": ["https://app.example.com/<img src=x onerror=alert(1)>"]},
        {"scope": 'a "<img src=x onerror=alert(1)>"'},
        {"grant_types": ["authorization_code", "<img src=x onerror=alert(1)>"]},
    ],
    ids=["client-name", "client-uri", "redirect-uri", "scope", "grant-type"],
)
def test_the_description_never_echoes_the_submitted_value(members: dict[str, Any]) -> None:
    with pytest.raises(ClientMetadataError) as caught:
        parse_client_metadata(doc(**members))
    for text in (caught.value.description, str(caught.value)):
        assert "img" not in text
        assert "alert" not in text
