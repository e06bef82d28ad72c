"""The hash chain: each record gets the next sequence number and the hash of the record before
it; a checkpoint signs (sequence, chain hash so far, time) with the gateway's key.

A checkpoint is a record of the chain too: `{"kind": "checkpoint", "seq", "prev", "time",
"final", "signature"}`, where `signature` is a JWS (RFC 7515) compact serialization, header
`{"alg", "kid", "typ": "mcp-audit-checkpoint"}`, over the canonical JSON of `{"seq", "chain",
"time", "final"}` (`chain` equal to the record's `prev`). `final` marks the checkpoint a
gateway writes when it stops: a chain whose last record is not a final checkpoint was cut
off, or its gateway did not stop cleanly (or still runs).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, Final

from joserfc import jws

from gateway.audit.canonical import FORMAT_VERSION, GENESIS, canonical, record_hash
from gateway.oauth.signing import SigningKey

CHECKPOINT_TYP: Final = "mcp-audit-checkpoint"
Sealed = tuple[dict[str, Any], bytes]
"""A record with its chain fields, and its canonical bytes."""
KeySource = Callable[[], SigningKey]
"""The key that signs the next checkpoint (the facade's current key may rotate)."""


class Chain:
    """The chain's position: the next sequence number and the hash of the last record."""

    def __init__(self, seq: int = 0, prev: str = GENESIS) -> None:
        self.seq = seq
        self.prev = prev
        self.since_checkpoint = 0

    def seal(self, body: dict[str, Any]) -> Sealed:
        """`body` as the chain's next record."""
        record = {**body, "seq": self.seq, "prev": self.prev}
        data = canonical(record)
        self.seq += 1
        self.prev = record_hash(data)
        self.since_checkpoint += 1
        return record, data

    def start(self, time: str) -> Sealed:
        """The first record of a new chain (from the genesis), with a random chain id."""
        return self.seal(
            {
                "v": FORMAT_VERSION,
                "kind": "chain_started",
                "time": time,
                "chain_id": secrets.token_hex(16),
            }
        )

    def checkpoint(self, key: SigningKey, time: str, *, final: bool = False) -> Sealed:
        """A signed checkpoint over everything before it."""
        payload = {"seq": self.seq, "chain": self.prev, "time": time, "final": final}
        header = {"alg": key.alg, "kid": key.kid, "typ": CHECKPOINT_TYP}
        signature = jws.serialize_compact(header, canonical(payload), key.key, algorithms=[key.alg])
        sealed = self.seal(
            {
                "v": FORMAT_VERSION,
                "kind": "checkpoint",
                "time": time,
                "final": final,
                "signature": signature,
            }
        )
        self.since_checkpoint = 0
        return sealed


def checkpoint_payload(record: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint record's signature must cover (for `verify`)."""
    return {
        "seq": record.get("seq"),
        "chain": record.get("prev"),
        "time": record.get("time"),
        "final": record.get("final"),
    }
