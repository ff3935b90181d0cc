"""LocalEngine: the `local` backend — MLX models found on disk, served from one MLX thread."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from engine.config import EngineConfig
from engine.local.discovery import ModelInfo, discover
from engine.local.generation import Finished, GenerationHandle, GenParams, MLXWorker
from engine.local.models import LoadProgress, MemorySnapshot, ModelManager
from engine.types import (
    BackendSnapshot,
    CancelledError,
    ChatRequest,
    Chunk,
    EngineError,
    Message,
    ModelNotFoundError,
    RejectedError,
    Usage,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 512
# OpenAI's default; a request may always say 0 for greedy decoding.
DEFAULT_TEMPERATURE = 1.0


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _template_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        d: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            d["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                               for c in m.tool_calls]
        if m.tool_call_id:
            d["tool_call_id"] = m.tool_call_id
        out.append(d)
    return out


def _plain_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """For templates that know only system/user/assistant: tool traffic as plain text."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "user", "content": f"[tool result {m.tool_call_id or ''}]\n{m.content}"})
        elif m.tool_calls:
            calls = "\n".join(f"[tool call {c.name}({c.arguments})]" for c in m.tool_calls)
            out.append({"role": m.role, "content": (m.content + "\n" + calls).strip()})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def render_prompt(tokenizer: Any, request: ChatRequest) -> list[int]:
    """Token ids of the conversation through the model's chat template."""
    tools = [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                               "parameters": t.parameters}} for t in request.tools] or None
    if getattr(tokenizer, "chat_template", None):
        attempts = [(_template_messages(request.messages), tools), (_plain_messages(request.messages), None)]
        last: Exception | None = None
        for msgs, tl in attempts:
            try:
                text = tokenizer.apply_chat_template(msgs, tools=tl, add_generation_prompt=True, tokenize=False)
                return list(tokenizer.encode(text, add_special_tokens=False))
            except Exception as exc:  # jinja raises TemplateError / TypeError for what it can't render
                last = exc
        raise RejectedError(f"the model's chat template cannot render this conversation: {last}")
    text = "".join(f"{m['role']}: {m['content']}\n" for m in _plain_messages(request.messages)) + "assistant: "
    return list(tokenizer.encode(text))


