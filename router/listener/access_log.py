"""One log line per request: method, path, status and duration; never headers (keys) or bodies (prompts)."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("mlxwb.listener")


class AccessLog:
    """Plain ASGI rather than @app.middleware("http"): that one relays every streamed body chunk
    through an extra task and memory stream, a measurable cost per SSE event."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            log.info(
                "%s %s %s %.0fms", scope["method"], scope["path"], status or "-", (time.perf_counter() - started) * 1000
            )
