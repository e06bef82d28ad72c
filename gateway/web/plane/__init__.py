"""The lean data plane: MCP requests on the main listener served without aiohttp's server."""
