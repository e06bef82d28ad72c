"""The fence around fetching a Client ID Metadata Document (gateway/oauth/client_document_fetch.py):
which client id URLs may be fetched, which addresses the gateway may connect to, and that the
connection goes only to the addresses vetted. Fetches from a real server are in
tests/oauth/test_client_documents.py."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.oauth.client_document_fetch import (
    ClientDocumentError,
    _PinnedResolver,
    address_allowed,
    check_client_id_url,
)


@pytest.mark.parametrize(
    ("client_id", "reason"),
    [
        ("https://app.example", "no path"),
        ("https://app.example/a/../client.json", "dot segments"),
        ("https://app.example/./client.json", "dot segments"),
        ("https://app.example/a/%2e%2e/client.json", "dot segments"),
        ("https://user@app.example/client.json", "userinfo"),
        ("https://app.example/client.json#x", "fragment"),
        ("HTTPS://app.example/client.json", "scheme_not_allowed"),
        ("https://app example/client.json", "invalid_characters"),
        ("https://app.example:99999/client.json", "invalid_port"),
        ("https://*.example/client.json", "wildcard"),
        ("http://app.example/client.json", "must be an https URL"),
    ],
)
def test_client_id_urls_follow_the_draft(client_id: str, reason: str) -> None:
    with pytest.raises(ClientDocumentError, match=reason):
        check_client_id_url(client_id)


def test_a_good_client_id_url_is_split_for_fetching() -> None:
    target = check_client_id_url("https://App.Example:8443/oauth/client.json?v=1")
    assert (target.host, target.port) == ("app.example", 8443)
    assert check_client_id_url("https://[2606:4700::1]/c").host == "2606:4700::1"


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0", "10.1.2.3", "100.64.0.1", "127.0.0.1", "127.8.9.10", "169.254.169.254",
        "172.16.0.1", "192.0.0.8", "192.0.2.1", "192.88.99.1", "192.168.1.1", "198.18.0.1",
        "198.51.100.1", "203.0.113.1", "224.0.0.1", "239.255.255.250", "240.0.0.1",
        "255.255.255.255", "::", "::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
        "::ffff:169.254.169.254", "64:ff9b::a00:1", "64:ff9b:1::1", "100::1", "2001::1",
        "2001:db8::1", "2002:a00:1::1", "fc00::1", "fd12:3456::1", "fe80::1", "fe80::1%1",
        "fec0::1", "ff02::1",
    ],
)  # fmt: skip
def test_special_use_addresses_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "93.184.215.14",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "::ffff:93.184.215.14",
        "64:ff9b::101:101",
    ],
)
def test_global_unicast_addresses_are_allowed(address: str) -> None:
    assert address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("address", "allowed"),
    [("127.0.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True), ("10.0.0.1", False),
     ("169.254.169.254", False), ("64:ff9b::7f00:1", False), ("0.0.0.0", False)],
)  # fmt: skip
def test_the_test_switch_admits_loopback_addresses_only(address: str, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(address), allow_loopback=True) is allowed


async def test_the_connection_goes_only_to_the_vetted_addresses() -> None:
    """DNS rebinding: aiohttp asks the pinned resolver, which knows one host and its vetted
    addresses; it never resolves anything itself."""
    pinned = _PinnedResolver("app.example", [ipaddress.ip_address("93.184.215.14")])
    [answer] = await pinned.resolve("app.example", 443)
    assert (answer["host"], answer["port"]) == ("93.184.215.14", 443)
    with pytest.raises(OSError, match="no pinned address"):
        await pinned.resolve("internal.example", 443)
