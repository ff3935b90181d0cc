"""OpenAI chat-completions <-> canonical types, both directions, streaming included."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from engine.protocol.common import bad, parse_model, parse_stream_flag, parse_tool
from engine.types import (
    ChatRequest,
    ChatResult,
    Chunk,
    EngineError,
    FinishReason,
    Message,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    UnavailableError,
    Usage,
)

_FINISH_IN: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "stop",
}


# ---------------------------------------------------------------- helpers


def _list(obj: dict[str, Any], key: str, field: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad(field, "must be a list")
    return value


def _text_of(content: Any, field: str) -> str:
    """OpenAI content is a string, null, or a list of parts; only text parts are supported."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out: list[str] = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or "type" not in part:
                raise bad(f"{field}[{j}]", "must be an object with a type")
            if part["type"] != "text":
                kind = "image" if str(part["type"]).startswith(("image", "input_image")) else repr(part["type"])
                raise bad(f"{field}[{j}].type", f"{kind} content is not supported (text only)")
            if not isinstance(part.get("text"), str):
                raise bad(f"{field}[{j}].text", "must be a string")
            out.append(part["text"])
        return "".join(out)
    raise bad(field, "must be a string or a list of content parts")


def _usage_from(obj: Any) -> Usage | None:
    if not isinstance(obj, dict):
        return None
    return Usage(
        prompt_tokens=int(obj.get("prompt_tokens") or 0),
        completion_tokens=int(obj.get("completion_tokens") or 0),
    )


def _usage_to(usage: Usage | None) -> dict[str, int]:
    u = usage or Usage()
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }


def _tool_choice_to(choice: Any) -> Any:
    if isinstance(choice, dict) and "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def _tool_choice_from(choice: Any) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if (
        isinstance(choice, dict)
        and isinstance(choice.get("function"), dict)
        and isinstance(choice["function"].get("name"), str)
    ):
        return {"name": choice["function"]["name"]}
    raise bad("tool_choice", "must be 'auto', 'none', 'required' or {type: function, function: {name}}")


# ---------------------------------------------------------------- requests


def _content_to(m: Message, i: int) -> Any:
    """Text, or text and image parts; what an OpenAI chat message cannot hold is a 400."""
    text = f"Error: {m.content}" if m.is_error else m.content
    if not m.attachments:
        return text
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for a in m.attachments:
        if a.kind != "image" or m.role != "user":
            where = "a tool result" if m.role == "tool" else "a message"
            raise bad(
                f"messages[{i}].content",
                f"{a.kind} content in {where} cannot be sent to an OpenAI-style "
                "backend; route this model to an anthropic backend",
            )
        parts.append({"type": "image_url", "image_url": {"url": a.url or f"data:{a.media_type};base64,{a.data}"}})
    return parts


def request_to_openai(req: ChatRequest, *, max_tokens_field: str = "max_tokens") -> dict[str, Any]:
    """System turns stay where they are (OpenAI takes them anywhere); images become image_url parts."""
    messages: list[dict[str, Any]] = []
    for i, m in enumerate(req.messages):
        out: dict[str, Any] = {"role": m.role, "content": _content_to(m, i)}
        if m.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in m.tool_calls
            ]
            if not m.content:
                out["content"] = None
        if m.role == "tool" and m.tool_call_id is not None:
            out["tool_call_id"] = m.tool_call_id
        if m.name is not None:
            out["name"] = m.name
        messages.append(out)
    body: dict[str, Any] = {"model": req.model, "messages": messages, "stream": req.stream}
    if req.max_tokens is not None:
        body[max_tokens_field] = req.max_tokens
    for key in ("temperature", "top_p", "seed"):
        value = getattr(req, key)
        if value is not None:
            body[key] = value
    if req.stop:
        body["stop"] = list(req.stop)
    if req.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.parameters,
                },
            }
            for t in req.tools
        ]
    if req.tool_choice is not None:
        body["tool_choice"] = _tool_choice_to(req.tool_choice)
    if req.stream:
        body["stream_options"] = {"include_usage": True}
    return body


def _number(body: dict[str, Any], key: str, kind: type = float) -> Any:
    value = body.get(key)
    if value is None:
        return None
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not integral):
        raise bad(key, f"must be {'an integer' if kind is int else 'a number'}")
    return int(value) if kind is int else value  # JSON has one number type: 5.0 is the integer 5


