"""Which client a request comes from, whether it proved it (RFC 6749 section 2.3), and how
the pages name it.

A client is one the config registers, one that registered itself (RFC 7591), or, for an
`https://` client id, the one its metadata document describes (Client ID Metadata Documents).
"""

from __future__ import annotations

import base64
from urllib.parse import unquote_plus, urlsplit

from multidict import MultiMapping

from gateway.oauth.client_document_fetch import ClientDocumentError
from gateway.oauth.client_documents import is_client_id_url
from gateway.oauth.context import ServerContext, single
from gateway.oauth.error import client_authentication_failed
from gateway.oauth.outcome import Described
from gateway.oauth.records import NO_CLIENT_AUTH, AuthorizationRequest, ClientRecord


async def find_client(server: ServerContext, client_id: str) -> ClientRecord | None:
    """A configured client first (a URL may be pre-registered, draft section 7.2); a URL is
    then only ever its metadata document, never a stored registration. `ClientDocumentError`
    when the document cannot be used."""
    configured = server.clients.get(client_id)
    if configured is not None:
        return configured
    if is_client_id_url(client_id):
        return None if server.documents is None else await server.documents.resolve(client_id)
    return await server.store.get_client(client_id)


async def known_client(server: ServerContext, client_id: str) -> ClientRecord | None:
    """The client `client_id` names, or None (unknown, or its metadata document failed)."""
    try:
        return await find_client(server, client_id)
    except ClientDocumentError:
        return None


async def authenticate_client(
    server: ServerContext, form: MultiMapping[str], basic: tuple[str, str] | None
) -> ClientRecord:
    """RFC 6749 section 2.3: the client making a token or revocation request. A public
    client sends no secret; a confidential one its secret by the method it registered."""
    client_id = basic[0] if basic else single(form, "client_id")
    if not client_id:
        raise client_authentication_failed()
    client = await known_client(server, client_id)
    if client is None:
        raise client_authentication_failed()
    method = client.token_endpoint_auth_method
    secret = basic[1] if basic else single(form, "client_secret")
    if method == NO_CLIENT_AUTH:
        if secret is not None:
            raise client_authentication_failed()
        return client
    expected = "client_secret_basic" if basic else "client_secret_post"
    if method != expected or secret is None or not client.secret_matches(secret):
        raise client_authentication_failed()
    return client


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """RFC 6749 section 2.3.1 client_secret_basic credentials (form-urlencoded, then Basic)."""
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise client_authentication_failed() from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise client_authentication_failed()
    return unquote_plus(client_id), unquote_plus(secret)


async def describe(server: ServerContext, request: AuthorizationRequest) -> Described:
    """Who asks for what, in the words the sign-in and consent pages use. A name a client
    gave itself is shown as such."""
    client = await known_client(server, request.client_id)
    name = client.client_name if client and client.client_name else request.client_id
    if is_client_id_url(request.client_id):  # a self-asserted name: show whose it is
        host = urlsplit(request.client_id).netloc
        name, origin = f"{name} (from {host})", f"is described by {host}"
    elif request.client_id in server.clients:
        origin = "was registered by this gateway's administrator"
    else:
        origin = "registered itself with this gateway: its name is its own claim"
    return Described(
        client_name=name,
        client_origin=origin,
        redirect_host=urlsplit(request.redirect_uri).netloc,
        resource_name=server.settings.resource_names.get(request.resource, request.resource),
        route=urlsplit(request.resource).path,
    )
