"""RFC 9207 `iss` in authorization responses, both ways.

As an authorization server the gateway adds exactly one `iss` to every authorization response,
success or error (`with_issuer`; RFC 9207 section 2, MCP 2026-07-28 "Authorization Response
Validation"). As a client of the upstream OpenID provider it checks the `iss` of the callback
before the code goes to any token endpoint (`check_issuer`; RFC 9207 section 2.4).

The check takes the whole callback query, not an `iss` value picked out by the caller, and its
error carries only a fixed reason code: nothing the provider sent (`error`, `error_description`,
`error_uri`, or the bad `iss` itself) can travel in it to a log line or to the MCP client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from multidict import MultiMapping

IssuerReason = Literal["iss_missing", "iss_mismatch", "iss_repeated"]
IssuerOutcome = Literal["matched", "not_sent"]

_MESSAGES: Mapping[IssuerReason, str] = {
    "iss_missing": "the authorization server advertises iss but the response has none",
    "iss_mismatch": "the response's iss is not the expected issuer",
    "iss_repeated": "the response has more than one iss",
}


class IssuerMismatchError(Exception):
    """The callback failed the RFC 9207 section 2.4 check: drop it, redeem nothing.

    Its message is fixed per `reason`; it never holds any value from the callback.
    """

    def __init__(self, reason: IssuerReason) -> None:
        super().__init__(_MESSAGES[reason])
        self.reason: IssuerReason = reason


def _iss_values(query: Mapping[str, Sequence[str]] | MultiMapping[str]) -> Sequence[str]:
    if isinstance(query, MultiMapping):
        return query.getall("iss", [])
    values = query.get("iss", ())
    if isinstance(values, str):
        # A Mapping[str, str] (e.g. dict(request.query)) would hide repeated parameters.
        raise TypeError("the callback query must map each name to all of its values")
    return values


def check_issuer(
    query: Mapping[str, Sequence[str]] | MultiMapping[str],
    *,
    expected_issuer: str,
    iss_supported: bool | None,
) -> IssuerOutcome:
    """Apply the RFC 9207 section 2.4 decision table to an authorization response.

    `query` is the whole callback query with every value of every parameter, blank ones
    included: aiohttp's `request.query`, or `parse_qs(..., keep_blank_values=True)`.
    `expected_issuer` is the issuer recorded with the login transaction, from discovery already
    checked against the configured one. `iss_supported` is the provider's
    `authorization_response_iss_parameter_supported`: None when absent. Anything but `False` or
    absence counts as advertised, so a malformed metadata value never weakens the check.

    ====================  =========  ==========================================
    advertised            iss        action
    ====================  =========  ==========================================
    true                  present    compare: "matched" or `iss_mismatch`
    true                  absent     `iss_missing`
    false or absent       present    compare (MCP's local policy, section 2.4)
    false or absent       absent     "not_sent": proceed
    ====================  =========  ==========================================

    Comparison is simple string comparison (RFC 3986 section 6.2.1): no case folding, no
    trailing-slash, default-port or percent-encoding normalisation. More than one `iss` is
    refused (`iss_repeated`, RFC 6749 section 3.1: parameters must not repeat).
    """
    if not expected_issuer:
        raise ValueError("no recorded issuer to compare with")
    values = _iss_values(query)
    if len(values) > 1:
        raise IssuerMismatchError("iss_repeated")
    if not values:
        if iss_supported is None or iss_supported is False:
            return "not_sent"
        raise IssuerMismatchError("iss_missing")
    if values[0] != expected_issuer:
        raise IssuerMismatchError("iss_mismatch")
    return "matched"


def with_issuer(params: Mapping[str, str], issuer: str) -> dict[str, str]:
    """The authorization response `params` (success or error) with the gateway's `iss` added.

    Every response gets exactly one `iss`, equal to the metadata `issuer` (RFC 9207 section 2).
    Parameters that already hold an `iss` are refused rather than overwritten: some other code
    path set one, and silently replacing it would hide that bug.
    """
    if not issuer:
        raise ValueError("the issuer must not be empty")
    if "iss" in params:
        raise ValueError("the response parameters already hold an iss")
    return {**params, "iss": issuer}
