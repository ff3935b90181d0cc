"""POST /v1/responses: the OpenAI Responses API, stateless (Codex, the openai SDK's responses.*)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from engine.protocol.responses import request_from_responses
from router.listener.answer import answer
from router.listener.auth import require_key
from router.listener.body import read_json
from router.listener.dependencies import WorkbenchDep
from router.listener.schemas import OPENAI_RESPONSES, request_body
from router.listener.wires import RESPONSES

routes = APIRouter(dependencies=[Depends(require_key)])


@routes.post("/v1/responses", openapi_extra=request_body(OPENAI_RESPONSES))
async def responses(request: Request, wb: WorkbenchDep) -> Response:
    req = request_from_responses(await read_json(request))
    return await answer(request, wb, req, RESPONSES)
