"""The one MLX thread: loads, tokenization and batched generation.

All MLX work happens on this thread, so MLX never runs concurrently with itself and the
asyncio loop never waits on it. Requests on the same model share one mlx_lm BatchGenerator
(continuous batching): a request that arrives mid-generation joins the running batch.
Tokens go back to the loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from engine.types import CancelledError, UnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenParams:
    max_tokens: int
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class Finished:
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float | None
    tokens_per_s: float | None


class GenerationHandle:
    """The loop side of one generation: a queue of str | Finished | EngineError."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.cancelled = threading.Event()

    def deliver(self, item: Any) -> None:
        """Called on the MLX thread."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled.set()


def _greedy(logprobs: Any) -> Any:
    import mlx.core as mx

    return mx.argmax(logprobs, axis=-1)


def make_sampler(temperature: float, top_p: float | None, seed: int | None) -> Callable[[Any], Any]:
    """Greedy at temperature 0; otherwise a sampler with its own PRNG key, so a seed gives the
    same text even while other requests share the batch."""
    if not temperature:
        return _greedy
    import mlx.core as mx
    from mlx_lm.sample_utils import apply_top_p

    state = [mx.random.key(seed if seed is not None else random.getrandbits(31))]
    inv_temp = 1.0 / temperature

    def sample(logprobs: Any) -> Any:
        if top_p is not None and 0 < top_p < 1:
            logprobs = apply_top_p(logprobs, top_p)
        state[0], sub = mx.random.split(state[0])
        return mx.random.categorical(logprobs * inv_temp, key=sub)

    return sample


@dataclass
class _Active:
    """Thread-side state of one generation."""

    handle: GenerationHandle
    uid: int
    model_id: str
    detok: Any
    eos: frozenset[int]
    stops: tuple[str, ...]
    prompt_tokens: int
    submitted: float
    text: str = ""
    sent: int = 0
    tokens: int = 0
    first_at: float | None = None
    last_at: float | None = None
    done: bool = False


@dataclass
class _Batch:
    generator: Any
    active: dict[int, _Active] = field(default_factory=dict)


class MLXWorker:
    """Owns the MLX thread. Jobs are plain callables run in submission order between decode steps."""

    def __init__(self, name: str = "mlx") -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._batches: dict[str, _Batch] = {}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._name = name
        self._stopped = False

    # ------------------------------------------------------------ loop side

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._stopped:
                raise UnavailableError("the local engine is shut down")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        self._ensure_thread()
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def job() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the awaiting caller, not lost
                fut.set_exception(exc)

        self._jobs.put(job)
        return fut

    async def run(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.wrap_future(self.submit(fn))

    def busy(self, model_id: str) -> bool:
        batch = self._batches.get(model_id)
        return bool(batch and batch.active)

    def active_count(self) -> int:
        return sum(len(b.active) for b in self._batches.values())

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopped = True
            thread = self._thread
        if thread is not None:
            self._jobs.put(None)
            thread.join(timeout)

    # ------------------------------------------------------------ thread side

    def start_generation(self, model_id: str, model: Any, tokenizer: Any, prompt: list[int],
                         params: GenParams, handle: GenerationHandle) -> None:
        """Join the model's batch. Must run on the MLX thread (inside a submitted job)."""
        batch = self._batches.get(model_id)
        if batch is None or batch.generator.model is not model:
            from mlx_lm.generate import BatchGenerator

            stop_tokens = [[t] for t in sorted(tokenizer.eos_token_ids)]
            batch = _Batch(BatchGenerator(model, stop_tokens=stop_tokens, prefill_batch_size=8,
                                          completion_batch_size=32))
            self._batches[model_id] = batch
        sampler = make_sampler(params.temperature, params.top_p, params.seed)
        [uid] = batch.generator.insert([prompt], max_tokens=[params.max_tokens], samplers=[sampler])
        batch.active[uid] = _Active(
            handle=handle, uid=uid, model_id=model_id, detok=tokenizer.detokenizer,
            eos=frozenset(tokenizer.eos_token_ids), stops=params.stop, prompt_tokens=len(prompt),
            submitted=time.perf_counter(),
        )

    def drop_model(self, model_id: str) -> None:
        """Forget the model's batch (before unloading it); its requests end with an error."""
        batch = self._batches.pop(model_id, None)
        if batch is not None:
            for act in batch.active.values():
                act.handle.deliver(UnavailableError(f"model {model_id} was unloaded during generation"))
            batch.generator.close()

    def _run(self) -> None:
        while True:
            idle = not any(b.active for b in self._batches.values())
            try:
                job = self._jobs.get(block=idle)
            except queue.Empty:
                job = ...
            while job is not ...:
                if job is None:
                    self._shutdown()
                    return
                job()
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    job = ...
            for model_id in list(self._batches):
                batch = self._batches.get(model_id)
                if batch is not None and batch.active:
                    self._step(model_id, batch)

    def _shutdown(self) -> None:
        for model_id in list(self._batches):
            batch = self._batches.pop(model_id)
            for act in batch.active.values():
                act.handle.deliver(UnavailableError("the local engine was shut down"))
            batch.generator.close()

    def _step(self, model_id: str, batch: _Batch) -> None:
        cancelled = [uid for uid, a in batch.active.items() if a.handle.cancelled.is_set()]
        if cancelled:
            batch.generator.remove(cancelled)
            for uid in cancelled:
                act = batch.active.pop(uid)
                act.handle.deliver(CancelledError("generation cancelled"))
            if not batch.active:
                return
        try:
            responses = batch.generator.next_generated()
        except Exception as exc:  # one failing step must not kill the thread for every model
            log.exception("generation step failed on %s", model_id)
            self._batches.pop(model_id, None)
            for act in batch.active.values():
                act.handle.deliver(UnavailableError(f"generation failed: {type(exc).__name__}: {exc}"))
            return
        now = time.perf_counter()
        finished_early: list[int] = []
        for r in responses:
            act = batch.active.get(r.uid)
            if act is None:
                continue
            if act.first_at is None:
                act.first_at = now
            act.last_at = now
            act.tokens += 1
            if r.token not in act.eos:
                act.detok.add_token(r.token)
                act.text += act.detok.last_segment
            if r.finish_reason is not None:
                act.detok.finalize()
                act.text += act.detok.last_segment
                reason = "stop" if r.finish_reason == "stop" else "length"
                if r.token in act.eos:
                    act.tokens -= 1  # the end-of-turn token is not part of the answer
                self._emit(act, final=True, reason=reason)
                batch.active.pop(r.uid, None)
            elif self._emit(act, final=False, reason=None):
                finished_early.append(r.uid)
                batch.active.pop(r.uid, None)
        if finished_early:
            batch.generator.remove(finished_early)

    def _emit(self, act: _Active, *, final: bool, reason: str | None) -> bool:
        """Send what is safe to send; True if a stop string ended the generation."""
        if act.stops:
            window_start = max(0, act.sent - max(len(s) for s in act.stops) + 1)
            hits = [i for i in (act.text.find(s, window_start) for s in act.stops) if i >= 0]
            if hits:
                cut = min(hits)
                if cut > act.sent:
                    act.handle.deliver(act.text[act.sent:cut])
                act.sent = cut
                self._finish(act, "stop")
                return True
            safe = len(act.text) if final else len(act.text) - max(len(s) for s in act.stops) + 1
        else:
            safe = len(act.text)
        if safe > act.sent:
            act.handle.deliver(act.text[act.sent:safe])
            act.sent = safe
        if final:
            self._finish(act, reason or "stop")
        return False

    def _finish(self, act: _Active, reason: str) -> None:
        act.done = True
        ttft = (act.first_at - act.submitted) if act.first_at is not None else None
        tps = None
        if act.first_at is not None and act.last_at is not None and act.tokens > 1 and act.last_at > act.first_at:
            tps = (act.tokens - 1) / (act.last_at - act.first_at)
        act.handle.deliver(Finished(reason, act.prompt_tokens, act.tokens, ttft, tps))


