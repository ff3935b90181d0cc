"""The request body: size limit while it streams in, then JSON."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from engine.types import RejectedError
from router.listener.errors import BodyTooLarge

MAX_BODY_BYTES = 10 * 1024 * 1024


async def read_json(request: Request) -> Any:
    """The parsed body; 413 past the app's limit (checked before and while reading), 400 if not JSON."""
    limit: int = request.app.state.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body is larger than the limit of {limit} bytes")
    size, parts = 0, []
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise BodyTooLarge(f"request body is larger than the limit of {limit} bytes")
        parts.append(part)
    try:
        return json.loads(b"".join(parts) or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise RejectedError(f"the request body is not valid JSON: {exc}", status=400) from None
