"""The one MLX thread: loads, tokenization and batched generation.

All MLX work happens on this thread, so MLX never runs concurrently with itself and the
asyncio loop never waits on it. Requests on the same model share one mlx_lm BatchGenerator
(continuous batching): a request that arrives mid-generation joins the running batch, after
waiting its turn in the model's admission queue (scheduler.py) when the batch is full.

Each turn of the thread's loop runs the queued jobs, drops cancelled requests, admits waiting
ones (starting each from the longest cached prefix of its tokens, prompt_cache.py), and makes
one `BatchGenerator.next()` call per model: one decode step for the running answers plus one
prefill chunk for the prompts still being read. So a long prompt never freezes the other
streams, and a cancelled one leaves within one chunk. Tokens go back to the loop with
`call_soon_threadsafe`; what other threads may read is published as immutable snapshots.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from engine.local.pacing import MAX_CHUNK, PrefillPacer
from engine.local.prompt_cache import PromptCacheStore
from engine.local.scheduler import AdmissionQueue, high_overflow
from engine.types import CancelledError, UnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")
# How long one high request's prompt may pause the lower answers' decoding (see _holders).
HIGH_HOLD_S = 1.0


@contextlib.contextmanager
def paused_decoding(gen: Any, pause: bool) -> Iterator[None]:
    """One `BatchGenerator.next()` that reads prompts but gives the decoding sequences no step.

    mlx-lm's BatchGenerator always decodes before it reads prompts and has no switch for it, so
    the generation batch is set aside for the step (a private attribute: tests/local/
    test_high_priority.py turns red if an mlx-lm release renames it). Sequences whose prompt ends
    in this step start their own generation batch, which then joins the parked one, exactly as
    mlx-lm joins them itself.
    """
    parked = getattr(gen, "_generation_batch", None)
    if not pause or parked is None or not len(parked):
        yield
        return
    from mlx_lm.generate import GenerationBatch

    gen._generation_batch = GenerationBatch.empty(gen.model, gen.sampler)
    try:
        yield
    finally:
        fresh = gen._generation_batch
        gen._generation_batch = parked
        if len(fresh):
            parked.extend(fresh)


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
    queued_s: float | None = None
    load_s: float | None = None
    cached_tokens: int = 0
    prefill_chunks: int = 0


class GenerationHandle:
    """The loop side of one generation: a queue of str | Finished | EngineError."""

    def __init__(self, loop: asyncio.AbstractEventLoop, received: float | None = None) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.cancelled = threading.Event()
        # perf_counter() when the request reached the engine: TTFT and queue time count from here.
        self.received = time.perf_counter() if received is None else received
        # Written by the MLX thread only; read by tests and the engine.
        self.prefill_chunks = 0
        self.admitted = False
        self.prompt_tokens = 0  # set before the first token: the listener's message_start reports it
        # Called on the MLX thread after each prompt chunk with the chunks read so far; must not
        # block (it may set `cancelled`: the request then leaves before the next chunk).
        self.on_prefill_chunk: Callable[[int], None] | None = None

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
class Submission:
    """A request ready to run (model loaded, prompt rendered), waiting for a place in the batch."""

    handle: GenerationHandle
    model_id: str
    model: Any
    tokenizer: Any
    prompt: list[int]
    params: GenParams
    priority: str = "normal"
    load_s: float = 0.0
    # The router's status hook ("queued, 2 ahead"), called on the MLX thread when the place changes.
    on_status: Callable[[str], None] | None = None
    said_ahead: int = -1


@dataclass
class _Active:
    """Thread-side state of one generation."""

    handle: Any
    uid: int
    model_id: str
    detok: Any
    eos: frozenset[int]
    stops: tuple[str, ...]
    prompt_tokens: int
    received: float
    admitted: float = 0.0
    load_s: float = 0.0
    cached_tokens: int = 0
    priority: str = "normal"
    held_s: float = 0.0  # time lower answers were paused for this one's prompt (high only)
    prefilled: bool = False
    prefill_chunks: int = 0
    read_tokens: int = 0
    to_read: int = 0  # prompt tokens to prefill (the last one goes in with the first decode step)
    text: str = ""
    sent: int = 0
    tokens: int = 0
    first_at: float | None = None
    last_at: float | None = None
    done: bool = False


@dataclass
class _Batch:
    generator: Any
    queue: AdmissionQueue[Submission]
    active: dict[int, _Active] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelLoad:
    """Running and queued requests of one model."""

    model_id: str
    running: int
    queued: int
    max_running_seen: int


@dataclass(frozen=True)
class WorkerSnapshot:
    """What the MLX thread publishes for other threads after every turn of its loop."""

    models: tuple[ModelLoad, ...] = ()
    prompt_cache_bytes: int = 0
    prompt_cache_entries: int = 0
    steps: int = 0  # BatchGenerator.next() calls
    prefill_chunks: int = 0  # prompt chunks read (one per prompt per step)
    interleaved_steps: int = 0  # steps that read a prompt chunk and decoded tokens for others
    held_steps: int = 0  # steps that paused the decoding answers for a high request's prompt

    @property
    def running(self) -> int:
        return sum(m.running for m in self.models)

    @property
    def queued(self) -> int:
        return sum(m.queued for m in self.models)


class MLXWorker:
    """Owns the MLX thread. Jobs are plain callables run in submission order between steps."""

    def __init__(
        self,
        name: str = "mlx",
        *,
        prompt_cache: PromptCacheStore | None = None,
        max_batch: int = 8,
        prefill_step_s: float = 0.2,
        prefill_chunk_tokens: int = 0,
        cache_room: Callable[[], int] | None = None,
    ) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._batches: dict[str, _Batch] = {}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._name = name
        self._stopped = False
        self.prompt_cache = prompt_cache if prompt_cache is not None else PromptCacheStore(0)
        self.max_batch = max(1, max_batch)
        self.pacer = PrefillPacer(prefill_step_s, prefill_chunk_tokens)
        # Bytes the stored caches may take besides the models (the memory budget's share).
        self._cache_room = cache_room or (lambda: 1 << 62)
        self._max_seen: dict[str, int] = {}
        self._counts = {"steps": 0, "prefill_chunks": 0, "interleaved_steps": 0, "held_steps": 0}
        self._published = WorkerSnapshot()

    # ------------------------------------------------------------ any thread

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._stopped:
                raise UnavailableError("the local engine is shut down")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        self._ensure_thread()
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def job() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the awaiting caller, not lost
                fut.set_exception(exc)

        self._jobs.put(job)
        return fut

    async def run(self, fn: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self.submit(fn))

    def snapshot(self) -> WorkerSnapshot:
        """The last state the MLX thread published (an immutable object: safe from any thread)."""
        return self._published

    def active_count(self) -> int:
        return self._published.running

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopped = True
            thread = self._thread
        if thread is not None:
            self._jobs.put(None)
            thread.join(timeout)

    # ------------------------------------------------------------ MLX thread only

    def busy(self, model_id: str) -> bool:
        batch = self._batches.get(model_id)
        return bool(batch and (batch.active or len(batch.queue)))

    def enqueue(self, sub: Submission) -> None:
        """Queue a request for its model's batch; it is admitted at the next turn if there is room."""
        batch = self._batches.get(sub.model_id)
        if batch is not None and batch.generator.model is not sub.model:
            self.drop_model(sub.model_id)  # the model was loaded again: the old batch is stale
            batch = None
        if batch is None:
            batch = _Batch(self._make_generator(sub.model, sub.tokenizer), AdmissionQueue(self.max_batch))
            self._batches[sub.model_id] = batch
        batch.queue.push(sub, sub.priority, time.perf_counter())

    def _say_places(self, batch: _Batch) -> None:
        """Tell each waiting request how many are ahead of it, when that changed."""
        for ahead, sub in enumerate(batch.queue.in_order(time.perf_counter())):
            if sub.on_status is not None and sub.said_ahead != ahead:
                sub.said_ahead = ahead
                sub.on_status(f"queued, {ahead} ahead")

    def _make_generator(self, model: Any, tokenizer: Any) -> Any:
        from mlx_lm.generate import BatchGenerator

        places = self.max_batch + high_overflow(self.max_batch)
        # prefill_step_size is set before every step (pacing.py); the largest value here keeps the
        # prompt batch from splitting a chunk again inside one step.
        return BatchGenerator(
            model,
            stop_tokens=[[t] for t in sorted(tokenizer.eos_token_ids)],
            prefill_batch_size=places,
            completion_batch_size=places,
            prefill_step_size=max(MAX_CHUNK, self.pacer.fixed_chunk),
        )

    def drop_model(self, model_id: str) -> None:
        """Forget the model's batch and caches (before or after unloading it); its requests end
        with an error."""
        self.prompt_cache.drop_model(model_id)
        batch = self._batches.pop(model_id, None)
        if batch is not None:
            gone = [a.handle for a in batch.active.values()] + [s.handle for s in batch.queue.items()]
            for handle in gone:
                handle.deliver(UnavailableError(f"model {model_id} was unloaded during generation"))
            batch.generator.close()
        self._publish()

    def _run(self) -> None:
        while True:
            idle = not any(b.active or len(b.queue) for b in self._batches.values())
            if not self._run_jobs(block=idle):
                self._shutdown()
                return
            for model_id in list(self._batches):
                batch = self._batches.get(model_id)
                if batch is None:
                    continue
                self._drop_cancelled(batch)
                self._admit(model_id, batch)
                self._say_places(batch)
                if batch.active:
                    self._step(model_id, batch)
            self._publish()

    def _run_jobs(self, *, block: bool) -> bool:
        """Run the queued jobs (waiting for one if `block`); False when asked to stop."""
        try:
            job = self._jobs.get(block=block)
        except queue.Empty:
            return True
        while job is not None:
            job()
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return True
        return False

    def _publish(self) -> None:
        models = []
        for model_id, b in self._batches.items():
            models.append(ModelLoad(model_id, len(b.active), len(b.queue), self._max_seen.get(model_id, 0)))
        cache = self.prompt_cache.published
        self._published = WorkerSnapshot(tuple(models), cache.nbytes, cache.entries, **self._counts)

    def _shutdown(self) -> None:
        for model_id in list(self._batches):
            batch = self._batches.pop(model_id)
            for handle in [a.handle for a in batch.active.values()] + [s.handle for s in batch.queue.items()]:
                handle.deliver(UnavailableError("the local engine was shut down"))
            batch.generator.close()
        self.prompt_cache.clear()
        self._publish()
        if "mlx.core" in sys.modules:
            # Join this thread's MLX streams now. Left to the thread's own teardown they raced the
            # process exit: `chat --local` aborted ("terminate called without an active exception",
            # exit 134) in about half the runs here.
            import mlx.core as mx

            mx.synchronize()
            mx.clear_streams()

    def _drop_cancelled(self, batch: _Batch) -> None:
        waiting = batch.queue.remove_if(lambda s: s.handle.cancelled.is_set())
        if waiting:
            self._publish()
        for sub in waiting:
            sub.handle.deliver(CancelledError("generation cancelled"))
        cancelled = [uid for uid, a in batch.active.items() if a.handle.cancelled.is_set()]
        if cancelled:
            batch.generator.remove(cancelled)
            gone = [batch.active.pop(uid) for uid in cancelled]
            self._publish()
            for act in gone:
                act.handle.deliver(CancelledError("generation cancelled"))

    def _admit(self, model_id: str, batch: _Batch) -> None:
        now = time.perf_counter()
        while (sub := batch.queue.pop_next(len(batch.active), now)) is not None:
            try:
                self._insert(model_id, batch, sub, now)
            except Exception as exc:  # one request the generator refuses must not stop the others
                log.exception("could not start a generation on %s", model_id)
                sub.handle.deliver(UnavailableError(f"generation failed: {type(exc).__name__}: {exc}"))
        self._max_seen[model_id] = max(self._max_seen.get(model_id, 0), len(batch.active))

    def _insert(self, model_id: str, batch: _Batch, sub: Submission, now: float) -> None:
        hit = self.prompt_cache.fetch(model_id, sub.prompt)
        p = sub.params
        [uid] = batch.generator.insert(
            [hit.rest],
            max_tokens=[p.max_tokens],
            caches=[hit.cache] if hit.cache is not None else None,
            all_tokens=[sub.prompt[: hit.cached]],
            samplers=[make_sampler(p.temperature, p.top_p, p.seed)],
        )
        sub.handle.admitted = True
        batch.active[uid] = _Active(
            handle=sub.handle,
            uid=uid,
            model_id=model_id,
            detok=sub.tokenizer.detokenizer,
            eos=frozenset(sub.tokenizer.eos_token_ids),
            stops=p.stop,
            prompt_tokens=len(sub.prompt),
            received=sub.handle.received,
            admitted=now,
            load_s=sub.load_s,
            cached_tokens=hit.cached,
            priority=sub.priority,
            to_read=len(hit.rest) - 1,
        )

    def _step(self, model_id: str, batch: _Batch) -> None:
        gen = batch.generator
        remaining = [a.to_read - a.read_tokens for a in batch.active.values() if not a.prefilled]
        gen.prefill_step_size = self.pacer.chunk(model_id, remaining)
        holders = self._holders(batch)
        decoding = not holders and any(a.prefilled for a in batch.active.values())
        started = time.perf_counter()
        try:
            with paused_decoding(gen, bool(holders)):
                prompt_responses, responses = gen.next()
        except Exception as exc:  # one failing step must not kill the thread for every model
            log.exception("generation step failed on %s", model_id)
            self._batches.pop(model_id, None)
            gen.close()
            for act in batch.active.values():
                act.handle.deliver(UnavailableError(f"generation failed: {type(exc).__name__}: {exc}"))
            for sub in batch.queue.items():
                sub.handle.deliver(UnavailableError(f"generation failed: {type(exc).__name__}: {exc}"))
            return
        elapsed = time.perf_counter() - started
        self._counts["steps"] += 1
        for act in holders:
            act.held_s += elapsed
        if holders:
            self._counts["held_steps"] += 1
        chunks = read = 0
        for pr in prompt_responses:
            reader = batch.active.get(pr.uid)
            if reader is None:
                continue
            if pr.end_of_prompt:
                reader.prefilled = True
                continue
            chunks += 1
            read += pr.progress[0] - reader.read_tokens
            reader.read_tokens = pr.progress[0]
            reader.prefill_chunks += 1
            reader.handle.prefill_chunks = reader.prefill_chunks
            if reader.handle.on_prefill_chunk is not None:
                reader.handle.on_prefill_chunk(reader.prefill_chunks)
        if read > 0:
            log.debug("%s: read %d prompt tokens (chunk %d) in %.3f s", model_id, read, gen.prefill_step_size, elapsed)
        self.pacer.record(model_id, elapsed, read, decoded=decoding and bool(responses))
        self._counts["prefill_chunks"] += chunks
        if chunks and responses:
            self._counts["interleaved_steps"] += 1
        self._take_tokens(model_id, batch, responses)

    @staticmethod
    def _holders(batch: _Batch) -> list[_Active]:
        """High requests still before their first token, for which the lower answers pause.

        The person at the TUI waits on this prompt; an agent's answer losing a few steps does not
        matter. Each high request may pause the others for HIGH_HOLD_S at most, so a long high
        prompt still reads interleaved with them after that (it never freezes them whole).
        """
        lower_decoding = any(a.prefilled and a.priority != "high" for a in batch.active.values())
        if not lower_decoding:
            return []
        return [a for a in batch.active.values() if a.priority == "high" and not a.prefilled and a.held_s < HIGH_HOLD_S]

    def _take_tokens(self, model_id: str, batch: _Batch, responses: list[Any]) -> None:
        now = time.perf_counter()
        finals: list[tuple[_Active, str]] = []
        stopped_by_text: list[_Active] = []
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
                if r.token in act.eos:
                    act.tokens -= 1  # the end-of-turn token is not part of the answer
                batch.active.pop(r.uid, None)
                self._keep_cache(model_id, r.all_tokens, r.prompt_cache)
                finals.append((act, "stop" if r.finish_reason == "stop" else "length"))
            elif self._emit(act, final=False, reason=None):
                stopped_by_text.append(act)
                batch.active.pop(r.uid, None)
        if stopped_by_text:
            kept = batch.generator.remove(
                [a.uid for a in stopped_by_text], return_prompt_caches=self.prompt_cache.enabled
            )
            for cache, tokens in kept.values():
                self._keep_cache(model_id, tokens, cache)
        if finals or stopped_by_text:
            # Publish first: whoever reads a final chunk finds its place free and its cache kept.
            self._publish()
        for act, reason in finals:
            self._emit(act, final=True, reason=reason)
        for act in stopped_by_text:
            self._finish(act, "stop")

    def _keep_cache(self, model_id: str, tokens: list[int] | None, cache: list[Any] | None) -> None:
        """Store a finished sequence's cache (it holds exactly `tokens`) for the next turn."""
        if not self.prompt_cache.enabled or not tokens or not cache:
            return
        import mlx.core as mx

        # Materialise the copy now, so the batch's large arrays are not kept alive through it.
        mx.eval([c.state for c in cache])
        self.prompt_cache.insert(model_id, list(tokens), cache)
        self.prompt_cache.trim_to(self._cache_room())

    def _emit(self, act: _Active, *, final: bool, reason: str | None) -> bool:
        """Send what is safe to send; True if a stop string ended the generation (the caller then
        finishes it)."""
        if act.stops:
            window_start = max(0, act.sent - max(len(s) for s in act.stops) + 1)
            hits = [i for i in (act.text.find(s, window_start) for s in act.stops) if i >= 0]
            if hits:
                cut = min(hits)
                if cut > act.sent:
                    act.handle.deliver(act.text[act.sent : cut])
                act.sent = cut
                return True
            safe = len(act.text) if final else len(act.text) - max(len(s) for s in act.stops) + 1
        else:
            safe = len(act.text)
        if safe > act.sent:
            act.handle.deliver(act.text[act.sent : safe])
            act.sent = safe
        if final:
            self._finish(act, reason or "stop")
        return False

    def _finish(self, act: _Active, reason: str) -> None:
        act.done = True
        ttft = (act.first_at - act.received) if act.first_at is not None else None
        tps = None
        if act.first_at is not None and act.last_at is not None and act.tokens > 1 and act.last_at > act.first_at:
            tps = (act.tokens - 1) / (act.last_at - act.first_at)
        queued = max(0.0, act.admitted - act.received - act.load_s) if act.admitted else None
        act.handle.deliver(
            Finished(
                reason,
                act.prompt_tokens,
                act.tokens,
                ttft,
                tps,
                queued,
                act.load_s,
                act.cached_tokens,
                act.prefill_chunks,
            )
        )
