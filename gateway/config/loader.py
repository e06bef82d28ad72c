"""The first loading pass: YAML into a validated `GatewayConfig`, with every problem at once.

The YAML is parsed strictly (duplicate keys are errors), `${VAR}` and `${VAR:-default}` are
substituted in string values from the environment (`$${` stands for a literal `${`), `_file`
secret twins are read into their fields, environment overrides for process settings are laid on
top, and each section is validated on its own, so one bad section does not hide the problems of
another; then the checks across sections run on whatever validated. Each problem carries its
YAML path (e.g. `upstreams[1].url`) and line.

The second pass, compiling the config into runtime objects (policies, users, signing keys), is
`gateway.compiler`; `check`, `serve` and reloads run both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from gateway.config.crossref import UpstreamRefs, cross_reference_problems
from gateway.config.document import read_yaml
from gateway.config.model import GatewayConfig, process_overrides
from gateway.config.problems import ConfigError, ConfigProblem, Problems, YamlPath, did_you_mean
from gateway.config.secrets import resolve_secret_files
from gateway.config.shape import keys_of, model_at
from gateway.config.upstreams import UPSTREAM_KINDS, Upstream

MAX_CONFIG_BYTES = 4 * 1024 * 1024
POLICY_ONLY_SKIPS = ("sessions", "store", "log")
"""Sections a policy-only load (`explain`) does not validate: it takes their defaults."""
_STRUCTURAL = frozenset({"missing", "extra_forbidden", "upstream_kind"})
"""Error types that say the document's shape is wrong, never a knock-on of a value."""
_UPSTREAM = TypeAdapter(Upstream)


@dataclass
class Validated:
    """What the first pass made of a document: each section that validated, and the problems."""

    data: dict[str, Any]
    problems: Problems
    sections: dict[str, Any] = field(default_factory=dict)
    upstreams: dict[int, Upstream] = field(default_factory=dict)
    complete: bool = False
    """Every section validated (there may still be problems across sections)."""
    problem_paths: set[YamlPath] = field(default_factory=set)
    """Where validation found problems (reported or withheld)."""

    def whole(self) -> GatewayConfig:
        """The whole config; `ConfigError` listing every problem when there is one."""
        self.problems.raise_if_any()
        config = self.config
        assert config is not None  # a failed section always leaves a problem (validate_document)
        return config

    @property
    def config(self) -> GatewayConfig | None:
        """The whole config, when every section validated and nothing is wrong between them."""
        if not self.complete or self.problems.found:
            return None
        upstreams = [self.upstreams[index] for index in sorted(self.upstreams)]
        return GatewayConfig.model_construct(**self.sections, upstreams=upstreams)


def validate_document(
    text: str,
    *,
    source: str = "<config>",
    env: Mapping[str, str] | None = None,
    policy_only: bool = False,
) -> Validated:
    """Run the first pass over YAML text; problems are collected, never raised.

    `policy_only`: for a dry run of the policy (`explain`): secret files are not read, unset
    variables are not problems unless what they leave empty is needed, and the sections the
    policy does not use (`POLICY_ONLY_SKIPS`) keep their defaults.
    """
    problems = Problems(source)
    env = os.environ if env is None else env
    data = read_yaml(text, env, problems, report_unset=not policy_only)
    if data is None:
        return Validated({}, problems)
    data = resolve_secret_files(GatewayConfig, data, problems, read_files=not policy_only)
    data = _merged(data, process_overrides())
    validated = Validated(data, problems)
    skip = POLICY_ONLY_SKIPS if policy_only else ()
    validated.complete = _validate_sections(validated, skip) & _validate_upstreams(validated)
    found = cross_reference_problems(
        _has_public_url(validated), validated.sections.get("auth"), _refs(validated)
    )
    for path, message in found:
        problems.add(path, message)
    if not validated.complete and not problems.found:
        problems.found = problems.withheld  # nothing else explains why a section failed
    return validated


def _has_public_url(validated: Validated) -> bool | None:
    """Whether `server.public_url` is set: from the section, or from the document when the
    section did not validate but that value had no problem of its own (None: not known)."""
    server = validated.sections.get("server")
    if server is not None:
        return bool(server.public_url is not None)
    raw = validated.data.get("server")
    if not isinstance(raw, dict) or ("server", "public_url") in validated.problem_paths:
        return None
    return raw.get("public_url") is not None


