"""The configuration reference (docs/configuration.md), rendered from the config's JSON Schema.

`render_reference` is a pure function of the schema, so the committed page can be checked for
staleness like config/schema.json. `reference_schema` is that schema plus the defaults pydantic
leaves out (fields built by a `default_factory`), so the page can show every default.
"""

from __future__ import annotations

import json
import typing
from collections import Counter
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from gateway.config.model import GatewayConfig, _ProcessEnvSource
from gateway.config.schema import config_schema

JsonSchema = dict[str, Any]

_INTRO = """\
One YAML file, validated as a whole when the gateway starts and by `mcp-auth-gateway check`:
unknown keys are errors, and every problem is reported at once with its YAML path and line.

- `${{VAR}}` and `${{VAR:-default}}` are replaced from the environment (`$${{` is a literal `${{`);
  an unset variable without a default is a reported problem.
- Every secret field `x` (marked *secret* below) can instead be given as `x_file`: a file path,
  or for a map of secrets a map of the same keys to file paths. Files are read once at start,
  with one trailing newline removed.
- Process settings can also come from the environment, which wins over the file:
  `{env_prefix}<SECTION>{delimiter}<FIELD>` (for example `{env_prefix}SERVER{delimiter}PORT=9000`),
  for the sections {env_sections}.
- `check`, `serve` and editors can use the JSON Schema in
  [`config/schema.json`](../config/schema.json) (`mcp-auth-gateway schema`).

Durations are in seconds. *required* marks a key without a default.
"""


def reference_schema() -> JsonSchema:
    """The config's JSON Schema, with the defaults of `default_factory` fields filled in."""
    schema = config_schema()
    definitions = schema.get("$defs", {})
    for model in _models(GatewayConfig):
        target = schema if model is GatewayConfig else definitions.get(model.__name__)
        if target is None:
            continue
        properties = target.get("properties", {})
        for name, field in model.model_fields.items():
            key = field.alias or name
            if field.default_factory is None or key not in properties:
                continue
            value = field.get_default(call_default_factory=True, validated_data={})
            if isinstance(value, BaseModel):
                continue  # a nested section: its own fields show their defaults
            properties[key].setdefault("default", to_jsonable_python(value))
    return schema


def _models(root: type[BaseModel]) -> Iterator[type[BaseModel]]:
    """Every model reachable from `root` through field annotations, each once."""
    seen: set[type[BaseModel]] = set()
    pending: list[Any] = [root]
    while pending:
        annotation = pending.pop()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation in seen:
                continue
            seen.add(annotation)
            yield annotation
            pending.extend(field.annotation for field in annotation.model_fields.values())
        else:
            pending.extend(typing.get_args(annotation))


def render_reference(
    schema: JsonSchema,
    *,
    env_prefix: str = "MCP_GATEWAY_",
    env_delimiter: str = "__",
    env_sections: frozenset[str] = frozenset(),
) -> str:
    """docs/configuration.md for a config JSON Schema: one section per object, at its YAML path,
    with a row per key (type, default, constraints, description) and `*_file` twins next to
    the secret they stand for."""
    writer = _Writer(schema, env_prefix, env_delimiter, env_sections)
    return writer.render()


