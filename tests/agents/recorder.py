"""A recording stand-in for the Anthropic and OpenAI Responses APIs, to capture what a real coding
agent sends (the fixtures in tests/agents/fixtures/ were made with it).

    python -m tests.agents.recorder OUT_DIR [PORT] [TOOL_NAME JSON_ARGUMENTS]
    python -m tests.agents.recorder shorten RECORD.json FIXTURE.json CLIENT

Every request is saved as OUT_DIR/NNN.json (method, path, query, headers without keys, body) and
answered with a fixed text ("Paris is the capital of France.") in the protocol of its path, except
that with TOOL_NAME the first answer is a call of that tool with those arguments (to record a tool
round trip):
POST /v1/messages (streamed or not), /v1/messages/count_tokens, POST /v1/responses (streamed or not).
The answers are made by the project's own encoders, so a client that accepts them also accepts the
listener's. `shorten` turns one record into a fixture: every string longer than 300 characters
cut (prompts, tool descriptions), machine and session ids replaced, the structure kept whole.
Point Claude Code at it with ANTHROPIC_BASE_URL=http://127.0.0.1:PORT, Codex with a
model provider whose base_url is http://127.0.0.1:PORT/v1 (see README, "Use with Codex").
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.protocol.anthropic import AnthropicStreamEncoder, request_from_anthropic, response_to_anthropic
from engine.protocol.responses import ResponsesStreamEncoder, request_from_responses, response_to_responses
from engine.types import ChatResult, Chunk, ToolCall, ToolCallDelta, Usage

ANSWER = "Paris is the capital of France."
SECRET_HEADERS = ("authorization", "x-api-key")


def _sse(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(f"event: {name}\ndata: {json.dumps(obj)}\n\n".encode() for name, obj in events)


def answer(path: str, body: Any, n: int, call: ToolCall | None = None) -> tuple[int, str, bytes]:
    """(status, content type, body) for one request: the text, or `call` when given."""
    if path.endswith("/v1/messages/count_tokens"):
        return 200, "application/json", json.dumps({"input_tokens": 100}).encode()
    if call is None:
        result = ChatResult(ANSWER, "stop", Usage(10, 7))
        chunks = [Chunk(text=ANSWER), Chunk(finish_reason="stop", usage=Usage(10, 7))]
    else:
        result = ChatResult("", "tool_calls", Usage(10, 7), tool_calls=[call])
        chunks = [
            Chunk(tool_calls=[ToolCallDelta(0, call.id, call.name, call.arguments)]),
            Chunk(finish_reason="tool_calls", usage=Usage(10, 7)),
        ]
    if path.endswith("/v1/messages"):
        req = request_from_anthropic(body)
        if req.stream:
            enc = AnthropicStreamEncoder(req.model, f"msg_{n}", 10)
            return 200, "text/event-stream", _sse([e for c in chunks for e in enc.encode(c)] + enc.finish())
        whole = response_to_anthropic(result, model=req.model, id=f"msg_{n}")
        return 200, "application/json", json.dumps(whole).encode()
    if path.endswith("/v1/responses"):
        req = request_from_responses(body)
        if req.stream:
            renc = ResponsesStreamEncoder(req, str(n))
            return 200, "text/event-stream", _sse([e for c in chunks for e in renc.encode(c)] + renc.finish())
        return 200, "application/json", json.dumps(response_to_responses(result, req, id=str(n))).encode()
    return 404, "application/json", json.dumps({"error": {"message": f"no route {path}"}}).encode()


def make_app(out: Path, first_call: ToolCall | None = None) -> Callable[..., Any]:
    out.mkdir(parents=True, exist_ok=True)
    ids = itertools.count(1)
    pending = [first_call] if first_call else []

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
        record = {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope["query_string"].decode(),
            "headers": headers,
            "body": body,
        }
        (out / f"{n:03d}.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        chat = scope["path"].endswith(("/v1/messages", "/v1/responses"))
        status, kind, payload = answer(scope["path"], body, n, pending.pop() if chat and pending else None)
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", kind.encode())]})
        await send({"type": "http.response.body", "body": payload})

    return app


LONG = 300
_IDS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{64}")


def shorten(value: Any) -> Any:
    """The same JSON with long strings cut and ids (uuids, 64-hex device ids) zeroed."""
    if isinstance(value, dict):
        return {k: shorten(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shorten(v) for v in value]
    if isinstance(value, str):
        value = _IDS.sub(lambda m: re.sub(r"[0-9a-f]", "0", m.group(0)), value)
        return value if len(value) <= LONG else value[:LONG] + " [shortened]"
    return value


def save_fixture(record: Path, fixture: Path, client: str) -> None:
    data = json.loads(record.read_text())
    kept = (
        "anthropic-beta",
        "anthropic-version",
        "content-type",
        "accept",
        "user-agent",
        "originator",
        "x-codex-beta-features",
    )
    data["headers"] = {k: shorten(v) for k, v in data["headers"].items() if k in kept}
    data["body"] = shorten(data["body"])
    fixture.write_text(json.dumps({"client": client, **data}, indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str]) -> int:
    import uvicorn

    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "shorten" and len(argv) == 4:
        save_fixture(Path(argv[1]), Path(argv[2]), argv[3])
        return 0
    port = int(argv[1]) if len(argv) > 1 else 18431
    call = ToolCall("call_rec_1", argv[2], argv[3]) if len(argv) > 3 else None
    config = uvicorn.Config(
        make_app(Path(argv[0]), call), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    asyncio.run(uvicorn.Server(config).serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
