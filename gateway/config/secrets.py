"""`*_file` twins for secret fields: `client_secret_file: /run/secrets/x` instead of the value.

For a scalar field `x` the twin `x_file` is a path; for a mapping field `x` it maps keys to paths.
File contents are read once at load time, with one trailing newline removed, by the loader
(`resolve_secret_files`), before the models validate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from gateway.config.problems import Problems, YamlPath
from gateway.config.shape import children, model_at

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
    """A model whose fields named in `secret_fields` may be given as `<field>_file` twins.

    The loader reads the twins into their fields before the model validates
    (`resolve_secret_files`), so a file that cannot be read is one problem at the twin's line
    while the rest of the model is still checked.
    """

    secret_fields: ClassVar[frozenset[str]] = frozenset()
    model_config = ConfigDict(json_schema_extra=lambda schema, cls: _document_twins(schema, cls))


UNREAD = "unread-secret"
"""What a secret file's value is, in a load that does not read files (`explain`)."""


def resolve_secret_files(
    root: type[BaseModel], data: Any, problems: Problems, *, read_files: bool = True
) -> Any:
    """`data` with every `<field>_file` twin replaced by its field, read from the file(s).

    A file that cannot be read is a problem at the twin's path, and its field is a value not
    known (what its absence breaks is not reported again). Without `read_files`, files are not
    opened: each value is `UNREAD`, silently.
    """
    return _resolve(root, data, (), problems, read_files)


def _resolve(annotation: Any, value: Any, path: YamlPath, problems: Problems, read: bool) -> Any:
    model = model_at(annotation, value, ()) if isinstance(value, dict) else None
    if model is not None and issubclass(model, SecretFileMixin):
        value = dict(value)
        for name in sorted(model.secret_fields):
            if f"{name}_file" in value:
                _read_twin(value, name, (*path, name), problems, read)
    resolved = {key: _resolve(ann, item, (*path, key), problems, read)
                for key, ann, item in children(annotation, value)}  # fmt: skip
    if isinstance(value, dict):
        return {**value, **resolved}
    if isinstance(value, list):
        return [resolved.get(index, item) for index, item in enumerate(value)]
    return value


def _read_twin(
    data: dict[str, Any], name: str, path: YamlPath, problems: Problems, read: bool
) -> None:
    twin = f"{name}_file"
    source = data.pop(twin)
    twin_path = (*path[:-1], twin)
    if isinstance(source, dict):
        merged = dict(data.get(name) or {})
        for key, file in source.items():
            if key in merged:
                problems.add((*twin_path, key), f"{name}.{key} is also given inline")
            merged[key] = _read(str(file), (*path, key), (*twin_path, key), problems, read)
        data[name] = merged
    elif name in data:
        problems.add(twin_path, f"give either {name} or {twin}, not both")
    else:
        data[name] = _read(str(source), path, twin_path, problems, read)


def _read(file: str, path: YamlPath, twin_path: YamlPath, problems: Problems, read: bool) -> str:
    if not read:
        problems.unknown_value(path, None)
        return UNREAD
    try:
        return read_secret_file(file)
    except ValueError as exc:
        problems.unknown_value(path, None)
        problems.add(twin_path, str(exc), knock_on_possible=False)
        return ""


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
