"""The HTTP listener: OpenAI- and Anthropic-compatible endpoints over the router.

Both protocols go through the same router, so a request in one protocol may be answered by a
backend of the other. Errors leave in the caller's own format. Binds 127.0.0.1 by default; any
other address needs a listener key (keyring name "listener", or MLXWB_LISTENER_KEY).
"""


import asyncio
import contextlib
import errno
import hmac
import ipaddress
import json
import logging
import signal
import socket
import sys
import time
from dataclasses import asdict
from typing import Any, AsyncIterator, Iterator

from engine.types import ChatRequest, Chunk, EngineError, RejectedError, collect

log = logging.getLogger("mlxwb.listener")

MAX_BODY_BYTES = 10 * 1024 * 1024


class ListenerError(RuntimeError):
    """The listener cannot start (port in use, non-loopback address without a key...)."""


class _BodyTooLarge(RejectedError):
    default_status = 413


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _protocol_of(path: str) -> str:
    return "anthropic" if path.startswith("/v1/messages") else "openai"


def _error_response(err: EngineError, protocol: str) -> Any:
    from fastapi.responses import JSONResponse

    from engine.protocol.anthropic import error_body_anthropic
    from engine.protocol.openai import error_body_openai

    body = error_body_anthropic(err) if protocol == "anthropic" else error_body_openai(err)
    return JSONResponse(body, status_code=err.status or 500)


# Request-body schemas for the OpenAPI document (schemathesis and client generators read it);
# validation itself is done by engine/protocol with field-level messages.
_OPENAI_SCHEMA = {
    "type": "object", "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string"},
        "messages": {"type": "array", "items": {"type": "object", "required": ["role", "content"], "properties": {
            "role": {"type": "string", "enum": ["system", "user", "assistant"]}, "content": {"type": "string"}}}},
        "max_tokens": {"type": "integer"}, "temperature": {"type": "number"}, "stream": {"type": "boolean"},
        "stop": {"type": "array", "items": {"type": "string"}},
    },
}
_ANTHROPIC_SCHEMA = {
    "type": "object", "required": ["model", "messages", "max_tokens"],
    "properties": {
        "model": {"type": "string"}, "max_tokens": {"type": "integer"}, "system": {"type": "string"},
        "messages": {"type": "array", "items": {"type": "object", "required": ["role", "content"], "properties": {
            "role": {"type": "string", "enum": ["user", "assistant"]}, "content": {"type": "string"}}}},
        "stream": {"type": "boolean"}, "stop_sequences": {"type": "array", "items": {"type": "string"}},
    },
}


