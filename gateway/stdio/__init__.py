"""Stdio MCP servers: their processes (one per session) and the messages of each."""
