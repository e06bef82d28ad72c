"""MCP Auth Gateway: OAuth 2.1 in front of unmodified Model Context Protocol servers."""

__version__ = "0.1.0"
