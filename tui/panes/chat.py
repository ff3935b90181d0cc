"""Chat: a conversation streamed from the router. Every turn is written as it happens: the question
when it is sent, the answer every few seconds while it streams and once more at the end."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Input, Markdown

from engine.types import ChatRequest, EngineError, Message
from router.store import Conversation, Store
from tui import messages
from tui.db import DB_ERRORS, describe_db_error
from tui.explain import chain_text
from tui.panes.base import Hint, Pane, PaneStatus
from tui.widgets.chat_message import ChatMessage, printable
from tui.widgets.model_field import ModelField, RouteLine
from tui.widgets.prompt import PromptArea

log = logging.getLogger(__name__)

# How often a streaming answer is written, so a crash loses at most this much of it.
SAVE_EVERY_S = 2.0
# Load and queue times shorter than this go unsaid on the answer's line.
WORTH_SAYING_S = 0.1
# How long a question waits for its own write before it is asked anyway.
QUESTION_SAVE_WAIT_S = 2.0
UNFINISHED_NOTE = "unfinished: the app stopped before this answer ended"


def describe_answer(backend: str | None, model: str | None, usage: Any, note: str) -> str:
    parts = [f"{backend}/{model}" if backend else "no answer"]
    if note:
        parts.append(f"after {note}")
    if usage is not None:
        # A backend that reports no prompt count: the answer's tokens alone, not a made-up 0.
        parts.append(
            f"{usage.prompt_tokens}+{usage.completion_tokens} tokens"
            if usage.prompt_tokens
            else f"{usage.completion_tokens} tokens"
        )
        if usage.ttft_s is not None:
            parts.append(f"TTFT {usage.ttft_s * 1000:.0f} ms")
        # Of the TTFT: waiting for a place, and loading the model (the local engine says).
        if (usage.queued_s or 0) > WORTH_SAYING_S:
            parts.append(f"queued {usage.queued_s:.1f} s")
        if (usage.load_s or 0) > WORTH_SAYING_S:
            parts.append(f"loaded {model} in {usage.load_s:.1f} s")
        if usage.cached_tokens:
            parts.append(f"{usage.cached_tokens} prompt tokens from cache")
        if usage.tokens_per_s:
            parts.append(f"{usage.tokens_per_s:.1f} tok/s")
    return " · ".join(parts)


def stopped_line(backend: str | None, model: str | None, pieces: int, waiting_on: str) -> str:
    if pieces:
        return f"stopped · {backend}/{model} · {pieces} tokens so far"
    return "stopped before the first token" + (f" ({waiting_on})" if waiting_on else "")


def chat_request(**kw: Any) -> ChatRequest:
    """A ChatRequest from the TUI: the local user may name a model file by its path, and a person
    waiting at the screen goes before batch traffic (set where the engine has these fields)."""
    known = {f.name for f in dataclasses.fields(ChatRequest)}
    extra: dict[str, Any] = {"allow_model_paths": True, "priority": "high"}
    return ChatRequest(**kw, **{k: v for k, v in extra.items() if k in known})


@dataclass
class Turn:
    role: str
    content: str = ""
    meta: str = ""
    # done | unfinished (streaming, or the app stopped mid-answer) | stopped (Esc) | error
    state: str = "done"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.meta:
            d["meta"] = self.meta
        if self.state != "done":
            d["state"] = self.state
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Turn:
        state = str(d.get("state") or "done")
        meta = str(d.get("meta") or (UNFINISHED_NOTE if state == "unfinished" else ""))
        return cls(str(d.get("role", "user")), str(d.get("content") or ""), meta, state)


@dataclass
class ChatSession:
    """One conversation as shown, and what its writer needs: saved through the database thread,
    one write at a time, retried while the database refuses."""

    turns: list[Turn] = field(default_factory=list)
    conv_id: int | None = None
    created_at: float | None = None
    title: str = ""
    model: str = ""
    system_prompt: str = ""
    dirty: bool = False
    saving: bool = False
    failing: bool = False
    # Set while nothing is waiting to be written.
    written: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def from_conversation(cls, conv: Conversation) -> ChatSession:
        return cls(
            [Turn.from_dict(m) for m in conv.messages],
            conv.id,
            conv.created_at,
            conv.title,
            conv.model,
            conv.system_prompt,
        )

    def conversation(self) -> Conversation:
        return Conversation(
            title=self.title,
            model=self.model,
            messages=[t.to_dict() for t in self.turns],
            system_prompt=self.system_prompt,
            id=self.conv_id,
            created_at=self.created_at,
        )

    def context(self) -> list[Message]:
        """What the model sees: failed turns (an error, or stopped before any text) are left out
        with their question, since the model never answered them."""
        out: list[Message] = []
        for t in self.turns:
            if t.role == "assistant":
                if t.state == "error" or not t.content:
                    if out and out[-1].role == "user":
                        out.pop()
                    continue
                out.append(Message("assistant", t.content))
            else:
                out.append(Message("user", t.content))
        return out


class ChatPane(Pane):
    HELP_TITLE = "Chat"
    BINDINGS = [
        Binding("escape", "stop", "Stop", id="chat-stop"),
        Binding("ctrl+n", "new_chat", "New chat", id="chat-new"),
        Binding("ctrl+o", "open_chat", "Open chat", id="chat-open"),
        Binding("ctrl+t", "focus_model", "Model", id="chat-model"),
        Binding("ctrl+g", "copy_last", "Copy answer", id="chat-copy", show=False),
        # The prompt keeps the focus while reading back: these scroll the conversation from it.
        Binding("pageup", "scroll_conversation(-1)", "Scroll up", id="chat-page-up", show=False),
        Binding("pagedown", "scroll_conversation(1)", "Scroll down", id="chat-page-down", show=False),
    ]

    DEFAULT_CSS = """
    ChatPane #chat-settings { height: auto; }
    ChatPane #model { width: 2fr; max-width: 36; min-width: 14; }
    ChatPane #system { width: 3fr; min-width: 14; }
    ChatPane #temperature, ChatPane #max-tokens { width: 9; }
    ChatPane #chat-settings Input.-short { margin: 0 1 0 0; }
    ChatPane #conversation { height: 1fr; border: round $panel-lighten-2; padding: 0 1; }
    ChatPane #conversation:focus { border: double $accent; }
    """

    def __init__(self, workbench: Any, db: Any, **kw: Any) -> None:
        super().__init__(workbench, db, **kw)
        self.session = ChatSession()
        self._stream: Any = None
        self._busy = False
        self._request_id: str | None = None
        self._waiting_on = ""
        self._live: Turn | None = None
        # Text pieces (about one per token) of the answer streaming now.
        self.live_tokens = 0
        self._local_names: set[str] = set()
        self._recent: list[str] = []

    # ------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        with Horizontal(id="chat-settings"):
            yield ModelField(id="model", classes="tight")
            yield Input(placeholder="system prompt", id="system", classes="tight")
            yield Input("0.7", id="temperature", tooltip="temperature (0-2)", classes="tight")
            yield Input("512", id="max-tokens", tooltip="max tokens", classes="tight")
        yield RouteLine("", id="route")
        with VerticalScroll(id="conversation", can_focus=False):
            yield Hint("", id="chat-empty")
        yield PaneStatus("", id="chat-status")
        yield PromptArea(placeholder="Ask: Enter sends, ctrl+j new line", id="prompt")

    def on_mount(self) -> None:
        self.query_one("#conversation", VerticalScroll).anchor()
        self._show_empty_hint()
        self.load_names()

    @property
    def model_field(self) -> ModelField:
        return self.query_one("#model", ModelField)

    @property
    def prompt(self) -> PromptArea:
        return self.query_one("#prompt", PromptArea)

    @property
    def model(self) -> str:
        return self.model_field.value.strip()

    def _show_empty_hint(self) -> None:
        hint = self.query_one("#chat-empty", Hint)
        hint.display = not self.session.turns
        target = f" {self.model}" if self.model else ""
        hint.update(
            f"Type below and press Enter to ask{target}. ctrl+t: another model · ctrl+o: a saved chat · f10: every key."
        )

    # ------------------------------------------------------------ model names

    @work(exclusive=True, group="chat-names", exit_on_error=False)
    async def load_names(self) -> None:
        """Local models (a disk scan) and recent names (the database), off the screen's thread."""
        infos = await asyncio.to_thread(self.wb.local.models)
        local_first: list[str] = []
        for info in infos:
            local_first.extend([*info.aliases, info.id])
        self._local_names = set(local_first)

        def recent(store: Any) -> list[str]:
            names = [c.model for c in store.list_conversations(limit=50)]
            names += [r.model for r in store.recent_requests(limit=200)]
            return names

        try:
            recent_names = await self.db.run(recent)
        except DB_ERRORS as exc:
            recent_names = []
            log.warning("recent model names unavailable: %s", exc)
        self._recent = list(dict.fromkeys(self._recent + recent_names))
        try:
            rules = self.wb.router.rules()
        except DB_ERRORS as exc:
            rules = []
            self.db_failed("reading the rules", exc)
        exact = [r.pattern for r in rules if r.enabled and r.kind == "exact"]
        self.model_field.set_names([*self._recent, *local_first, *exact])
        if not self.model and not self.session.turns:
            first = local_first[0] if local_first else (self._recent[0] if self._recent else "")
            self.model_field.value = first
        self.show_route()
        self._show_empty_hint()

    @on(messages.ConfigChanged)
    def names_may_have_changed(self) -> None:
        # Rules, backends, or the list of local models (a rescan) changed.
        self.load_names()

    @on(messages.SnapshotsChanged)
    def breakers_changed(self, event: messages.SnapshotsChanged) -> None:
        if event.breakers_moved:
            self.show_route()

    @on(Input.Changed, "#model")
    def show_route(self) -> None:
        line = self.query_one("#route", RouteLine)
        name = self.model
        if not name:
            line.update("Type a model name: a local model, an alias, or any name a rule sends to a backend.")
            line.set_class(False, "-problem")
            return
        try:
            ex = self.wb.router.explain(name)
        except DB_ERRORS as exc:
            line.update(f"cannot read the rules: {describe_db_error(exc)}")
            line.set_class(True, "-problem")
            return
        text = chain_text(ex, self._local_names, self.wb.router.default_backend)
        line.update(text)
        line.set_class("nothing here can answer" in text.plain, "-problem")

    # ------------------------------------------------------------ asking

    def _number(self, wid: str, kind: type, lo: float, hi: float) -> Any:
        raw = self.query_one(f"#{wid}", Input).value.strip()
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"{wid.replace('-', ' ')}: {raw!r} is not a number") from None
        if not lo <= value <= hi:
            raise ValueError(f"{wid.replace('-', ' ')}: must be between {lo} and {hi}")
        return value

    @on(PromptArea.Submitted)
    async def submitted(self, event: PromptArea.Submitted) -> None:
        text = event.text.strip()
        if not text:
            return
        if self._busy:
            self.say("an answer is still streaming: press Esc to stop it first", error=True)
            return
        model = self.model
        if not model:
            self.say(
                "no model: type a name in the model field (ctrl+t), or fetch the demo model in Models (F2)", error=True
            )
            return
        try:
            temperature = self._number("temperature", float, 0.0, 2.0)
            max_tokens = self._number("max-tokens", int, 1, 100000)
        except ValueError as exc:
            self.say(str(exc), error=True)
            return
        self.prompt.remember(text)
        self.prompt.clear()
        session = self.session
        system = self.query_one("#system", Input).value.strip()
        if not session.turns:
            session.title = text.splitlines()[0][:60]
        session.model, session.system_prompt = model, system
        session.turns.append(Turn("user", text))
        context = ([Message("system", system)] if system else []) + session.context()
        request = chat_request(model=model, messages=context, temperature=temperature, max_tokens=max_tokens)
        answer = Turn("assistant", state="unfinished")
        session.turns.append(answer)
        self._show_empty_hint()
        box = self.query_one("#conversation", VerticalScroll)
        await box.mount(ChatMessage("user", text))
        widget = ChatMessage("assistant")
        await box.mount(widget)
        # The question is written before anything is asked: a crash from here on keeps it. (A
        # database that refuses does not stop the question: the writer keeps retrying.)
        self.request_save(session)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.written.wait(), QUESTION_SAVE_WAIT_S)
        if model not in self._recent:
            self._recent.insert(0, model)
            self.model_field.set_names([model, *self.model_field.names])
        self._busy = True
        self._live = answer
        self.live_tokens = 0
        self.say(f"asking {model}…")
        self.generate(session, request, answer, widget)

    @work(exclusive=True, group="chat", exit_on_error=False)
    async def generate(self, session: ChatSession, request: ChatRequest, turn: Turn, widget: ChatMessage) -> None:
        pieces: list[str] = []
        final = None
        backend = model = None
        state, meta = "done", ""
        stream = None
        # Made at the first text: Textual's MarkdownStream.stop() raises CancelledError when its task
        # never ran, which is what happens when the route fails before yielding anything.
        md_stream = None
        last_save = time.monotonic()
        try:
            stream = self.wb.router.route(request, front_end="tui")
            self._stream = stream
            self._request_id = stream.request_id
            first = next((s for s in stream.explanation.chain if not s.skipped), None)
            self._waiting_on = f"asking {first.backend}/{first.model}" if first else ""
            async for chunk in stream:
                if chunk.error is not None:
                    raise chunk.error
                backend, model = chunk.backend or backend, chunk.model or model
                if chunk.text:
                    piece = printable(chunk.text)
                    pieces.append(piece)
                    self.live_tokens = len(pieces)
                    md_stream = md_stream or Markdown.get_stream(widget.body)
                    await md_stream.write(piece)
                    if time.monotonic() - last_save >= SAVE_EVERY_S:
                        last_save = time.monotonic()
                        turn.content = "".join(pieces)
                        self.request_save(session)
                if chunk.finish_reason:
                    final = chunk
            usage = getattr(stream, "usage", None) or (final.usage if final else None)
            meta = describe_answer(backend, model, usage, stream.failover_note())
            self.say("")
        except EngineError as exc:
            state = "error"
            meta = f"error: {exc}" if not pieces else f"error after {len(pieces)} tokens from {backend}/{model}: {exc}"
            self.say(str(exc), error=True)
        except DB_ERRORS as exc:
            # The router could not read its rules or write its request log: what arrived stands.
            if pieces:
                meta = describe_answer(backend, model, final.usage if final else None, "") + " · not logged"
            else:
                state, meta = "error", f"error: the database failed: {describe_db_error(exc)}"
            self.db_failed("the request log", exc, "the answer is kept")
        except asyncio.CancelledError:
            # Esc: the worker is cancelled; closing the stream below stops the backend at once.
            state = "stopped"
            meta = stopped_line(backend, model, len(pieces), self._waiting_on)
            self.say("stopped")
        finally:
            if md_stream is not None:
                await md_stream.stop()
            if stream is not None:
                try:
                    await stream.aclose()
                except DB_ERRORS as exc:
                    self.db_failed("writing the request log", exc, "the answer is kept")
            self._stream = None
            self._request_id = None
        widget.set_meta(meta, error=state == "error")
        turn.content, turn.state, turn.meta = "".join(pieces), state, meta
        self._live = None
        self._busy = False
        self.request_save(session)
        # One full parse at the end: streamed appends can leave code fences half-rendered.
        await widget.body.update(turn.content or "_(no answer)_")

    @on(messages.RequestStatus)
    def request_status(self, event: messages.RequestStatus) -> None:
        if event.request_id == self._request_id:
            self._waiting_on = event.text
            self.say(event.text)

    async def stop_generation(self) -> bool:
        if not self._busy:
            return False
        # The worker owns the stream: cancelling it closes the stream in its finally block
        # (closing it from here would race the worker's own await on it).
        from textual.worker import WorkerCancelled, WorkerFailed

        for worker in self.workers.cancel_group(self, "chat"):
            try:
                await worker.wait()
            except (WorkerCancelled, WorkerFailed) as exc:
                log.debug("chat worker ended: %r", exc)
        return True

    async def action_stop(self) -> None:
        await self.stop_generation()

    # ------------------------------------------------------------ saving

    def request_save(self, session: ChatSession) -> None:
        session.dirty = True
        session.written.clear()
        if not session.saving:
            session.saving = True
            self.run_worker(self._save_loop(session), group="chat-save", exit_on_error=False)

    async def _save_loop(self, session: ChatSession) -> None:
        delay = 1.0
        try:
            while session.dirty:
                session.dirty = False
                conv = session.conversation()
                try:
                    saved = await self.db.run(partial(Store.save_conversation, conv=conv))
                except DB_ERRORS as exc:
                    session.dirty = True
                    if not session.failing:
                        session.failing = True
                        self.db_failed(
                            "saving the conversation",
                            exc,
                            "Retrying every few seconds; nothing is lost while the app runs",
                        )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 8.0)
                    continue
                session.conv_id, session.created_at = saved.id, saved.created_at
                if session.failing:
                    session.failing = False
                    self.notify("the conversation is saved again")
        finally:
            session.saving = False
            if not session.dirty:
                session.written.set()

    async def on_unmount(self) -> None:
        # Quitting mid-answer: what arrived is written, marked unfinished.
        session = self.session
        if not (session.dirty or self._busy) or not session.turns:
            return
        try:
            await self.db.run(lambda store: store.save_conversation(session.conversation()))
        except DB_ERRORS as exc:
            log.error("the conversation could not be saved at exit: %s", exc)

    # ------------------------------------------------------------ conversations

    async def _reset_view(self) -> None:
        await self.stop_generation()
        await self.query_one("#conversation", VerticalScroll).remove_children(ChatMessage)

    async def action_new_chat(self) -> None:
        await self._reset_view()
        self.session = ChatSession()
        self._show_empty_hint()
        self.say("new chat")
        self.prompt.focus()

    @on(messages.NewChat)
    async def new_chat_command(self) -> None:
        await self.action_new_chat()

    def action_open_chat(self) -> None:
        from tui.screens.conversations import ConversationPicker

        picker = ConversationPicker(self.db, current=self.session.conv_id)

        async def picked(conv_id: int | None) -> None:
            if self.session.conv_id in picker.deleted:
                # The open chat was deleted: what is on screen becomes a new, unsaved chat.
                self.session.conv_id = self.session.created_at = None
            if conv_id is not None:
                await self.open_conversation(conv_id)

        self.app.push_screen(picker, picked)

    @on(messages.OpenChat)
    def open_chat_command(self) -> None:
        self.action_open_chat()

    async def open_conversation(self, conv_id: int) -> None:
        try:
            conv = await self.db.run(lambda store: store.get_conversation(conv_id))
        except DB_ERRORS as exc:
            self.db_failed("opening the conversation", exc, "Press ctrl+o to try again")
            return
        if conv is None:
            self.say("that conversation no longer exists", error=True)
            return
        await self._reset_view()
        self.session = ChatSession.from_conversation(conv)
        self.query_one("#system", Input).value = conv.system_prompt
        if conv.model:
            self.model_field.value = conv.model
        for t in self.session.turns:
            if t.role == "user":
                self.prompt.remember(t.content)
        box = self.query_one("#conversation", VerticalScroll)
        await box.mount_all(
            [ChatMessage(t.role, t.content, t.meta, error=t.state == "error") for t in self.session.turns]
        )
        self._show_empty_hint()
        self.say(f"reopened: {conv.title}")

    # ------------------------------------------------------------ small actions

    def action_focus_model(self) -> None:
        self.model_field.focus()

    @on(PromptArea.Paging)
    def prompt_paging(self, event: PromptArea.Paging) -> None:
        self.action_scroll_conversation(event.direction)

    def action_scroll_conversation(self, direction: int) -> None:
        box = self.query_one("#conversation", VerticalScroll)
        if direction < 0:
            box.scroll_page_up()
        else:
            box.scroll_page_down()

    def action_copy_last(self) -> None:
        last = next((t for t in reversed(self.session.turns) if t.role == "assistant" and t.content), None)
        if last is None:
            self.say("nothing to copy yet", error=True)
            return
        self.app.copy_to_clipboard(last.content)
        self.say("copied the last answer to the clipboard")
