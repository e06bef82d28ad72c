"""The JSON-RPC messages of refused calls: what a person reads when a host shows the error."""

from __future__ import annotations

import pytest

from gateway.policy.refusal import Refusal, denied_message, insufficient_scope_message

W = frozenset({"files:write"})


@pytest.mark.parametrize(
    ("refusals", "granted", "unattainable", "expected"),
    [
        ([Refusal("write_file", W)], {"files:read"}, set(),
         "write_file needs files:write; this client's token has files:read. "
         "Re-authorize with files:write."),
        ([Refusal("write_file", W)], set(), set(),
         "write_file needs files:write; this client's token has no scope. "
         "Re-authorize with files:write."),
        ([Refusal("write_file", W)], {"files:read"}, {"files:write"},
         "write_file needs files:write; this client's token has files:read. This user cannot "
         "be granted files:write: ask an administrator for access."),
        ([Refusal("write_file", W), Refusal("summarise", frozenset({"a", "files:read"}))],
         {"files:read"}, set(),
         "write_file needs files:write; summarise needs a files:read; this client's token has "
         "files:read. Re-authorize with a files:write."),
        ([Refusal("x" * 200, W)], {"s"}, set(),
         "x" * 77 + "... needs files:write; this client's token has s. "
         "Re-authorize with files:write."),
        ([Refusal(f"t{i}", W) for i in range(7)], set(), set(),
         "t0 needs files:write; t1 needs files:write; t2 needs files:write; t3 needs "
         "files:write; t4 needs files:write; and 2 more; this client's token has no scope. "
         "Re-authorize with files:write."),
    ],
    ids=["one", "no-scope", "unattainable", "batch", "long-name", "many"],
)  # fmt: skip
def test_insufficient_scope_message(
    refusals: list[Refusal], granted: set[str], unattainable: set[str], expected: str
) -> None:
    message = insufficient_scope_message(refusals, frozenset(granted), frozenset(unattainable))
    assert message == expected


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["drop_db"], "drop_db is not available here: the gateway's policy denies it whatever "
         "the scopes."),
        (["a", None], "a, this request are not available here: the gateway's policy denies them "
         "whatever the scopes."),
    ],
    ids=["one", "two"],
)  # fmt: skip
def test_denied_message(names: list[str | None], expected: str) -> None:
    assert denied_message(names) == expected
