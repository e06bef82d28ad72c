"""The client's address: the TCP peer, or, behind trusted reverse proxies, the address they
forwarded in `Forwarded` (RFC 7239) or `X-Forwarded-For`.

What it is for: rate limits (registration, sign-in), session limits of anonymous callers, and
the access line. Nothing else is ever taken from these headers: URLs, resources and `Host`
come from the configuration.

The headers are read only when the peer itself is a trusted proxy (`server.trusted_proxies`).
Each proxy appends the address it received the request from, so the chain is walked from the
right, skipping hops that are trusted proxies themselves; the first untrusted hop is the client
(the hops to its left were written by the client and prove nothing). When every hop is
trusted, the leftmost is the client. A hop that names no address (`for=unknown`, an obfuscated
node, an element without `for`) ends the walk at the peer: the client cannot be identified.

Anything malformed, and two headers that disagree (a proxy maintains one of them; the other
came from the client unchanged), also yields the peer, with a `problem` to log; the request
itself never fails because of these headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_OBFUSCATED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_OWS = " \t"
UNIDENTIFIED = None
"""A hop that names no address."""


class MalformedForwardingError(ValueError):
    """A forwarding header that does not parse; the message names the header."""


@dataclass(frozen=True, slots=True)
class ClientAddress:
    address: str | None
    """The client's address (normalised when it came from a header), or the peer's as given."""
    problem: str | None = None
    """Why the forwarding headers of a trusted peer were not used, for an info log line."""


def client_address(
    peer: str | None,
    forwarded: Sequence[str],
    x_forwarded_for: Sequence[str],
    trusted: Sequence[IPNetwork],
) -> ClientAddress:
    """The client's address for a request from `peer` carrying these header values (each
    header's field lines, in order), given the trusted proxy networks."""
    if not trusted or peer is None:
        return ClientAddress(peer)
    peer_ip = parse_ip(peer)
    if peer_ip is None or not is_trusted(peer_ip, trusted):
        return ClientAddress(peer)
    candidates: list[IPAddress | None] = []
    try:
        if forwarded:
            candidates.append(walk(forwarded_hops(forwarded), trusted))
        if x_forwarded_for:
            candidates.append(walk_x_forwarded_for(x_forwarded_for, trusted))
    except MalformedForwardingError as error:
        return ClientAddress(peer, str(error))
    if not candidates:
        return ClientAddress(peer)
    # What each header makes the client (the peer where it names no address): two headers
    # that lead to one address agree, whatever each wrote on the way.
    found = [peer if candidate is None else str(candidate) for candidate in candidates]
    if len(found) == 2 and found[0] != found[1]:
        return ClientAddress(peer, "forwarded_headers_disagree")
    return ClientAddress(found[0])


def walk(hops: Sequence[IPAddress | None], trusted: Sequence[IPNetwork]) -> IPAddress | None:
    """The rightmost hop that is not a trusted proxy (the leftmost if all are); None when the
    walk reaches a hop that names no address."""
    for hop in reversed(hops):
        if hop is UNIDENTIFIED:
            return None
        if not is_trusted(hop, trusted):
            return hop
    return hops[0]


def walk_x_forwarded_for(values: Sequence[str], trusted: Sequence[IPNetwork]) -> IPAddress | None:
    """`walk` over `X-Forwarded-For` (a comma-separated list of addresses, de facto), parsing
    only the entries the walk reaches: whatever the client wrote to the left is not read."""
    entries = ",".join(values).split(",")
    hop: IPAddress | None = None
    for entry in reversed(entries):
        hop = parse_node(entry.strip(_OWS))
        if hop is None:
            raise MalformedForwardingError("malformed_x_forwarded_for")
        if not is_trusted(hop, trusted):
            return hop
    return hop