class _Writer:
    def __init__(
        self,
        schema: JsonSchema,
        env_prefix: str,
        env_delimiter: str,
        env_sections: frozenset[str],
    ) -> None:
        self.schema = schema
        self.definitions: dict[str, JsonSchema] = schema.get("$defs", {})
        self.env_prefix = env_prefix
        self.env_delimiter = env_delimiter
        self.env_sections = env_sections
        self.paths = self._section_paths()
        self.headings = self._headings()

    def render(self) -> str:
        sections = ", ".join(f"`{name}`" for name in sorted(self.env_sections)) or "(none)"
        intro = _INTRO.format(
            env_prefix=self.env_prefix, delimiter=self.env_delimiter, env_sections=sections
        )
        title = self.schema.get("title", "Configuration")
        out = [
            f"# {title} reference",
            "",
            "<!-- Generated from the config's JSON Schema by `mcp-auth-gateway schema --markdown"
            " --output docs/configuration.md`; do not edit by hand. -->",
            "",
            intro,
        ]
        out += self._section("top level", None, self.schema)
        for reference, path in self.paths.items():
            out += self._section(self.headings[reference], path, self.definitions[reference])
        return "\n".join(out).rstrip("\n") + "\n"

    # -- structure -------------------------------------------------------------------------

    def _section_paths(self) -> dict[str, str]:
        """Object definition -> the YAML path of its first use, in document order."""
        paths: dict[str, str] = {}

        def visit(node: JsonSchema, path: str) -> None:
            for name, child in node.get("properties", {}).items():
                for reference, suffix in self._objects_in(child):
                    if reference in paths:
                        continue
                    child_path = f"{path}.{name}{suffix}" if path else f"{name}{suffix}"
                    paths[reference] = child_path
                    visit(self.definitions[reference], child_path)

        visit(self.schema, "")
        return paths

    def _headings(self) -> dict[str, str]:
        """Object definition -> its section heading: its path, and its title when the objects
        at that path come in several kinds (an upstream with `url` or with `command`)."""
        shared = Counter(self.paths.values())
        return {
            reference: f"`{path}`: {self.definitions[reference].get('title', reference)}"
            if shared[path] > 1
            else f"`{path}`"
            for reference, path in self.paths.items()
        }

    def _objects_in(self, node: JsonSchema, suffix: str = "") -> Iterator[tuple[str, str]]:
        """(definition name, path suffix) for every object definition a property can hold."""
        reference = node.get("$ref")
        if isinstance(reference, str):
            name = reference.rsplit("/", 1)[-1]
            if "properties" in self.definitions.get(name, {}):
                yield name, suffix
        for alternative in _alternatives(node):
            yield from self._objects_in(alternative, suffix)
        items = node.get("items")
        if isinstance(items, dict):
            yield from self._objects_in(items, suffix + "[]")
        values = node.get("additionalProperties")
        if isinstance(values, dict):
            yield from self._objects_in(values, suffix + ".<name>")

    def _section(self, heading: str, path: str | None, node: JsonSchema) -> list[str]:
        out = [f"## {heading}", ""]
        description = node.get("description")
        if description:
            out += [_paragraphs(description), ""]
        if path in self.env_sections:
            assert path is not None
            variable = f"{self.env_prefix}{path.upper()}{self.env_delimiter}<FIELD>"
            out += [f"Each key can be set from the environment as `{variable}`.", ""]
        properties: dict[str, JsonSchema] = node.get("properties", {})
        required = set(node.get("required", ()))
        out += [
            "| key | type | default | constraints | description |",
            "|---|---|---|---|---|",
        ]
        for name in _ordered(properties):
            out.append(self._row(name, properties[name], name in required, properties))
        out.append("")
        return out

    # -- one key ---------------------------------------------------------------------------

    def _row(
        self, name: str, node: JsonSchema, required: bool, siblings: dict[str, JsonSchema]
    ) -> str:
        twin_of = name.removesuffix("_file") if name.endswith("_file") else None
        if twin_of is not None and twin_of in siblings:
            type_text = self._type(node)
            default = "—"
            description = node.get("description", "") + f" Instead of `{twin_of}`, not with it."
        else:
            type_text = self._type(node)
            if _is_secret(node):
                type_text += " (*secret*)"
            default = self._default(node, required)
            description = node.get("description", "")
            twin = f"{name}_file"
            if _is_secret(node) and twin in siblings and f"`{twin}`" not in description:
                description = (description + f" Or `{twin}`.").strip()
        cells = [
            f"`{name}`",
            type_text,
            default,
            ", ".join(self._constraints(node)) or "—",
            _one_line(description) or "—",
        ]
        return "| " + " | ".join(_cell(cell) for cell in cells) + " |"

    def _type(self, node: JsonSchema) -> str:
        reference = node.get("$ref")
        if isinstance(reference, str):
            name = reference.rsplit("/", 1)[-1]
            definition = self.definitions.get(name, {})
            if "properties" in definition:
                heading = self.headings[name]
                return f"object, see [{heading}](#{_anchor(heading)})"
            return self._type(definition)
        if "anyOf" in node or "oneOf" in node:
            alternatives = _alternatives(node)
            shown = [self._type(a) for a in alternatives if a.get("type") != "null"]
            nullable = any(a.get("type") == "null" for a in alternatives)
            return " or ".join(shown) + (" or null" if nullable else "")
        if "const" in node:
            return f"`{_literal(node['const'])}`"
        if "enum" in node:
            return "one of " + ", ".join(f"`{_literal(v)}`" for v in node["enum"])
        kind = node.get("type")
        if kind == "array":
            items = node.get("items")
            return "list of " + (self._inner(items) if isinstance(items, dict) else "anything")
        if kind == "object":
            values = node.get("additionalProperties")
            if isinstance(values, dict):
                return "map of string to " + self._inner(values)
            return "object"
        if kind == "string" and node.get("format") == "uri":
            return "URL"
        return str(kind) if kind is not None else "anything"

    def _inner(self, node: JsonSchema) -> str:
        """The type of a list's items or a map's values, in parentheses when it is a choice."""
        text = self._type(node)
        return f"({text})" if " or " in text else text

    def _default(self, node: JsonSchema, required: bool) -> str:
        if required:
            return "*required*"
        if "default" in node:
            return f"`{json.dumps(node['default'])}`"
        if self._objects_in_place(node):
            return "its keys' defaults"
        return "—"

    def _objects_in_place(self, node: JsonSchema) -> bool:
        reference = node.get("$ref")
        return isinstance(reference, str) and "properties" in self.definitions.get(
            reference.rsplit("/", 1)[-1], {}
        )

    def _constraints(self, node: JsonSchema) -> list[str]:
        found: list[str] = []
        for alternative in _alternatives(node):
            found += self._constraints(alternative)
        if "minimum" in node:
            found.append(f">= {node['minimum']}")
        if "exclusiveMinimum" in node:
            found.append(f"> {node['exclusiveMinimum']}")
        if "maximum" in node:
            found.append(f"<= {node['maximum']}")
        if "exclusiveMaximum" in node:
            found.append(f"< {node['exclusiveMaximum']}")
        if "minLength" in node and node.get("format") != "uri":
            least = node["minLength"]
            found.append("not empty" if least == 1 else f"at least {least} characters")
        if "maxLength" in node:
            found.append(f"at most {node['maxLength']} characters")
        if "minItems" in node:
            least = node["minItems"]
            found.append("not empty" if least == 1 else f"at least {least} items")
        if "maxItems" in node:
            found.append(f"at most {node['maxItems']} items")
        if "pattern" in node:
            found.append(f"matches `{node['pattern']}`")
        return found


