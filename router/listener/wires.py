"""What differs between the two protocols on the way out: whole answers and stream events.

An event is `(name, payload)`: the SSE `event:` name (None for OpenAI) and a JSON object, or a
ready string such as OpenAI's `[DONE]`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from engine.protocol import anthropic as anth
from engine.protocol import openai as oai
from engine.protocol import responses as rsp
from engine.types import ChatRequest, ChatResult, Chunk, EngineError

Event = tuple[str | None, Any]


class EventEncoder(Protocol):
    def encode(self, chunk: Chunk) -> list[Event]: ...

    def finish(self) -> list[Event]: ...

    def fail(self, err: EngineError) -> list[Event]: ...


class OpenAIEvents:
    def __init__(self, req: ChatRequest, request_id: str) -> None:
        self._enc = oai.OpenAIStreamEncoder(
            req.model, f"chatcmpl-{request_id}", include_usage=bool(req.metadata.get("include_usage"))
        )

    def encode(self, chunk: Chunk) -> list[Event]:
        return [(None, obj) for obj in self._enc.encode(chunk)]

    def finish(self) -> list[Event]:
        return [(None, obj) for obj in self._enc.finish()] + [(None, "[DONE]")]

    def fail(self, err: EngineError) -> list[Event]:
        # The SDKs raise on a data line holding an error object; no [DONE] follows it.
        return [(None, oai.error_body_openai(err))]


class AnthropicEvents:
    def __init__(self, req: ChatRequest, request_id: str) -> None:
        self._enc = anth.AnthropicStreamEncoder(req.model, f"msg_{request_id}")

    def encode(self, chunk: Chunk) -> list[Event]:
        return list(self._enc.encode(chunk))

    def finish(self) -> list[Event]:
        return list(self._enc.finish())

    def fail(self, err: EngineError) -> list[Event]:
        return [self._enc.error_event(err)]


class ResponsesEvents:
    def __init__(self, req: ChatRequest, request_id: str) -> None:
        self._enc = rsp.ResponsesStreamEncoder(req, request_id)

    def encode(self, chunk: Chunk) -> list[Event]:
        return list(self._enc.encode(chunk))

    def finish(self) -> list[Event]:
        return list(self._enc.finish())

    def fail(self, err: EngineError) -> list[Event]:
        return list(self._enc.error_events(err))


@dataclass(frozen=True)
class Wire:
    name: str
    render: Callable[[ChatResult, ChatRequest, str], dict[str, Any]]
    events: Callable[[ChatRequest, str], EventEncoder]


OPENAI = Wire(
    "openai",
    lambda result, req, rid: oai.response_to_openai(result, model=req.model, id=f"chatcmpl-{rid}"),
    OpenAIEvents,
)
ANTHROPIC = Wire(
    "anthropic",
    lambda result, req, rid: anth.response_to_anthropic(result, model=req.model, id=f"msg_{rid}"),
    AnthropicEvents,
)
RESPONSES = Wire(
    "responses",
    lambda result, req, rid: rsp.response_to_responses(result, req, id=rid),
    ResponsesEvents,
)
