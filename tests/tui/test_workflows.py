"""Pilot tests of the workflows, on the real router, the tiny model and the fake upstream."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from engine.config import EngineConfig
from router.config import AppConfig
from router.rules import Rule
from router.store import BackendRecord
from tests.fixtures.fake_upstream import OPENAI_PATH
from tests.tui.helpers import ask, make_app, wait_for
from tui.app import WorkbenchApp
from tui.panes.chat import ChatPane
from tui.widgets.backend_card import BackendCard
from tui.widgets.chat_message import ChatMessage


def turns(chat: ChatPane) -> list:
    return chat.session.turns


def answered(chat: ChatPane, n: int) -> bool:
    """n turns, the last one a finished answer."""
    t = chat.session.turns
    return len(t) == n and t[-1].role == "assistant" and t[-1].state != "unfinished"


async def test_chat_streams_an_answer_from_the_tiny_model(tmp_path: Path, tiny_models_dir: Path) -> None:
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        chat = app.query_one(ChatPane)
        app.query_one("#max-tokens").value = "12"
        await ask(pilot, "Hello world", model="tiny-llama-mlx")
        await wait_for(pilot, lambda: answered(chat, 2) and not chat.session.saving)
        answer = list(app.query(ChatMessage))[-1]
        assert turns(chat)[-1].content
        assert "local/tiny-llama-mlx" in answer.meta and "tokens" in answer.meta
        [conv] = app.workbench.store.list_conversations()
        assert [m["role"] for m in conv.messages] == ["user", "assistant"]
        assert app.workbench.store.recent_requests()[0].status == "ok"


async def test_a_saved_chat_reopens_with_its_answers_and_who_gave_them(tmp_path: Path, tiny_models_dir: Path) -> None:
    from tui.screens.conversations import ConversationPicker

    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        chat = app.query_one(ChatPane)
        app.query_one("#max-tokens").value = "8"
        app.query_one("#system").value = "Be brief."
        await ask(pilot, "Hello world", model="tiny-llama-mlx")
        await wait_for(pilot, lambda: answered(chat, 2) and not chat.session.saving)
        answer, meta = turns(chat)[1].content, list(app.query(ChatMessage))[-1].meta
        assert "local/tiny-llama-mlx" in meta
        await pilot.press("ctrl+n")
        assert not app.query(ChatMessage) and app.query_one("#system").value == "Be brief."
        app.query_one("#system").value = ""
        await pilot.press("ctrl+o")
        assert isinstance(app.screen, ConversationPicker)
        await wait_for(pilot, lambda: app.screen.loaded, timeout=5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(app.query(ChatMessage)) == 2, timeout=5)
        shown = list(app.query(ChatMessage))
        assert [(m.role, m.text) for m in shown] == [("user", "Hello world"), ("assistant", answer)]
        assert shown[1].meta == meta, "the reopened answer lost the line saying who answered it"
        assert app.query_one("#system").value == "Be brief."
        # The next question continues the same saved conversation, not a new one.
        await ask(pilot, "And again")
        await wait_for(pilot, lambda: answered(chat, 4) and not chat.session.saving)
        [conv] = app.workbench.store.list_conversations()
        assert [m["role"] for m in conv.messages] == ["user", "assistant", "user", "assistant"]
        assert conv.messages[1]["meta"] == meta and "local/tiny-llama-mlx" in conv.messages[3]["meta"]


async def test_escape_stops_a_stream_and_keys_stay_live(
    tmp_path: Path, tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlx_lm.models import llama

    # The tiny model writes its whole 512-token context in about a second; slowed to ~20 ms a step, the
    # stream lasts long enough to switch panes and stop it, whatever the machine's speed.
    forward = llama.Model.__call__
    steps: list[float] = []

    def slow_forward(self, *args, **kwargs):
        steps.append(time.perf_counter())
        time.sleep(0.02)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(llama.Model, "__call__", slow_forward)
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        chat = app.query_one(ChatPane)
        await app.workbench.local.load("tiny-llama-mlx")
        app.query_one("#model").value = "tiny-llama-mlx"
        app.query_one("#max-tokens").value = "5000"
        # Greedy on this prompt runs to the tiny model's 512-token context.
        app.query_one("#temperature").value = "0"
        app.query_one("#prompt").load_text("alpha beta gamma")
        # simulate_key, not pilot.press: press waits for the app to go idle, which may be after the answer.
        app.simulate_key("enter")
        await wait_for(pilot, lambda: chat._stream is not None and app.workbench.local._worker.active_count() == 1)
        # Keys typed during the stream are handled at once (simulate_key: no waiting for idle).
        t0 = time.perf_counter()
        app.simulate_key("f3")
        await wait_for(pilot, lambda: app.query_one("TabbedContent").active == "rules", timeout=5)
        switch_s = time.perf_counter() - t0
        app.simulate_key("f1")
        await wait_for(pilot, lambda: app.query_one("TabbedContent").active == "chat", timeout=5)
        assert chat._stream is not None, "the answer ended before Esc could stop it"
        app.simulate_key("escape")
        await wait_for(pilot, lambda: chat._stream is None, timeout=5)
        await wait_for(pilot, lambda: app.workbench.local._worker.active_count() == 0, timeout=2)
        assert app.workbench.store.recent_requests()[0].status == "client_gone"
        await wait_for(pilot, lambda: "stopped" in list(app.query(ChatMessage))[-1].meta, timeout=5)
        assert switch_s < 1.0, f"switching panes took {switch_s:.2f} s during a stream"
        assert 1 < len(steps) < 512, "the slowed forward pass was not the one generating"


async def test_add_rule_in_the_form_then_explain_and_route(tmp_path: Path, tiny_models_dir: Path) -> None:
    from engine.types import ChatRequest, Message, collect

    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        await pilot.press("a")
        form = app.screen
        form.query_one("#pattern").value = "my-alias"
        form.query_one("#model").value = "tiny-llama-mlx"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.workbench.store.list_rules(), timeout=5)
        [rule] = app.workbench.store.list_rules()
        assert (rule.pattern, rule.backend, rule.model) == ("my-alias", "local", "tiny-llama-mlx")
        app.query_one("#try-model").value = "my-alias"
        await wait_for(pilot, lambda: f"rule #{rule.id}" in str(app.query_one("#explain").render()), timeout=5)
        result = await collect(
            app.workbench.router.route(ChatRequest(model="my-alias", messages=[Message("user", "hi")], max_tokens=3))
        )
        assert result.model == "tiny-llama-mlx"


async def test_bad_input_in_forms_shows_an_error_and_changes_nothing(tmp_path: Path, tiny_models_dir: Path) -> None:
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        await pilot.press("a")
        form = app.screen
        form.query_one("#pattern").value = "re:gpt-("
        await pilot.pause()
        assert "invalid regular expression" in str(form.query_one("#form-error").render())
        assert form.query_one("#save").disabled
        await pilot.press("ctrl+s")
        form.query_one("#pattern").value = "ok"
        form.query_one("#fallbacks").value = "ghost"
        await pilot.pause()
        assert "unknown backend 'ghost'" in str(form.query_one("#form-error").render())
        form.query_one("#fallbacks").value = ""
        form.query_one("#priority").value = "high"
        await pilot.pause()
        assert "priority" in str(form.query_one("#form-error").render())
        await pilot.press("escape")
        await pilot.pause()
        assert app.workbench.store.list_rules() == []
        await pilot.press("b")
        form = app.screen
        form.query_one("#name").value = "x"
        form.query_one("#base_url").value = "ftp://nowhere"
        await pilot.pause()
        assert form.query_one("#save").disabled and "http" in str(form.query_one("#form-error").render())
        await pilot.press("escape")
        # A bad temperature in the chat is a message, not a request.
        await pilot.press("f1")
        app.query_one("#temperature").value = "hot"
        await ask(pilot, "hi")
        await pilot.pause()
        assert "not a number" in str(app.query_one("#chat-status").render())
        assert app.workbench.store.list_backends() == [] and app.workbench.store.recent_requests() == []


async def test_failing_backend_turns_its_card_and_dot_red(tmp_path: Path, tiny_models_dir: Path, fake_upstream) -> None:
    from engine.types import ChatRequest, Message, UnavailableError, collect

    fake_upstream.set_default(OPENAI_PATH, 500)
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        wb = app.workbench
        wb.store.set_cloud_routing(True)
        wb.store.save_backend(
            BackendRecord(
                "openai", "openai", fake_upstream.openai_url, {"retries": 0, "fail_max": 1, "reset_timeout": 60}
            )
        )
        wb.store.add_rule(Rule("gpt-*", "openai"))
        await pilot.press("f4")
        await wait_for(pilot, lambda: app.query("#card-openai"))
        await wait_for(pilot, lambda: app.query_one("#card-openai", BackendCard).has_class("state-closed"), timeout=5)
        with pytest.raises(UnavailableError):
            await collect(wb.router.route(ChatRequest(model="gpt-4o", messages=[Message("user", "hi")])))
        await wait_for(pilot, lambda: app.query_one("#card-openai", BackendCard).has_class("state-open"), timeout=10)
        assert "○ openai" in app.status_markup
        app.query_one("#card-openai", BackendCard).focus()
        await pilot.press("r")
        await wait_for(pilot, lambda: app.query_one("#card-openai", BackendCard).has_class("state-closed"), timeout=5)
        await pilot.press("t")
        await pilot.press("y")
        await wait_for(pilot, lambda: wb.backends()["openai"].breaker_state == "open", timeout=5)


async def test_toggle_the_listener_and_reach_it(tmp_path: Path, tiny_models_dir: Path) -> None:
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: app.listener_running, timeout=10)
        await wait_for(pilot, lambda: "listen" in app.status_markup, timeout=5)
        async with httpx.AsyncClient(timeout=30) as c:
            r = await c.get(app.listener.url + "/health")
        assert r.status_code == 200 and r.json()["status"] == "ok"
        assert app.status_state.listener_url == app.listener.url
        url = app.listener.url
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: not app.listener_running, timeout=10)
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(timeout=5) as c:
                await c.get(url + "/health")


async def test_listener_port_in_use_is_a_notification(tmp_path: Path, tiny_models_dir: Path) -> None:
    import socket

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    cfg = AppConfig(
        engine=EngineConfig(data_dir=tmp_path / "d", model_dirs=[tiny_models_dir], scan_hf_cache=False),
        listener_port=blocker.getsockname()[1],
    )
    app = WorkbenchApp(cfg)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("ctrl+l")
            # The failed start is said by the listener action once it has run; pilot.pause() does
            # not wait for that. Wait for the notice, then check the listener is not running.
            await wait_for(pilot, lambda: any("in use" in n.message for n in app._notifications), timeout=10)
            assert not app.listener_running
    finally:
        blocker.close()


@pytest.mark.parametrize("pane", ["models", "rules", "health", "requests"])
async def test_a_pane_chosen_right_at_start_stays_chosen(tmp_path: Path, tiny_models_dir: Path, pane: str) -> None:
    # The first tab's activation and the start-up focus arrive after mount; they used to pull the
    # tabs back to the chat when a pane was chosen in the first moments (as the palette or F-keys do).
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        app.action_show_pane(pane)
        for _ in range(4):
            await pilot.pause()
        assert app.query_one("TabbedContent").active == pane
        assert app.focused is not None and app.query_one(f"TabPane#{pane}") in app.focused.ancestors


async def test_latency_sparkline_appears_once_there_is_a_trend(tmp_path: Path, tiny_models_dir: Path) -> None:
    from textual.widgets import Sparkline

    from engine.types import ChatRequest, Message, collect

    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f4")
        await wait_for(pilot, lambda: app.query("#card-local"))
        spark = app.query_one("#card-local", BackendCard).query_one(Sparkline)
        request = ChatRequest(model="tiny-llama-mlx", messages=[Message("user", "hi")], max_tokens=2)
        await collect(app.workbench.router.route(request))
        await wait_for(pilot, lambda: "requests 1" in str(app.query_one("#card-local .card-body").render()), timeout=5)
        assert not spark.display, "one latency sample drew a sparkline"
        await collect(app.workbench.router.route(request))
        await wait_for(pilot, lambda: spark.display and len(spark.data) == 2, timeout=5)


async def test_a_question_that_got_no_answer_is_still_saved(tmp_path: Path, tiny_models_dir: Path) -> None:
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        chat = app.query_one(ChatPane)
        await ask(pilot, "Is anyone there?", model="ghost")
        await wait_for(pilot, lambda: answered(chat, 2) and not chat.session.saving)
        assert "error" in list(app.query(ChatMessage))[-1].meta
        assert "ghost" in str(app.query_one("#chat-status").render())
        [conv] = app.workbench.store.list_conversations()
        assert conv.messages[0] == {"role": "user", "content": "Is anyone there?"}
        assert conv.messages[1]["state"] == "error" and "ghost" in conv.messages[1]["meta"]
        # The chat is not left waiting on the failed answer: the next question goes through.
        app.query_one("#max-tokens").value = "4"
        await ask(pilot, "And now?", model="tiny-llama-mlx")
        await wait_for(pilot, lambda: answered(chat, 4), timeout=20)
        assert turns(chat)[-1].state == "done"


async def test_the_rule_form_scrolls_to_its_buttons_at_80x24(tmp_path: Path, tiny_models_dir: Path) -> None:
    from textual.widgets import Button

    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f3", "a")
        form = app.screen
        form.query_one("#pattern").value = "at-80x24"
        save = form.query_one("#save", Button)
        for _ in range(12):
            if app.focused is save:
                break
            await pilot.press("tab")
        assert app.focused is save
        await pilot.pause()
        # Visible on screen (not clipped by the dialog), so Enter on it is what the user sees.
        assert save.region.height > 0 and app.screen.region.contains_region(save.region)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.workbench.store.list_rules(), timeout=5)
        assert [r.pattern for r in app.workbench.store.list_rules()] == ["at-80x24"]


async def test_backend_form_fills_in_the_services_own_url(tmp_path: Path, tiny_models_dir: Path) -> None:
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3", "b")
        form = app.screen
        form.query_one("#name").value = "oa"
        form.query_one("#kind").value = "openai-compatible"
        await pilot.pause()
        assert form.query_one("#save").disabled and "required" in str(form.query_one("#form-error").render())
        form.query_one("#kind").value = "anthropic"
        await pilot.pause()
        assert not form.query_one("#save").disabled
        assert form.query_one("#base_url").placeholder == "https://api.anthropic.com"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.workbench.store.list_backends(), timeout=5)
        [rec] = app.workbench.store.list_backends()
        assert (rec.name, rec.kind, rec.base_url) == ("oa", "anthropic", "https://api.anthropic.com")


async def test_page_keys_scroll_the_conversation_while_the_prompt_keeps_focus(
    tmp_path: Path, tiny_models_dir: Path
) -> None:
    from textual.containers import VerticalScroll

    from tui.screenshots import sample_conversation

    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        conv = app.workbench.store.save_conversation(sample_conversation())
        await app.query_one(ChatPane).open_conversation(conv.id)
        box = app.query_one("#conversation", VerticalScroll)
        await wait_for(pilot, lambda: box.max_scroll_y > 0, timeout=5)
        box.scroll_end(animate=False)
        await pilot.pause()
        bottom = box.scroll_y
        assert app.focused is app.query_one("#prompt")
        await pilot.press("pageup")
        await wait_for(pilot, lambda: box.scroll_y < bottom, timeout=5)
        await pilot.press("pagedown")
        await wait_for(pilot, lambda: box.scroll_y == bottom, timeout=5)
        assert app.focused is app.query_one("#prompt")


async def test_escape_cancels_a_model_load_in_the_models_pane(tmp_path: Path, tiny_models_dir: Path) -> None:
    import threading

    from tui.panes.models import ModelsPane

    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f2")
        pane = app.query_one(ModelsPane)
        assert "Cancel load" not in [b.binding.description for b in app.active_bindings.values() if b.enabled]
        # Hold the MLX thread so the load is still waiting when Esc arrives (a tiny model loads too fast).
        gate = threading.Event()
        blocker = app.workbench.local._worker.submit(gate.wait)
        pane.load_model("tiny-llama-mlx")
        await wait_for(pilot, lambda: pane._load_cancel is not None, timeout=5)
        await pilot.pause()
        assert "Cancel load" in [b.binding.description for b in app.active_bindings.values() if b.enabled]
        await pilot.press("escape")
        gate.set()
        blocker.result(timeout=5)
        await wait_for(pilot, lambda: pane._load_cancel is None, timeout=10)
        assert "cancelled" in str(app.query_one("#models-status").render())
        assert app.workbench.local.memory().loaded == []
        # A cancelled load leaves nothing behind: the next one works.
        pane.load_model("tiny-llama-mlx")
        await wait_for(pilot, lambda: len(app.workbench.local.memory().loaded) == 1, timeout=20)