def forwarded_hops(values: Sequence[str]) -> list[IPAddress | None]:
    """The `for` node of each element of a `Forwarded` field (RFC 7239 section 4), left to
    right; `UNIDENTIFIED` for `unknown`, obfuscated nodes (section 6.3) and elements without
    `for`. Raises `MalformedForwardingError` for anything that does not parse."""
    text = ",".join(values)
    hops: list[IPAddress | None] = []
    position, end = 0, len(text)
    while True:
        pairs: dict[str, str] = {}
        position = _skip(text, position, _OWS)
        while position < end and text[position] not in ",":
            if text[position] == ";":
                position = _skip(text, position + 1, _OWS)
                continue
            name_end = _skip(text, position, _TCHAR)
            if name_end == position or name_end >= end or text[name_end] != "=":
                raise MalformedForwardingError("malformed_forwarded")
            name = text[position:name_end].lower()
            value, position = _value(text, name_end + 1)
            if name in pairs:  # section 4: a parameter must not occur twice in an element
                raise MalformedForwardingError("malformed_forwarded")
            pairs[name] = value
            position = _skip(text, position, _OWS)
            if position < end and text[position] not in ";,":
                raise MalformedForwardingError("malformed_forwarded")
        if pairs:  # empty list elements are allowed (RFC 9110 section 5.6.1)
            node = pairs.get("for")
            hops.append(UNIDENTIFIED if node is None else _forwarded_node(node))
        if position >= end:
            break
        position += 1  # the comma
    if not hops:
        raise MalformedForwardingError("malformed_forwarded")
    return hops


def _forwarded_node(node: str) -> IPAddress | None:
    """RFC 7239 section 6: `nodename [":" node-port]`."""
    name, port = node, None
    if node.startswith("["):
        close = node.find("]")
        if close == -1:
            raise MalformedForwardingError("malformed_forwarded")
        name, rest = node[: close + 1], node[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise MalformedForwardingError("malformed_forwarded")
            port = rest[1:]
    elif ":" in node:
        name, port = node.split(":", 1)
    if port is not None and not _valid_port(port):
        raise MalformedForwardingError("malformed_forwarded")
    if name.lower() == "unknown" or (
        name.startswith("_") and len(name) > 1 and set(name[1:]) <= _OBFUSCATED
    ):
        return UNIDENTIFIED
    if name.startswith("["):
        address = _ipv6(name[1:-1])
        if address is None:
            raise MalformedForwardingError("malformed_forwarded")
        return address
    address = parse_ip(name)
    if not isinstance(address, IPv4Address) or ":" in name:
        raise MalformedForwardingError("malformed_forwarded")
    return address


def parse_node(text: str) -> IPAddress | None:
    """An address as `X-Forwarded-For` writers send it: IPv4 or IPv6, optionally with a port
    (`192.0.2.1:80`, `[2001:db8::1]:80`); None if it is none of those."""
    if text.startswith("["):
        close = text.find("]")
        if close == -1:
            return None
        rest = text[close + 1 :]
        if rest and not (rest.startswith(":") and _valid_port(rest[1:])):
            return None
        return _ipv6(text[1:close])
    if text.count(":") == 1:
        host, port = text.split(":")
        address = parse_ip(host)
        return address if isinstance(address, IPv4Address) and _valid_port(port) else None
    return parse_ip(text)


def parse_ip(text: str) -> IPAddress | None:
    """An IP address, IPv4-mapped IPv6 given as the IPv4 address it maps; None if not one."""
    if not text or not text.isascii() or text != text.strip():
        return None
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _ipv6(text: str) -> IPAddress | None:
    """What `parse_ip` makes of `text`, if it is written as an IPv6 address (in brackets)."""
    return parse_ip(text) if ":" in text else None


def is_trusted(address: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(address.version == network.version and address in network for network in trusted)


def _valid_port(port: str) -> bool:
    """RFC 7239 section 6: `port = 1*5DIGIT` or an obfuscated port `"_" 1*(ALPHA / DIGIT /
    "." / "_" / "-")`."""
    if port.startswith("_"):
        return len(port) > 1 and set(port[1:]) <= _OBFUSCATED
    return 1 <= len(port) <= 5 and port.isascii() and port.isdigit()


def _skip(text: str, position: int, chars: frozenset[str] | str) -> int:
    end = len(text)
    while position < end and text[position] in chars:
        position += 1
    return position


def _value(text: str, position: int) -> tuple[str, int]:
    """A token or a quoted-string (RFC 9110 section 5.6.4) at `position`: its value and the
    position after it."""
    end = len(text)
    if position < end and text[position] == '"':
        chars: list[str] = []
        position += 1
        while position < end:
            char = text[position]
            if char == '"':
                return "".join(chars), position + 1
            if char == "\\":
                position += 1
                if position >= end:
                    break
                char = text[position]
            if char in "\r\n\x00" or (char < " " and char != "\t") or char == "\x7f":
                break
            chars.append(char)
            position += 1
        raise MalformedForwardingError("malformed_forwarded")
    token_end = _skip(text, position, _TCHAR)
    if token_end == position:
        raise MalformedForwardingError("malformed_forwarded")
    return text[position:token_end], token_end
