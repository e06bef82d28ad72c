"""Limits, compiled and counted in memory: which rules a call falls under, whose counter it
counts against, what a refusal says; config problems at their YAML paths; `explain`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.compiler import load, load_text
from gateway.config import ConfigError
from gateway.config.limits import LimitRule
from gateway.observability.metrics import GatewayMetrics
from gateway.policy.compiled import PolicyStore
from gateway.policy.limits import (
    Admitted,
    Caller,
    Limited,
    RouteLimits,
    caller_key,
    compile_limits,
    compile_rule,
)
from gateway.store.memory_limits import MemoryLimiter
from gateway.web.reload import PolicyReloader

ALICE = Caller("https://id.example", "alice", "app-1", None, "192.0.2.1")


def limits(*rules: dict[str, Any], fallback: Any = "refuse") -> RouteLimits:
    compiled = compile_limits("files", [LimitRule(**rule) for rule in rules], fallback)
    assert compiled is not None
    return compiled


@pytest.mark.parametrize(
    ("rule", "method", "name", "applies"),
    [
        ({"concurrency": 1}, "tools/call", "x", True),
        ({"concurrency": 1}, "initialize", None, True),
        ({"tools": ["write_*"], "concurrency": 1}, "tools/call", "write_file", True),
        ({"tools": ["write_*"], "concurrency": 1}, "tools/call", "read_file", False),
        ({"tools": ["write_*"], "concurrency": 1}, "prompts/get", "write_file", False),
        ({"tools": ["write_*"], "concurrency": 1}, "tools/list", None, False),
        ({"tools": ["a?c"], "concurrency": 1}, "tools/call", "abc", True),
        ({"tools": ["abc"], "concurrency": 1}, "tools/call", "abcd", False),
        ({"resources": ["file:///big/*"], "concurrency": 1}, "resources/read", "file:///big/x",
         True),
        ({"resources": ["file:///big/*"], "concurrency": 1}, "resources/subscribe",
         "file:///big/x", True),
        ({"prompts": ["p"], "concurrency": 1}, "prompts/get", "p", True),
    ],
    ids=["all-tools", "all-initialize", "pattern", "pattern-miss", "other-kind", "list-not-named",
         "question-mark", "exact-is-exact", "resource", "subscribe", "prompt"],
)  # fmt: skip
def test_which_calls_a_rule_counts(
    rule: dict[str, Any], method: str, name: str | None, applies: bool
) -> None:
    assert bool(limits(rule).applying(method, name)) is applies


def test_a_batch_costs_one_per_matching_call_and_every_matching_rule_applies() -> None:
    route = limits({"tools": ["w*"], "rate": 5, "per": "second"}, {"concurrency": 3})
    calls = [("tools/call", "w1"), ("tools/call", "r1"), ("tools/call", "w2")]
    checks = route.checks(calls, ALICE)
    assert [(check.rule.label, check.cost) for check in checks] == [("0", 2), ("1", 3)]
    assert all(check.key.startswith(f"limit:files:{check.rule.label}:") for check in checks)


@pytest.mark.parametrize(
    ("by", "other", "same"),
    [
        ("principal", Caller("https://id.example", "alice", "app-2", None, "192.0.2.9"), True),
        ("principal", Caller("https://other.example", "alice", "app-1", None, None), False),
        ("client_id", Caller("https://id.example", "bob", "app-1", None, None), True),
        ("client_id", Caller("https://id.example", "alice", "app-2", None, None), False),
        ("client_address", Caller("https://id.example", "bob", "app-2", None, "192.0.2.1"), True),
        ("client_address", Caller("https://id.example", "alice", "app-1", None, "192.0.2.2"),
         False),
    ],
    ids=["principal-any-client", "principal-per-issuer", "client-any-user", "client-differs",
         "address-any-user", "address-differs"],
)  # fmt: skip
def test_whose_calls_count_together(by: Any, other: Caller, same: bool) -> None:
    assert (caller_key(by, ALICE) == caller_key(by, other)) is same
    assert "alice" not in caller_key(by, ALICE)  # a digest: no identity in a store key


def test_without_a_subject_the_client_then_the_token_is_the_principal() -> None:
    client_only = Caller("https://id.example", None, "app-1", None, None)
    token_a = Caller("https://id.example", None, None, "f" * 32, None)
    token_b = Caller("https://id.example", None, None, "e" * 32, None)
    assert caller_key("principal", client_only) == caller_key("client_id", client_only)
    assert caller_key("principal", token_a) != caller_key("principal", token_b)


@pytest.mark.parametrize(
    ("rule", "kind", "message"),
    [
        ({"tools": ["write_*"], "rate": 10, "per": "minute"}, "rate",
         "Rate limit for tools matching 'write_*': 10 per minute"),
        ({"name": "big", "resources": ["file:///a"], "rate": 3, "per": 90, "by": "client_id"},
         "rate",
         "Rate limit 'big' for resources named 'file:///a': 3 per 90 seconds per client id"),
        ({"concurrency": 4, "by": "client_address"}, "concurrency",
         "Concurrency limit for all calls: 4 in flight per client address"),
    ],
    ids=["rate", "named-seconds-client", "concurrency-address"],
)  # fmt: skip
def test_refusal_messages_name_the_limit(rule: dict[str, Any], kind: Any, message: str) -> None:
    assert compile_rule("files", 0, LimitRule(**rule)).describe(kind) == message


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_token_bucket_admits_its_burst_then_its_rate() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock=clock)
    checks = limits({"rate": 2, "per": "minute", "burst": 3}).checks([("ping", None)], ALICE)
    outcomes = [await limiter.admit(checks, "c") for _ in range(4)]
    assert [type(o) for o in outcomes] == [Admitted, Admitted, Admitted, Limited]
    refused = outcomes[-1]
    assert isinstance(refused, Limited)
    assert (refused.kind, refused.retry_after) == ("rate", 30)  # one token per 30 s
    clock.now += 29
    assert isinstance(await limiter.admit(checks, "c"), Limited)
    clock.now += 1
    assert isinstance(await limiter.admit(checks, "c"), Admitted)
    clock.now += 3600  # refills up to the burst, no more
    assert [type(await limiter.admit(checks, "c")) for _ in range(4)] == [Admitted] * 3 + [Limited]


async def test_admission_is_all_or_nothing_and_slots_come_back() -> None:
    limiter = MemoryLimiter(clock=Clock())
    route = limits({"rate": 10, "per": "hour"}, {"name": "cap", "concurrency": 1})
    checks = route.checks([("ping", None)], ALICE)
    first = await limiter.admit(checks, "a")
    assert isinstance(first, Admitted)
    assert first.release is not None
    second = await limiter.admit(checks, "b")
    assert isinstance(second, Limited)
    assert (second.rule.label, second.kind, second.retry_after) == ("cap", "concurrency", 1)
    await first.release()
    assert isinstance(await limiter.admit(checks, "c"), Admitted)
    # the refused call took no token: 10 an hour, two admitted so far
    assert limiter.in_flight(checks[1].key) == 1


async def test_buckets_are_bounded_least_recently_used_first() -> None:
    limiter = MemoryLimiter(max_keys=2, clock=Clock())
    route = limits({"rate": 1, "per": "hour"})
    users = [Caller("https://id.example", name, None, None, None) for name in ("a", "b", "c")]
    for user in users:
        assert isinstance(await limiter.admit(route.checks([("ping", None)], user), "x"), Admitted)
    # "a" was dropped for room: it has a full bucket again; "c" has not
    assert isinstance(await limiter.admit(route.checks([("ping", None)], users[0]), "x"), Admitted)
    assert isinstance(await limiter.admit(route.checks([("ping", None)], users[2]), "x"), Limited)


CONFIG = """\
server: {host: 127.0.0.1, public_url: "https://gw.example"}
auth:
  resource_server:
    authorization_servers: [{name: corp, issuer: "https://id.example"}]
