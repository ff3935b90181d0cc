"""The listener key as a FastAPI dependency: `Authorization: Bearer <key>` or `x-api-key: <key>`."""

from __future__ import annotations

import hmac

from fastapi import Request

from engine.types import RejectedError


def presented_key(request: Request) -> str:
    """The key the client sent (both SDKs send one of the two headers from their api_key)."""
    given = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization") or ""
    if not given and auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    return given


async def require_key(request: Request) -> None:
    """Raise 401 unless no key is set or the request carries it."""
    expected: str | None = request.app.state.api_key
    if not expected:
        return
    given = presented_key(request)
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise RejectedError("invalid or missing API key for this listener", status=401)
