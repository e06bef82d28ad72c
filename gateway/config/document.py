"""The config file as a document: strict YAML, the line of every key, `${VAR}` substitution."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from gateway.config.problems import Problems, YamlPath

_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of keeping the last one."""

    duplicate_keys: list[tuple[str, int]]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                self.duplicate_keys.append((str(key), key_node.start_mark.line + 1))
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(
    text: str, env: Mapping[str, str], problems: Problems, *, report_unset: bool = True
) -> dict[str, Any] | None:
    """The document as data with `${VAR}`s substituted, its lines indexed into `problems`;
    None when it is not a YAML mapping (the problem is recorded). An unset variable leaves an
    empty string and a value not known at its path (a problem when `report_unset`)."""
    loader = _StrictLoader(text)
    loader.duplicate_keys = []
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problems.add(("(yaml)",), str(getattr(exc, "problem", None) or "invalid YAML"), line=line)
        return None
    finally:
        loader.dispose()
    _index_lines(node, (), problems.lines)
    for key, line in loader.duplicate_keys:
        problems.add(("(yaml)",), f"duplicate key {key!r}", knock_on_possible=False, line=line)
    if not isinstance(data, dict):
        problems.add((), "the config must be a YAML mapping", knock_on_possible=False)
        return None
    substituted: dict[str, Any] = _substitute(data, env, (), problems, report_unset)
    return substituted


def _index_lines(node: yaml.Node | None, path: YamlPath, out: dict[YamlPath, int]) -> None:
    if node is None:
        return
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            _index_lines(value_node, (*path, key), out)
            out[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, (*path, index), out)


def _substitute(
    value: Any, env: Mapping[str, str], path: YamlPath, problems: Problems, report: bool
) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            message = f"environment variable {name} is unset"
            problems.unknown_value(path, message if report else None)
            if not report:
                problems.add(path, message)  # withheld: said only if nothing else explains
            return ""

        return _VAR.sub(replace, value)
    if isinstance(value, dict):
        return {k: _substitute(v, env, (*path, str(k)), problems, report) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, env, (*path, i), problems, report) for i, v in enumerate(value)]
    return value