%s
upstreams:
  - name: files
    route: /files/mcp
    url: http://127.0.0.1:9000/mcp
    scopes: [mcp:tools]
    policy:
      limits:
%s
"""


def problems(rules: str, top: str = "") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_text(CONFIG % (top, textwrap.indent(rules, " " * 8)), env={})
    return [f"{p.path}: {p.message}" for p in caught.value.problems]


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ("- {tools: [w], by: principal}",
         "upstreams[0].policy.limits[0]: give rate (with per) or concurrency, or both"),
        ("- {rate: 5}", "upstreams[0].policy.limits[0]: rate needs per: second, minute, hour or "
         "a number of seconds"),
        ("- {concurrency: 2, burst: 3}",
         "upstreams[0].policy.limits[0]: per and burst are for rate: give rate too"),
        ("- {rate: 0, per: second}",
         "upstreams[0].policy.limits[0].rate: Input should be greater than or equal to 1"),
        ("- {rate: 1, per: -5}", "upstreams[0].policy.limits[0].per"),
        ("- {rate: 1, per: fortnight}", "upstreams[0].policy.limits[0].per"),
        ("- {concurrency: 1, by: user}", "upstreams[0].policy.limits[0].by"),
        ("- {concurrency: 1, tools: []}", "upstreams[0].policy.limits[0].tools: empty: omit it "
         "to count every call of the route"),
        ("- {concurrency: 1, tools: [a, a]}",
         "upstreams[0].policy.limits[0].tools: a name is listed twice"),
        ("- {concurrency: 1, methods: [x]}", "upstreams[0].policy.limits[0].methods: unknown key"),
        ("- {concurrency: 1, name: Big}", "upstreams[0].policy.limits[0].name: must be lowercase"),
        ("- {concurrency: 1, name: a}\n- {concurrency: 2, name: a}",
         "upstreams[0].policy.limits[1].name: 'a' names two limits"),
        ("- {concurrency: 1}\n- {concurrency: 2, name: '0'}",
         "upstreams[0].policy.limits[1].name: '0' names two limits"),
    ],
    ids=["neither", "rate-without-per", "burst-without-rate", "zero-rate", "negative-per",
         "unknown-unit", "unknown-key-kind", "empty-list", "repeated-name", "unknown-key",
         "bad-name", "same-name", "name-like-an-index"],
)  # fmt: skip
def test_limit_problems_are_reported_at_their_paths(rules: str, expected: str) -> None:
    assert any(found.startswith(expected) for found in problems(rules)), problems(rules)


def test_fallbacks_are_checked_and_limits_need_authentication() -> None:
    found = problems("- {concurrency: 1}", top="store: {limits_fallback: none}")
    assert any(p.startswith("store.limits_fallback: Input should be 'local' or 'refuse'")
               for p in found)  # fmt: skip
    anonymous = CONFIG.replace("scopes: [mcp:tools]", "allow_anonymous: true")
    with pytest.raises(ConfigError) as caught:
        load_text(anonymous % ("", "        - {concurrency: 1}"), env={})
    assert [f"{p.path}: {p.message}" for p in caught.value.problems] == [
        "upstreams[0].policy.limits: limits count authenticated callers: not with allow_anonymous"
    ]


def test_a_route_fallback_overrides_the_store_default() -> None:
    text = CONFIG.replace("      limits:", "      limits_fallback: local\n      limits:")
    compiled = load_text(text % ("store: {limits_fallback: refuse}", "        - {concurrency: 1}"),
                         env={})  # fmt: skip
    limits = compiled.policies["files"].limits
    assert limits is not None
    assert limits.fallback == "local"
    plain = load_text(CONFIG % ("", "        - {concurrency: 1}"), env={}).policies["files"]
    assert plain.limits is not None
    assert plain.limits.fallback == "refuse"  # fail closed by default


def explain(config: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "explain", "--config", str(config), "--route", "files",
         *args], capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.stdout


def test_explain_shows_the_limits_that_apply(tmp_path: Path) -> None:
    rules = textwrap.indent(
        "- {name: writes, tools: ['write_*'], rate: 10, per: minute, burst: 20}\n"
        "- {concurrency: 4, by: client_id}\n",
        " " * 8,
    )
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG % ("", rules))
    write = explain(config, "--scopes", "mcp:tools", "--tool", "write_file").splitlines()
    read = explain(config, "--scopes", "mcp:tools", "--tool", "read_file").splitlines()
    assert [line for line in write if line.startswith("limit:")] == [
        "limit:    [writes] tools matching 'write_*': 10 per minute (burst 20), by principal",
        "limit:    [1] all calls: 4 in flight, by client_id",
    ]
    assert [line for line in read if line.startswith("limit:")] == [
        "limit:    [1] all calls: 4 in flight, by client_id"
    ]
    config.write_text(CONFIG % ("", "        - {tools: [x], concurrency: 1}"))
    none = explain(config, "--scopes", "mcp:tools", "--tool", "read_file").splitlines()
    assert [line for line in none if line.startswith("limit:")] == ["limit:    (none)"]


async def test_a_reload_changes_limits_but_cannot_add_them_to_an_unlimited_route(
    tmp_path: Path,
) -> None:
    two_routes = CONFIG + (
        "  - {name: other, route: /other/mcp, url: 'http://127.0.0.1:9001/mcp',\n"
        "     scopes: [mcp:tools]}\n"
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(two_routes % ("", "        - {rate: 1, per: second}"))
    compiled = load(path)
    store = PolicyStore(compiled.policies)
    reloader = PolicyReloader(path, compiled.config, store, GatewayMetrics(CollectorRegistry()), 0)
    path.write_text(two_routes % ("", "        - {rate: 7, per: second}"))
    assert await reloader.reload()
    limits = store.current["files"].limits
    assert limits is not None
    assert limits.rules[0].bucket is not None
    assert limits.rules[0].bucket.calls == 7
    added = two_routes.replace("scopes: [mcp:tools]}", "policy: {limits: [{concurrency: 1}]}}")
    path.write_text(added % ("", "        - {rate: 7, per: second}"))
    assert not await reloader.reload()  # the route has no limit step: restart to apply
    assert store.current["other"].limits is None