def _ordered(properties: dict[str, JsonSchema]) -> list[str]:
    """Schema order, with each `x_file` twin right after `x`."""
    twins = {name for name in properties if name.endswith("_file") and name[:-5] in properties}
    ordered: list[str] = []
    for name in properties:
        if name in twins:
            continue
        ordered.append(name)
        if f"{name}_file" in twins:
            ordered.append(f"{name}_file")
    return ordered


def _is_secret(node: JsonSchema) -> bool:
    if node.get("writeOnly") is True:
        return True
    children = [*_alternatives(node), node.get("items"), node.get("additionalProperties")]
    return any(isinstance(child, dict) and _is_secret(child) for child in children)


def _alternatives(node: JsonSchema) -> list[JsonSchema]:
    """The choices of an `anyOf` or a `oneOf` (a tagged union: an upstream's kinds)."""
    return [*node.get("anyOf", ()), *node.get("oneOf", ())]


def _literal(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _paragraphs(text: str) -> str:
    return "\n\n".join(_one_line(part) for part in text.split("\n\n"))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _anchor(heading: str) -> str:
    """GitHub's heading anchor for a heading that is `heading` in backticks."""
    return "".join(ch for ch in heading.lower() if ch.isalnum() or ch in "-_ ").replace(" ", "-")


def render_configuration_reference() -> str:
    """docs/configuration.md for this version of the gateway."""
    return render_reference(
        reference_schema(),
        env_prefix=str(GatewayConfig.model_config.get("env_prefix", "")),
        env_delimiter=str(GatewayConfig.model_config.get("env_nested_delimiter", "")),
        env_sections=_ProcessEnvSource.overridable,
    )
