"""The client address behind trusted reverse proxies (issue 14, finding 10).

Table tests and property tests of `gateway.web.client_address`; the property tests render a
generated chain of hops as the headers proxies write and check the result against the chain
itself (an oracle that parses nothing). End-to-end: rate-limit buckets of a real gateway.
"""

from __future__ import annotations

import json
import time
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.web.client_address import ClientAddress, IPAddress, IPNetwork, client_address
from tests.conftest import Gateway, StartGateway, gateway_log
from tests.support.facade import facade_gateway, write_users
from tests.support.http_upstream import RecordingUpstream

TRUSTED: list[IPNetwork] = [ip_network("10.0.0.0/8"), ip_network("fd00::/8")]
PEER = "10.0.0.1"
CLIENT = "198.51.100.7"
MALFORMED_XFF = ClientAddress(PEER, "malformed_x_forwarded_for")
MALFORMED_FWD = ClientAddress(PEER, "malformed_forwarded")

# id: (peer, Forwarded lines, X-Forwarded-For lines, trusted networks, expected)
CASES: dict[str, tuple[str | None, list[str], list[str], list[IPNetwork], ClientAddress]] = {
    "no-trusted-proxies-ignores-headers": (PEER, [], [CLIENT], [], ClientAddress(PEER)),
    "untrusted-peer-cannot-spoof": (
        "203.0.113.9", [f"for={CLIENT}"], [CLIENT], TRUSTED, ClientAddress("203.0.113.9")
    ),
    "trusted-peer-without-headers": (PEER, [], [], TRUSTED, ClientAddress(PEER)),
    "peer-not-an-ip": ("unix", [], [CLIENT], TRUSTED, ClientAddress("unix")),
    "no-peer": (None, [], [CLIENT], TRUSTED, ClientAddress(None)),
    "xff-one-hop": (PEER, [], [CLIENT], TRUSTED, ClientAddress(CLIENT)),
    "xff-skips-trusted-hops": (PEER, [], [f"{CLIENT}, 10.9.9.9"], TRUSTED, ClientAddress(CLIENT)),
    "xff-spoofed-left-part-is-ignored": (
        PEER, [], [f"6.6.6.6, {CLIENT}"], TRUSTED, ClientAddress(CLIENT)
    ),
    "xff-junk-left-of-the-client-is-not-read": (
        PEER, [], [f"not an address, {CLIENT}"], TRUSTED, ClientAddress(CLIENT)
    ),
    "xff-all-trusted-takes-the-leftmost": (
        PEER, [], ["10.2.2.2, 10.1.1.1"], TRUSTED, ClientAddress("10.2.2.2")
    ),
    "xff-several-lines": (
        PEER, [], ["6.6.6.6", f"{CLIENT},10.3.3.3"], TRUSTED, ClientAddress(CLIENT)
    ),
    "xff-ipv4-with-port": (PEER, [], [f"{CLIENT}:4711"], TRUSTED, ClientAddress(CLIENT)),
    "xff-ipv6-bare": (PEER, [], ["2001:DB8::1"], TRUSTED, ClientAddress("2001:db8::1")),
    "xff-ipv6-bracketed-with-port": (
        PEER, [], ["[2001:db8::1]:443"], TRUSTED, ClientAddress("2001:db8::1")
    ),
    "xff-ipv4-mapped-ipv6": (PEER, [], [f"::ffff:{CLIENT}"], TRUSTED, ClientAddress(CLIENT)),
    "xff-trusted-ipv6-hop": (PEER, [], [f"{CLIENT}, fd00::2"], TRUSTED, ClientAddress(CLIENT)),
    "xff-malformed-hop": (PEER, [], [f"{CLIENT}, nope"], TRUSTED, MALFORMED_XFF),
    "xff-empty": (PEER, [], [""], TRUSTED, MALFORMED_XFF),
    "xff-trailing-comma": (PEER, [], [f"{CLIENT},"], TRUSTED, MALFORMED_XFF),
    "xff-leading-zeros": (PEER, [], ["010.1.1.1"], TRUSTED, MALFORMED_XFF),
    "xff-hostname": (PEER, [], ["client.example"], TRUSTED, MALFORMED_XFF),
    "xff-bad-port": (PEER, [], [f"{CLIENT}:99999999"], TRUSTED, MALFORMED_XFF),
    "xff-unclosed-bracket": (PEER, [], ["[2001:db8::1"], TRUSTED, MALFORMED_XFF),
    "xff-non-ascii-digits": (PEER, [], ["١٩٨.51.100.7"], TRUSTED, MALFORMED_XFF),
    "fwd-one-hop": (PEER, [f"for={CLIENT}"], [], TRUSTED, ClientAddress(CLIENT)),
    "fwd-quoted-ipv6-with-port": (
        PEER, ['for="[2001:db8:cafe::17]:4711"'], [], TRUSTED, ClientAddress("2001:db8:cafe::17")
    ),
    "fwd-chain-with-other-parameters": (
        PEER, [f"for={CLIENT};proto=https;by=10.0.0.1, for=10.1.1.1"], [], TRUSTED,
        ClientAddress(CLIENT),
    ),
    "fwd-parameter-name-case": (PEER, [f"For={CLIENT}"], [], TRUSTED, ClientAddress(CLIENT)),
    "fwd-whitespace-around-semicolons": (
        PEER, [f"for={CLIENT} ; proto=https"], [], TRUSTED, ClientAddress(CLIENT)
    ),
    "fwd-empty-list-elements": (PEER, [f", for={CLIENT} ,"], [], TRUSTED, ClientAddress(CLIENT)),
    "fwd-comma-inside-a-quoted-value": (
        PEER, [f'for={CLIENT};ext="a, for=6.6.6.6", for=10.1.1.1'], [], TRUSTED,
        ClientAddress(CLIENT),
    ),
    "fwd-escaped-quote-inside-a-value": (
        PEER, [f'for=6.6.6.6;ext="a\\", for=1.1.1.1", for={CLIENT}'], [], TRUSTED,
        ClientAddress(CLIENT),
    ),
    "fwd-several-lines": (
        PEER, ["for=6.6.6.6", f"for={CLIENT}"], [], TRUSTED, ClientAddress(CLIENT)
    ),
    "fwd-unknown-client": (PEER, ["for=unknown, for=10.1.1.1"], [], TRUSTED, ClientAddress(PEER)),
    "fwd-obfuscated-client": (PEER, ["for=_hidden"], [], TRUSTED, ClientAddress(PEER)),
    "fwd-element-without-for": (PEER, ["proto=https"], [], TRUSTED, ClientAddress(PEER)),
    "fwd-unknown-left-of-the-client": (
        PEER, [f"for=unknown, for={CLIENT}"], [], TRUSTED, ClientAddress(CLIENT)
    ),
    "fwd-obfuscated-port": (PEER, [f'for="{CLIENT}:_p1"'], [], TRUSTED, ClientAddress(CLIENT)),
    "fwd-unquoted-ipv6": (PEER, ["for=[2001:db8::1]"], [], TRUSTED, MALFORMED_FWD),
    "fwd-ipv6-without-brackets": (PEER, ['for="2001:db8::1"'], [], TRUSTED, MALFORMED_FWD),
    "fwd-ipv4-in-brackets": (PEER, [f'for="[{CLIENT}]"'], [], TRUSTED, MALFORMED_FWD),
    "fwd-parameter-twice": (PEER, [f"for={CLIENT};for=6.6.6.6"], [], TRUSTED, MALFORMED_FWD),
    "fwd-unterminated-quote": (PEER, [f'for="{CLIENT}'], [], TRUSTED, MALFORMED_FWD),
    "fwd-bad-port": (PEER, [f'for="{CLIENT}:http"'], [], TRUSTED, MALFORMED_FWD),
    "fwd-no-value": (PEER, ["for="], [], TRUSTED, MALFORMED_FWD),
    "fwd-no-equals": (PEER, [CLIENT], [], TRUSTED, MALFORMED_FWD),
    "fwd-space-before-equals": (PEER, [f"for ={CLIENT}"], [], TRUSTED, MALFORMED_FWD),
    "fwd-empty": (PEER, [""], [], TRUSTED, MALFORMED_FWD),
    "fwd-control-character-in-quotes": (PEER, ['for="1.2.3.4\x01"'], [], TRUSTED, MALFORMED_FWD),
    "fwd-hostname": (PEER, ["for=client.example"], [], TRUSTED, MALFORMED_FWD),
    "both-agree": (PEER, [f"for={CLIENT}"], [CLIENT], TRUSTED, ClientAddress(CLIENT)),
    # Forwarded names no address (the peer then), X-Forwarded-For only trusted hops, the
    # first of them the peer: both lead to the peer (found by the property below).
    "both-lead-to-the-peer": (
        PEER, ["for=10.0.0.0,for=unknown"], [PEER], TRUSTED, ClientAddress(PEER)
    ),
    "both-disagree-one-was-spoofed": (
        PEER, ["for=6.6.6.6"], [CLIENT], TRUSTED, ClientAddress(PEER, "forwarded_headers_disagree")
    ),
    "both-one-malformed": (PEER, ["for=["], [CLIENT], TRUSTED, MALFORMED_FWD),
    "ipv6-peer-trusted": ("fd00::5", [], [CLIENT], TRUSTED, ClientAddress(CLIENT)),
    "ipv4-mapped-peer-trusted": (f"::ffff:{PEER}", [], [CLIENT], TRUSTED, ClientAddress(CLIENT)),
    "ipv4-network-does-not-trust-ipv6": (
        "2001:db8::9", [], [CLIENT], [ip_network("0.0.0.0/0")], ClientAddress("2001:db8::9")
    ),
}  # fmt: skip


