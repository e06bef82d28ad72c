"""Stdio MCP servers behind the gateway: one process per session, served as Streamable HTTP."""
