"""GET /v1/models, /health and /."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request

from router.listener.auth import require_key
from router.listener.dependencies import WorkbenchDep
from router.workbench import Workbench

ENDPOINTS = [
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/models",
    "/health",
]

routes = APIRouter()


@routes.get("/v1/models", dependencies=[Depends(require_key)])
async def models(wb: WorkbenchDep) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": owner}
            for name, owner in sorted(model_names(wb).items())
        ],
    }


@routes.get("/health", dependencies=[Depends(require_key)])
async def health(request: Request, wb: WorkbenchDep) -> dict[str, Any]:
    await wb.prepare()  # backends whose key look-up (off the loop) is still in flight
    return {
        "status": "ok",
        "listener": request.app.state.listener_info,
        "backends": [asdict(s) for s in wb.snapshots()],
    }


@routes.get("/")
async def root() -> dict[str, Any]:
    return {"name": "mlx-workbench", "endpoints": ENDPOINTS}


def model_names(wb: Workbench) -> dict[str, str]:
    """Local model ids and aliases, then the names exact rules match and the models rules rename to."""
    names: dict[str, str] = {}
    for m in wb.local.models():
        names.setdefault(m.id, "local")
        for alias in m.aliases:
            names.setdefault(alias, "local")
    for r in wb.store.list_rules():
        if r.enabled and r.kind == "exact":
            names.setdefault(r.pattern, r.backend)
        if r.enabled and r.model:
            names.setdefault(r.model, r.backend)
    return names
