"""Anthropic Messages API <-> canonical types, both directions, streaming included."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from engine.protocol.common import bad, fold_system_turns, parse_model, parse_stream_flag, parse_tool
from engine.types import (
    Attachment,
    ChatRequest,
    ChatResult,
    Chunk,
    EngineError,
    FinishReason,
    Message,
    Passthrough,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    UnavailableError,
    Usage,
)

_STOP_IN: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "stop",
}
_STOP_OUT = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "error": "end_turn",
    "cancelled": "end_turn",
}


def map_stop_reason(reason: str | None) -> FinishReason | None:
    return _STOP_IN.get(reason, "stop") if reason else None


def stop_reason_out(reason: str | None) -> str | None:
    return _STOP_OUT.get(reason or "", "end_turn") if reason else None


# ---------------------------------------------------------------- canonical -> Anthropic


def _attachment_block(a: Attachment) -> dict[str, Any]:
    source = (
        {"type": "url", "url": a.url}
        if a.url
        else {"type": "base64", "media_type": a.media_type or "", "data": a.data or ""}
    )
    return {"type": a.kind, "source": source}


def _turn_blocks(m: Message, i: int) -> tuple[str, list[dict[str, Any]]]:
    """One canonical message as (Anthropic role, content blocks)."""
    blocks: list[dict[str, Any]] = []
    if m.role == "tool":
        content: Any = m.content
        if m.attachments:
            content = ([{"type": "text", "text": m.content}] if m.content else []) + [
                _attachment_block(a) for a in m.attachments
            ]
        block = {"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": content}
        if m.is_error:
            block["is_error"] = True
        return "user", [block]
    if m.content:
        blocks.append({"type": "text", "text": m.content})
    blocks += [_attachment_block(a) for a in m.attachments]
    for c in m.tool_calls:
        try:
            args = json.loads(c.arguments or "{}")
        except ValueError as exc:
            raise bad(f"messages[{i}].tool_calls", f"arguments of {c.name!r} are not valid JSON") from exc
        blocks.append({"type": "tool_use", "id": c.id, "name": c.name, "input": args})
    return m.role, blocks or [{"type": "text", "text": ""}]


def request_to_anthropic(req: ChatRequest, default_max_tokens: int = 4096) -> dict[str, Any]:
    """Leading system turns become `system`; a later one is merged into the adjacent user turn
    (plain Anthropic has no system turns in `messages`); same-role turns are merged; tool results
    become user tool_result blocks.

    Anthropic requires the first turn to be a user turn: a leading assistant turn gets an empty
    user turn ("(continue)") before it rather than being dropped. A request that came from an
    Anthropic client goes with the client's own fields on top (its `passthrough`): system turns
    where it put them, cache_control, thinking blocks and settings, metadata, as sent.
    """
    messages = fold_system_turns(req.messages)
    system = messages[0].content if messages and messages[0].role == "system" else ""
    turns: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if m.role == "system":
            continue
        role, blocks = _turn_blocks(m, i)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": "(continue)"}]})
    for t in turns:
        # A turn that is a single text block goes as a plain string: the common, compact form.
        if len(t["content"]) == 1 and t["content"][0]["type"] == "text":
            t["content"] = t["content"][0]["text"]
    body: dict[str, Any] = {
        "model": req.model,
        "max_tokens": req.max_tokens or default_max_tokens,
        "messages": turns,
        "stream": req.stream,
    }
    if system:
        body["system"] = system
    if req.temperature is not None:
        body["temperature"] = min(1.0, max(0.0, req.temperature))
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.stop:
        body["stop_sequences"] = list(req.stop)
    if req.tools:
        body["tools"] = [
            {"name": t.name, **({"description": t.description} if t.description else {}), "input_schema": t.parameters}
            for t in req.tools
        ]
    if req.tool_choice is not None:
        body["tool_choice"] = _tool_choice_to(req.tool_choice)
    if req.passthrough is not None and req.passthrough.protocol == "anthropic":
        body.update(req.passthrough.fields)
    return body


def passthrough_headers(req: ChatRequest) -> dict[str, str]:
    """The client's Anthropic headers (anthropic-beta) for an Anthropic upstream."""
    if req.passthrough is None or req.passthrough.protocol != "anthropic":
        return {}
    return dict(req.passthrough.headers)


def _tool_choice_to(choice: Any) -> dict[str, Any]:
    if isinstance(choice, dict):
        return {"type": "tool", "name": choice["name"]}
    kinds = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}
    return kinds.get(choice, {"type": "auto"})