@pytest.mark.parametrize(
    ("peer", "forwarded", "x_forwarded_for", "trusted", "expected"),
    list(CASES.values()),
    ids=list(CASES),
)
def test_client_address(
    peer: str | None,
    forwarded: list[str],
    x_forwarded_for: list[str],
    trusted: list[IPNetwork],
    expected: ClientAddress,
) -> None:
    assert client_address(peer, forwarded, x_forwarded_for, trusted) == expected


# -- properties ------------------------------------------------------------------------------

TRUSTED_IPS = st.one_of(st.ip_addresses(network="10.0.0.0/8"), st.ip_addresses(network="fd00::/8"))
ANY_IPS = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6), TRUSTED_IPS)
OWS = st.text(" \t", max_size=2)
PORTS = st.one_of(st.none(), st.integers(0, 65535).map(str), st.just("_obf"))
TOKEN = st.text("abcXYZ019!#$%&'*+-.^_`|~", min_size=1, max_size=8)
QUOTABLE = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"), max_size=10
)


def normalised(address: IPAddress) -> IPAddress:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def expected_client(hops: list[IPAddress | None], peer: str) -> str:
    """The oracle: the rightmost untrusted hop, or the leftmost when all are trusted; the peer
    when the walk meets a hop without an address."""
    for hop in reversed(hops):
        if hop is None:
            return peer
        hop = normalised(hop)
        if not any(hop.version == n.version and hop in n for n in TRUSTED):
            return str(hop)
    first = hops[0]
    assert first is not None
    return str(normalised(first))


