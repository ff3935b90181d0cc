"""Chat: a conversation streamed from the router, rendered as Markdown."""

from __future__ import annotations

import asyncio
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Label, Markdown, Select, Static

from engine.types import ChatRequest, EngineError, Message
from router.store import Conversation

# Model output may hold C0 control characters (random or confused models do): they must not reach
# the terminal as escape sequences.
_CONTROLS = {c: None for c in range(32) if chr(c) not in "\n\t"} | {0x7F: None}


def printable(text: str) -> str:
    return text.translate(_CONTROLS)


class ChatMessage(Vertical):
    """One message: a role label, the Markdown body, and (for answers) a meta line."""

    def __init__(self, role: str, text: str = "", meta: str = "") -> None:
        super().__init__(classes=f"message {role}")
        self.role = role
        self.text = text
        self._meta = meta

    def compose(self) -> ComposeResult:
        yield Label("You" if self.role == "user" else "Assistant", classes="role")
        yield Markdown(self.text)
        yield Static(self._meta, classes="meta")

    @property
    def body(self) -> Markdown:
        return self.query_one(Markdown)

    def set_meta(self, text: str) -> None:
        self._meta = text
        self.query_one(".meta", Static).update(text)


def describe_answer(backend: str | None, model: str | None, usage: Any, note: str) -> str:
    parts = [f"{backend}/{model}" if backend else "no answer"]
    if note:
        parts.append(f"after {note}")
    if usage is not None:
        parts.append(f"{usage.prompt_tokens}+{usage.completion_tokens} tokens")
        if usage.ttft_s is not None:
            parts.append(f"TTFT {usage.ttft_s * 1000:.0f} ms")
        if usage.tokens_per_s:
            parts.append(f"{usage.tokens_per_s:.1f} tok/s")
    return " · ".join(parts)


