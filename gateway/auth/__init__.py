"""Bearer-token authentication of MCP requests (the gateway as an OAuth protected resource).

Pure protocol pieces (`bearer`, `challenge`, `claims`, `jwt`) are free of aiohttp and I/O; the key
sources (`jwks`, `metadata`, `introspection`) fetch over HTTP; `authenticator` ties them together
per route, behind a verified-token cache.
"""
