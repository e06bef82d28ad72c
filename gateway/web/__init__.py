"""The client side of the wire: the aiohttp application MCP clients talk to."""