def _tool_choice_from(choice: Any) -> Any:
    if choice is None:
        return None
    if not isinstance(choice, dict) or "type" not in choice:
        raise bad("tool_choice", "must be an object with a type")
    kind = choice["type"]
    if kind == "tool":
        if not isinstance(choice.get("name"), str):
            raise bad("tool_choice.name", "is required for type 'tool'")
        return {"name": choice["name"]}
    mapping = {"auto": "auto", "any": "required", "none": "none"}
    if kind not in mapping:
        raise bad("tool_choice.type", f"unknown type {kind!r}")
    return mapping[kind]


# ---------------------------------------------------------------- Anthropic -> canonical

# Headers of an Anthropic client that an Anthropic upstream needs to understand its body.
FORWARDED_HEADERS = ("anthropic-beta",)
# Blocks that only one side of the conversation writes (a thinking block anywhere is skipped).
_OWNED_BLOCKS = {"tool_use": "assistant", "tool_result": "user"}
# Decided by the route and the listener, so never passed through.
_NOT_PASSED = ("model", "stream")


def _blocks(content: Any, field: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        for j, b in enumerate(content):
            if not isinstance(b, dict) or not isinstance(b.get("type"), str):
                raise bad(f"{field}[{j}]", "must be a content block with a type")
        return content
    raise bad(field, "must be a string or a list of content blocks")


def _text(b: dict[str, Any], where: str) -> str:
    if not isinstance(b.get("text"), str):
        raise bad(f"{where}.text", "must be a string")
    return str(b["text"])


def _attachment(b: dict[str, Any], where: str) -> Attachment:
    """An image or document block; other backends than Anthropic decide whether they can read it."""
    source = b.get("source")
    if not isinstance(source, dict):
        # A content kind this listener does not model: Anthropic upstreams still get it as sent.
        return Attachment(kind=b["type"])
    if not isinstance(source.get("type"), str):
        raise bad(f"{where}.source.type", "is required")
    if source["type"] == "base64" and not isinstance(source.get("data"), str):
        raise bad(f"{where}.source.data", "must be a base64 string")
    if source["type"] == "url" and not isinstance(source.get("url"), str):
        raise bad(f"{where}.source.url", "must be a string")
    return Attachment(
        kind=b["type"],
        media_type=source.get("media_type"),
        data=source.get("data"),
        url=source.get("url") if isinstance(source.get("url"), str) else None,
    )


def _tool_result(b: dict[str, Any], where: str) -> Message:
    texts: list[str] = []
    attachments: list[Attachment] = []
    content = b.get("content")
    if content is not None:
        for k, part in enumerate(_blocks(content, f"{where}.content")):
            if part["type"] == "text":
                texts.append(_text(part, f"{where}.content[{k}]"))
            else:
                attachments.append(_attachment(part, f"{where}.content[{k}]"))
    is_error = b.get("is_error", False)
    if not isinstance(is_error, bool):
        raise bad(f"{where}.is_error", "must be a boolean")
    return Message(
        role="tool",
        content="".join(texts),
        tool_call_id=str(b.get("tool_use_id") or ""),
        attachments=tuple(attachments),
        is_error=is_error,
    )


def _system_text(content: Any, field: str) -> str:
    texts: list[str] = []
    for j, b in enumerate(_blocks(content, field)):
        if b["type"] != "text":
            raise bad(f"{field}[{j}].type", f"system content must be text blocks (got {b['type']!r})")
        texts.append(_text(b, f"{field}[{j}]"))
    return "".join(texts)


def _parse_message(m: Any, i: int) -> list[Message]:
    """One Anthropic message as canonical messages: a user turn's tool results become tool messages."""
    field = f"messages[{i}]"
    if not isinstance(m, dict):
        raise bad(field, "must be an object")
    role = m.get("role")
    if role == "system":
        return [Message(role="system", content=_system_text(m.get("content"), f"{field}.content"))]
    if role not in ("user", "assistant"):
        raise bad(f"{field}.role", f"must be 'user', 'assistant' or 'system' (got {role!r})")
    out: list[Message] = []
    texts: list[str] = []
    attachments: list[Attachment] = []
    calls: list[ToolCall] = []
    results = 0
    for j, b in enumerate(_blocks(m.get("content"), f"{field}.content")):
        kind, where = b["type"], f"{field}.content[{j}]"
        if kind == "text":
            texts.append(_text(b, where))
        elif kind == "tool_use" and role == "assistant":
            if not isinstance(b.get("name"), str):
                raise bad(f"{where}.name", "is required")
            if b.get("input") is not None and not isinstance(b["input"], dict):
                raise bad(f"{where}.input", "must be an object")
            calls.append(
                ToolCall(
                    id=str(b.get("id") or f"toolu_{i}_{j}"), name=b["name"], arguments=json.dumps(b.get("input") or {})
                )
            )
        elif kind == "tool_result" and role == "user":
            if texts or attachments:
                out.append(Message(role="user", content="".join(texts), attachments=tuple(attachments)))
                texts, attachments = [], []
            out.append(_tool_result(b, where))
            results += 1
        elif _OWNED_BLOCKS.get(kind, role) != role:
            raise bad(f"{where}.type", f"{kind!r} blocks belong to {_OWNED_BLOCKS[kind]} turns")
        elif role == "user" and kind not in ("thinking", "redacted_thinking"):
            attachments.append(_attachment(b, where))
        # Anything else (thinking, redacted_thinking, an assistant's server tool blocks) is
        # the upstream's own record: an Anthropic upstream gets it back as sent, others skip it.
    if texts or attachments or calls or not results:
        out.append(Message(role=role, content="".join(texts), tool_calls=tuple(calls), attachments=tuple(attachments)))
    return out


def _parse_tools(raw_tools: Any) -> list[ToolSpec]:
    if raw_tools is not None and not isinstance(raw_tools, list):
        raise bad("tools", "must be a list")
    tools: list[ToolSpec] = []
    for j, t in enumerate(raw_tools or []):
        if not isinstance(t, dict):
            raise bad(f"tools[{j}].name", "is required")
        if t.get("type") not in (None, "custom"):
            # A server tool (web_search_..., bash_...): only Anthropic runs it; it stays in the passthrough.
            continue
        tools.append(
            parse_tool(t.get("name"), t.get("description"), t.get("input_schema"), f"tools[{j}]", "input_schema")
        )
    return tools


def request_from_anthropic(body: Any, headers: Mapping[str, str] | None = None) -> ChatRequest:
    """Parse and validate an Anthropic Messages request body (the listener's edge).

    Fields this listener does not model (thinking, metadata, context_management, output_config,
    top_k...) are accepted and kept, with the anthropic-beta header, for Anthropic upstreams.
    """
    model = parse_model(body)
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise bad("max_tokens", "is required")
    integral = isinstance(max_tokens, int) or (isinstance(max_tokens, float) and max_tokens.is_integer())
    if isinstance(max_tokens, bool) or not integral:
        raise bad("max_tokens", "must be an integer")
    max_tokens = int(max_tokens)  # JSON has one number type: 5.0 is the integer 5
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise bad("messages", "is required and must be a non-empty list")
    messages: list[Message] = []
    if body.get("system") is not None:
        text = _system_text(body["system"], "system")
        if text:
            messages.append(Message(role="system", content=text))
    for i, m in enumerate(raw):
        messages += _parse_message(m, i)
    stops = body.get("stop_sequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise bad("stop_sequences", "must be a list of strings")
    stream = parse_stream_flag(body)
    for key in ("temperature", "top_p"):
        v = body.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise bad(key, "must be a number")
    forwarded = {k: headers[k] for k in FORWARDED_HEADERS if headers is not None and headers.get(k)}
    req = ChatRequest(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        stop=list(stops),
        stream=stream,
        tools=_parse_tools(body.get("tools")),
        tool_choice=_tool_choice_from(body.get("tool_choice")),
        passthrough=Passthrough("anthropic", {k: v for k, v in body.items() if k not in _NOT_PASSED}, forwarded),
    )
    req.validate()
    return req


def response_from_anthropic(body: Any) -> ChatResult:
    if not isinstance(body, dict) or not isinstance(body.get("content"), list):
        raise ValueError("message has no content list")
    texts: list[str] = []
    calls: list[ToolCall] = []
    thinking: list[ThinkingDelta] = []
    for b in body["content"]:
        if b.get("type") == "text":
            texts.append(b.get("text", ""))
        elif b.get("type") == "tool_use":
            calls.append(
                ToolCall(id=b.get("id", ""), name=b.get("name", ""), arguments=json.dumps(b.get("input") or {}))
            )
        elif b.get("type") in ("thinking", "redacted_thinking"):
            thinking.append(_thinking_of(b, len(thinking)))
    usage = body.get("usage") or {}
    return ChatResult(
        text="".join(texts),
        finish_reason=map_stop_reason(body.get("stop_reason")) or "stop",
        usage=Usage(
            prompt_tokens=int(usage.get("input_tokens") or 0), completion_tokens=int(usage.get("output_tokens") or 0)
        ),
        tool_calls=calls,
        model=body.get("model"),
        thinking=thinking,
    )


def _thinking_of(block: dict[str, Any], index: int) -> ThinkingDelta:
    if block.get("type") == "redacted_thinking":
        return ThinkingDelta(index, redacted=str(block.get("data") or ""))
    return ThinkingDelta(index, str(block.get("thinking") or ""), str(block.get("signature") or ""))


def _thinking_block(t: ThinkingDelta) -> dict[str, Any]:
    if t.redacted is not None:
        return {"type": "redacted_thinking", "data": t.redacted}
    return {"type": "thinking", "thinking": t.text, "signature": t.signature}


def response_to_anthropic(result: ChatResult, *, model: str, id: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = [_thinking_block(t) for t in result.thinking]
    if result.text or not result.tool_calls:
        content.append({"type": "text", "text": result.text})
    for c in result.tool_calls:
        try:
            args = json.loads(c.arguments or "{}")
        except ValueError:
            args = {"_raw": c.arguments}
        content.append({"type": "tool_use", "id": c.id, "name": c.name, "input": args})
    return {
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason_out(result.finish_reason) or "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": result.usage.prompt_tokens, "output_tokens": result.usage.completion_tokens},
    }


# ---------------------------------------------------------------- streams


class AnthropicStreamDecoder:
    """Anthropic stream events -> canonical chunks.

    Unknown event types are ignored: Anthropic documents that new event types may appear.
    """

    def __init__(self) -> None:
        self._input_tokens = 0
        self._input_pending = False
        self._tool_index: dict[int, int] = {}  # content block index -> tool call index
        self._thinking_index: dict[int, int] = {}  # content block index -> thinking block index

    def feed(self, event: str, obj: dict[str, Any]) -> list[Chunk]:
        if event == "error":
            err = obj.get("error") or {}
            kind, message = err.get("type", "error"), err.get("message", "")
            raise UnavailableError(
                f"upstream {kind}: {message}",
                upstream_message=message,
                status=529 if kind == "overloaded_error" else None,
            )
        if event == "message_start":
            usage = (obj.get("message") or {}).get("usage") or {}
            self._input_tokens = int(usage.get("input_tokens") or 0)
            self._input_pending = True
            return []
        chunks = self._feed(event, obj)
        if chunks and self._input_pending:
            # The first chunk carries message_start's input_tokens, for the listener's own message_start.
            self._input_pending = False
            chunks[0].usage = chunks[0].usage or Usage(prompt_tokens=self._input_tokens)
        return chunks

    def _feed(self, event: str, obj: dict[str, Any]) -> list[Chunk]:
        if event == "content_block_start":
            block = obj.get("content_block") or {}
            if block.get("type") == "tool_use":
                idx = self._tool_index.setdefault(int(obj.get("index", 0)), len(self._tool_index))
                return [Chunk(tool_calls=[ToolCallDelta(index=idx, id=block.get("id"), name=block.get("name"))])]
            if block.get("type") == "text" and block.get("text"):
                return [Chunk(text=block["text"])]
            if block.get("type") in ("thinking", "redacted_thinking"):
                idx = self._thinking_index.setdefault(int(obj.get("index", 0)), len(self._thinking_index))
                return [Chunk(thinking=[_thinking_of(block, idx)])]
            return []
        if event == "content_block_delta":
            delta = obj.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [Chunk(text=delta.get("text", ""))]
            if delta.get("type") == "input_json_delta":
                idx = self._tool_index.setdefault(int(obj.get("index", 0)), len(self._tool_index))
                return [Chunk(tool_calls=[ToolCallDelta(index=idx, arguments=delta.get("partial_json", ""))])]
            if delta.get("type") in ("thinking_delta", "signature_delta"):
                idx = self._thinking_index.setdefault(int(obj.get("index", 0)), len(self._thinking_index))
                return [
                    Chunk(
                        thinking=[
                            ThinkingDelta(idx, str(delta.get("thinking") or ""), str(delta.get("signature") or ""))
                        ]
                    )
                ]
            return []
        if event == "message_delta":
            delta = obj.get("delta") or {}
            usage = obj.get("usage") or {}
            reason = map_stop_reason(delta.get("stop_reason"))
            return [
                Chunk(
                    finish_reason=reason,
                    usage=Usage(
                        prompt_tokens=int(usage.get("input_tokens") or self._input_tokens),
                        completion_tokens=int(usage.get("output_tokens") or 0),
                    ),
                )
            ]
        return []


class AnthropicStreamEncoder:
    """Canonical chunks -> Anthropic's exact event sequence.

    message_start, then per block content_block_start / _delta... / _stop, then message_delta
    (stop_reason, usage) and message_stop.
    """

    def __init__(self, model: str, id: str, input_tokens: int = 0) -> None:
        self.model, self.id = model, id
        self._started = False
        self._block: tuple[str, int] | None = None  # ("text", n) or ("tool", tool index)
        self._next_block = 0
        self._finish: str | None = None
        self._usage = Usage(prompt_tokens=input_tokens)
        self._done = False

    def _start(self) -> list[tuple[str, dict[str, Any]]]:
        if self._started:
            return []
        self._started = True
        return [
            (
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": self.id,
                        "type": "message",
                        "role": "assistant",
                        "model": self.model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": self._usage.prompt_tokens, "output_tokens": 0},
                    },
                },
            )
        ]

    def _close_block(self) -> list[tuple[str, dict[str, Any]]]:
        if self._block is None:
            return []
        index = self._next_block - 1
        self._block = None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _open(self, kind: str, key: int, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        if self._block == (kind, key):
            return []
        out = self._close_block()
        self._block = (kind, key)
        out.append(
            ("content_block_start", {"type": "content_block_start", "index": self._next_block, "content_block": block})
        )
        self._next_block += 1
        return out

    def _thinking(self, t: ThinkingDelta) -> list[tuple[str, dict[str, Any]]]:
        if t.redacted is not None:
            return self._open("redacted", t.index, {"type": "redacted_thinking", "data": t.redacted})
        out = self._open("thinking", t.index, {"type": "thinking", "thinking": "", "signature": ""})
        at = {"type": "content_block_delta", "index": self._next_block - 1}
        if t.text:
            out.append(("content_block_delta", {**at, "delta": {"type": "thinking_delta", "thinking": t.text}}))
        if t.signature:
            out.append(("content_block_delta", {**at, "delta": {"type": "signature_delta", "signature": t.signature}}))
        return out

    def encode(self, chunk: Chunk) -> list[tuple[str, dict[str, Any]]]:
        if chunk.usage is not None:  # before message_start: a first chunk may carry the input tokens
            self._usage = Usage(
                prompt_tokens=chunk.usage.prompt_tokens or self._usage.prompt_tokens,
                completion_tokens=chunk.usage.completion_tokens,
            )
        out = self._start()
        for t in chunk.thinking:
            out += self._thinking(t)
        if chunk.text:
            out += self._open("text", 0, {"type": "text", "text": ""})
            out.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": self._next_block - 1,
                        "delta": {"type": "text_delta", "text": chunk.text},
                    },
                )
            )
        for d in chunk.tool_calls:
            out += self._open(
                "tool",
                d.index,
                {"type": "tool_use", "id": d.id or f"toolu_{d.index}", "name": d.name or "", "input": {}},
            )
            if d.arguments:
                out.append(
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": self._next_block - 1,
                            "delta": {"type": "input_json_delta", "partial_json": d.arguments},
                        },
                    )
                )
        if chunk.finish_reason and chunk.error is None:
            self._finish = chunk.finish_reason
        return out

    def finish(self) -> list[tuple[str, dict[str, Any]]]:
        if self._done:
            return []
        self._done = True
        out = self._start()
        if self._next_block == 0:
            out += self._open("text", 0, {"type": "text", "text": ""})
        out += self._close_block()
        out.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason_out(self._finish) or "end_turn", "stop_sequence": None},
                    "usage": {
                        "input_tokens": self._usage.prompt_tokens,
                        "output_tokens": self._usage.completion_tokens,
                    },
                },
            )
        )
        out.append(("message_stop", {"type": "message_stop"}))
        return out

    def error_event(self, err: EngineError) -> tuple[str, dict[str, Any]]:
        self._done = True
        return ("error", error_body_anthropic(err))


# ---------------------------------------------------------------- errors

# overloaded_error is Anthropic's 529 only (an upstream said so); any other failure is api_error.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error_body_anthropic(err: EngineError) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(err.status or 500, "api_error")
    return {"type": "error", "error": {"type": kind, "message": str(err)}}
