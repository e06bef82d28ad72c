"""Fetching JSON documents from an authorization server: bounded, no redirects, strict."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

MAX_DOCUMENT_BYTES = 512 * 1024


class FetchError(Exception):
    """The document could not be had: network failure, timeout, bad status or not JSON."""


async def read_bounded(
    content: aiohttp.StreamReader, limit: int, *, declared: int | None = None
) -> bytes | None:
    """The whole body as it streams in, or None when its `declared` length (`Content-Length`)
    passes `limit` bytes, before reading, or as soon as the bytes themselves do (a
    `Content-Length` can be absent or lie, so they are counted too)."""
    if (declared or 0) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while chunk := await content.readany():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def fetch_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    within: float,
    form: Mapping[str, str] | None = None,
    authorization: str | None = None,
) -> dict[str, Any]:
    """GET or POST `url` and return its JSON object body.

    Redirects are not followed (a configured endpoint that redirects is misconfigured, and
    following would let it point the gateway anywhere); bodies over 512 KiB are refused.
    """
    try:
        async with session.request(
            method,
            url,
            data=dict(form) if form is not None else None,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=within),
            headers={"Accept": "application/json"}
            | ({"Authorization": authorization} if authorization else {}),
        ) as response:
            if response.status != 200:
                raise FetchError(f"HTTP {response.status}")
            body = await read_bounded(
                response.content, MAX_DOCUMENT_BYTES, declared=response.content_length
            )
            if body is None:
                raise FetchError("document too large")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise FetchError(type(exc).__name__) from None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # not UTF-8 or not JSON, or nested too deep
        raise FetchError("not JSON") from None
    if not isinstance(document, dict):
        raise FetchError("not a JSON object")
    return document
