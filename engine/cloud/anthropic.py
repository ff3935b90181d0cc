"""Anthropic Messages API."""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from engine.cloud.base import CloudBackend, _Decoder
from engine.types import ChatRequest, ChatResult, Chunk

ANTHROPIC_VERSION = "2023-06-01"


class _AnthropicDecoder(_Decoder):
    def __init__(self) -> None:
        from engine.protocol.anthropic import AnthropicStreamDecoder

        self._decoder = AnthropicStreamDecoder()

    def feed(self, event: str | None, data: str, model: str) -> tuple[list[Chunk], str, bool]:
        obj = orjson.loads(data)  # once per streamed event: orjson is several times json's speed
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
        name = event or obj.get("type") or ""
        if name == "message_start":
            model = (obj.get("message") or {}).get("model") or model
        # An "error" event raises UnavailableError from the decoder.
        return self._decoder.feed(name, obj), model, name == "message_stop"


class AnthropicBackend(CloudBackend):
    """POST {base_url}/v1/messages, base_url like "https://api.anthropic.com"."""

    # 529: Anthropic "overloaded".
    extra_retry_statuses: ClassVar[frozenset[int]] = frozenset({529})

    def _endpoint(self) -> str:
        base = self.cfg.base_url.rstrip("/")
        return base + ("/messages" if base.endswith("/v1") else "/v1/messages")

    def _auth_headers(self, api_key: str) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def _request_headers(self, request: ChatRequest) -> dict[str, str]:
        from engine.protocol.anthropic import passthrough_headers

        headers = passthrough_headers(request)
        own = self.cfg.extra_headers.get("anthropic-beta")
        if own and headers.get("anthropic-beta"):
            headers["anthropic-beta"] = f"{own},{headers['anthropic-beta']}"
        return headers

    def _request_body(self, request: ChatRequest) -> dict[str, Any]:
        from engine.protocol.anthropic import request_to_anthropic

        body = request_to_anthropic(request)
        body["stream"] = request.stream
        return body

    def _parse_result(self, body: Any) -> ChatResult:
        from engine.protocol.anthropic import response_from_anthropic

        return response_from_anthropic(body)

    def _upstream_error(self, status: int, body: Any) -> str:
        # {"type": "error", "error": {"type": "...", "message": "..."}}
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
            message = str(err.get("message") or "")
            kind = err.get("type")
            return f"{message} ({kind})" if kind and message else message or str(kind or "")
        return body if isinstance(body, str) else ""

    def _stream_decoder(self) -> _Decoder:
        return _AnthropicDecoder()
