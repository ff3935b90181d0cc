"""The request body: size limit while it streams in, then JSON no deeper than MAX_DEPTH."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from engine.types import RejectedError
from router.listener.errors import BodyTooLarge

MAX_BODY_BYTES = 10 * 1024 * 1024
# Far above any real request (tool schemas nest a few levels), far below what the code that
# later walks the body recursively can take (json.dumps and Jinja stop near 1,000 levels).
MAX_DEPTH = 128


async def read_json(request: Request) -> Any:
    """The parsed body; 413 past the app's limit (checked before and while reading), 400 if it is
    not JSON or nests deeper than MAX_DEPTH."""
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
        # orjson: a third of json.loads' time on an agent's 20 kB body, and a nesting limit
        # (1,024) instead of a RecursionError.
        body = orjson.loads(b"".join(parts) or b"null")
    except orjson.JSONDecodeError as exc:
        raise RejectedError(f"the request body is not valid JSON: {exc}", status=400) from None
    if too_deep(body, MAX_DEPTH):
        raise RejectedError(f"the request body nests deeper than {MAX_DEPTH} levels", status=400)
    return body


def too_deep(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels (iterative: no recursion)."""
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False
