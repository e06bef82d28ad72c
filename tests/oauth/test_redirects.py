"""Redirect URIs: what may be registered, exact matching, and adding the response parameters."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway.oauth.redirects import (
    MAX_URI_LENGTH,
    RedirectUriError,
    add_query,
    check_https_uri,
    check_registered_redirect,
    redirect_matches,
)

ACCEPTED = [
    ("https://app.example.com/cb", "https"),
    ("https://app.example.com", "https-no-path"),
    ("https://app.example.com:8443/oauth/callback", "https-port"),
    ("https://app.example.com/cb?tenant=acme&x=", "https-query"),
    ("https://app.example.com/cb/a%20b", "percent-encoded-path"),
    ("https://10.0.0.1/cb", "https-private-ip"),
    ("https://localhost.evil.com/cb", "https-localhost-lookalike-is-just-a-host"),
    ("http://127.0.0.1:8080/cb", "loopback-v4-port"),
    ("http://127.0.0.1/cb", "loopback-v4"),
    ("http://[::1]/cb", "loopback-v6"),
    ("http://[::1]:33418/callback", "loopback-v6-port"),
    ("http://localhost:3030/callback", "localhost-port"),
    ("http://localhost", "localhost-bare"),
    ("https://127.0.0.1:8443/cb", "https-loopback"),
    ("https://[2001:db8::1]/cb", "https-ipv6"),
    ("https://app.example.com/" + "p" * (MAX_URI_LENGTH - 24), "longest"),
]


@pytest.mark.parametrize("uri", [u for u, _ in ACCEPTED], ids=[i for _, i in ACCEPTED])
def test_registrable_redirect_uris(uri: str) -> None:
    assert check_registered_redirect(uri) == uri


REFUSED = [
    ("http://localhost.evil.com/cb", "http_not_loopback", "localhost-prefix"),
    ("http://127.0.0.1.nip.io/cb", "http_not_loopback", "loopback-prefix"),
    ("http://10.0.0.1/cb", "http_not_loopback", "http-private-ip"),
    ("http://127.0.0.2/cb", "http_not_loopback", "other-loopback-address"),
    ("http://[::ffff:127.0.0.1]/cb", "http_not_loopback", "v4-mapped-loopback"),
    ("http://LOCALHOST/cb", "http_not_loopback", "localhost-uppercase"),
    ("http://app.example.com/cb", "http_not_loopback", "plain-http"),
    ("https://user@app.example.com/cb", "userinfo", "userinfo"),
    ("https://user:pw@app.example.com/cb", "userinfo", "userinfo-password"),
    ("https://app.example.com@evil.com/cb", "userinfo", "userinfo-lookalike"),
    ("http://localhost@evil.com/cb", "userinfo", "userinfo-localhost"),
    ("https://app.example.com/cb#frag", "fragment", "fragment"),
    ("https://app.example.com/cb#", "fragment", "empty-fragment"),
    ("https://*.example.com/cb", "wildcard", "wildcard-host"),
    ("https://app.example.com/*", "wildcard", "wildcard-path"),
    ("JAVASCRIPT:alert(1)", "scheme_not_allowed", "javascript-uppercase"),
    ("javascript://app.example.com/%0Aalert(1)", "scheme_not_allowed", "javascript-authority"),
    ("data:text/html;base64,PHNjcmlwdD4=", "scheme_not_allowed", "data"),
    ("data:text/html,<script>alert(1)</script>", "invalid_characters", "data-html"),
    ("file:///etc/passwd", "scheme_not_allowed", "file"),
    ("ftp://app.example.com/cb", "scheme_not_allowed", "ftp"),
    ("com.example.app:/oauth2redirect", "scheme_not_allowed", "private-use-scheme"),
    ("HTTPS://app.example.com/cb", "scheme_not_allowed", "uppercase-scheme"),
    ("/cb", "not_absolute", "relative-path"),
    ("//app.example.com/cb", "not_absolute", "scheme-relative"),
    ("https:/app.example.com/cb", "not_absolute", "no-authority"),
    ("", "not_absolute", "empty"),
    ("https:///cb", "invalid_host", "empty-host"),
    ("https://exa%6Dple.com/cb", "invalid_host", "percent-encoded-host"),
    ("https://[::1/cb", "invalid_host", "unclosed-ipv6"),
    ("http://[::1]x/cb", "invalid_host", "junk-after-ipv6"),
    ("https://app.example.com:/cb", "invalid_port", "empty-port"),
    ("https://app.example.com:0/cb", "invalid_port", "port-zero"),
    ("https://app.example.com:65536/cb", "invalid_port", "port-too-big"),
    ("https://app.example.com:8a/cb", "invalid_port", "port-not-numeric"),
    ("https://app.example.com/c b", "invalid_characters", "space"),
    ("https://app.example.com/cb\t", "invalid_characters", "tab"),
    ("https://app.example.com/cb\n", "invalid_characters", "newline"),
    ("https://app.example.com/cb\x00", "invalid_characters", "nul"),
    ("https://app.example.com/cb\x7f", "invalid_characters", "del"),
    (" https://app.example.com/cb", "invalid_characters", "leading-space"),
    ("https://app.example.com\\@evil.com/cb", "invalid_characters", "backslash"),
    ("https://app.example.com/cb\u200b", "invalid_characters", "zero-width-space"),
    ("https://exämple.com/cb", "invalid_characters", "non-ascii-host"),
    ('https://app.example.com/"cb"', "invalid_characters", "quote"),
    ("https://app.example.com/cb%zz", "invalid_percent_encoding", "bad-percent"),
    ("https://app.example.com/cb%2", "invalid_percent_encoding", "truncated-percent"),
    ("https://app.example.com/cb?code=x", "reserved_query_parameter", "query-code"),
    ("https://app.example.com/cb?a=1&iss=x", "reserved_query_parameter", "query-iss"),
    ("https://app.example.com/cb?state", "reserved_query_parameter", "query-state-no-value"),
    ("https://app.example.com/cb?error=x", "reserved_query_parameter", "query-error"),
    ("https://app.example.com/cb?c%6Fde=x", "reserved_query_parameter", "query-encoded-name"),
    ("https://app.example.com/" + "p" * (MAX_URI_LENGTH - 23), "too_long", "too-long"),
]


@pytest.mark.parametrize(
    ("uri", "reason"), [(u, r) for u, r, _ in REFUSED], ids=[i for _, _, i in REFUSED]
)
def test_unregistrable_redirect_uris(uri: str, reason: str) -> None:
    with pytest.raises(RedirectUriError) as caught:
        check_registered_redirect(uri)
    assert caught.value.reason == reason


@pytest.mark.parametrize("value", [None, 1, ["https://app.example.com/cb"], b"https://a/cb"])
def test_a_redirect_uri_must_be_a_string(value: Any) -> None:
    with pytest.raises(RedirectUriError) as caught:
        check_registered_redirect(value)
    assert caught.value.reason == "not_a_string"


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("https://app.example.com/about", None),
        ("https://cdn.example.com/logo.png?v=2", None),
        ("https://127.0.0.1/logo.png", None),
        ("http://app.example.com/about", "scheme_not_allowed"),
        ("http://localhost/about", "scheme_not_allowed"),
        ("https://trusted.example.com@evil.com/", "userinfo"),
        ("javascript:alert(1)", "scheme_not_allowed"),
        ("https://app.example.com/about#team", "fragment"),
    ],
    ids=[
        "https",
        "https-query",
        "https-loopback",
        "http",
        "http-loopback",
        "userinfo",
        "javascript",
        "fragment",
    ],
)
def test_https_uris_for_the_consent_page(uri: str, reason: str | None) -> None:
    if reason is None:
        assert check_https_uri(uri) == uri
    else:
        with pytest.raises(RedirectUriError) as caught:
            check_https_uri(uri)
        assert caught.value.reason == reason


REGISTERED = [
    "https://app.example.com/cb",
    "https://app.example.com/cb/a%2Fb",
    "http://127.0.0.1:8080/cb",
    "http://localhost:3030/callback?tenant=acme",
]


@pytest.mark.parametrize(
    ("requested", "matches"),
    [
        ("https://app.example.com/cb", True),
        ("https://app.example.com/cb/a%2Fb", True),
        ("http://127.0.0.1:8080/cb", True),
        ("http://localhost:3030/callback?tenant=acme", True),
        ("https://app.example.com/cb/", False),
        ("https://app.example.com/CB", False),
        ("https://APP.example.com/cb", False),
        ("HTTPS://app.example.com/cb", False),
        ("https://app.example.com:443/cb", False),
        ("https://app.example.com/%63b", False),
        ("https://app.example.com/cb/a%2fb", False),
        ("https://app.example.com/cb/a/b", False),
        ("https://app.example.com/cb?", False),
        ("https://app.example.com/cb?x=1", False),
        ("https://app.example.com/cb#", False),
        ("http://127.0.0.1:8081/cb", False),
        ("http://127.0.0.1/cb", False),
        ("http://localhost:8080/cb", False),
        ("http://[::1]:8080/cb", False),
        ("http://localhost:3030/callback", False),
        ("http://localhost:3030/callback?tenant=evil", False),
        ("https://app.example.com/cb ", False),
        ("https://app.example.com", False),
        ("", False),
    ],
    ids=[
        "exact",
        "exact-encoded",
        "exact-loopback",
        "exact-with-query",
        "trailing-slash",
        "path-case",
        "host-case",
        "scheme-case",
        "default-port-written",
        "percent-encoded-unreserved",
        "percent-encoding-case",
        "percent-decoded",
        "empty-query-added",
        "query-added",
        "empty-fragment-added",
        "loopback-other-port",
        "loopback-port-dropped",
        "loopback-other-name",
        "loopback-other-address",
        "registered-query-dropped",
        "registered-query-changed",
        "trailing-space",
        "prefix",
        "empty",
    ],
)
def test_a_requested_redirect_uri_matches_only_exactly(requested: str, matches: bool) -> None:
    assert redirect_matches(requested, REGISTERED) is matches


def test_nothing_matches_a_client_without_redirect_uris() -> None:
    assert not redirect_matches("https://app.example.com/cb", [])


def test_a_requested_redirect_uri_that_is_not_a_string_never_matches() -> None:
    requested: Any = ["https://app.example.com/cb"]
    assert not redirect_matches(requested, [*REGISTERED, requested])


@pytest.mark.parametrize(
    ("uri", "params", "expected"),
    [
        (
            "https://app.example.com/cb",
            {"code": "abc", "state": "xyz"},
            "https://app.example.com/cb?code=abc&state=xyz",
        ),
        (
            "https://app.example.com/cb?tenant=a%20b",
            {"code": "abc"},
            "https://app.example.com/cb?tenant=a%20b&code=abc",
        ),
        ("https://app.example.com/cb?", {"code": "abc"}, "https://app.example.com/cb?code=abc"),
        ("http://localhost:3030", {"code": "abc"}, "http://localhost:3030?code=abc"),
        (
            "https://app.example.com/cb",
            {"state": "a b&c=d+e/f?g#h", "iss": "https://gw.example.com/x"},
            "https://app.example.com/cb?state=a+b%26c%3Dd%2Be%2Ff%3Fg%23h"
            "&iss=https%3A%2F%2Fgw.example.com%2Fx",
        ),
        (
            "https://app.example.com/cb",
            {"error": "access_denied", "error_description": "Der Benutzer hat abgelehnt: ü"},
            "https://app.example.com/cb?error=access_denied"
            "&error_description=Der+Benutzer+hat+abgelehnt%3A+%C3%BC",
        ),
        ("https://app.example.com/cb?x=1", {}, "https://app.example.com/cb?x=1"),
    ],
    ids=[
        "no-query",
        "registered-query-kept-verbatim",
        "empty-query",
        "no-path",
        "reserved-characters-encoded",
        "non-ascii-encoded",
        "nothing-to-add",
    ],
)
def test_response_parameters_are_appended(uri: str, params: dict[str, str], expected: str) -> None:
    assert add_query(uri, params) == expected


def test_appended_parameters_decode_to_what_was_given() -> None:
    params = {"code": "c/+=&?#%", "state": " s t ", "iss": "https://gw.example.com:8443/a?b"}
    result = add_query("https://app.example.com/cb?tenant=acme", params)
    assert parse_qs(urlsplit(result).query, keep_blank_values=True) == {
        "tenant": ["acme"],
        **{name: [value] for name, value in params.items()},
    }


@pytest.mark.parametrize(
    ("uri", "params", "reason"),
    [
        ("https://app.example.com/cb?code=old", {"code": "new"}, "reserved_query_parameter"),
        ("https://app.example.com/cb?a=1&iss=x", {"iss": "y"}, "reserved_query_parameter"),
        ("https://app.example.com/cb?st%61te=x", {"state": "y"}, "reserved_query_parameter"),
        ("https://app.example.com/cb#top", {"code": "abc"}, "fragment"),
    ],
    ids=["duplicate-code", "duplicate-iss", "duplicate-encoded-name", "fragment"],
)
def test_a_parameter_is_never_duplicated(uri: str, params: dict[str, str], reason: str) -> None:
    with pytest.raises(RedirectUriError) as caught:
        add_query(uri, params)
    assert caught.value.reason == reason
