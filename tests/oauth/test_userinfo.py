"""UserInfo (OpenID Connect Core 5.3-5.4): the pure checks and merge, then the gateway's client
against a scripted provider on a real socket (`tests.support.scripted_provider`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from gateway.auth.authenticator import HttpSessionHolder
from gateway.config.auth import OidcLogin
from gateway.oauth.upstream import UpstreamLoginError, UpstreamProviderUnusableError
from gateway.oauth.userinfo import (
    MAX_USERINFO_BYTES,
    UserInfoError,
    check_jwt_claims,
    check_subject,
    json_claims,
    media_type,
    merge_claims,
)
from tests.support.processes import free_port
from tests.support.scripted_provider import CLIENT_ID, ScriptedProvider

ISSUER = "https://idp.example"
ID_TOKEN = {
    "iss": ISSUER,
    "sub": "alice",
    "aud": "gw",
    "exp": 2_000_000_000,
    "iat": 1_900_000_000,
    "nonce": "n1",
    "email": "alice@id-token.example",
}

# -- pure ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("application/json", "application/json"),
        ("application/json; charset=utf-8", "application/json"),
        ('Application/JSON;Charset="UTF-8"', "application/json"),
        ("application/jwt", "application/jwt"),
        ("application/jwt; charset=utf-8", "application/jwt"),
        ("application/json; charset=iso-8859-1", None),
        ("text/html", None),
        ("text/plain", None),
        ("application/problem+json", None),
        ("application/jsonx", None),
        ("", None),
    ],
    ids=[
        "json",
        "json-utf8",
        "json-case",
        "jwt",
        "jwt-charset",
        "json-latin1",
        "html",
        "text",
        "problem-json",
        "json-lookalike",
        "absent",
    ],
)
def test_media_types_userinfo_may_use(header: str, expected: str | None) -> None:
    assert media_type(header) == expected


@pytest.mark.parametrize(
    "body",
    [
        b'{"sub": "alice", "groups": ["sales"], "groups": ["eng"]}',
        b'{"sub": "alice", "n": NaN}',
        b'{"sub": "alice", "name": "\\ud800"}',
        b'{"sub": "alice", "x": ' + b"[" * 100 + b"]" * 100 + b"}",
        b'{"sub": "al\xffice"}',
        b'["sub", "alice"]',
        b'"alice"',
        b"sub=alice",
        b"",
    ],
    ids=[
        "repeated-key",
        "nan",
        "lone-surrogate",
        "too-deep",
        "not-utf8",
        "array",
        "string",
        "form",
        "empty",
    ],
)
def test_json_userinfo_is_decoded_strictly(body: bytes) -> None:
    with pytest.raises(UserInfoError) as refused:
        json_claims(body)
    assert refused.value.reason == "userinfo_not_json"


def test_a_json_object_is_taken_as_claims() -> None:
    assert json_claims(b'{"sub": "alice", "groups": ["eng"]}') == {
        "sub": "alice",
        "groups": ["eng"],
    }


@pytest.mark.parametrize(
    ("claims", "ok"),
    [
        ({"sub": "alice"}, True),
        ({"sub": "bob"}, False),
        ({"sub": "Alice"}, False),
        ({"sub": "alice "}, False),
        ({}, False),
        ({"sub": None}, False),
        ({"sub": ["alice"]}, False),
    ],
    ids=["same", "other-user", "case-differs", "trailing-space", "missing", "null", "list"],
)
def test_userinfo_must_name_the_id_tokens_subject(claims: dict[str, Any], ok: bool) -> None:
    if ok:
        check_subject("alice", claims)
        return
    with pytest.raises(UserInfoError) as refused:
        check_subject("alice", claims)
    assert refused.value.reason == "userinfo_sub_mismatch"


NOW = 1_900_000_000.0


@pytest.mark.parametrize(
    ("claims", "ok"),
    [
        ({"sub": "alice"}, True),
        ({"sub": "alice", "iss": ISSUER, "aud": "gw", "exp": NOW + 10}, True),
        ({"sub": "alice", "aud": ["other", "gw"]}, True),
        ({"sub": "alice", "iss": "https://evil.example"}, False),
        ({"sub": "alice", "iss": ISSUER + "/"}, False),
        ({"sub": "alice", "aud": "other"}, False),
        ({"sub": "alice", "aud": []}, False),
        ({"sub": "alice", "exp": NOW - 3600}, False),
        ({"sub": "alice", "exp": str(NOW + 10)}, False),
        ({"sub": "alice", "exp": True}, False),
    ],
    ids=[
        "bare",
        "all-right",
        "aud-list",
        "other-iss",
        "iss-slash",
        "other-aud",
        "empty-aud",
        "expired",
        "exp-string",
        "exp-bool",
    ],
)
def test_a_signed_userinfo_response_checks_its_own_claims(claims: dict[str, Any], ok: bool) -> None:
    if ok:
        check_jwt_claims(claims, issuer=ISSUER, client_id="gw", now=NOW)
        return
    with pytest.raises(UserInfoError) as refused:
        check_jwt_claims(claims, issuer=ISSUER, client_id="gw", now=NOW)
    assert refused.value.reason == "userinfo_jwt_claims"


USERINFO = {
    "sub": "alice",
    "groups": ["eng"],
    "email": "alice@userinfo.example",
    # A provider (or whoever answers) must not move the sign-in claims the gateway checked.
    "iss": "https://evil.example",
    "aud": "someone-else",
    "exp": 1,
    "nonce": "n2",
    "auth_time": 5,
}


@pytest.mark.parametrize(
    ("sources", "userinfo", "expected"),
    [
        (
            ["id_token", "userinfo"],
            USERINFO,
            {**ID_TOKEN, "groups": ["eng"], "email": "alice@userinfo.example"},
        ),
        (["userinfo", "id_token"], None, ID_TOKEN),
        (["id_token"], USERINFO, ID_TOKEN),
        (["id_token"], None, ID_TOKEN),
        (
            ["userinfo"],
            USERINFO,
            {"sub": "alice", "groups": ["eng"], "email": "alice@userinfo.example"},
        ),
    ],
    ids=["both", "both-no-endpoint", "id-token-only", "id-token-only-unfetched", "userinfo-only"],
)
def test_merge_gives_userinfo_claims_but_never_the_sign_in_claims(
    sources: list[Any], userinfo: dict[str, Any] | None, expected: dict[str, Any]
) -> None:
    assert merge_claims(ID_TOKEN, userinfo, sources) == expected


def test_userinfo_only_without_a_userinfo_answer_is_refused() -> None:
    with pytest.raises(UserInfoError) as refused:
        merge_claims(ID_TOKEN, None, ["userinfo"])
    assert refused.value.reason == "userinfo_endpoint_missing"


# -- the client, against a scripted provider --------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[HttpSessionHolder]:
    holder = HttpSessionHolder()
    async with aiohttp.ClientSession() as session:
        holder.session = session
        yield holder


@pytest.fixture
async def provider() -> AsyncIterator[ScriptedProvider]:
    async with ScriptedProvider() as running:
        yield running


def userinfo_requests(provider: ScriptedProvider) -> list[Any]:
    return [seen for seen in provider.seen if seen.path == "/userinfo"]


async def test_userinfo_claims_are_merged_over_the_id_tokens(
    provider: ScriptedProvider, http: HttpSessionHolder
) -> None:
    provider.userinfo = provider.json_userinfo(
        {"sub": "alice", "groups": ["eng"], "email": "alice@userinfo.example", "iss": "x"}
    )
    claims = await provider.client(http).redeem("code", "verifier", provider.nonce)
    assert claims["groups"] == ["eng"]
    assert claims["email"] == "alice@userinfo.example"
    assert claims["iss"] == provider.issuer  # the ID token's
    assert claims["aud"] == CLIENT_ID
    # Once, with the provider's access token in the Authorization header, never in the query.
    [request] = userinfo_requests(provider)
    assert request.authorization == f"Bearer {provider.access_tokens[-1]}"
    assert request.query == ""


async def test_id_token_only_never_calls_userinfo(
    provider: ScriptedProvider, http: HttpSessionHolder
) -> None:
    provider.userinfo = provider.json_userinfo({"sub": "alice", "groups": ["eng"]})
    upstream = provider.client(http, claims_from=["id_token"])
    claims = await upstream.redeem("code", "verifier", provider.nonce)
    assert "groups" not in claims
    assert claims["email"] == "alice@example.test"
    assert userinfo_requests(provider) == []
    assert any(seen.path == "/token" for seen in provider.seen)


async def test_userinfo_only_takes_no_claim_from_the_id_token_but_sub(
    provider: ScriptedProvider, http: HttpSessionHolder
) -> None:
    provider.userinfo = provider.json_userinfo({"sub": "alice", "groups": ["eng"]})
    upstream = provider.client(http, claims_from=["userinfo"])
    claims = await upstream.redeem("code", "verifier", provider.nonce)
    assert claims == {"sub": "alice", "groups": ["eng"]}


async def test_a_provider_without_userinfo_is_read_from_the_id_token_when_allowed(
    http: HttpSessionHolder,
) -> None:
    async with ScriptedProvider() as provider:
        provider.advertised_userinfo = None
        claims = await provider.client(http).redeem("code", "verifier", provider.nonce)
        assert claims["email"] == "alice@example.test"
        assert userinfo_requests(provider) == []
        # Told to read UserInfo alone, the gateway signs nobody in there: an operator must act.
        with pytest.raises(UpstreamProviderUnusableError) as refused:
            await provider.client(http, claims_from=["userinfo"]).authorization_url("s", "n", "c")
        assert "userinfo_endpoint" in refused.value.reason


async def test_a_malformed_userinfo_endpoint_makes_the_provider_unusable(
    provider: ScriptedProvider, http: HttpSessionHolder
) -> None:
    provider.advertised_userinfo = "file:///etc/passwd"
    with pytest.raises(UpstreamProviderUnusableError) as refused:
        await provider.client(http).authorization_url("s", "n", "c")
    assert "userinfo_endpoint" in refused.value.reason
    # Not asked for UserInfo, the gateway does not care what the document says about it.
    assert await provider.client(http, claims_from=["id_token"]).authorization_url("s", "n", "c")


async def test_a_signed_userinfo_response_is_verified_with_the_providers_keys(
    provider: ScriptedProvider, http: HttpSessionHolder
) -> None:
    now = int(time.time())
    provider.userinfo = provider.jwt_userinfo(
        {
            "iss": provider.issuer,
            "aud": CLIENT_ID,
            "exp": now + 60,
            "sub": "alice",
            "groups": ["eng"],
        }
    )
    claims = await provider.client(http).redeem("code", "verifier", provider.nonce)
    assert claims["groups"] == ["eng"]
    assert claims["exp"] != now + 60  # the ID token's, not the UserInfo JWT's


def redirect_elsewhere(provider: ScriptedProvider) -> Any:
    async def answer(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(provider.issuer + "/jwks")

    return answer


def html_body(p: ScriptedProvider) -> Any:
    return p.json_userinfo({"sub": "alice"}, content_type="text/html")


def utf16_body(p: ScriptedProvider) -> Any:
    return p.raw_userinfo(b'{"sub": "alice"}', content_type="application/json; charset=utf-16")


def repeated_sub(p: ScriptedProvider) -> Any:
    return p.raw_userinfo(b'{"sub": "alice", "sub": "bob"}')


def huge_body(p: ScriptedProvider) -> Any:
    return p.raw_userinfo(b'{"sub": "alice", "x": "' + b"a" * MAX_USERINFO_BYTES + b'"}')


def forged_jwt(p: ScriptedProvider) -> Any:
    return p.jwt_userinfo({"sub": "alice"}, forged=True)


def garbage_jwt(p: ScriptedProvider) -> Any:
    return p.raw_userinfo(b"not.a.jwt", content_type="application/jwt")


def jwt_for_another_client(p: ScriptedProvider) -> Any:
    return p.jwt_userinfo({"sub": "alice", "aud": "another-client"})


def jwt_from_another_issuer(p: ScriptedProvider) -> Any:
    return p.jwt_userinfo({"sub": "alice", "iss": "https://evil.example"})


def refusal(script: Any, reason: str, id: str) -> Any:
    return pytest.param(script, reason, id=id)


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        refusal(lambda p: p.raw_userinfo(b"{}", status=500), "userinfo_http_status", "500"),
        refusal(lambda p: p.raw_userinfo(b"{}", status=401), "userinfo_http_status", "401"),
        refusal(lambda p: p.raw_userinfo(b"", status=204), "userinfo_http_status", "204"),
        refusal(redirect_elsewhere, "userinfo_http_status", "redirect-not-followed"),
        refusal(html_body, "userinfo_content_type", "html"),
        refusal(utf16_body, "userinfo_content_type", "json-utf16"),
        refusal(lambda p: p.raw_userinfo(b"<p>sub</p>"), "userinfo_not_json", "not-json"),
        refusal(repeated_sub, "userinfo_not_json", "repeated-key"),
        refusal(huge_body, "userinfo_too_large", "too-large"),
        refusal(lambda p: p.json_userinfo({"sub": "bob"}), "userinfo_sub_mismatch", "other-sub"),
        refusal(lambda p: p.json_userinfo({"name": "A"}), "userinfo_sub_mismatch", "no-sub"),
        refusal(forged_jwt, "userinfo_jwt_invalid", "jwt-forged"),
        refusal(garbage_jwt, "userinfo_jwt_invalid", "jwt-garbage"),
        refusal(jwt_for_another_client, "userinfo_jwt_claims", "jwt-other-aud"),
        refusal(jwt_from_another_issuer, "userinfo_jwt_claims", "jwt-other-iss"),
        refusal(lambda p: p.jwt_userinfo({"sub": "bob"}), "userinfo_sub_mismatch", "jwt-other-sub"),
    ],
)
async def test_an_unusable_userinfo_answer_fails_the_sign_in(
    provider: ScriptedProvider, http: HttpSessionHolder, script: Any, reason: str
) -> None:
    provider.userinfo = script(provider)
    with pytest.raises(UpstreamLoginError) as refused:
        await provider.client(http).redeem("code", "verifier", provider.nonce)
    assert refused.value.reason == reason
    assert len(userinfo_requests(provider)) == 1  # asked once, no retry, no redirect followed
    assert not any(seen.path == "/jwks" and seen.authorization for seen in provider.seen)


async def test_a_userinfo_endpoint_that_does_not_answer_in_time_fails_the_sign_in(
    provider: ScriptedProvider, http: HttpSessionHolder
) -> None:
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.json_response({"sub": "alice"})

    provider.userinfo = stall
    upstream = provider.client(http, fetch_timeout=0.5)
    try:
        with pytest.raises(UpstreamLoginError) as refused:
            await upstream.redeem("code", "verifier", provider.nonce)
    finally:
        release.set()
    assert refused.value.reason == "userinfo_timeout"


async def test_an_unreachable_userinfo_endpoint_fails_the_sign_in(
    provider: ScriptedProvider, http: HttpSessionHolder
) -> None:
    provider.advertised_userinfo = f"http://127.0.0.1:{free_port()}/userinfo"  # nothing there
    with pytest.raises(UpstreamLoginError) as refused:
        await provider.client(http).redeem("code", "verifier", provider.nonce)
    assert refused.value.reason == "userinfo_unreachable"


# -- configuration ----------------------------------------------------------------------------


def test_claims_from_defaults_to_both_sources() -> None:
    settings = OidcLogin(issuer="https://idp.example", client_id="gw")
    assert settings.claims_from == ["id_token", "userinfo"]


@pytest.mark.parametrize(
    ("claims_from", "problem"),
    [
        pytest.param([], "at least one", id="empty"),
        pytest.param(["userinfo", "userinfo"], "repeat", id="repeated"),
        pytest.param(["access_token"], "'id_token' or 'userinfo'", id="unknown-source"),
    ],
)
def test_claims_from_names_each_known_source_at_most_once(
    claims_from: list[str], problem: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        OidcLogin.model_validate(
            {"issuer": "https://idp.example", "client_id": "gw", "claims_from": claims_from}
        )
    assert problem in str(refused.value)
