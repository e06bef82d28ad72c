"""The config's JSON Schema, committed as config/schema.json and checked for staleness in CI."""

from __future__ import annotations

import json
from typing import Any

from gateway.config.model import GatewayConfig


def config_schema() -> dict[str, Any]:
    schema = GatewayConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "MCP Auth Gateway configuration"
    return schema


def render_schema() -> str:
    return json.dumps(config_schema(), indent=2, sort_keys=True) + "\n"
