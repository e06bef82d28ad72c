"""The facade's form-origin rule as plain functions (the HTTP behaviour is tested in
tests/security/test_auth_findings.py)."""

from __future__ import annotations

import pytest

from gateway.web.facade.forms import foreign_form_post, origin_of


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://gw.example.com", "https://gw.example.com"),
        ("https://GW.Example.com/", "https://gw.example.com"),
        ("https://gw.example.com:443/base", "https://gw.example.com"),
        ("https://gw.example.com:8443", "https://gw.example.com:8443"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://gw.example.com:80", "http://gw.example.com"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
    ids=["plain", "case-and-slash", "default-port-and-path", "port", "loopback", "http-80", "ipv6"],
)
def test_origin_of_a_public_url(url: str, origin: str) -> None:
    assert origin_of(url) == origin


OWN = "https://gw.example.com"


@pytest.mark.parametrize(
    ("origins", "reason"),
    [
        ([OWN], None),
        (["HTTPS://GW.EXAMPLE.COM"], None),
        ([], "missing"),
        ([OWN, OWN], "repeated"),
        (["null"], "null"),
        (["https://app.example.com"], "other"),
        (["https://gw.example.com:8443"], "other"),
        (["http://gw.example.com"], "other"),
        ([OWN + "/"], "other"),
    ],
    ids=[
        "own",
        "own-upper-case",
        "missing",
        "repeated",
        "null",
        "other-site",
        "other-port",
        "other-scheme",
        "not-an-origin",
    ],
)
def test_a_form_post_is_foreign_unless_from_the_gateways_own_origin(
    origins: list[str], reason: str | None
) -> None:
    assert foreign_form_post(origins, OWN) == reason
