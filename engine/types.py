"""The one canonical chat vocabulary: requests, chunks, results, usage, errors.

Every front end (TUI, OpenAI/Anthropic listener) and every backend (local MLX, cloud)
speaks these types; wire formats are translated only at the edges (engine/protocol/).
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")

# "error" and "cancelled" only ever appear on a final chunk that carries `error`.
FinishReason = Literal["stop", "length", "tool_calls", "error", "cancelled"]


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call (OpenAI `tools[].function`, Anthropic `tools[]`)."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True)
class ToolCall:
    """A complete tool call made by the assistant; `arguments` is a JSON text."""

    id: str
    name: str
    arguments: str = "{}"


@dataclass(frozen=True)
class Attachment:
    """A non-text input part (an image, a PDF). Only a backend that can read it accepts it; the
    others answer 400 rather than silently dropping what the user showed the model."""

    kind: Literal["image", "document"]
    media_type: str | None = None
    data: str | None = None  # base64
    url: str | None = None


@dataclass(frozen=True)
class Message:
    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    # For role == "tool": which call this message answers, and whether the tool failed.
    tool_call_id: str | None = None
    name: str | None = None
    attachments: tuple[Attachment, ...] = ()
    is_error: bool = False


@dataclass(frozen=True)
class Passthrough:
    """What a client sent that the canonical request does not model, kept for an upstream that
    speaks the client's own protocol: an Anthropic client's `thinking`, `metadata`,
    `context_management`, `cache_control` marks, mid-conversation system turns, thinking blocks
    with their signatures, and its `anthropic-beta` header. Backends of another protocol ignore it."""

    protocol: Literal["anthropic", "openai"]
    # Top-level body fields as the client sent them (model and stream excluded: the route decides).
    fields: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


# tool_choice: "auto" | "none" | "required" | {"name": "<function>"}
ToolChoice = str | dict[str, str] | None


@dataclass
class ChatRequest:
    model: str
    messages: list[Message]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    stream: bool = True
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: ToolChoice = None
    # Free-form request metadata (front end, protocol, request id); never sent upstream.
    metadata: dict[str, Any] = field(default_factory=dict)
    passthrough: Passthrough | None = None
    # True only for the local user (TUI, CLI): the local engine may then read `model` as a file or
    # folder path. Requests from the network leave it False, so a name is only ever a known model.
    allow_model_paths: bool = False
    # "high" | "normal" | "low": the order of the local engine's queue (TUI and CLI chat send high).
    priority: str = "normal"

    def require_text_only(self, backend: str) -> None:
        """The 400 of a backend that cannot see, if any message carries an image or a document."""
        for i, m in enumerate(self.messages):
            if m.attachments:
                kinds = " and ".join(sorted({a.kind for a in m.attachments}))
                raise RejectedError(
                    f"messages[{i}] has {kinds} content, which backend {backend!r} cannot read; "
                    "route this model to a backend that can (e.g. anthropic)",
                    backend=backend,
                    status=400,
                )

    def validate(self) -> None:
        """Raise RejectedError (status 400) with a field-level message if the request is unusable."""
        if not isinstance(self.model, str) or not self.model.strip():
            raise RejectedError("model: must be a non-empty string", status=400)
        if not self.messages:
            raise RejectedError("messages: at least one message is required", status=400)
        for i, m in enumerate(self.messages):
            if m.role not in ROLES:
                raise RejectedError(f"messages[{i}].role: unknown role {m.role!r}", status=400)
        if self.max_tokens is not None and self.max_tokens < 1:
            raise RejectedError("max_tokens: must be at least 1", status=400)
        if self.temperature is not None and not (0.0 <= self.temperature <= 2.0):
            raise RejectedError("temperature: must be between 0 and 2", status=400)
        if self.top_p is not None and not (0.0 < self.top_p <= 1.0):
            raise RejectedError("top_p: must be in (0, 1]", status=400)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None  # time to first token, seconds
    tokens_per_s: float | None = None  # decode speed (completion tokens / decode time)
    # Local engine: of ttft_s, the time spent waiting (for the MLX thread or a place in the batch)
    # and loading the model; prompt tokens served from the prompt cache instead of prefilled.
    queued_s: float | None = None
    load_s: float | None = None
    cached_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a streamed tool call; pieces with the same index belong together."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""  # a fragment of the JSON arguments text


@dataclass(frozen=True)
class ThinkingDelta:
    """A piece of a reasoning block; pieces with the same index belong together.

    `signature` (and `redacted`, an encrypted block) are Anthropic's opaque proofs: a client must
    send the block back with them, verbatim, on its next turn when it used tools.
    """

    index: int
    text: str = ""
    signature: str = ""
    redacted: str | None = None


@dataclass
class Chunk:
    text: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    thinking: list[ThinkingDelta] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    # Which backend and model produced the chunk (set by the backend; the router keeps it).
    backend: str | None = None
    model: str | None = None
    # Only on a final chunk that ends a stream in failure after output began.
    error: EngineError | None = None


@dataclass
class ChatResult:
    text: str
    finish_reason: FinishReason | None
    usage: Usage
    tool_calls: list[ToolCall] = field(default_factory=list)
    backend: str | None = None
    model: str | None = None
    # Whole reasoning blocks, in order (each delta holds a block's full text and signature).
    thinking: list[ThinkingDelta] = field(default_factory=list)


async def collect(chunks: AsyncIterator[Chunk]) -> ChatResult:
    """Fold a chunk stream into one result; an error chunk is raised as its error."""
    text: list[str] = []
    calls: dict[int, dict[str, str]] = {}
    thoughts: dict[int, ThinkingDelta] = {}
    finish: FinishReason | None = None
    usage = Usage()
    backend = model = None
    async for c in chunks:
        if c.error is not None:
            raise c.error
        text.append(c.text)
        for d in c.tool_calls:
            slot = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
            slot["id"] = d.id or slot["id"]
            slot["name"] = d.name or slot["name"]
            slot["arguments"] += d.arguments
        for t in c.thinking:
            had = thoughts.get(t.index, ThinkingDelta(t.index))
            thoughts[t.index] = ThinkingDelta(
                t.index,
                had.text + t.text,
                had.signature + t.signature,
                t.redacted if t.redacted is not None else had.redacted,
            )
        finish = c.finish_reason or finish
        usage = c.usage or usage
        backend = c.backend or backend
        model = c.model or model
    return ChatResult(
        text="".join(text),
        finish_reason=finish,
        usage=usage,
        tool_calls=[ToolCall(**calls[i]) for i in sorted(calls)],
        backend=backend,
        model=model,
        thinking=[thoughts[i] for i in sorted(thoughts)],
    )


# ---------------------------------------------------------------- errors


class EngineError(Exception):
    """Base of the error kinds the router acts on.

    unavailable: the backend cannot serve now (fail over); rejected: the request itself is
    wrong (do not fail over); cancelled: the caller stopped it.
    """

    kind: ClassVar[str] = "error"
    default_status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        backend: str | None = None,
        status: int | None = None,
        upstream_message: str | None = None,
        attempts: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.backend = backend
        self.status = status if status is not None else self.default_status
        self.upstream_message = upstream_message
        self.attempts = attempts

    def __str__(self) -> str:
        where = f"{self.backend}: " if self.backend else ""
        return f"{where}{self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, backend={self.backend!r}, "
            f"status={self.status!r}, attempts={self.attempts!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "backend": self.backend,
            "status": self.status,
            "upstream_message": self.upstream_message,
            "attempts": self.attempts,
        }


class UnavailableError(EngineError):
    kind: ClassVar[str] = "unavailable"
    default_status: ClassVar[int] = 503


class RejectedError(EngineError):
    kind: ClassVar[str] = "rejected"
    default_status: ClassVar[int] = 400


class ModelNotFoundError(RejectedError):
    default_status: ClassVar[int] = 404


class ContextLengthError(RejectedError):
    """The prompt does not fit the model's context window (detected before any prefill)."""

    def __init__(self, prompt_tokens: int, context_length: int, model: str, *, backend: str | None = None) -> None:
        super().__init__(
            f"the prompt is {prompt_tokens} tokens but {model} has a context of {context_length} tokens "
            "(prompt and answer together); shorten the conversation",
            backend=backend,
            status=400,
        )
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


