"""Which model describes a place in the raw document, read from the models' annotations.

The loader needs it before pydantic runs (to read `<field>_file` secret twins into their field)
and after (to suggest the nearest key for an unknown one).
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Discriminator, Tag
from pydantic.fields import FieldInfo

from gateway.config.problems import YamlPath


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a union (or the annotation itself), without None; a tagged member
    keeps its `Annotated[..., Tag(...)]` wrapper."""
    if get_origin(annotation) is Annotated:
        if _tag(annotation) is not None:
            return [annotation]
        return _members(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return [member for arg in get_args(annotation) for member in _members(arg)]
    return [] if annotation is type(None) else [annotation]


def _tag(annotation: Any) -> str | None:
    if get_origin(annotation) is Annotated:
        return next((m.tag for m in annotation.__metadata__ if isinstance(m, Tag)), None)
    return None


def _discriminator(annotation: Any) -> Discriminator | None:
    """The union's discriminator, also of an optional one (`Annotated[..., Discriminator] |
    None`)."""
    if get_origin(annotation) is Annotated:
        return next((m for m in annotation.__metadata__ if isinstance(m, Discriminator)), None)
    if get_origin(annotation) in (Union, types.UnionType):
        found = [d for arg in get_args(annotation) if (d := _discriminator(arg)) is not None]
        return found[0] if len(found) == 1 else None
    return None


def _literal(member: Any, field: str) -> object:
    """The one value a model's `Literal` field allows (a discriminator field), else None."""
    if not (isinstance(member, type) and issubclass(member, BaseModel)):
        return None
    info = member.model_fields.get(field)
    allowed = get_args(info.annotation) if info is not None else ()
    return allowed[0] if len(allowed) == 1 else None


def _model(annotation: Any, value: Any) -> type[BaseModel] | None:
    """The model an annotation gives for `value`: a discriminated union's member is the one
    its discriminator picks for the value, any other union's only model member."""
    members = _members(annotation)
    pick = _discriminator(annotation)
    if pick is not None:
        field = pick.discriminator
        if isinstance(field, str):  # a field whose Literal tells the members apart
            wanted = value.get(field) if isinstance(value, dict) else None
            members = [m for m in members if _literal(m, field) == wanted]
        elif callable(field):
            tag = field(value)
            members = [get_args(m)[0] for m in members if _tag(m) == tag]
        else:
            return None
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    return models[0] if len(models) == 1 else None


def _step(annotation: Any, value: Any, part: str | int) -> tuple[Any, Any] | None:
    """The annotation and value one step into `value` at `part`."""
    model = _model(annotation, value)
    if model is not None:
        info: FieldInfo | None = model.model_fields.get(str(part))
        if info is None:
            return None
        return info.annotation, value.get(part) if isinstance(value, dict) else None
    for member in _members(annotation):
        origin, args = get_origin(member), get_args(member)
        if origin is list and isinstance(part, int):
            item = value[part] if isinstance(value, list) and part < len(value) else None
            return args[0], item
        if origin is dict and isinstance(part, str) and len(args) == 2:
            return args[1], value.get(part) if isinstance(value, dict) else None
    return None


def model_at(root: Any, data: Any, path: YamlPath) -> type[BaseModel] | None:
    """The model describing the mapping at `path` of the raw document `data`, if one does."""
    annotation: Any = root
    value = data
    for part in path:
        stepped = _step(annotation, value, part)
        if stepped is None:
            return None
        annotation, value = stepped
    return _model(annotation, value)


def keys_of(model: type[BaseModel]) -> set[str]:
    """The keys a mapping of this model may have: its fields and their `_file` twins."""
    twins = {f"{name}_file" for name in getattr(model, "secret_fields", ())}
    return set(model.model_fields) | twins


def children(annotation: Any, value: Any) -> list[tuple[str | int, Any, Any]]:
    """(key, annotation, value) for each item of the container `value` the annotation knows."""
    if isinstance(value, dict):
        keys: list[str | int] = list(value)
    elif isinstance(value, list):
        keys = list(range(len(value)))
    else:
        return []
    out = []
    for key in keys:
        stepped = _step(annotation, value, key)
        if stepped is not None:
            out.append((key, *stepped))
    return out
