"""The authorization-server facade (issue 6): the gateway as an OAuth 2.1 authorization server
for MCP clients, federating login to the company's OpenID provider or local users.

Pure protocol pieces (PKCE, redirect URIs, client metadata, RFC 9207 `iss`), the state store and
token minting live here; the HTTP endpoints that use them are wired in `gateway/web/`.
"""
