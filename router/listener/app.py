"""create_app: the FastAPI application over a workbench's router."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from router.listener.access_log import AccessLog
from router.listener.body import MAX_BODY_BYTES
from router.listener.errors import install_error_handlers
from router.listener.routes import anthropic, docs, info, openai, responses
from router.listener.sessions import Sessions
from router.workbench import Workbench


def create_app(
    workbench: Workbench,
    *,
    api_key: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    listener_info: dict[str, Any] | None = None,
) -> FastAPI:
    # /openapi.json and /docs are routes of their own (routes/docs.py), so they need the key too.
    app = FastAPI(title="mlx-workbench listener", version="1", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.workbench = workbench
    app.state.api_key = api_key
    app.state.max_body_bytes = max_body_bytes
    app.state.listener_info = listener_info if listener_info is not None else {}
    app.state.sessions = Sessions()
    install_error_handlers(app)
    app.add_middleware(AccessLog)
    for module in (openai, responses, anthropic, info, docs):
        app.include_router(module.routes)
    return app
