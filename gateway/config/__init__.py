"""Configuration: YAML -> frozen, validated models."""

from gateway.config.loader import load_config, parse_config
from gateway.config.model import GatewayConfig
from gateway.config.problems import ConfigError, ConfigProblem
from gateway.config.upstreams import HttpUpstream, StdioUpstream, Upstream

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "GatewayConfig",
    "HttpUpstream",
    "StdioUpstream",
    "Upstream",
    "load_config",
    "parse_config",
]
