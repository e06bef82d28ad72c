"""The authorization server's one error type.

Every refusal of the authorization server is an `OAuthError` carrying what the error
responses of the OAuth specifications carry: RFC 6749 section 4.1.2.1 (authorization), section
5.2 (token), RFC 7591 section 3.2.2 (registration) and RFC 7009 section 2.2.1 (revocation).
`gateway.web.facade.error` renders it, in the one way that fits where it arose.
"""

from __future__ import annotations


class OAuthError(Exception):
    """An OAuth error: its `error` code, a `description` safe to show and to log (fixed text,
    at most quoting a parameter name), and the HTTP `status` of a direct answer.

    How the client learns it:

    - `location` set: back through its redirect URI, the Location carrying `error`,
      `error_description`, `state` and `iss` (an authorization request whose client and
      redirect URI are known good);
    - otherwise in the answer to the request itself: a JSON body from the token,
      registration and revocation endpoints (with `WWW-Authenticate: Basic` on a 401), an
      error page from the browser's pages. An authorization request whose client or redirect
      URI is in doubt gets the page, never a redirect (RFC 6749 section 4.1.2.1).
    """

    def __init__(
        self, error: str, description: str, status: int = 400, *, location: str | None = None
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.location = location

    def body(self) -> dict[str, str]:
        """The JSON error response (RFC 6749 section 5.2)."""
        return {"error": self.error, "error_description": self.description}


def client_authentication_failed() -> OAuthError:
    """RFC 6749 section 5.2 `invalid_client`, the same whatever went wrong (401)."""
    return OAuthError("invalid_client", "Client authentication failed", 401)
