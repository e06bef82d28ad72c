"""The audit trail of a real gateway serving real requests: what each record holds, that
`audit verify` passes on the untouched file, and that it names the first bad record after an
edit, a deletion, a truncation or a forged checkpoint signature."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.audit.canonical import canonical, record_hash
from gateway.audit.chain import Chain
from gateway.audit.trail import AUDIT
from gateway.audit.verify import ChainBrokenError, verify_files
from gateway.cli import main
from gateway.oauth.signing import SigningKey
from gateway.policy.redaction import keyed_hasher
from gateway.web.keys import METRICS_KEY
from tests.audit.support import (
    ROUTE,
    SECRET_BODY_ARGUMENT,
    SECRET_TOKEN_ARGUMENT,
    AuditSetup,
    answer,
    call,
    post,
    records,
    serve_each_decision,
    start_audited,
)
from tests.conftest import gateway_log
from tests.support.http_upstream import RecordingUpstream, recording_upstream
from tests.support.local_issuer import LocalIssuer


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    async with recording_upstream(answer) as recorded:
        yield recorded


@pytest.fixture
def setup(tmp_path: Path) -> AuditSetup:
    return AuditSetup.make(tmp_path)


async def audited_file(
    setup: AuditSetup, issuer: LocalIssuer, upstream: RecordingUpstream, **audit: object
) -> Path:
    """The audit file of a gateway that served `serve_each_decision` and stopped."""
    running, base = await start_audited(issuer, upstream.url, setup.section(**audit))
    try:
        await serve_each_decision(base, issuer)
    finally:
        await running.stop()
    return setup.audit_file


def verify_cli(files: list[Path], key: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["audit", "verify", *map(str, files), "--key", str(key)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("data_plane", ["lean", "aiohttp"])
async def test_every_decision_is_one_record_and_the_untouched_file_verifies(
    data_plane: str,
    setup: AuditSetup,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    capsys: pytest.CaptureFixture[str],
) -> None:
    running, base = await start_audited(
        issuer, upstream.url, setup.section(), data_plane=data_plane
    )
    try:
        await serve_each_decision(base, issuer)
    finally:
        await running.stop()
    found = records(setup.audit_file)
    requests = [r for r in found if r["kind"] == "request"]
    assert [(r["name"], r["decision"], r["status"]) for r in requests] == [
        ("create_issue", "allow", 200),
        ("drop_db", "deny", 403),
        ("admin_reset", "insufficient_scope", 403),
        (None, "refused", 401),
        ("search_issues", "allow", 200),
    ]
    allowed = requests[0]
    assert allowed["principal"] == {"iss": issuer.issuer, "sub": "alice", "client_id": "client-1"}
    assert (allowed["route"], allowed["method"], allowed["client"]) == (
        "files", "tools/call", "127.0.0.1")  # fmt: skip
    assert (allowed["upstream_status"], requests[1]["upstream_status"]) == (200, None)
    assert allowed["duration_us"] > 0
    assert allowed["request_id"]
    assert requests[3]["error"] == "invalid_token"
    assert requests[3]["principal"] is None
    events = [r["event"] for r in found if r["kind"] == "event"]
    assert "token_rejected" in events
    assert [r["kind"] for r in (found[0], found[-1])] == ["chain_started", "checkpoint"]
    assert [r["seq"] for r in found] == list(range(len(found)))
    code, output = verify_cli([setup.audit_file], setup.key_file, capsys)
    assert code == 0, output
    assert f"intact: {len(found)} records" in output
    registry = running.app[METRICS_KEY].registry
    written = registry.get_sample_value("mcp_gateway_audit_records_total", {"outcome": "request"})
    assert written == len(requests)


async def answer_in_a_stream(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await stream.prepare(request)
    await stream.write(b": the result follows\n\n")
    await asyncio.sleep(0.2)  # so the gateway relays a stream rather than one whole answer
    result = {"jsonrpc": "2.0", "id": body["id"], "result": {}}
    await stream.write(b"data: " + json.dumps(result).encode() + b"\n\n")
    return stream


@pytest.mark.parametrize("data_plane", ["lean", "aiohttp"])
async def test_a_streamed_call_is_recorded_with_its_arguments(
    data_plane: str, setup: AuditSetup, issuer: LocalIssuer
) -> None:
    """A stream lets go of its request's body and parsed message once the upstream answers,
    but not of the arguments its audit record, written when it ends, is made from."""
    async with recording_upstream(answer_in_a_stream) as upstream:
        running, base = await start_audited(
            issuer, upstream.url, setup.section(), data_plane=data_plane
        )
        try:
            token = issuer.mint(issuer.claims(base + ROUTE, scope="mcp:tools"))
            arguments = {"query": "open bugs", "password": SECRET_TOKEN_ARGUMENT}
            assert await post(base, token, call("search_issues", arguments)) == 200
        finally:
            await running.stop()
    [request] = [r for r in records(setup.audit_file) if r["kind"] == "request"]
    assert (request["method"], request["name"], request["status"]) == (
        "tools/call", "search_issues", 200)  # fmt: skip
    assert request["arguments"] == {"query": "open bugs"}


async def test_redaction_rules_are_honoured_and_secrets_never_written(
    setup: AuditSetup, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    path = await audited_file(setup, issuer, upstream)
    requests = [r for r in records(path) if r["kind"] == "request"]
    hashed = keyed_hasher(_decoded(setup.hash_key))
    # create_issue: keep title, drop token, the rest hashed (HMAC under the configured key)
    assert requests[0]["arguments"] == {"title": "Crash on save",
                                        "body": hashed(SECRET_BODY_ARGUMENT)}  # fmt: skip
    # no rule for drop_db / admin_reset: every argument hashed
    assert requests[1]["arguments"] == {"really": hashed(True)}
    assert requests[2]["arguments"] == {"pin": hashed("1234")}
    # search_*: keep all but password, which is dropped
    assert requests[4]["arguments"] == {"query": "open bugs"}
    data = path.read_bytes()
    for secret in (SECRET_TOKEN_ARGUMENT, SECRET_BODY_ARGUMENT):
        assert secret.encode() not in data
        assert secret not in gateway_log()
    assert b'"1234"' not in data  # a low-entropy value hashed, not kept


def _decoded(key: str) -> bytes:
    return base64.urlsafe_b64decode(key + "=" * (-len(key) % 4))


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


async def test_an_edited_record_is_named(
    setup: AuditSetup,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = await audited_file(setup, issuer, upstream)
    lines = _lines(path)
    record = json.loads(lines[2])  # seq 2: drop_db, denied
    assert record["decision"] == "deny"
    record["decision"] = "allow"
    lines[2] = canonical(record) + b"\n"
    path.write_bytes(b"".join(lines))
    with pytest.raises(ChainBrokenError) as broken:
        verify_files([path], {setup.signing_key.kid: setup.signing_key.key})
    assert (broken.value.line, broken.value.seq) == (3, 2)
    assert "hash mismatch" in broken.value.problem
    code, output = verify_cli([path], setup.key_file, capsys)
    assert code == 1
    assert f"{path}:3: seq 2: hash mismatch" in output


async def test_a_deleted_record_is_named(
    setup: AuditSetup,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = await audited_file(setup, issuer, upstream)
    lines = _lines(path)
    del lines[3]  # seq 3: insufficient_scope
    path.write_bytes(b"".join(lines))
    code, output = verify_cli([path], setup.key_file, capsys)
    assert code == 1
    assert f"{path}:4: seq 4: sequence gap: seq 3..3 missing" in output


async def test_a_truncated_file_is_found(
    setup: AuditSetup,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = await audited_file(setup, issuer, upstream)
    lines = _lines(path)
    path.write_bytes(b"".join(lines[:5]))  # seq 0..4: the tail and final checkpoint cut
    code, output = verify_cli([path], setup.key_file, capsys)
    assert code == 1
    assert f"{path}:5: seq 4: the chain ends after its last checkpoint: unsigned tail" in output


async def test_a_file_cut_right_after_a_periodic_checkpoint_is_found(
    setup: AuditSetup,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = await audited_file(setup, issuer, upstream, checkpoint_records=3)
    found = records(path)
    periodic = [r["seq"] for r in found if r["kind"] == "checkpoint" and not r["final"]]
    assert periodic
    cut = periodic[-1]
    path.write_bytes(b"".join(_lines(path)[: cut + 1]))
    code, output = verify_cli([path], setup.key_file, capsys)
    assert code == 1
    assert f"{path}:{cut + 1}: seq {cut}: missing final checkpoint" in output
    assert verify_cli([path.with_name("none")], setup.key_file, capsys)[0] == 2


async def test_a_forged_checkpoint_signature_is_caught(
    setup: AuditSetup, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    path = await audited_file(setup, issuer, upstream)
    lines = _lines(path)
    last = json.loads(lines[-1])
    forger = SigningKey.generate("ES256")
    object.__setattr__(forger, "kid", setup.signing_key.kid)  # claims the gateway's key
    chain = Chain(last["seq"], last["prev"])
    forged, data = chain.checkpoint(forger, last["time"], final=True)
    assert forged["signature"] != last["signature"]
    lines[-1] = data + b"\n"
    path.write_bytes(b"".join(lines))
    with pytest.raises(ChainBrokenError) as broken:
        verify_files([path], {setup.signing_key.kid: setup.signing_key.key})
    assert (broken.value.line, broken.value.seq) == (len(lines), last["seq"])
    assert "signature does not verify" in broken.value.problem


async def test_rotation_keeps_the_chain_verifiable_across_files(
    setup: AuditSetup, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    running, base = await start_audited(issuer, upstream.url, setup.section(rotate_bytes=4096))
    try:
        token = issuer.mint(issuer.claims(base + "/files/mcp", scope="mcp:tools"))
        for n in range(40):
            assert await post(base, token, call("create_issue", {"title": f"issue {n}"})) == 200
    finally:
        await running.stop()
    files = sorted(setup.directory.glob("audit.jsonl*"))
    assert len(files) >= 3
    keys = {setup.signing_key.kid: setup.signing_key.key}
    shuffled = list(files)
    random.Random(7).shuffle(shuffled)
    summary = verify_files(shuffled, keys)
    assert summary.first_seq == 0
    assert summary.records > 40
    rotated = sorted(f for f in files if f.name != "audit.jsonl")
    later = records(rotated[1])[0]
    assert later["kind"] == "file_started"
    assert later["previous_file"] == rotated[0].name
    assert later["prev"] == record_hash(canonical(records(rotated[0])[-1]))
    with pytest.raises(ChainBrokenError) as broken:
        verify_files([f for f in files if f != rotated[1]], keys)
    assert "sequence gap" in broken.value.problem


async def test_a_restarted_gateway_continues_the_chain(
    setup: AuditSetup, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    await audited_file(setup, issuer, upstream)
    await audited_file(setup, issuer, upstream)
    files = sorted(setup.directory.glob("audit.jsonl*"))
    assert len(files) == 2
    first = records(setup.audit_file)[0]
    assert (first["kind"], first["previous_tail_signed"]) == ("file_started", True)
    summary = verify_files(files, {setup.signing_key.kid: setup.signing_key.key})
    assert summary.first_seq == 0
    assert summary.checkpoints == 2


async def test_a_log_stream_holds_one_chain_per_run_and_each_must_end_signed(
    setup: AuditSetup,
    issuer: LocalIssuer,
    upstream: RecordingUpstream,
    capsys: pytest.CaptureFixture[str],
) -> None:
    section = setup.section(sink="log")
    del section["file"]
    for _ in range(2):
        running, base = await start_audited(issuer, upstream.url, section)
        try:
            await serve_each_decision(base, issuer)
        finally:
            await running.stop()
    log = setup.directory / "gateway.log"
    log.write_text(gateway_log())
    assert SECRET_BODY_ARGUMENT not in gateway_log()
    code, output = verify_cli([log], setup.key_file, capsys)
    assert code == 0, output
    assert "a new chain begins (a restart)" in output
    lines = log.read_text().splitlines(keepends=True)
    first_run_end = next(index for index, line in enumerate(lines) if '"final":true' in line)
    del lines[first_run_end]  # the first run's final checkpoint
    log.write_text("".join(lines))
    code, output = verify_cli([log], setup.key_file, capsys)
    assert code == 1
    assert "unsigned tail" in output


async def test_an_audit_file_that_cannot_be_written_stops_start_up(
    setup: AuditSetup, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    section = setup.section(file=str(setup.directory / "missing" / "audit.jsonl"))
    with pytest.raises(FileNotFoundError):
        await start_audited(issuer, upstream.url, section)
    assert AUDIT.trail is None


async def test_a_batch_records_each_call_with_its_arguments_redacted(
    setup: AuditSetup, issuer: LocalIssuer, upstream: RecordingUpstream
) -> None:
    running, base = await start_audited(issuer, upstream.url, setup.section())
    try:
        token = issuer.mint(issuer.claims(base + "/files/mcp", scope="mcp:tools"))
        batch = [
            call("create_issue", {"title": "one", "token": SECRET_TOKEN_ARGUMENT}, rpc_id=1),
            call("search_issues", {"query": "two"}, rpc_id=2),
        ]
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(base + "/files/mcp", json=batch, headers=headers) as resp,
        ):
            assert resp.status == 200
    finally:
        await running.stop()
    found = records(setup.audit_file)
    request = next(r for r in found if r["kind"] == "request")
    assert request["batch"] == [
        {"method": "tools/call", "name": "create_issue", "arguments": {"title": "one"}},
        {"method": "tools/call", "name": "search_issues", "arguments": {"query": "two"}},
    ]
    decided = [r["fields"]["name"] for r in found if r.get("event") == "policy_decided"]
    assert decided == ["create_issue", "search_issues"]
    assert SECRET_TOKEN_ARGUMENT.encode() not in setup.audit_file.read_bytes()
