"""`kind: user_oauth`: the user's own token at a third-party OAuth provider, per request.

A caller with a stored grant gets its access token (refreshed when due by the `GrantKeeper`);
a caller without one is answered with a URL-mode elicitation (`ElicitationRequiredError`)
naming the route's connect page and a connect ticket for that caller, and nothing is
forwarded; requests that cannot carry an elicitation (`tools/list`, `initialize`) go without
the header. The provider down, or a stored grant that no configured key opens although its key
is configured (altered), fails closed (503 with `Retry-After`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from urllib.parse import urlencode, urlsplit

from gateway.config.upstream_auth import UserOAuth
from gateway.errors import (
    CredentialRefusedError,
    CredentialUnavailableError,
    ElicitationRequiredError,
)
from gateway.observability.logging import get_logger
from gateway.upstream_auth.base import Caller, header_value
from gateway.upstream_auth.connect_flow import ConnectFlow, start_path
from gateway.upstream_auth.grants import GrantUnreadableError, user_key
from gateway.upstream_auth.provider import ProviderUnavailableError
from gateway.upstream_auth.tickets import Tickets

audit = get_logger("gateway.audit")


class UserOAuthCredential:
    """One route's users' provider tokens, and the flow that connects a user's account."""

    kind = "user_oauth"

    def __init__(
        self,
        settings: UserOAuth,
        connect: ConnectFlow,
        tickets: Tickets,
        *,
        public_base: str,
        count: Callable[[str], None],
    ) -> None:
        self.header = settings.header
        self.connect = connect
        self.tickets = tickets
        self._keeper = connect.keeper
        self._upstream = connect.upstream
        self.provider_name = urlsplit(str(settings.issuer)).netloc
        """How pages and messages name the provider (its issuer's host)."""
        self._start_url = public_base + start_path(connect.upstream)
        self.count = count
        """`count(outcome)` of `mcp_gateway_upstream_credentials_total` for this route."""

    async def value(self, caller: Caller) -> str | None:
        """The caller's provider token as the header carries it; without a stored grant, an
        elicitation (`caller.elicitable`) or None (the request goes without: `tools/list`)."""
        principal = caller.principal
        user = user_key(principal)
        if user is None or principal.subject is None:
            self.count("refused")
            raise CredentialRefusedError(
                "caller's token has no sub",
                message="The caller's token names no user: no account can be connected for it",
            )
        try:
            grant = await self._keeper.current(user)
        except ProviderUnavailableError:
            self.count("unavailable")
            raise CredentialUnavailableError("user_oauth provider unavailable") from None
        except GrantUnreadableError:  # altered in the store: a 503, never "no grant"
            self.count("unavailable")
            raise
        if grant is not None:  # the keeper counts it issued (or refreshed)
            return header_value(self.header, grant.access_token)
        if not caller.elicitable:
            return None
        self.count("elicited")
        audit.info(
            "upstream_connect_elicited", upstream=self._upstream, sub=principal.subject[:128]
        )
        ticket = self.tickets.issue(principal, user)
        raise ElicitationRequiredError(
            "no stored grant for the caller",
            url=f"{self._start_url}?{urlencode({'ticket': ticket})}",
            elicitation_id=secrets.token_urlsafe(16),
            message=f"Connect your account at {self.provider_name} to use the MCP server "
            f"{self._upstream!r}",
        )

    async def close(self) -> None:
        """Stop refreshes still running (outbound HTTP belongs to the app)."""
        await self._keeper.close()
