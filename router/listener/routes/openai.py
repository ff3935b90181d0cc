"""POST /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from engine.protocol.openai import request_from_openai
from router.listener.answer import answer
from router.listener.auth import require_key
from router.listener.body import read_json
from router.listener.dependencies import WorkbenchDep
from router.listener.schemas import OPENAI_CHAT, request_body
from router.listener.wires import OPENAI

routes = APIRouter(dependencies=[Depends(require_key)])


@routes.post("/v1/chat/completions", openapi_extra=request_body(OPENAI_CHAT))
async def chat_completions(request: Request, wb: WorkbenchDep) -> Response:
    req = request_from_openai(await read_json(request))
    return await answer(request, wb, req, OPENAI)