@dataclass(frozen=True)
class ModelLimits:
    """What one local model can take: prompt and answer share `context_length` tokens, so an answer
    is at most `max_output_tokens` (the context minus at least one prompt token)."""

    model: str
    context_length: int

    @property
    def max_output_tokens(self) -> int:
        return max(1, self.context_length - 1)


class CancelledError(EngineError):
    kind: ClassVar[str] = "cancelled"
    default_status: ClassVar[int] = 499


# ---------------------------------------------------------------- backends


@dataclass
class BreakerEvent:
    """A circuit breaker changed state (published for the health pane)."""

    backend: str
    old: str  # "closed" | "open" | "half-open"
    new: str
    at: float = field(default_factory=time.time)
    last_error: str | None = None


@dataclass
class BackendSnapshot:
    """What the UI shows for one backend."""

    name: str
    kind: str  # "local" | "openai" | "anthropic" | "openai-compatible"
    state: str = "closed"  # breaker state; the local engine is always "closed"
    consecutive_failures: int = 0
    fail_max: int = 0
    seconds_to_half_open: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    requests: int = 0
    errors: int = 0
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    latency_p99_s: float | None = None
    recent_latencies_s: list[float] = field(default_factory=list)
    # The local engine: sequences generating now, and requests waiting for a place in a batch.
    running: int = 0
    queued: int = 0


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest rank: the smallest sample with at least q of the samples at or below it."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]


BreakerListener = Callable[[BreakerEvent], None]


@runtime_checkable
class Backend(Protocol):
    """Anything the router can send a request to."""

    name: str
    kind: str

    def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        """Stream the answer. Raises an EngineError before the first chunk if it cannot serve;
        after the first chunk, a failure is raised from the iterator. Closing the iterator
        (aclose) cancels the work upstream or on the MLX thread."""
        ...

    def snapshot(self) -> BackendSnapshot: ...

    async def aclose(self) -> None: ...
