"""OpenAI chat completions (api.openai.com and any OpenAI-compatible base_url)."""

from __future__ import annotations

from typing import Any

import orjson

from engine.cloud.base import CloudBackend, _Decoder
from engine.types import ChatRequest, ChatResult, Chunk


class _OpenAIDecoder(_Decoder):
    def __init__(self) -> None:
        from engine.protocol.openai import OpenAIStreamDecoder

        self._decoder = OpenAIStreamDecoder()

    def feed(self, event: str | None, data: str, model: str) -> tuple[list[Chunk], str, bool]:
        if data.strip() == "[DONE]":
            return [], model, True
        obj = orjson.loads(data)  # once per streamed event: orjson is several times json's speed
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
        # A bare {"error": ...} object mid-stream raises UnavailableError from the decoder.
        return self._decoder.feed(obj), obj.get("model") or model, False


class OpenAIBackend(CloudBackend):
    """POST {base_url}/chat/completions, base_url like "https://api.openai.com/v1"."""

    def _endpoint(self) -> str:
        return self.cfg.base_url.rstrip("/") + "/chat/completions"

    def _auth_headers(self, api_key: str) -> dict[str, str]:
        # OpenAI-compatible local servers often need no key at all.
        return {"authorization": f"Bearer {api_key}"} if api_key else {}

    def _request_body(self, request: ChatRequest) -> dict[str, Any]:
        from engine.protocol.openai import request_to_openai

        body = request_to_openai(request)
        body["stream"] = request.stream
        if request.stream:
            body["stream_options"] = {"include_usage": True}
        else:
            body.pop("stream_options", None)
        return body

    def _parse_result(self, body: Any) -> ChatResult:
        from engine.protocol.openai import response_from_openai

        return response_from_openai(body)

    def _upstream_error(self, status: int, body: Any) -> str:
        from engine.protocol.openai import parse_openai_error

        return parse_openai_error(status, body)

    def _stream_decoder(self) -> _Decoder:
        return _OpenAIDecoder()
