"""The facade's one renderer of `OAuthError`s (gateway/web/facade/error.py), as a table: the
same error type becomes a redirect, an error page or a JSON body, each with its headers."""

from __future__ import annotations

import json

import pytest

from gateway.oauth.error import OAuthError
from gateway.web.facade.error import render

LOCATION = "http://127.0.0.1:9999/cb?error=access_denied&state=xyz&iss=https%3A%2F%2Fgw"


@pytest.mark.parametrize(
    ("error", "page", "status", "kind"),
    [
        (OAuthError("invalid_request", "bad", location=LOCATION), False, 302, "redirect"),
        (OAuthError("invalid_request", "bad", location=LOCATION), True, 302, "redirect"),
        (OAuthError("invalid_client", "This application is unknown."), True, 400, "page"),
        (OAuthError("invalid_request", "Request body too large", 413), True, 413, "page"),
        (OAuthError("invalid_grant", "The code was used"), False, 400, "json"),
        (OAuthError("invalid_client", "Client authentication failed", 401), False, 401, "json"),
    ],
    ids=["redirect", "redirect-from-a-page", "page", "page-413", "json", "json-401"],
)
def test_an_oauth_error_is_rendered_as_the_client_learns_it(
    error: OAuthError, page: bool, status: int, kind: str
) -> None:
    response = render(error, page=page)
    assert response.status == status
    assert response.headers["Cache-Control"] == "no-store"
    if kind == "redirect":
        assert response.headers["Location"] == LOCATION
        assert response.headers["X-Frame-Options"] == "DENY"
    elif kind == "page":
        assert response.content_type == "text/html"
        assert response.text is not None
        assert "<h1>Cannot continue</h1>" in response.text
        assert error.description in response.text
        assert "Location" not in response.headers
    else:
        assert response.content_type == "application/json"
        assert response.headers["Pragma"] == "no-cache"
        assert response.text is not None
        assert json.loads(response.text) == {
            "error": error.error,
            "error_description": error.description,
        }
    challenge = response.headers.get("WWW-Authenticate")
    assert challenge == ('Basic realm="oauth"' if kind == "json" and status == 401 else None)


def test_a_page_escapes_the_description() -> None:
    response = render(OAuthError("invalid_request", "<script>x</script>"), page=True)
    assert response.text is not None
    assert "<script>x</script>" not in response.text
    assert "&lt;script&gt;x&lt;/script&gt;" in response.text
