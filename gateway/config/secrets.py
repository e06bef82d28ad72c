"""`*_file` twins for secret fields: `client_secret_file: /run/secrets/x` instead of the value.

For a scalar field `x` the twin `x_file` is a path; for a mapping field `x` it maps keys to paths.
File contents are read once at load time, with one trailing newline removed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

MAX_SECRET_FILE_BYTES = 64 * 1024


def read_secret_file(path: str) -> str:
    """Read a secret file; raises ValueError with a message naming the path, never the content."""
    file = Path(path)
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path!r}: {exc.strerror}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ValueError(f"secret file {path!r} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"secret file {path!r} is not UTF-8") from None
    return text.removesuffix("\n").removesuffix("\r")


class SecretFileMixin(BaseModel):
    """Accept `<field>_file` for every field named in `secret_fields`."""

    secret_fields: ClassVar[frozenset[str]] = frozenset()
    model_config = ConfigDict(json_schema_extra=lambda schema, cls: _document_twins(schema, cls))

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for field in cls.secret_fields:
            twin = f"{field}_file"
            if twin not in data:
                continue
            data = dict(data)
            source = data.pop(twin)
            if isinstance(source, dict):
                merged = dict(data.get(field) or {})
                for key, path in source.items():
                    if key in merged:
                        raise ValueError(f"{field}.{key} is given both inline and in {twin}")
                    merged[key] = read_secret_file(str(path))
                data[field] = merged
            else:
                if field in data:
                    raise ValueError(f"give either {field} or {twin}, not both")
                data[field] = read_secret_file(str(source))
        return data


def _document_twins(schema: dict[str, Any], cls: type[Any]) -> None:
    """Show each `<field>_file` twin in the JSON Schema, so editors accept it."""
    properties = schema.get("properties", {})
    for field in sorted(getattr(cls, "secret_fields", ())):
        if field not in properties:
            continue
        is_map = properties[field].get("type") == "object"
        properties[f"{field}_file"] = {
            "description": f"Read `{field}` from files: "
            + ("a map of the same keys to file paths." if is_map else "a file path."),
            **(
                {"type": "object", "additionalProperties": {"type": "string"}}
                if is_map
                else {"type": "string"}
            ),
        }
