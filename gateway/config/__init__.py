"""Configuration: YAML -> frozen, validated models."""

from gateway.config.loader import ConfigError, ConfigProblem, load_config, parse_config
from gateway.config.model import GatewayConfig, Upstream

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "GatewayConfig",
    "Upstream",
    "load_config",
    "parse_config",
]