class ChatPane(Vertical):
    BINDINGS = [
        Binding("escape", "stop", "Stop", id="chat.stop"),
        Binding("ctrl+n", "new_chat", "New chat", id="chat.new"),
        Binding("ctrl+o", "open_chat", "Open chat", id="chat.open"),
        Binding("ctrl+y", "copy_last", "Copy answer", id="chat.copy"),
        # The prompt keeps the focus while reading back: these scroll the conversation from it.
        Binding("pageup", "scroll_conversation(-1)", "Scroll up", id="chat.page_up", show=False),
        Binding("pagedown", "scroll_conversation(1)", "Scroll down", id="chat.page_down", show=False),
    ]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.messages: list[Message] = []
        # The line under each answer (who answered, failover, speed), by index in `messages`: saved with
        # the conversation, so a reopened chat still says which backend answered what.
        self.metas: dict[int, str] = {}
        self.conversation: Conversation | None = None
        self._stream: Any = None

    @property
    def wb(self) -> Any:
        return self.app.workbench

    def compose(self) -> ComposeResult:
        with Horizontal(id="chat-settings"):
            yield Select([], prompt="model", id="model-select", allow_blank=True)
            yield Input(placeholder="system prompt", id="system")
            yield Input("0.7", id="temperature", classes="short", tooltip="temperature")
            yield Input("512", id="max-tokens", classes="short", tooltip="max tokens")
        yield VerticalScroll(id="conversation")
        yield Static("", id="chat-status")
        yield Input(placeholder="Ask something (Enter sends, Esc stops)", id="prompt")

    def on_mount(self) -> None:
        self.refresh_models()
        self.query_one("#conversation", VerticalScroll).anchor()

    def model_names(self) -> list[str]:
        names: list[str] = []
        for info in self.wb.local.models():
            names.extend([*info.aliases, info.id])
        for rule in self.wb.router.rules():
            if rule.enabled and rule.kind == "exact" and rule.pattern not in names:
                names.append(rule.pattern)
        return names

    def refresh_models(self) -> None:
        select = self.query_one("#model-select", Select)
        current = select.value
        names = self.model_names()
        select.set_options([(n, n) for n in names])
        if current in names:
            select.value = current
        elif names:
            select.value = names[0]

    @property
    def model(self) -> str | None:
        value = self.query_one("#model-select", Select).value
        return value if isinstance(value, str) else None

    def _number(self, wid: str, kind: type, lo: float, hi: float) -> Any:
        raw = self.query_one(f"#{wid}", Input).value.strip()
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"{wid.replace('-', ' ')}: {raw!r} is not a number") from None
        if not lo <= value <= hi:
            raise ValueError(f"{wid.replace('-', ' ')}: must be between {lo} and {hi}")
        return value

    def status(self, text: str, error: bool = False) -> None:
        widget = self.query_one("#chat-status", Static)
        widget.update(text)
        widget.set_class(error, "error")

    @on(Input.Submitted, "#prompt")
    async def submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self._stream is not None:
            self.status("an answer is still streaming: press Esc to stop it first", error=True)
            return
        if self.model is None:
            self.status("no model to ask: fetch the demo model in the Models pane (key 2)", error=True)
            return
        try:
            temperature = self._number("temperature", float, 0.0, 2.0)
            max_tokens = self._number("max-tokens", int, 1, 100000)
        except ValueError as exc:
            self.status(str(exc), error=True)
            return
        event.input.value = ""
        self.messages.append(Message("user", text))
        conversation = self.query_one("#conversation", VerticalScroll)
        await conversation.mount(ChatMessage("user", text))
        answer = ChatMessage("assistant")
        await conversation.mount(answer)
        system = self.query_one("#system", Input).value.strip()
        request = ChatRequest(model=self.model, messages=([Message("system", system)] if system else []) + self.messages,
                              temperature=temperature, max_tokens=max_tokens)
        self.status(f"asking {self.model}…")
        self.generate(request, answer)

    @work(exclusive=True, group="chat", exit_on_error=False)
    async def generate(self, request: ChatRequest, answer: ChatMessage) -> None:
        text: list[str] = []
        final = None
        stream = None
        # Made at the first text: Textual's MarkdownStream.stop() raises CancelledError when its task
        # never ran, which is what happens when the route fails before yielding anything.
        md_stream = None
        try:
            stream = self.wb.router.route(request, front_end="tui")
            self._stream = stream
            async for chunk in stream:
                if chunk.error is not None:
                    raise chunk.error
                if chunk.text:
                    piece = printable(chunk.text)
                    text.append(piece)
                    md_stream = md_stream or Markdown.get_stream(answer.body)
                    await md_stream.write(piece)
                if chunk.finish_reason:
                    final = chunk
            meta = describe_answer(final.backend if final else None, final.model if final else None,
                                   final.usage if final else None, stream.failover_note())
            self.status("")
        except EngineError as exc:
            meta = f"error: {exc}"
            self.status(str(exc), error=True)
        except asyncio.CancelledError:
            # Esc: the worker is cancelled; closing the stream below stops the backend at once.
            meta = "stopped"
            self.status("stopped")
        finally:
            if md_stream is not None:
                await md_stream.stop()
            if stream is not None:
                await stream.aclose()
            self._stream = None
        full = "".join(text)
        # One full parse at the end: streamed appends can leave code fences half-rendered.
        await answer.body.update(full or "_(no answer)_")
        answer.set_meta(meta)
        if full:
            self.messages.append(Message("assistant", full))
            self.metas[len(self.messages) - 1] = meta
        # Saved even when no answer came: the question is the user's work and must not be lost.
        self.save()

    async def stop_generation(self) -> bool:
        if self._stream is None:
            return False
        # The worker owns the stream: cancelling it closes the stream in its finally block
        # (closing it from here would race the worker's own await on it).
        from textual.worker import WorkerCancelled, WorkerFailed

        for worker in self.workers.cancel_group(self, "chat"):
            try:
                await worker.wait()
            except (WorkerCancelled, WorkerFailed) as exc:
                self.log(f"chat worker ended: {exc!r}")
        return True

    async def action_stop(self) -> None:
        await self.stop_generation()

    def save(self) -> None:
        if not self.messages:
            return
        title = self.messages[0].content[:60]
        conv = self.conversation or Conversation(title=title, model=self.model or "")
        conv.messages = [{"role": m.role, "content": m.content} | ({"meta": self.metas[i]} if i in self.metas else {})
                         for i, m in enumerate(self.messages)]
        conv.system_prompt = self.query_one("#system", Input).value
        conv.model = self.model or conv.model
        self.conversation = self.wb.store.save_conversation(conv)

    async def action_new_chat(self) -> None:
        await self.stop_generation()
        self.messages = []
        self.metas = {}
        self.conversation = None
        await self.query_one("#conversation", VerticalScroll).remove_children()
        self.status("new chat")
        self.query_one("#prompt", Input).focus()

    def action_open_chat(self) -> None:
        from tui.screens import ConversationPicker

        convs = self.wb.store.list_conversations()
        self.app.push_screen(ConversationPicker(convs, lambda c: f"{c.title}  ({c.model}, {len(c.messages)} msgs)"),
                             self.open_conversation)

    async def open_conversation(self, conv_id: int | None) -> None:
        if conv_id is None:
            return
        conv = self.wb.store.get_conversation(conv_id)
        if conv is None:
            return
        await self.action_new_chat()
        self.conversation = conv
        self.messages = [Message(m["role"], m["content"]) for m in conv.messages]
        self.metas = {i: m["meta"] for i, m in enumerate(conv.messages) if m.get("meta")}
        self.query_one("#system", Input).value = conv.system_prompt
        if conv.model in self.model_names():
            self.query_one("#model-select", Select).value = conv.model
        box = self.query_one("#conversation", VerticalScroll)
        await box.mount_all([ChatMessage(m.role, m.content, self.metas.get(i, "")) for i, m in enumerate(self.messages)])
        self.status(f"reopened: {conv.title}")

    def action_scroll_conversation(self, direction: int) -> None:
        box = self.query_one("#conversation", VerticalScroll)
        if direction < 0:
            box.scroll_page_up()
        else:
            box.scroll_page_down()

    def action_copy_last(self) -> None:
        last = next((m for m in reversed(self.messages) if m.role == "assistant"), None)
        if last is None:
            self.status("nothing to copy yet", error=True)
            return
        self.app.copy_to_clipboard(last.content)
        self.status("copied the last answer to the clipboard")
