"""Checking audit files: the hash chain, every checkpoint's signature, and the chain's end.

Files are read in the order of their first record's time (rotated files and the current one
may be given in any order; each file after the first must continue the chain). The first
problem found is reported with its file, line and sequence number:

- hash mismatch: a record's `prev` is not the hash of the record before it, so that record
  (named) was edited;
- sequence gap: records are missing (deleted, or a file of the chain not given);
- a checkpoint whose signature does not verify, or signs another position of the chain;
- the chain ends after its last checkpoint (an unsigned tail: cut off, or the gateway was
  killed or still runs), or in a checkpoint that is not final (cut off right after it).
Lines of a log stream that are not audit records are skipped (sink `log`). A log stream may
hold several chains, one per gateway run: each must end in a final checkpoint.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from gateway.audit.canonical import GENESIS, canonical, record_hash
from gateway.audit.chain import CHECKPOINT_TYP, checkpoint_payload

PublicKeys = Mapping[str, ECKey | RSAKey]
"""Verification keys by `kid`."""


@dataclass(frozen=True, slots=True)
class Entry:
    file: str
    line: int
    record: dict[str, Any]


class ChainBrokenError(Exception):
    """The first problem found, at `file`:`line` (sequence `seq`)."""

    def __init__(self, file: str, line: int, seq: object, problem: str) -> None:
        super().__init__(f"{file}:{line}: seq {seq}: {problem}")
        self.file, self.line, self.seq, self.problem = file, line, seq, problem


@dataclass
class Summary:
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    checkpoints: int = 0
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [
            f"intact: {self.records} records (seq {self.first_seq}..{self.last_seq}) in "
            f"{len(self.files)} file(s), {self.checkpoints} checkpoint signature(s) verified, "
            "ending in a final checkpoint"
        ]
        return "\n".join([*lines, *(f"note: {note}" for note in self.notes)])


def verify_files(paths: list[Path], keys: PublicKeys) -> Summary:
    """Check the chain through `paths`; `ChainBrokenError` names the first bad record."""
    ordered = sorted((_first_time(path), index, path) for index, path in enumerate(paths))
    summary = Summary(files=[str(path) for _, _, path in ordered])
    previous: Entry | None = None
    prev_hash: str | None = None
    for _, _, path in ordered:
        for entry in _entries(path):
            prev_hash = _check(entry, previous, prev_hash, keys, summary)
            previous = entry
    if previous is None:
        raise ChainBrokenError(summary.files[0] if summary.files else "-", 0, None, "no records")
    _check_end(previous)
    return summary


def _check(
    entry: Entry, previous: Entry | None, prev_hash: str | None, keys: PublicKeys, summary: Summary
) -> str:
    """Check one record against the one before it; return its hash."""
    record, seq = entry.record, entry.record["seq"]
    if previous is not None and record.get("kind") == "chain_started":
        _check_end(previous)  # a log stream across restarts: one chain per run
        summary.notes.append(f"{entry.file}:{entry.line}: a new chain begins (a restart)")
        previous = None
    if previous is None:
        if record.get("kind") == "chain_started" and (seq != 0 or record["prev"] != GENESIS):
            _broken(entry, "a chain_started record must have seq 0 and the genesis prev")
        if record.get("kind") != "chain_started":
            summary.notes.append(
                f"the chain is checked from seq {seq} ({entry.file}); earlier files not given"
            )
        summary.first_seq = seq
    else:
        expected = previous.record["seq"] + 1
        if seq > expected:
            _broken(entry, f"sequence gap: seq {expected}..{seq - 1} missing (deleted records, "
                           f"or a file of the chain not given)")  # fmt: skip
        if seq < expected:
            _broken(entry, f"sequence goes back to {seq} after {expected - 1} (reordered or "
                           "duplicated records)")  # fmt: skip
        if record["prev"] != prev_hash:
            raise ChainBrokenError(previous.file, previous.line, previous.record["seq"],
                              "hash mismatch: this record is not the one the next record's "
                              "prev was computed over (edited)")  # fmt: skip
    if record.get("kind") == "checkpoint":
        _check_signature(entry, keys)
        summary.checkpoints += 1
    if record.get("kind") == "file_started" and record.get("previous_tail_signed") is False:
        summary.notes.append(f"{entry.file}:{entry.line}: the gateway resumed after a file "
                             "that did not end in a final checkpoint")  # fmt: skip
    summary.records += 1
    summary.last_seq = seq
    return record_hash(canonical(record))


def _check_signature(entry: Entry, keys: PublicKeys) -> None:
    signature = entry.record.get("signature")
    if not isinstance(signature, str):
        _broken(entry, "checkpoint without a signature")
    try:
        header = json.loads(_b64(signature.split(".", 1)[0]))
        key = keys.get(str(header.get("kid"))) if isinstance(header, dict) else None
        if key is None:
            _broken(entry, "checkpoint signed with a key not among the verification keys")
        assert isinstance(header, dict)
        if header.get("typ") != CHECKPOINT_TYP:
            _broken(entry, "checkpoint signature of another type")
        signed = jws.deserialize_compact(signature, key, algorithms=[str(header.get("alg"))])
    except (JoseError, ValueError) as exc:
        _broken(entry, f"checkpoint signature does not verify ({type(exc).__name__})")
    if json.loads(signed.payload) != checkpoint_payload(entry.record):
        _broken(entry, "checkpoint signature covers another position of the chain")


def _check_end(last: Entry) -> None:
    record = last.record
    if record.get("kind") != "checkpoint":
        _broken(last, "the chain ends after its last checkpoint: unsigned tail (truncated, or "
                      "the gateway was killed or still runs)")  # fmt: skip
    if record.get("final") is not True:
        _broken(last, "missing final checkpoint: the chain ends at a periodic checkpoint "
                      "(truncated after it, or the gateway was killed or still runs)")  # fmt: skip


def _broken(entry: Entry, problem: str) -> NoReturn:
    raise ChainBrokenError(entry.file, entry.line, entry.record.get("seq"), problem)


def _entries(path: Path) -> Iterator[Entry]:
    """Each audit record of a file (an audit file, or a log stream's `audit_record` lines)."""
    with path.open("rb") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError:
                raise ChainBrokenError(
                    str(path), number, None, "not a JSON line (damaged)"
                ) from None
            if isinstance(value, dict) and value.get("event") == "audit_record":
                value = value.get("record")
            elif isinstance(value, dict) and "event" in value and "seq" not in value:
                continue  # another log line
            if (
                not isinstance(value, dict)
                or type(value.get("seq")) is not int
                or not (isinstance(value.get("prev"), str))
            ):
                raise ChainBrokenError(str(path), number, None, "not an audit record (damaged)")
            yield Entry(str(path), number, value)


def _first_time(path: Path) -> str:
    for entry in _entries(path):
        time = entry.record.get("time")
        return time if isinstance(time, str) else ""
    return ""


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
