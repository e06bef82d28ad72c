"""RFC 9207 `iss`: the section 2.4 check at the gateway's callback, and emission as an AS."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from multidict import MultiDict
from yarl import URL

from gateway.oauth.issuer_check import IssuerMismatchError, check_issuer, with_issuer
from gateway.oauth.redirects import add_query

ISSUER = "https://idp.example.com/realms/acme"
OTHER = "https://attacker.example/realms/acme"


def callback(*iss: str) -> dict[str, list[str]]:
    query = {"code": ["c0de"], "state": ["s1"]}
    return {**query, "iss": list(iss)} if iss else query


ADVERTISED = [(True, "advertised"), (False, "advertised-false"), (None, "not-advertised")]


@pytest.mark.parametrize(
    ("supported", "iss", "outcome"),
    [
        (True, (ISSUER,), "matched"),
        (True, (OTHER,), "iss_mismatch"),
        (True, (), "iss_missing"),
        (False, (ISSUER,), "matched"),
        (False, (OTHER,), "iss_mismatch"),
        (False, (), "not_sent"),
        (None, (ISSUER,), "matched"),
        (None, (OTHER,), "iss_mismatch"),
        (None, (), "not_sent"),
    ],
    ids=[
        "advertised-equal",
        "advertised-different",
        "advertised-absent-rejected",
        "false-equal",
        "false-different-still-compared",
        "false-absent-proceeds",
        "absent-equal",
        "absent-different-still-compared",
        "absent-absent-proceeds",
    ],
)
def test_the_section_2_4_decision_table(
    supported: bool | None, iss: tuple[str, ...], outcome: str
) -> None:
    if outcome in ("matched", "not_sent"):
        assert check_issuer(callback(*iss), expected_issuer=ISSUER, iss_supported=supported) == (
            outcome
        )
    else:
        with pytest.raises(IssuerMismatchError) as caught:
            check_issuer(callback(*iss), expected_issuer=ISSUER, iss_supported=supported)
        assert caught.value.reason == outcome


@pytest.mark.parametrize(
    "iss",
    [
        ISSUER + "/",
        ISSUER.upper(),
        "HTTPS://idp.example.com/realms/acme",
        "https://IDP.example.com/realms/acme",
        "https://idp.example.com:443/realms/acme",
        "https://idp.example.com/realms/%61cme",
        "https://idp.example.com/realms/acme ",
        "https://idp.example.com/realms",
        "",
    ],
    ids=[
        "trailing-slash",
        "upper-case",
        "scheme-case",
        "host-case",
        "default-port",
        "percent-encoded",
        "trailing-space",
        "prefix",
        "blank",
    ],
)
@pytest.mark.parametrize("supported", [s for s, _ in ADVERTISED], ids=[i for _, i in ADVERTISED])
def test_comparison_is_simple_string_comparison(iss: str, supported: bool | None) -> None:
    with pytest.raises(IssuerMismatchError) as caught:
        check_issuer(callback(iss), expected_issuer=ISSUER, iss_supported=supported)
    assert caught.value.reason == "iss_mismatch"


@pytest.mark.parametrize(
    "iss",
    [(ISSUER, ISSUER), (ISSUER, OTHER), (OTHER, ISSUER)],
    ids=["same", "good-bad", "bad-good"],
)
@pytest.mark.parametrize("supported", [s for s, _ in ADVERTISED], ids=[i for _, i in ADVERTISED])
def test_several_iss_are_refused(iss: tuple[str, ...], supported: bool | None) -> None:
    with pytest.raises(IssuerMismatchError) as caught:
        check_issuer(callback(*iss), expected_issuer=ISSUER, iss_supported=supported)
    assert caught.value.reason == "iss_repeated"


@pytest.mark.parametrize("supported", ["false", "true", 0, 1, [], {}], ids=repr)
def test_a_malformed_advertisement_never_weakens_the_check(supported: Any) -> None:
    with pytest.raises(IssuerMismatchError) as caught:
        check_issuer(callback(), expected_issuer=ISSUER, iss_supported=supported)
    assert caught.value.reason == "iss_missing"


URL_QUERY = f"code=c0de&state=s1&iss={ISSUER}&iss={OTHER}"


@pytest.mark.parametrize(
    "query",
    [
        URL(f"https://gw.example.com/oauth/callback?{URL_QUERY}").query,
        MultiDict([("iss", ISSUER), ("code", "c0de"), ("iss", OTHER)]),
        parse_qs(URL_QUERY, keep_blank_values=True),
    ],
    ids=["yarl-query", "multidict", "parse-qs"],
)
def test_repeats_are_seen_in_every_query_form(query: Any) -> None:
    with pytest.raises(IssuerMismatchError) as caught:
        check_issuer(query, expected_issuer=ISSUER, iss_supported=None)
    assert caught.value.reason == "iss_repeated"


def test_a_blank_iss_in_the_url_is_present_not_absent() -> None:
    query = URL("https://gw.example.com/oauth/callback?code=c0de&iss=").query
    with pytest.raises(IssuerMismatchError) as caught:
        check_issuer(query, expected_issuer=ISSUER, iss_supported=None)
    assert caught.value.reason == "iss_mismatch"


def test_a_query_with_one_value_per_name_is_refused_as_a_programming_error() -> None:
    flattened: Any = {"code": "c0de", "iss": ISSUER}
    with pytest.raises(TypeError):
        check_issuer(flattened, expected_issuer=ISSUER, iss_supported=True)


def test_an_empty_recorded_issuer_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="no recorded issuer"):
        check_issuer({"iss": [""]}, expected_issuer="", iss_supported=True)


SECRET_TEXT = "<script>steal()</script> call +1-555-0100 for support"
SECRET_URI = "https://phish.example/help"


@pytest.mark.parametrize(
    ("supported", "iss"),
    [(True, ()), (True, (OTHER,)), (None, (OTHER,)), (False, (ISSUER, OTHER))],
    ids=["missing", "mismatch", "mismatch-not-advertised", "repeated"],
)
def test_the_error_never_carries_anything_from_the_callback(
    supported: bool | None, iss: tuple[str, ...]
) -> None:
    query = {
        "error": ["access_denied_by_attacker"],
        "error_description": [SECRET_TEXT],
        "error_uri": [SECRET_URI],
        "state": ["s1"],
        **({"iss": list(iss)} if iss else {}),
    }
    with pytest.raises(IssuerMismatchError) as caught:
        check_issuer(query, expected_issuer=ISSUER, iss_supported=supported)
    shown = " ".join([str(caught.value), repr(caught.value), *map(str, caught.value.args)])
    for leaked in ("access_denied_by_attacker", SECRET_TEXT, SECRET_URI, "phish", OTHER):
        assert leaked not in shown
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


@pytest.mark.parametrize(
    "params",
    [
        {"code": "c0de", "state": "s1"},
        {"code": "c0de"},
        {"error": "access_denied", "state": "s1"},
        {"error": "invalid_request", "error_description": "PKCE required"},
        {},
    ],
    ids=["success", "success-without-state", "error", "error-with-description", "bare"],
)
def test_every_authorization_response_gets_exactly_one_iss(params: dict[str, str]) -> None:
    result = with_issuer(params, "https://gw.example.com")
    assert result == {**params, "iss": "https://gw.example.com"}
    redirect = add_query("https://app.example.com/cb?tenant=acme", result)
    assert parse_qs(urlsplit(redirect).query)["iss"] == ["https://gw.example.com"]
    assert "iss" not in params


def test_an_iss_already_present_is_refused_not_overwritten() -> None:
    with pytest.raises(ValueError, match="already hold an iss"):
        with_issuer({"code": "c0de", "iss": "https://elsewhere.example"}, "https://gw.example.com")


def test_an_empty_issuer_is_never_emitted() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        with_issuer({"code": "c0de"}, "")
