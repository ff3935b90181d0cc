"""LocalEngine: the `local` backend — MLX models found on disk, served from one MLX thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from engine.config import EngineConfig
from engine.local.catalog import ModelCatalog
from engine.local.discovery import ModelInfo
from engine.local.generation import Finished, GenerationHandle, GenParams, MLXWorker, Submission
from engine.local.models import LoadedModel, LoadProgress, MemorySnapshot, ModelManager
from engine.local.prompt_cache import PromptCacheStore
from engine.local.scheduler import PRIORITIES
from engine.protocol.common import fold_system_turns
from engine.types import (
    BackendSnapshot,
    CancelledError,
    ChatRequest,
    Chunk,
    ContextLengthError,
    EngineError,
    Message,
    ModelLimits,
    RejectedError,
    Usage,
    percentile,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 512
# When neither the model file nor the loaded model says how long its context is.
FALLBACK_CONTEXT = 4096
# OpenAI's default; a request may always say 0 for greedy decoding.
DEFAULT_TEMPERATURE = 1.0


def _template_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        d: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            d["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in m.tool_calls
            ]
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
    tools = [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description or "", "parameters": t.parameters},
        }
        for t in request.tools
    ] or None
    if getattr(tokenizer, "chat_template", None):
        # Templates that refuse a system turn mid-conversation (or any) get it folded into a user turn.
        folded = fold_system_turns(request.messages, keep_leading=False)
        attempts = [
            (_template_messages(request.messages), tools),
            (_template_messages(fold_system_turns(request.messages)), tools),
            (_template_messages(folded), tools),
            (_plain_messages(folded), None),
        ]
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
        self._catalog = ModelCatalog(config, backend=self.name)
        cache = PromptCacheStore(config.prompt_cache_bytes)
        self._worker = MLXWorker(
            prompt_cache=cache,
            max_batch=config.max_batch,
            prefill_step_s=config.prefill_step_s,
            prefill_chunk_tokens=config.prefill_chunk_tokens,
            cache_room=lambda: self._manager.cache_room(),
        )
        self._manager = ModelManager(
            config, busy=self._worker.busy, prompt_cache=cache, on_unload=self._worker.drop_model
        )
        self._blas = "not loaded yet"
        self._requests = 0
        self._errors = 0
        self._latencies: deque[float] = deque(maxlen=100)
        self._last_error: str | None = None
        self._last_error_at: float | None = None

    # ------------------------------------------------------------ models

    def models(self) -> list[ModelInfo]:
        return self._catalog.models()

    def refresh_models(self) -> list[ModelInfo]:
        return self._catalog.refresh()

    async def rescan(self) -> list[ModelInfo]:
        """Scan the model folders again on a worker thread (never on the event loop)."""
        return await self._catalog.rescan()

    def resolve(self, name: str, *, allow_paths: bool = False) -> ModelInfo:
        """A model by id or alias; by file or folder path only if `allow_paths` (the local user)."""
        return self._catalog.resolve(name, allow_paths=allow_paths)

    async def aresolve(self, name: str, *, allow_paths: bool = False) -> ModelInfo:
        """resolve() with any disk scan on a worker thread."""
        return await self._catalog.aresolve(name, allow_paths=allow_paths)

    def limits(self, name: str) -> ModelLimits | None:
        """Context length and longest possible answer of a known model (no disk access; None if
        the name is not a known model). The listener rejects a max_tokens above max_output_tokens."""
        info = self._catalog.lookup(name)
        if info is None:
            return None
        return ModelLimits(info.id, info.context_length or FALLBACK_CONTEXT)

    def _ensure_blas(self) -> None:
        from engine.local.blas import ensure_blas

        self._blas = ensure_blas(self.config.use_system_openblas)

    async def load(
        self,
        name: str,
        progress: Callable[[LoadProgress], None] | None = None,
        cancel: threading.Event | None = None,
        *,
        allow_paths: bool = False,
    ) -> ModelInfo:
        """Load a model. `progress` is called on the event loop (posted from the MLX thread, which
        never waits for it)."""
        info = await self.aresolve(name, allow_paths=allow_paths)
        self._ensure_blas()
        post = None
        if progress is not None:
            loop = asyncio.get_running_loop()
            report = progress

            def post(p: LoadProgress) -> None:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is watching
                    loop.call_soon_threadsafe(report, p)

        await self._worker.run(lambda: self._manager.get(info, post, cancel))
        return info

    async def unload(self, name: str) -> bool:
        info = await self.aresolve(name)

        def job() -> bool:
            self._worker.drop_model(info.id)
            return self._manager.unload(info.id)

        return await self._worker.run(job)

    def memory(self) -> MemorySnapshot:
        """Models and prompt caches as the MLX thread last published them (safe from any thread)."""
        models, cache = self._manager.published, self._worker.prompt_cache.published
        return MemorySnapshot(
            loaded=list(models.loaded),
            used_bytes=models.model_bytes + cache.nbytes,
            budget_bytes=self.config.memory_budget_bytes,
            blas=self._blas,
            prompt_cache_bytes=cache.nbytes,
            prompt_cache_entries=cache.entries,
            prompt_cache_limit_bytes=self._worker.prompt_cache.limit_bytes,
        )

    def is_loaded(self, name: str) -> bool:
        info = self._catalog.lookup(name)
        return info is not None and self._manager.published.has(info.id)

    async def count_tokens(self, name: str, messages: list[Message], *, allow_paths: bool = False) -> int:
        info = await self.aresolve(name, allow_paths=allow_paths)
        self._ensure_blas()
        request = ChatRequest(model=name, messages=messages)

        def job() -> int:
            loaded = self._manager.get(info)
            return len(render_prompt(loaded.tokenizer, request))

        return await self._worker.run(job)

    # ------------------------------------------------------------ generation

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        received = time.perf_counter()
        self._requests += 1
        try:
            _check(request, self.name)
            info = await self.aresolve(request.model, allow_paths=request.allow_model_paths)
            self._ensure_blas()
        except EngineError as exc:
            self._record_error(exc)
            raise
        handle = GenerationHandle(asyncio.get_running_loop(), received)

        def begin() -> None:
            self._worker.enqueue(self._prepare(info, request, handle))

        finished = first_sent = False
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
                    # The first chunk says how long the prompt was (exact input tokens up front).
                    usage = None if first_sent else Usage(handle.prompt_tokens)
                    first_sent = True
                    yield Chunk(text=item, usage=usage, backend=self.name, model=info.id)
                elif isinstance(item, Finished):
                    finished = True
                    self._latencies.append(time.perf_counter() - received)
                    yield Chunk(
                        finish_reason=item.finish_reason,  # type: ignore[arg-type]
                        usage=_usage(item),
                        backend=self.name,
                        model=info.id,
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
                # before its next step, whether it is queued, reading its prompt or decoding.
                handle.cancelled.set()

    def _prepare(self, info: ModelInfo, request: ChatRequest, handle: GenerationHandle) -> Submission:
        """On the MLX thread: load the model if needed, render the prompt, check it fits."""
        started = time.perf_counter()
        was_loaded = self._manager.is_loaded(info.id)
        # The router's "what is this request waiting on" callback, when it gave one ("loading demo 45%").
        hook = request.metadata.get("on_status")
        on_status: Callable[[str], None] | None = hook if callable(hook) else None
        progress: Callable[[LoadProgress], None] | None = None
        if on_status is not None:
            report = on_status

            def progress(p: LoadProgress) -> None:
                report(f"loading {info.id} {p.fraction:.0%}")

        # A client that goes away during the load stops it too (between load stages).
        loaded = self._manager.get(info, progress=progress, cancel=handle.cancelled)
        load_s = 0.0 if was_loaded else time.perf_counter() - started
        prompt = render_prompt(loaded.tokenizer, request)
        if not prompt:
            raise RejectedError("the prompt renders to no tokens")
        context = context_length(info, loaded)
        if len(prompt) >= context:
            raise ContextLengthError(len(prompt), context, info.id, backend=self.name)
        handle.prompt_tokens = len(prompt)
        params = GenParams(
            # Never generate past the model's context window, whatever max_tokens says.
            max_tokens=max(1, min(request.max_tokens or DEFAULT_MAX_TOKENS, context - len(prompt))),
            temperature=DEFAULT_TEMPERATURE if request.temperature is None else request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            stop=tuple(s for s in request.stop if s),
        )
        return Submission(
            handle, info.id, loaded.model, loaded.tokenizer, prompt, params, request.priority, load_s, on_status
        )

    def _record_error(self, exc: EngineError) -> None:
        self._errors += 1
        self._last_error = str(exc)
        self._last_error_at = time.time()

    def snapshot(self) -> BackendSnapshot:
        lat = list(self._latencies)
        work = self._worker.snapshot()
        return BackendSnapshot(
            name=self.name,
            kind=self.kind,
            state="closed",
            requests=self._requests,
            errors=self._errors,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
            latency_p50_s=percentile(lat, 0.5),
            latency_p95_s=percentile(lat, 0.95),
            latency_p99_s=percentile(lat, 0.99),
            recent_latencies_s=lat[-30:],
            running=work.running,
            queued=work.queued,
        )

    async def aclose(self) -> None:
        await asyncio.to_thread(self._worker.stop)


def _check(request: ChatRequest, backend: str) -> None:
    """The 400s that need no model: fields, attachments, priority."""
    request.validate()
    request.require_text_only(backend)
    if request.priority not in PRIORITIES:
        raise RejectedError(
            f"priority: must be one of {', '.join(PRIORITIES)}, not {request.priority!r}", backend=backend
        )


def context_length(info: ModelInfo, loaded: LoadedModel) -> int:
    """Tokens of prompt and answer together: the file's word, else the loaded model's."""
    from_model = getattr(getattr(loaded.model, "args", None), "max_position_embeddings", None)
    return info.context_length or from_model or FALLBACK_CONTEXT


def _usage(item: Finished) -> Usage:
    return Usage(
        item.prompt_tokens,
        item.completion_tokens,
        item.ttft_s,
        item.tokens_per_s,
        queued_s=item.queued_s,
        load_s=item.load_s,
        cached_tokens=item.cached_tokens,
    )