def split_lines(draw: st.DrawFn, entries: list[str]) -> list[str]:
    """The list's entries as one or more field lines (split at element boundaries)."""
    lines: list[list[str]] = [[]]
    for entry in entries:
        if lines[-1] and draw(st.booleans()):
            lines.append([])
        lines[-1].append(entry)
    return [",".join(line) for line in lines]


@st.composite
def xff_header(draw: st.DrawFn) -> tuple[list[str], list[IPAddress]]:
    hops = draw(st.lists(ANY_IPS, min_size=1, max_size=6))
    entries = []
    for hop in hops:
        port = draw(st.one_of(st.none(), st.integers(0, 65535)))
        if isinstance(hop, IPv4Address):
            text = str(hop) if port is None else f"{hop}:{port}"
        elif port is not None:
            text = f"[{hop}]:{port}"
        else:
            text = draw(st.sampled_from([str(hop), f"[{hop}]", hop.exploded]))
        entries.append(draw(OWS) + text + draw(OWS))
    return split_lines(draw, entries), hops


@st.composite
def forwarded_header(draw: st.DrawFn) -> tuple[list[str], list[IPAddress | None]]:
    hops: list[IPAddress | None] = draw(
        st.lists(st.one_of(ANY_IPS, st.none()), min_size=1, max_size=6)
    )
    elements = []
    for hop in hops:
        port = draw(PORTS)
        pairs = []
        if hop is None:
            node = draw(st.sampled_from(["unknown", "UNKNOWN", "_hidden", "_a.b-c"]))
            include_for = draw(st.booleans())
        else:
            host = str(hop) if isinstance(hop, IPv4Address) else f"[{hop}]"
            node = host if port is None else f"{host}:{port}"
            include_for = True
        if include_for:
            if ":" in node or "[" in node or draw(st.booleans()):
                escape = draw(st.booleans())  # quoted-pairs: any character may be escaped
                value = '"' + "".join("\\" + c if escape else c for c in node) + '"'
            else:
                value = node
            pairs.append(draw(st.sampled_from(["for", "For", "FOR"])) + "=" + value)
        for name in draw(st.lists(st.sampled_from(["by", "proto", "host", "ext"]), unique=True)):
            if draw(st.booleans()):
                pairs.append(f"{name}={draw(TOKEN)}")
            else:
                text = draw(QUOTABLE).replace("\\", "\\\\").replace('"', '\\"')
                pairs.append(f'{name}="{text}"')
        if not pairs:
            pairs.append("proto=https")
        order = draw(st.permutations(pairs))
        elements.append(draw(OWS) + (draw(OWS) + ";" + draw(OWS)).join(order) + draw(OWS))
    return split_lines(draw, elements), hops


