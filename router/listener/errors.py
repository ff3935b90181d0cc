"""Every error leaves in the caller's protocol: the path says which one."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from engine.protocol.anthropic import error_body_anthropic
from engine.protocol.openai import error_body_openai
from engine.types import EngineError, RejectedError

log = logging.getLogger("mlxwb.listener")


class ListenerError(RuntimeError):
    """The listener cannot start (port in use, non-loopback address without a key...)."""


class BodyTooLarge(RejectedError):
    default_status = 413


class EndpointNotFound(RejectedError):
    default_status = 404
    code = "unknown_url"  # OpenAI's `code` (error_body_openai); a 404 means an unknown model otherwise


class MethodNotAllowed(RejectedError):
    default_status = 405


def protocol_of(path: str) -> str:
    return "anthropic" if path.startswith("/v1/messages") else "openai"


def error_response(err: EngineError, protocol: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = error_body_anthropic(err) if protocol == "anthropic" else error_body_openai(err)
    return JSONResponse(body, status_code=err.status or 500, headers=headers)


async def _engine_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EngineError)
    return error_response(exc, protocol_of(request.url.path))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path}"
    err: EngineError
    if exc.status_code == 404:
        err = EndpointNotFound(f"no such endpoint: {where}")
    elif exc.status_code == 405:
        err = MethodNotAllowed(f"method {request.method} is not allowed on {request.url.path}")
    else:
        err = EngineError(str(exc.detail), status=exc.status_code)
    return error_response(err, protocol_of(request.url.path), headers=exc.headers)


# nginx-style "client closed request": only the access log ever sees it.
CLIENT_CLOSED = 499


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client went away while its body was arriving: nothing to answer, nothing went wrong here."""
    return Response(status_code=CLIENT_CLOSED)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("listener: unexpected error on %s", request.url.path)
    return error_response(
        EngineError(f"internal error: {type(exc).__name__}", status=500), protocol_of(request.url.path)
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(EngineError, _engine_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