class LocalEngine:
    """The `Backend` named "local". Constructing it imports no MLX (the TUI starts without it)."""

    name = "local"
    kind = "local"

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._worker = MLXWorker()
        self._manager = ModelManager(config, busy=self._worker.busy)
        self._models: list[ModelInfo] | None = None
        self._blas = "not loaded yet"
        self._requests = 0
        self._errors = 0
        self._latencies: deque[float] = deque(maxlen=100)
        self._last_error: str | None = None
        self._last_error_at: float | None = None

    # ------------------------------------------------------------ models

    def models(self) -> list[ModelInfo]:
        if self._models is None:
            self._models = discover(self.config)
        return list(self._models)

    def refresh_models(self) -> list[ModelInfo]:
        self._models = None
        return self.models()

    def resolve(self, name: str) -> ModelInfo:
        """A model by id, alias or path."""
        for info in self.models():
            if name == info.id or name in info.aliases:
                return info
        for info in self.refresh_models():
            if name == info.id or name in info.aliases:
                return info
        path = Path(name).expanduser()
        if path.exists():
            from engine.local.discovery import _gguf_info, _mlx_folder_info

            try:
                return _gguf_info(path, path.stem, dequantize_on_cpu=True) if path.is_file() \
                    else _mlx_folder_info(path, path.name)
            except (OSError, ValueError, KeyError) as exc:
                raise RejectedError(f"{path} is not a usable model: {exc}", backend=self.name) from None
        known = ", ".join(sorted({i.id for i in self.models()} | {a for i in self.models() for a in i.aliases}))
        raise ModelNotFoundError(
            f"model {name!r} not found locally" + (f" (known: {known})" if known else
                                                  " (no local models; run `mlx-workbench models fetch-demo`)"),
            backend=self.name,
        )

    def _ensure_blas(self) -> None:
        from engine.local.blas import ensure_blas

        self._blas = ensure_blas(self.config.use_system_openblas)

    async def load(self, name: str, progress: Callable[[LoadProgress], None] | None = None,
                   cancel: threading.Event | None = None) -> ModelInfo:
        info = self.resolve(name)
        self._ensure_blas()
        await self._worker.run(lambda: self._manager.get(info, progress, cancel))
        return info

    async def unload(self, name: str) -> bool:
        info = self.resolve(name)

        def job() -> bool:
            self._worker.drop_model(info.id)
            return self._manager.unload(info.id)

        return await self._worker.run(job)

    def memory(self) -> MemorySnapshot:
        return self._manager.snapshot(self._blas)

    def is_loaded(self, name: str) -> bool:
        try:
            return self._manager.is_loaded(self.resolve(name).id)
        except EngineError:
            return False

    async def count_tokens(self, name: str, messages: list[Message]) -> int:
        info = self.resolve(name)
        self._ensure_blas()
        request = ChatRequest(model=name, messages=messages)

        def job() -> int:
            loaded = self._manager.get(info)
            return len(render_prompt(loaded.tokenizer, request))

        return await self._worker.run(job)

    # ------------------------------------------------------------ generation

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        started = time.perf_counter()
        self._requests += 1
        try:
            request.validate()
            info = self.resolve(request.model)
            self._ensure_blas()
        except EngineError as exc:
            self._record_error(exc)
            raise
        params = GenParams(
            max_tokens=request.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=DEFAULT_TEMPERATURE if request.temperature is None else request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=tuple(s for s in request.stop if s),
        )
        handle = GenerationHandle(asyncio.get_running_loop())
        # The router's "what is this request waiting on" callback, when it gave one.
        on_status = request.metadata.get("on_status")

        def loading(p: LoadProgress) -> None:
            on_status(f"loading {info.id} {p.fraction:.0%}")

        def begin() -> None:
            loaded = self._manager.get(info, progress=loading if callable(on_status) else None)
            prompt = render_prompt(loaded.tokenizer, request)
            if not prompt:
                raise RejectedError("the prompt renders to no tokens")
            # Never generate past the model's context window, whatever max_tokens says.
            context = getattr(getattr(loaded.model, "args", None), "max_position_embeddings", None) or 4096
            capped = GenParams(**{**params.__dict__, "max_tokens": max(1, min(params.max_tokens, context))})
            self._worker.start_generation(info.id, loaded.model, loaded.tokenizer, prompt, capped, handle)

        finished = False
        try:
            try:
                await self._worker.run(begin)
            except EngineError as exc:
                if not isinstance(exc, CancelledError):
                    exc.backend = exc.backend or self.name
                    self._record_error(exc)
                raise
            while True:
                item = await handle.queue.get()
                if isinstance(item, str):
                    yield Chunk(text=item, backend=self.name, model=info.id)
                elif isinstance(item, Finished):
                    finished = True
                    self._latencies.append(time.perf_counter() - started)
                    yield Chunk(
                        finish_reason=item.finish_reason,  # type: ignore[arg-type]
                        usage=Usage(item.prompt_tokens, item.completion_tokens, item.ttft_s, item.tokens_per_s),
                        backend=self.name, model=info.id,
                    )
                    return
                else:
                    finished = True
                    item.backend = item.backend or self.name
                    if not isinstance(item, CancelledError):
                        self._record_error(item)
                    raise item
        finally:
            if not finished:
                # The consumer went away (aclose / task cancelled): the thread drops the request
                # before its next decode step.
                handle.cancelled.set()

    def _record_error(self, exc: EngineError) -> None:
        self._errors += 1
        self._last_error = str(exc)
        self._last_error_at = time.time()

    def snapshot(self) -> BackendSnapshot:
        lat = list(self._latencies)
        return BackendSnapshot(
            name=self.name, kind=self.kind, state="closed", requests=self._requests, errors=self._errors,
            last_error=self._last_error, last_error_at=self._last_error_at,
            latency_p50_s=_percentile(lat, 0.5), latency_p95_s=_percentile(lat, 0.95),
            latency_p99_s=_percentile(lat, 0.99), recent_latencies_s=lat[-30:],
        )

    async def aclose(self) -> None:
        await asyncio.to_thread(self._worker.stop)
