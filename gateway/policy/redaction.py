"""Which arguments of a call an audit record keeps, hashes or leaves out (`policy.audit`).

Pure: no I/O. The rules are looked up like the policy's (an exact name beats every pattern,
more literal characters win); a call no entry matches, and any field its rules do not name,
is hashed: what the policy author did not think about is never written down as sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any, Literal

from gateway.config.audit import ALL, AuditPolicy, FieldList, FieldRules
from gateway.policy.patterns import Pattern, is_pattern

Treatment = Literal["keep", "hash", "drop"]
Hasher = Callable[[Any], str]
HASH_PREFIX = "hmac-sha256:"
REDACTED_KINDS: Mapping[str, Literal["tools", "prompts"]] = {
    "tools/call": "tools",
    "prompts/get": "prompts",
}
"""The methods whose `params.arguments` a record carries, and where their rules are."""


def keyed_hasher(key: bytes) -> Hasher:
    """HMAC-SHA256 under `key` over a value's canonical JSON (sorted keys, no spaces, ASCII):
    `hmac-sha256:<hex>`. Keyed, so whoever reads the record cannot test guesses of a
    low-entropy value (a PIN, a yes/no, a name from a short list) against it; whoever holds
    the key can check whether a given value was sent."""

    def hashed(value: Any) -> str:
        if type(value) is str:  # the common case; the same text as `json.dumps` writes
            text = encode_basestring_ascii(value)
        else:
            text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return HASH_PREFIX + hmac.new(key, text.encode("ascii"), hashlib.sha256).hexdigest()

    return hashed


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One call's rules: the named fields' treatments and the rest's."""

    named: Mapping[str, Treatment]
    other: Treatment = "hash"
    source: str = "default (hash all)"

    @classmethod
    def of(cls, rules: FieldRules, source: str) -> FieldRule:
        lists: dict[Treatment, FieldList] = {
            "keep": rules.keep,
            "hash": rules.hash,
            "drop": rules.drop,
        }
        named: dict[str, Treatment] = {}
        other: Treatment = "hash"
        for treatment, names in lists.items():
            if names == ALL:
                other = treatment
            else:
                named.update(dict.fromkeys(names, treatment))
        return cls(named, other, source)

    def apply(self, arguments: object, hasher: Hasher) -> object:
        """The arguments as recorded. Arguments that are not an object are one value, which
        `other` decides (dropped: None)."""
        if not isinstance(arguments, dict):
            return _treated(self.other, arguments, hasher)
        recorded: dict[str, Any] = {}
        for name, value in arguments.items():
            treatment = self.named.get(name, self.other)
            if treatment != "drop":
                recorded[name] = _treated(treatment, value, hasher)
        return recorded


def _treated(treatment: Treatment, value: Any, hasher: Hasher) -> Any:
    if treatment == "keep":
        return value
    return hasher(value) if treatment == "hash" else None


HASH_ALL = FieldRule({})


class _Table:
    def __init__(self, kind: str, entries: Mapping[str, FieldRules]) -> None:
        self._exact: dict[str, FieldRule] = {}
        patterns: list[tuple[Pattern, FieldRule]] = []
        for name, rules in entries.items():
            rule = FieldRule.of(rules, f"audit.{kind}[{name!r}]")
            if is_pattern(name):
                patterns.append((Pattern(name), rule))
            else:
                self._exact[name] = rule
        self._patterns = sorted(patterns, key=lambda item: -item[0].specificity)

    def lookup(self, name: str) -> FieldRule:
        rule = self._exact.get(name)
        if rule is not None:
            return rule
        for pattern, rule in self._patterns:
            if pattern.matches(name):
                return rule
        return HASH_ALL


class Redaction:
    """One route's redaction rules, compiled from its `policy.audit`."""

    def __init__(self, policy: AuditPolicy | None = None) -> None:
        policy = policy or AuditPolicy()
        self._tables = {
            "tools": _Table("tools", policy.tools),
            "prompts": _Table("prompts", policy.prompts),
        }

    def rule_for(self, method: str | None, name: str | None) -> FieldRule:
        """The rule for a call of `method` on `name` (hash all when none applies)."""
        kind = REDACTED_KINDS.get(method or "")
        if kind is None or name is None:
            return HASH_ALL
        return self._tables[kind].lookup(name)


NO_RULES = Redaction()
"""Routes without a policy (anonymous): every argument hashed."""