@settings(max_examples=1500, deadline=None)
@given(xff_header())
def test_x_forwarded_for_against_the_chain(header: tuple[list[str], list[IPAddress]]) -> None:
    lines, hops = header
    assert client_address(PEER, [], lines, TRUSTED) == ClientAddress(
        expected_client(list(hops), PEER)
    )


@settings(max_examples=1500, deadline=None)
@given(forwarded_header())
def test_forwarded_against_the_chain(header: tuple[list[str], list[IPAddress | None]]) -> None:
    lines, hops = header
    assert client_address(PEER, lines, [], TRUSTED) == ClientAddress(expected_client(hops, PEER))


@settings(max_examples=500, deadline=None)
@given(forwarded_header(), xff_header())
def test_two_headers_count_only_when_they_agree(
    forwarded: tuple[list[str], list[IPAddress | None]],
    xff: tuple[list[str], list[IPAddress]],
) -> None:
    from_forwarded = expected_client(forwarded[1], PEER)
    from_xff = expected_client(list(xff[1]), PEER)
    result = client_address(PEER, forwarded[0], xff[0], TRUSTED)
    if from_forwarded == from_xff:
        assert result == ClientAddress(from_xff)
    else:
        assert result == ClientAddress(PEER, "forwarded_headers_disagree")


HEADER_TEXT = st.lists(st.text(max_size=40), max_size=3)


@settings(max_examples=1500, deadline=None)
@given(HEADER_TEXT, HEADER_TEXT)
def test_any_header_text_yields_the_peer_or_a_forwarded_address(
    forwarded: list[str], x_forwarded_for: list[str]
) -> None:
    result = client_address(PEER, forwarded, x_forwarded_for, TRUSTED)
    assert result.problem in {
        None,
        "malformed_forwarded",
        "malformed_x_forwarded_for",
        "forwarded_headers_disagree",
    }
    if result.problem is not None:
        assert result.address == PEER
    else:
        assert result.address is not None
        address = ip_address(result.address)
        assert str(address) == result.address