def _seed(body: dict[str, Any]) -> int | None:
    seed: int | None = _number(body, "seed", int)
    if seed is not None and not 0 <= seed < 2**64:  # MLX's random key takes an unsigned 64-bit seed
        raise bad("seed", "must be between 0 and 2**64 - 1")
    return seed


def request_from_openai(body: Any) -> ChatRequest:
    """Parse and validate an OpenAI chat-completions request body (the listener's edge)."""
    model = parse_model(body)
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise bad("messages", "is required and must be a non-empty list")
    messages: list[Message] = []
    for i, m in enumerate(raw_messages):
        field = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad(field, "must be an object")
        role = m.get("role")
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant", "tool"):
            raise bad(f"{field}.role", f"must be one of system, user, assistant, tool (got {role!r})")
        calls: list[ToolCall] = []
        for j, c in enumerate(_list(m, "tool_calls", f"{field}.tool_calls")):
            fn = c.get("function") if isinstance(c, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise bad(f"{field}.tool_calls[{j}].function.name", "is required")
            args = fn.get("arguments", "{}")
            if not isinstance(args, str):
                args = json.dumps(args)
            calls.append(ToolCall(id=str(c.get("id") or f"call_{i}_{j}"), name=fn["name"], arguments=args))
        tool_call_id = m.get("tool_call_id")
        if role == "tool" and not isinstance(tool_call_id, str):
            raise bad(f"{field}.tool_call_id", "is required for tool messages")
        messages.append(
            Message(
                role=role,
                content=_text_of(m.get("content"), f"{field}.content"),
                tool_calls=tuple(calls),
                tool_call_id=tool_call_id if role == "tool" else None,
                name=m.get("name") if isinstance(m.get("name"), str) else None,
            )
        )
    n = body.get("n")
    if n not in (None, 1):
        raise bad("n", "only n=1 is supported")
    max_tokens = _number(body, "max_completion_tokens", int)
    if max_tokens is None:
        max_tokens = _number(body, "max_tokens", int)
    stop = body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = list(stop)
    else:
        raise bad("stop", "must be a string or a list of strings")
    tools: list[ToolSpec] = []
    for j, t in enumerate(_list(body, "tools", "tools")):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(fn, dict):
            raise bad(f"tools[{j}].function.name", "is required")
        tools.append(
            parse_tool(
                fn.get("name"), fn.get("description"), fn.get("parameters"), f"tools[{j}].function", "parameters"
            )
        )
    stream = parse_stream_flag(body)
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad("stream_options", "must be an object")
    if not isinstance(options.get("include_usage", False), bool):
        raise bad("stream_options.include_usage", "must be a boolean")
    req = ChatRequest(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=_number(body, "temperature"),
        top_p=_number(body, "top_p"),
        stop=stops,
        seed=_seed(body),
        stream=stream,
        tools=tools,
        tool_choice=_tool_choice_from(body.get("tool_choice")),
        metadata={"include_usage": bool(options.get("include_usage"))},
    )
    req.validate()
    return req


# ---------------------------------------------------------------- responses


def response_from_openai(body: Any) -> ChatResult:
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list) or not body["choices"]:
        raise ValueError("chat completion has no choices")
    choice = body["choices"][0]
    message = choice.get("message") or {}
    calls = [
        ToolCall(
            id=str(c.get("id") or f"call_{k}"),
            name=c["function"]["name"],
            arguments=c["function"].get("arguments") or "{}",
        )
        for k, c in enumerate(message.get("tool_calls") or [])
    ]
    return ChatResult(
        text=_text_of(message.get("content"), "content")
        if not isinstance(message.get("content"), list)
        else "".join(p.get("text", "") for p in message["content"] if isinstance(p, dict)),
        finish_reason=_FINISH_IN.get(choice.get("finish_reason") or "", "stop" if not calls else "tool_calls"),
        usage=_usage_from(body.get("usage")) or Usage(),
        tool_calls=calls,
        model=body.get("model"),
    )


