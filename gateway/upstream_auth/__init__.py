"""Credentials of the upstreams' own (`upstream_auth`): minted JWTs, RFC 8693 token exchange,
and users' tokens at third-party OAuth providers. The client's token never goes upstream."""