def _refs(validated: Validated) -> dict[int, UpstreamRefs]:
    """Each upstream's references: validated, or read from the document where they are fine."""
    items = validated.data.get("upstreams")
    refs = {index: UpstreamRefs.of(u) for index, u in validated.upstreams.items()}
    for index, raw in enumerate(items if isinstance(items, list) else []):
        if index not in refs and isinstance(raw, dict):
            bad = {str(path[2]) for path in validated.problem_paths
                   if path[:2] == ("upstreams", index) and len(path) > 2}  # fmt: skip
            refs[index] = UpstreamRefs.from_raw(raw, bad)
    return refs


def _merged(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `top` laid over it, mapping by mapping."""
    out = dict(base)
    for key, value in top.items():
        below = out.get(key)
        out[key] = _merged(below, value) if isinstance(below, dict) and isinstance(
            value, dict) else value  # fmt: skip
    return out


def _validate_sections(validated: Validated, skip: tuple[str, ...]) -> bool:
    data, problems = validated.data, validated.problems
    fields = GatewayConfig.model_fields
    for key in data:
        if key not in fields:
            problems.add(
                (key,), "unknown key" + did_you_mean(str(key), fields), knock_on_possible=False
            )
    ok = True
    for name, info in fields.items():
        if name == "upstreams":
            continue
        if name not in data or name in skip:
            # validated_data: pydantic < 2.11 requires it whenever a default factory is called
            default = info.get_default(call_default_factory=True, validated_data={})
            validated.sections[name] = default
            continue
        try:
            adapter: TypeAdapter[Any] = TypeAdapter(info.annotation)  # type: ignore[arg-type]
            validated.sections[name] = adapter.validate_python(data[name])
        except ValidationError as exc:
            _report(exc, (name,), validated)
            ok = False
    return ok


def _validate_upstreams(validated: Validated) -> bool:
    items = validated.data.get("upstreams")
    if not isinstance(items, list) or not items:
        what = "is required" if items is None else "must be a list of at least one upstream"
        validated.problems.add(("upstreams",), what, knock_on_possible=False)
        return False
    ok = True
    for index, item in enumerate(items):
        try:
            validated.upstreams[index] = _UPSTREAM.validate_python(item)
        except ValidationError as exc:
            _report(exc, ("upstreams", index), validated)
            ok = False
    return ok


def _report(error: ValidationError, prefix: YamlPath, validated: Validated) -> None:
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        if prefix[:1] == ("upstreams",) and loc[:1] and loc[0] in UPSTREAM_KINDS:
            loc = loc[1:]  # the kind pydantic puts first is no part of the YAML path
        path: YamlPath = _without_kind_tags((*prefix, *loc), validated.data)
        validated.problem_paths.add(path)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            model = model_at(GatewayConfig, validated.data, path[:-1])
            known = keys_of(model) if model is not None else set()
            message = "unknown key" + did_you_mean(str(path[-1]), known)
        validated.problems.add(path, message, knock_on_possible=item["type"] not in _STRUCTURAL)


def _without_kind_tags(path: YamlPath, data: Any) -> YamlPath:
    """`path` without the tags pydantic adds for a union told apart by a `kind` key (e.g.
    `upstream_auth.user_oauth.x` for `upstream_auth: {kind: user_oauth, x: ...}`)."""
    kept: list[str | int] = []
    value = data
    for part in path:
        if isinstance(value, dict) and part not in value and value.get("kind") == part:
            continue
        kept.append(part)
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            value = None
    return tuple(kept)


def parse_config(
    text: str, *, source: str = "<config>", env: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Run the first pass over YAML text; raise `ConfigError` listing every problem."""
    return validate_document(text, source=source, env=env).whole()


def read_config_text(path: str | os.PathLike[str]) -> str:
    """A config file's text; `ConfigError` when it cannot be read."""
    file = Path(path)
    try:
        if file.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(str(file), [ConfigProblem("(file)", "config file is too large")])
        return file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(file), [ConfigProblem("(file)", exc.strerror or str(exc))]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(file), [ConfigProblem("(file)", "not UTF-8")]) from None


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate a config file (the first pass); raise `ConfigError` listing every
    problem."""
    return parse_config(read_config_text(path), source=str(path))
