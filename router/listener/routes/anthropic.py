"""POST /v1/messages and /v1/messages/count_tokens."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from engine.protocol.anthropic import request_from_anthropic
from engine.types import ChatRequest, EngineError
from router.listener.answer import answer
from router.listener.auth import require_key
from router.listener.body import read_json
from router.listener.dependencies import WorkbenchDep
from router.listener.schemas import ANTHROPIC_COUNT_TOKENS, ANTHROPIC_MESSAGES, request_body
from router.listener.wires import ANTHROPIC
from router.workbench import Workbench

routes = APIRouter(dependencies=[Depends(require_key)])


@routes.post("/v1/messages", openapi_extra=request_body(ANTHROPIC_MESSAGES))
async def messages(request: Request, wb: WorkbenchDep) -> Response:
    req = request_from_anthropic(await read_json(request), request.headers)
    return await answer(request, wb, req, ANTHROPIC)


@routes.post("/v1/messages/count_tokens", openapi_extra=request_body(ANTHROPIC_COUNT_TOKENS))
async def count_tokens(request: Request, wb: WorkbenchDep) -> Response:
    n, how = await input_tokens(wb, request_from_anthropic(counted_fields(await read_json(request))))
    return JSONResponse({"input_tokens": n}, headers={"x-mlxwb-token-count": how})


COUNTED = ("model", "messages", "system", "tools", "tool_choice")


def counted_fields(body: object) -> object:
    """The fields that count, as a messages body: sampling fields a client adds (temperature, ...)
    are no reason to refuse a count, and are not in count_tokens' schema."""
    if not isinstance(body, dict):
        return body  # the parser says what is wrong with it
    return {**{k: body[k] for k in COUNTED if k in body}, "max_tokens": 1}


async def input_tokens(wb: Workbench, req: ChatRequest) -> tuple[int, str]:
    """Exact when the model routes to a local model (its tokenizer), otherwise characters / 4."""
    step = next((s for s in wb.router.explain(req.model).chain if not s.skipped), None)
    if step is not None and step.backend == "local":
        try:
            return await wb.local.count_tokens(step.model, req.messages), "exact"
        except EngineError as exc:
            if exc.status == 404:
                raise
    chars = sum(len(m.content) for m in req.messages)
    return max(1, chars // 4), "estimate"
