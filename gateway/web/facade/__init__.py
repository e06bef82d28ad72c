"""The authorization-server facade over HTTP: metadata, JWKS, registration, the authorize,
sign-in and consent pages, token and revocation endpoints.

Protocol decisions are in `gateway.oauth` (its package docstring tells the flow); this
package parses requests (`forms`), renders pages (`pages`) and every `OAuthError` in one
place (`error`), and sets the headers every such answer needs: `Cache-Control: no-store`
everywhere, and on pages a Content-Security-Policy that forbids framing (clickjacking) and any
script. `endpoints.FacadeEndpoints.install` adds the routes; `browser` holds the steps a
user's browser goes through; `cookies` the flow and session cookies; `build` the
authorization server from the config.

The sign-in and consent forms are accepted only from the gateway's own pages: their POST must
carry `Origin` equal to the origin of `server.public_url` (browsers send it on form posts), so
another site, even one in `server.allowed_origins`, cannot submit them (login CSRF, forged
consent). Unexpected input gets a 4xx and a logged reason, never a 500.
"""

from gateway.web.facade.build import build_authorization_server
from gateway.web.facade.cookies import FLOW_COOKIE, SESSION_COOKIE
from gateway.web.facade.endpoints import FacadeEndpoints

__all__ = ["FLOW_COOKIE", "SESSION_COOKIE", "FacadeEndpoints", "build_authorization_server"]