def response_to_openai(result: ChatResult, *, model: str, id: str, created: int | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.text}
    if result.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in result.tool_calls
        ]
        message["content"] = result.text or None
    return {
        "id": id,
        "object": "chat.completion",
        "created": int(created if created is not None else time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": _finish_out(result.finish_reason)}],
        "usage": _usage_to(result.usage),
    }


def _finish_out(reason: str | None) -> str | None:
    if reason in ("error", "cancelled"):
        return "stop"
    return reason


# ---------------------------------------------------------------- streams


class OpenAIStreamDecoder:
    """chat.completion.chunk objects -> canonical chunks."""

    def __init__(self) -> None:
        # A usage-only chunk arrives after the finish_reason chunk; it repeats the finish reason
        # so that the last chunk of a stream always carries both.
        self._finish: FinishReason | None = None

    def feed(self, obj: dict[str, Any]) -> list[Chunk]:
        if "error" in obj and not obj.get("choices"):
            err = obj["error"]
            text = err.get("message") if isinstance(err, dict) else str(err)
            raise UnavailableError(f"upstream error mid-stream: {text}", upstream_message=text)
        out: list[Chunk] = []
        for choice in obj.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            deltas = [
                ToolCallDelta(
                    index=int(tc.get("index", k)),
                    id=tc.get("id"),
                    name=(tc.get("function") or {}).get("name"),
                    arguments=(tc.get("function") or {}).get("arguments") or "",
                )
                for k, tc in enumerate(delta.get("tool_calls") or [])
            ]
            content = delta.get("content")
            finish = choice.get("finish_reason")
            if content or deltas or finish:
                out.append(
                    Chunk(
                        text=content or "",
                        tool_calls=deltas,
                        finish_reason=_FINISH_IN.get(finish, "stop") if finish else None,
                    )
                )
                self._finish = out[-1].finish_reason or self._finish
        usage = _usage_from(obj.get("usage"))
        if usage is not None:
            if out:
                out[-1].usage = usage
            else:
                out.append(Chunk(usage=usage, finish_reason=self._finish))
        return out


class OpenAIStreamEncoder:
    """Canonical chunks -> chat.completion.chunk objects (the listener adds `data: [DONE]`)."""

    def __init__(self, model: str, id: str, created: int | None = None, include_usage: bool = False) -> None:
        self.model, self.id = model, id
        self.created = int(created if created is not None else time.time())
        self.include_usage = include_usage
        self._started = False
        self._usage: Usage | None = None
        self._finished = False

    def _obj(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        obj = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if self.include_usage:
            obj["usage"] = None
        return obj

    def encode(self, chunk: Chunk) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not self._started:
            self._started = True
            out.append(self._obj({"role": "assistant", "content": ""}))
        if chunk.text:
            out.append(self._obj({"content": chunk.text}))
        if chunk.tool_calls:
            out.append(
                self._obj(
                    {
                        "tool_calls": [
                            {
                                "index": d.index,
                                **({"id": d.id, "type": "function"} if d.id else {}),
                                "function": {**({"name": d.name} if d.name else {}), "arguments": d.arguments},
                            }
                            for d in chunk.tool_calls
                        ]
                    }
                )
            )
        if chunk.usage is not None:
            self._usage = chunk.usage
        if chunk.finish_reason and chunk.error is None and not self._finished:
            self._finished = True
            out.append(self._obj({}, _finish_out(chunk.finish_reason)))
        return out

    def finish(self) -> list[dict[str, Any]]:
        if not self.include_usage:
            return []
        return [
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": _usage_to(self._usage),
            }
        ]


# ---------------------------------------------------------------- errors

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
# Field errors read "<field>: <why>" (common.bad, ChatRequest.validate): the field is OpenAI's `param`.
_FIELD = re.compile(r"([A-Za-z_][\w.\[\]-]*): ")


def error_body_openai(err: EngineError) -> dict[str, Any]:
    status = err.status or 500
    kind = _ERROR_TYPES.get(status, "service_unavailable" if status == 503 else "server_error")
    # An error class may name its own code (the listener's unknown endpoint: "unknown_url").
    code = getattr(err, "code", None) or {404: "model_not_found", 503: "backends_unavailable"}.get(status)
    field = _FIELD.match(err.message) if status in (400, 413, 422) else None
    return {"error": {"message": str(err), "type": kind, "param": field.group(1) if field else None, "code": code}}


def parse_openai_error(status: int, body: Any) -> str:
    """The upstream's own message from an OpenAI error body (dict, bytes or text)."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return body.strip()[:500] or f"HTTP {status}"
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
        if isinstance(err, str):
            return err[:500]
        if body.get("message"):
            return str(body["message"])[:500]
    return f"HTTP {status}"