@settings(max_examples=500, deadline=None)
@given(st.ip_addresses(), HEADER_TEXT, HEADER_TEXT)
def test_an_untrusted_peer_always_is_the_client(
    peer: IPAddress, forwarded: list[str], x_forwarded_for: list[str]
) -> None:
    if any(normalised(peer).version == n.version and normalised(peer) in n for n in TRUSTED):
        return
    assert client_address(str(peer), forwarded, x_forwarded_for, TRUSTED) == ClientAddress(
        str(peer)
    )


# -- end to end: registration rate-limit buckets of a real gateway ----------------------------

REGISTRATION = {
    "redirect_uris": ["http://127.0.0.1:6274/callback"],
    "token_endpoint_auth_method": "none",
}
ALICE, BOB = "198.51.100.7", "203.0.113.20"


async def registration_statuses(gw: Gateway, *forwarded_for: str | None) -> list[int]:
    """POST a registration once per entry, with that `X-Forwarded-For` (None: without one).

    The limit counts in fixed clock minutes: a sequence that straddles a minute boundary is
    run again (it could not tell buckets apart), so the outcome never depends on timing.
    """
    for _ in range(3):
        minute = time.time() // 60
        statuses = []
        async with aiohttp.ClientSession() as http:
            for value in forwarded_for:
                headers = {} if value is None else {"X-Forwarded-For": value}
                async with http.post(
                    gw.url("/oauth/register"), json=REGISTRATION, headers=headers
                ) as resp:
                    statuses.append(resp.status)
        if time.time() // 60 == minute:
            return statuses
    raise AssertionError("three minute boundaries in a row")


async def limited_gateway(
    start: StartGateway, upstream: RecordingUpstream, tmp_path: Path, trusted: list[str]
) -> Gateway:
    return await facade_gateway(
        start,
        upstream.url,
        write_users(tmp_path / "users.yaml", "unused password"),
        {"trusted_proxies": trusted},
        registrations_per_minute=1,
    )


def access_clients() -> list[str | None]:
    lines = [json.loads(line) for line in gateway_log().splitlines() if line.strip()]
    return [line.get("client") for line in lines if line.get("event") == "request_completed"]


async def test_clients_behind_a_trusted_proxy_get_their_own_buckets(
    start_gateway_for: StartGateway, upstream: RecordingUpstream, tmp_path: Path
) -> None:
    gw = await limited_gateway(start_gateway_for, upstream, tmp_path, ["127.0.0.1/32"])
    statuses = await registration_statuses(gw, ALICE, ALICE, f"6.6.6.6, {BOB}", BOB)
    assert statuses == [201, 429, 201, 429]
    assert access_clients()[-4:] == [ALICE, ALICE, BOB, BOB]


async def test_a_malformed_forwarded_address_falls_back_to_the_proxy(
    start_gateway_for: StartGateway, upstream: RecordingUpstream, tmp_path: Path
) -> None:
    gw = await limited_gateway(start_gateway_for, upstream, tmp_path, ["127.0.0.1/32"])
    statuses = await registration_statuses(gw, "not-an-address", None, ALICE)
    assert statuses == [201, 429, 201]  # the first two share the proxy's bucket
    lines = [json.loads(line) for line in gateway_log().splitlines() if line.strip()]
    ignored = [line for line in lines if line.get("event") == "forwarded_client_address_ignored"]
    assert [(line["level"], line["reason"]) for line in ignored] == [
        ("info", "malformed_x_forwarded_for")
    ]


@pytest.mark.parametrize(
    "trusted",
    [pytest.param([], id="no-trusted-proxies"), pytest.param(["10.0.0.0/8"], id="peer-untrusted")],
)
async def test_forwarding_headers_from_an_untrusted_peer_change_nothing(
    start_gateway_for: StartGateway, upstream: RecordingUpstream, tmp_path: Path, trusted: list[str]
) -> None:
    gw = await limited_gateway(start_gateway_for, upstream, tmp_path, trusted)
    statuses = await registration_statuses(gw, ALICE, BOB, None)
    assert statuses == [201, 429, 429]  # one bucket: the peer's
    assert access_clients()[-3:] == ["127.0.0.1"] * 3
