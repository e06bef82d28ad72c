"""The authorization-server facade (issue 6): the gateway as an OAuth 2.1 authorization server
for MCP clients, federating login to the company's OpenID provider or local users.

The protocol logic is free of HTTP, one module per concern; `gateway.web.facade` turns
requests into calls on `server.AuthorizationServer` and results into responses. The flow:

1. `/oauth/authorize` -> `authorize.check_authorization`: the client and its `redirect_uri`
   are checked exactly first, and anything wrong with them is an error page (never a
   redirect); every other problem goes back to the client through its redirect URI, with
   `state` and `iss`. All of these are one `error.OAuthError`.
2. `consent.authorize`: the user consents first, before anyone signs in or any request
   reaches an upstream provider (MCP security best practices: confused deputy); then signs in
   (`sign_in.sign_in_local`, or at the provider and back through `sign_in.signed_in`), after
   which the grant rules decide (`grant`). A live sign-in session (`sign_in.session`) skips
   the sign-in, and consent already given. Each step's form carries a single-use `state` from
   the store (`authorize.begin`), bound to the browser (the digest of its flow cookie) that
   started the flow.
3. The client is sent back with a code (`authorize.issue_code`): `code`, `state` and `iss`.
4. `/oauth/token` -> `token`: code (single use, bound to client, redirect URI, PKCE verifier and
   resource) or refresh token (rotated on every use, reuse revokes the family).

Beside the flow: `page_sign_in` (a sign-in with no client, for the gateway's own pages: a
connect page sends a browser signed in as nobody there and gets it back), `metadata` (RFC
8414), `registration` (RFC 7591), `clients` (which client, client authentication),
`client_documents` and `client_document_fetch` (Client ID Metadata Documents), `revocation`
(RFC 7009). Pure pieces (PKCE, redirect URIs, client metadata, RFC
9207 `iss`), the state store (`store`) and token minting (`signing`) live here too.
"""
