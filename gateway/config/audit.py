"""`audit`: the tamper-evident audit trail (where records go, how the chain is checkpointed),
and the per-route redaction rules for the arguments it records (`policy.audit`)."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.config.fields import Model
from gateway.config.secrets import SecretFileMixin

ALL: Literal["all"] = "all"
_HASH_KEY = re.compile(r"^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$")  # 32 bytes, base64url
_FIELD_NAME = re.compile(r"^.{1,200}$", re.DOTALL)
FieldList = list[str] | Literal["all"]


class AuditSettings(SecretFileMixin, Model):
    """One structured record per MCP request's decision and per sign-in or token event,
    hash-chained (each record holds the SHA-256 of the one before) with signed checkpoints,
    so an edited, deleted or cut-off record is found by `mcp-auth-gateway audit verify`.
    Without this section no audit records are written (the `gateway.audit` events are still
    logged)."""

    secret_fields: ClassVar[frozenset[str]] = frozenset({"hash_key", "signing_key"})

    sink: Literal["log", "file"] = Field(
        "log",
        description="`log`: each record as a JSON line (`audit_record`) in the gateway's log "
        "stream; `file`: an append-only file (`file`), rotated by size.",
    )
    file: str | None = Field(None, description="The audit file's path (sink `file`).")
    rotate_bytes: int = Field(
        100 * 1024 * 1024,
        ge=4096,
        description="A file this large is closed with a checkpoint and renamed to "
        "`<file>.<UTC time>`; the new file's first record links to the old one's last.",
    )
    checkpoint_records: int = Field(
        1000, ge=1, le=1_000_000, description="A signed checkpoint after this many records."
    )
    checkpoint_seconds: float = Field(
        60.0,
        gt=0,
        le=86_400,
        description="A signed checkpoint at least this often while records arrive (and one "
        "when the gateway stops).",
    )
    hash_key: SecretStr | None = Field(
        None,
        description="Key of the HMAC-SHA256 that hashes recorded arguments (32 bytes in "
        "unpadded base64url, from `mcp-auth-gateway keygen`; `hash_key_file` to read it). A "
        "keyed hash, so a low-entropy value cannot be guessed back from the record. Default: a "
        "random key per process (hashes then compare only within one run).",
    )
    signing_key: SecretStr | None = Field(
        None,
        description="Private key (PEM or JWK, EC P-256 or RSA) that signs checkpoints; "
        "`signing_key_file` to read it. Default: the authorization server facade's signing "
        "key; required without the facade.",
    )

    @field_validator("hash_key")
    @classmethod
    def _check_hash_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _HASH_KEY.fullmatch(value.get_secret_value()):
            raise ValueError("not 32 bytes in unpadded base64url (use `mcp-auth-gateway keygen`)")
        return value

    @model_validator(mode="after")
    def _file_for_file_sink(self) -> AuditSettings:
        if self.sink == "file" and not self.file:
            raise ValueError("sink file needs file (the audit file's path)")
        if self.sink != "file" and self.file is not None:
            raise ValueError("file is for sink file")
        return self


class FieldRules(Model):
    """What becomes of each argument of a call in its audit record: `keep` (as sent), `hash`
    (HMAC-SHA256 under `audit.hash_key`) or `drop` (left out). Each takes field names or
    `all` (the rule for unnamed fields; at most one may say `all`). Unnamed fields are hashed
    unless another list says `all`."""

    keep: FieldList = Field(default_factory=list)
    hash: FieldList = Field(default_factory=list)
    drop: FieldList = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_rule_per_field(self) -> FieldRules:
        lists = {"keep": self.keep, "hash": self.hash, "drop": self.drop}
        if sum(value == ALL for value in lists.values()) > 1:
            raise ValueError("only one of keep, hash and drop may be `all`")
        seen: dict[str, str] = {}
        for rule, names in lists.items():
            for name in names if isinstance(names, list) else ():
                if not _FIELD_NAME.fullmatch(name):
                    raise ValueError("field names must have 1 to 200 characters")
                if name in seen:
                    raise ValueError(f"{name!r} is under both {seen[name]} and {rule}")
                seen[name] = rule
        return self


class AuditPolicy(Model):
    """Redaction of recorded arguments per tool and prompt (`tools/call` and `prompts/get`
    `arguments`). Keys are names or patterns as in the policy (`*`, `?`; an exact name beats
    a pattern, more literal characters win). Calls no entry matches: every argument hashed."""

    tools: dict[str, FieldRules] = Field(default_factory=dict)
    prompts: dict[str, FieldRules] = Field(default_factory=dict)

    @field_validator("tools", "prompts")
    @classmethod
    def _names_not_empty(cls, value: dict[str, FieldRules]) -> dict[str, FieldRules]:
        if any(not name for name in value):
            raise ValueError("empty names are not allowed")
        return value