class _AccessLog:
    """Method, path, status and duration only: never headers (keys) or bodies (prompts).

    Plain ASGI rather than @app.middleware("http"): that one relays every streamed body chunk
    through an extra task and memory stream, a measurable cost per SSE event.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            log.info("%s %s %s %.0fms", scope["method"], scope["path"], status or "-",
                     (time.perf_counter() - started) * 1000)


def _body_doc(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def create_app(workbench: Any, *, api_key: str | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               listener_info: dict[str, Any] | None = None) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from sse_starlette.sse import EventSourceResponse, ServerSentEvent

    from engine.protocol import anthropic as anth
    from engine.protocol import openai as oai

    app = FastAPI(title="mlx-workbench listener", version="1", docs_url=None, redoc_url=None)
    info = listener_info if listener_info is not None else {}

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        kind = {404: RejectedError, 405: RejectedError}.get(exc.status_code, EngineError)
        message = {404: f"no such endpoint: {request.method} {request.url.path}",
                   405: f"method {request.method} is not allowed on {request.url.path}"}.get(exc.status_code,
                                                                                       str(exc.detail))
        return _error_response(kind(message, status=exc.status_code), _protocol_of(request.url.path))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Any:
        log.exception("listener: unexpected error on %s", request.url.path)
        return _error_response(EngineError(f"internal error: {type(exc).__name__}", status=500),
                               _protocol_of(request.url.path))

    app.add_middleware(_AccessLog)

    def authorize(request: Request) -> None:
        if not api_key:
            return
        given = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization") or ""
        if auth.lower().startswith("bearer "):
            given = given or auth[7:].strip()
        if not given or not hmac.compare_digest(given.encode(), api_key.encode()):
            raise RejectedError("invalid or missing API key for this listener", status=401)

    async def read_json(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            raise _BodyTooLarge(f"request body is larger than the limit of {max_body_bytes} bytes")
        size, parts = 0, []
        async for part in request.stream():
            size += len(part)
            if size > max_body_bytes:
                raise _BodyTooLarge(f"request body is larger than the limit of {max_body_bytes} bytes")
            parts.append(part)
        try:
            return json.loads(b"".join(parts) or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise RejectedError(f"the request body is not valid JSON: {exc}", status=400) from None

    async def open_stream(req: ChatRequest, protocol: str) -> tuple[Any, Chunk | None]:
        """Route and wait for the first chunk, so that failures before it get a proper status."""
        stream = workbench.router.route(req, front_end="listener", protocol=protocol)
        try:
            first = await stream.__anext__()
        except StopAsyncIteration:
            first = None
        except BaseException:
            await stream.aclose()
            raise
        if first is not None and first.error is not None:
            await stream.aclose()
            raise first.error
        return stream, first

    async def rest(stream: Any, first: Chunk | None) -> AsyncIterator[Chunk]:
        if first is not None:
            yield first
        async for chunk in stream:
            yield chunk

    def openai_sse(req: ChatRequest, rid: str) -> tuple[Any, Any, Any]:
        enc = oai.OpenAIStreamEncoder(req.model, f"chatcmpl-{rid}", include_usage=bool(req.metadata.get("include_usage")))
        return (lambda chunk: [(None, o) for o in enc.encode(chunk)],
                lambda: [(None, o) for o in enc.finish()] + [(None, "[DONE]")],
                # The SDKs raise on a data line holding an error object; no [DONE] follows it.
                lambda err: [(None, oai.error_body_openai(err))])

    def anthropic_sse(req: ChatRequest, rid: str) -> tuple[Any, Any, Any]:
        enc = anth.AnthropicStreamEncoder(req.model, f"msg_{rid}")
        return enc.encode, enc.finish, lambda err: [enc.error_event(err)]

    # protocol -> (parse the body, render a whole answer, stream encoders)
    wires = {
        "openai": (oai.request_from_openai,
                   lambda result, req, rid: oai.response_to_openai(result, model=req.model, id=f"chatcmpl-{rid}"),
                   openai_sse),
        "anthropic": (anth.request_from_anthropic,
                      lambda result, req, rid: anth.response_to_anthropic(result, model=req.model, id=f"msg_{rid}"),
                      anthropic_sse),
    }

    def sse(obj: Any, event: str | None) -> Any:
        data = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
        return ServerSentEvent(data, event=event)

    async def answer(request: Request, protocol: str) -> Any:
        parse, respond, encoders = wires[protocol]
        try:
            authorize(request)
            req = parse(await read_json(request))
            stream, first = await open_stream(req, protocol)
        except EngineError as exc:
            return _error_response(exc, protocol)
        if not req.stream:
            try:
                result = await collect(rest(stream, first))
            except EngineError as exc:
                return _error_response(exc, protocol)
            finally:
                await stream.aclose()
            return JSONResponse(respond(result, req, stream.request_id))
        encode, finish, fail = encoders(req, stream.request_id)

        async def events() -> AsyncIterator[Any]:
            try:
                async for chunk in rest(stream, first):
                    if chunk.error is not None:
                        for name, obj in fail(chunk.error):
                            yield sse(obj, name)
                        return
                    for name, obj in encode(chunk):
                        yield sse(obj, name)
                for name, obj in finish():
                    yield sse(obj, name)
            finally:
                # Also reached when the client disconnects: sse-starlette cancels this generator.
                await stream.aclose()

        return EventSourceResponse(events(), sep="\n", ping=15)

    @app.post("/v1/chat/completions", openapi_extra=_body_doc(_OPENAI_SCHEMA))
    async def chat_completions(request: Request) -> Any:
        return await answer(request, "openai")

    @app.post("/v1/messages", openapi_extra=_body_doc(_ANTHROPIC_SCHEMA))
    async def messages(request: Request) -> Any:
        return await answer(request, "anthropic")

    @app.post("/v1/messages/count_tokens", openapi_extra=_body_doc(_ANTHROPIC_SCHEMA))
    async def count_tokens(request: Request) -> Any:
        try:
            authorize(request)
            body = await read_json(request)
            if isinstance(body, dict):
                body.setdefault("max_tokens", 1)
            req = anth.request_from_anthropic(body)
            explanation = workbench.router.explain(req.model)
            step = next((s for s in explanation.chain if not s.skipped), None)
            if step is not None and step.backend == "local":
                try:
                    n = await workbench.local.count_tokens(step.model, req.messages)
                    return JSONResponse({"input_tokens": n}, headers={"x-mlxwb-token-count": "exact"})
                except EngineError as exc:
                    if exc.status == 404:
                        raise
            chars = sum(len(m.content) for m in req.messages)
            return JSONResponse({"input_tokens": max(1, chars // 4)}, headers={"x-mlxwb-token-count": "estimate"})
        except EngineError as exc:
            return _error_response(exc, "anthropic")

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        try:
            authorize(request)
        except EngineError as exc:
            return _error_response(exc, "openai")
        names: dict[str, str] = {}
        for m in workbench.local.models():
            names.setdefault(m.id, "local")
            for a in m.aliases:
                names.setdefault(a, "local")
        for r in workbench.store.list_rules():
            if r.enabled and r.kind == "exact":
                names.setdefault(r.pattern, r.backend)
            if r.enabled and r.model:
                names.setdefault(r.model, r.backend)
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": owner}
                                           for n, owner in sorted(names.items())]}

    @app.get("/health")
    async def health(request: Request) -> Any:
        try:
            authorize(request)
        except EngineError as exc:
            return _error_response(exc, "openai")
        return {"status": "ok", "listener": info, "backends": [asdict(s) for s in workbench.snapshots()]}

    @app.get("/")
    async def root() -> Response:
        return JSONResponse({"name": "mlx-workbench", "endpoints": ["/v1/chat/completions", "/v1/messages",
                                                                  "/v1/messages/count_tokens", "/v1/models",
                                                                  "/health"]})

    return app


def _quiet_server_class(uvicorn: Any) -> Any:
    """uvicorn.Server that leaves process signals to the host (the TUI, or serve_forever).

    Stock uvicorn swaps in its own SIGINT/SIGTERM handlers while serving and re-raises the
    signal afterwards, which would bypass the host's clean shutdown.
    """

    class QuietServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return QuietServer


class Listener:
    """The listener inside an already running event loop (the TUI's, or `serve`'s)."""

    def __init__(self, workbench: Any, host: str = "127.0.0.1", port: int = 8765, api_key: str | None = None,
                 max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.workbench = workbench
        self.host, self.port = host, port
        self._api_key = api_key
        self.max_body_bytes = max_body_bytes
        self._server: Any = None
        self._task: asyncio.Task[Any] | None = None
        self._sock: socket.socket | None = None

    def __repr__(self) -> str:
        return f"Listener(host={self.host!r}, port={self.port!r}, running={self.running})"

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        import uvicorn

        if self.running:
            return
        key = self._api_key or self.workbench.secrets.get("listener")
        if not is_loopback(self.host) and not key:
            raise ListenerError(
                f"refusing to listen on {self.host} without a listener key: set one with "
                "`mlx-workbench keys set listener` (or MLXWB_LISTENER_KEY), or bind 127.0.0.1"
            )
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise ListenerError(f"port {self.port} on {self.host} is in use") from None
            raise ListenerError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from None
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._sock = sock
        app = create_app(self.workbench, api_key=key, max_body_bytes=self.max_body_bytes,
                         listener_info={"host": self.host, "port": self.port, "auth": bool(key)})
        config = uvicorn.Config(app, log_config=None, lifespan="off", access_log=False, log_level="warning")
        self._server = _quiet_server_class(uvicorn)(config)
        self._task = asyncio.create_task(self._serve())
        for _ in range(500):
            if self._server.started or self._task.done():
                break
            await asyncio.sleep(0.01)
        if self._task.done():
            await self.stop()
            raise ListenerError(f"the listener on {self.url} stopped right after starting")

    async def _serve(self) -> None:
        try:
            await self._server.serve(sockets=[self._sock])
        except SystemExit as exc:  # uvicorn exits the process on startup failures; keep the app alive
            log.error("listener stopped: uvicorn exit %s", exc.code)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=10)
            except asyncio.TimeoutError:
                self._server.force_exit = True
                await self._task
        if self._sock is not None:
            self._sock.close()
        self._task = self._server = self._sock = None


async def serve_forever(workbench: Any, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM (or the server dies), then stop cleanly."""
    listener = Listener(workbench, host, port)
    await listener.start()
    print(f"mlx-workbench listening on {listener.url} (OpenAI: {listener.url}/v1, Anthropic: {listener.url})",
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        except (NotImplementedError, RuntimeError):
            log.debug("no loop signal handler for %s here; KeyboardInterrupt still stops the server", sig)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({waiter, listener._task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        for sig in handled:
            loop.remove_signal_handler(sig)
        await listener.stop()
    print("mlx-workbench listener stopped", flush=True)


def run_serve(config: Any, host: str | None = None, port: int | None = None) -> int:
    from router.workbench import Workbench

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def main() -> None:
        wb = Workbench.open(config)
        try:
            await serve_forever(wb, host or config.listener_host, config.listener_port if port is None else port)
        finally:
            await wb.aclose()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        return 0
    except ListenerError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
