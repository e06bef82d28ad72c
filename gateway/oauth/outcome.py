"""What a step of the authorization flow answers, for the web side to render (errors aside,
which are `OAuthError`s)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.oauth.records import AuthorizationRequest


@dataclass(frozen=True, slots=True)
class Redirect:
    """The flow is over: send the user agent back to the client."""

    location: str
    session: str | None = None
    """A new sign-in session's cookie value, to set with this answer."""


@dataclass(frozen=True, slots=True)
class Described:
    """Who asks for what, as the pages name them."""

    client_name: str
    """The client's name (with the host of its metadata document for a URL client id)."""
    client_origin: str
    """Where the client comes from, as the end of "This application ..."."""
    redirect_host: str
    resource_name: str
    """The MCP server: its `resource_name`, else the upstream's name."""
    route: str


@dataclass(frozen=True, slots=True)
class ConsentNeeded:
    """The user must approve; `state` goes into the consent form."""

    state: str
    described: Described
    scopes: tuple[tuple[str, str], ...]
    """(scope, description) to approve; the description may be empty."""
    offline: bool = False
    """The client also asks to stay signed in (a refresh token)."""
    user: str | None = None
    """The signed-in user, when a sign-in session exists."""


@dataclass(frozen=True, slots=True)
class SignInNeeded:
    """Approved: the user now signs in (on the local form or at the upstream provider)."""

    request: AuthorizationRequest


@dataclass(frozen=True, slots=True)
class SignInFailed:
    """Wrong user name or password: show the form again with this fresh `state`."""

    state: str
    described: Described


SignInOutcome = Redirect | SignInFailed


@dataclass(frozen=True, slots=True)
class PageSignInFailed:
    """Wrong user name or password on a page sign-in's form: show it again with this fresh
    `state`, for the same `purpose`."""

    state: str
    purpose: str
