"""Load a YAML config file into a `GatewayConfig`, reporting every problem at once.

Each problem carries its YAML path (e.g. `upstreams[1].url`) and, where known, its line. The YAML
is parsed strictly (duplicate keys are errors), `${VAR}` and `${VAR:-default}` are substituted in
string values from the environment (`$${` stands for a literal `${`), and the result is validated
by the pydantic models, with environment overrides for process settings applied on top.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.config.model import GatewayConfig
from gateway.config.upstreams import UPSTREAM_KINDS

Path_ = tuple[str | int, ...]

_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
MAX_CONFIG_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path} (line {self.line})" if self.line else self.path
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists every problem found."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        super().__init__(f"{source}: {len(problems)} problem(s)")
        self.source = source
        self.problems = problems


def format_path(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


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


def _line_index(node: yaml.Node | None, path: Path_, out: dict[Path_, int]) -> None:
    if node is None:
        return
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            out[(*path, key)] = key_node.start_mark.line + 1
            _line_index(value_node, (*path, key), out)
            out[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*path, i), out)


def _substitute(
    value: Any, env: Mapping[str, str], path: Path_, problems: list[tuple[Path_, str]]
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
            problems.append((path, f"environment variable {name} is unset"))
            return ""

        return _VAR.sub(replace, value)
    if isinstance(value, dict):
        return {k: _substitute(v, env, (*path, str(k)), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, env, (*path, i), problems) for i, v in enumerate(value)]
    return value


def _nearest_line(lines: dict[Path_, int], path: Path_) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


def parse_config(
    text: str, *, source: str = "<config>", env: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Validate YAML text; raise `ConfigError` listing every problem."""
    env = os.environ if env is None else env
    loader = _StrictLoader(text)
    loader.duplicate_keys = []
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(source, [ConfigProblem("(yaml)", str(problem), line)]) from None
    finally:
        loader.dispose()

    lines: dict[Path_, int] = {}
    _line_index(node, (), lines)
    problems = [
        ConfigProblem("(yaml)", f"duplicate key {key!r}", line)
        for key, line in loader.duplicate_keys
    ]
    if not isinstance(data, dict):
        problems.append(ConfigProblem("(top level)", "the config must be a YAML mapping"))
        raise ConfigError(source, problems)
    unset: list[tuple[Path_, str]] = []
    data = _substitute(data, env, (), unset)
    problems += [ConfigProblem(format_path(p), m, _nearest_line(lines, p)) for p, m in unset]
    try:
        config = GatewayConfig(**data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc: Path_ = _without_kind(tuple(error["loc"]))
            message = error["msg"].removeprefix("Value error, ")
            problems.append(ConfigProblem(format_path(loc), message, _nearest_line(lines, loc)))
        raise ConfigError(source, problems) from None
    if problems:
        raise ConfigError(source, problems)
    return config


def _without_kind(loc: Path_) -> Path_:
    """The YAML path of an error: without the upstream kind pydantic adds after the index."""
    if len(loc) > 2 and loc[0] == "upstreams" and loc[2] in UPSTREAM_KINDS:
        return loc[:2] + loc[3:]
    return loc


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate a config file; raise `ConfigError` listing every problem."""
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(str(file), [ConfigProblem("(file)", "config file is too large")])
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(file), [ConfigProblem("(file)", exc.strerror or str(exc))]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(file), [ConfigProblem("(file)", "not UTF-8")]) from None
    return parse_config(text, source=str(file))
