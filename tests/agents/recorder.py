"""A recording stand-in for the Anthropic and OpenAI Responses APIs, to capture what a real coding
agent sends (the fixtures in tests/agents/fixtures/ were made with it).

    python -m tests.agents.recorder OUT_DIR [PORT]

Every request is saved as OUT_DIR/NNN.json (method, path, query, headers without keys, body) and
answered with a fixed text ("Paris is the capital of France.") in the protocol of its path:
POST /v1/messages (streamed or not), /v1/messages/count_tokens, POST /v1/responses (streamed or not).
The answers are made by the project's own encoders, so a client that accepts them also accepts the
listener's. Point Claude Code at it with ANTHROPIC_BASE_URL=http://127.0.0.1:PORT, Codex with a
model provider whose base_url is http://127.0.0.1:PORT/v1 (see README, "Use with Codex").
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.protocol.anthropic import AnthropicStreamEncoder, request_from_anthropic, response_to_anthropic
from engine.protocol.responses import ResponsesStreamEncoder, request_from_responses, response_to_responses
from engine.types import ChatResult, Chunk, Usage

ANSWER = "Paris is the capital of France."
SECRET_HEADERS = ("authorization", "x-api-key")


def _sse(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(f"event: {name}\ndata: {json.dumps(obj)}\n\n".encode() for name, obj in events)


def answer(path: str, body: Any, n: int) -> tuple[int, str, bytes]:
    """(status, content type, body) for one request."""
    if path.endswith("/v1/messages/count_tokens"):
        return 200, "application/json", json.dumps({"input_tokens": 100}).encode()
    result = ChatResult(ANSWER, "stop", Usage(10, 7))
    chunks = [Chunk(text=ANSWER), Chunk(finish_reason="stop", usage=Usage(10, 7))]
    if path.endswith("/v1/messages"):
        req = request_from_anthropic(body)
        if req.stream:
            enc = AnthropicStreamEncoder(req.model, f"msg_{n}", 10)
            return 200, "text/event-stream", _sse([e for c in chunks for e in enc.encode(c)] + enc.finish())
        return 200, "application/json", json.dumps(response_to_anthropic(result, model=req.model, id=f"msg_{n}")).encode()
    if path.endswith("/v1/responses"):
        req = request_from_responses(body)
        if req.stream:
            renc = ResponsesStreamEncoder(req, str(n))
            return 200, "text/event-stream", _sse([e for c in chunks for e in renc.encode(c)] + renc.finish())
        return 200, "application/json", json.dumps(response_to_responses(result, req, id=str(n))).encode()
    return 404, "application/json", json.dumps({"error": {"message": f"no route {path}"}}).encode()


def make_app(out: Path) -> Callable[..., Any]:
    out.mkdir(parents=True, exist_ok=True)
    ids = itertools.count(1)

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        n = next(ids)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        for name in SECRET_HEADERS:
            if name in headers:
                headers[name] = "<redacted>"
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        record = {"method": scope["method"], "path": scope["path"], "query": scope["query_string"].decode(),
                  "headers": headers, "body": body}
        (out / f"{n:03d}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        status, kind, payload = answer(scope["path"], body, n)
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", kind.encode())]})
        await send({"type": "http.response.body", "body": payload})

    return app


def main(argv: list[str]) -> int:
    import uvicorn

    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    port = int(argv[1]) if len(argv) > 1 else 18431
    config = uvicorn.Config(make_app(Path(argv[0])), host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off")
    asyncio.run(uvicorn.Server(config).serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
