"""What the other layers now report, as the TUI shows it: the cloud routing switch (header, key,
palette, asking first), running/queued on the local card, the prompt cache, load and queue times on
the answer's line, a request-log write that failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.types import Usage
from router.rules import Rule, Step
from router.store import BackendRecord
from router.writer import WriteFailed
from tests.fixtures.fake_upstream import OPENAI_PATH
from tests.tui.helpers import ask, make_app, notifications, screen_text, wait_for
from tests.tui.test_chat import answered, ask_for_a_long_answer, slow_tiny_model
from tui.panes.chat import ChatPane, describe_answer
from tui.screens.dialogs import BackendForm, Confirm


async def test_cloud_routing_is_off_in_a_new_data_dir_and_nothing_leaves_until_it_is_turned_on(
    tmp_path: Path, tiny_models_dir: Path, fake_upstream
) -> None:
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        store = app.workbench.store
        store.save_backend(BackendRecord("openai", "openai", fake_upstream.openai_url, {"retries": 0}))
        store.add_rule(Rule("gpt-*", "openai", fallbacks=[Step("local", "tiny-llama-mlx")]))
        await wait_for(pilot, lambda: app.status_markup.startswith("cloud off"), timeout=5)
        chat = app.query_one(ChatPane)
        app.query_one("#max-tokens").value = "3"
        app.query_one("#model").value = "gpt-4o"
        await wait_for(
            pilot, lambda: "skipped: cloud routing is off" in str(app.query_one("#route").render()), timeout=5
        )
        assert "f9 turns cloud routing on" in str(app.query_one("#route").render())
        await ask(pilot, "stay here")
        await wait_for(pilot, lambda: answered(chat, 2))
        assert fake_upstream.count(OPENAI_PATH) == 0, "a request left the machine with cloud routing off"
        assert chat.session.turns[-1].meta.startswith("local/tiny-llama-mlx")
        assert "cloud routing is off" in chat.session.turns[-1].meta
        # Turning it on asks first; "no" changes nothing.
        await pilot.press("f9")
        assert isinstance(app.screen, Confirm) and "leave this machine" in app.screen.question
        await pilot.press("escape")
        assert not store.cloud_routing()
        await pilot.press("f9")
        await pilot.press("y")
        await wait_for(pilot, lambda: app.status_markup.startswith("cloud on"), timeout=5)
        assert store.cloud_routing()
        await ask(pilot, "now the cloud")
        await wait_for(pilot, lambda: answered(chat, 4))
        assert fake_upstream.count(OPENAI_PATH) == 1 and chat.session.turns[-1].meta.startswith("openai/")
        # Off again: at once, no question.
        await pilot.press("f9")
        await wait_for(pilot, lambda: app.status_markup.startswith("cloud off"), timeout=5)
        assert not store.cloud_routing() and not isinstance(app.screen, Confirm)


async def test_the_switch_from_another_process_shows_and_the_palette_and_backend_form_know_it(
    tmp_path: Path, tiny_models_dir: Path
) -> None:
    from router.store import Store
    from tests.tui.test_keys_and_help import palette

    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        assert any(o.startswith("Turn cloud routing on") for o in await palette(pilot, "cloud"))
        await pilot.press("escape")
        other = Store.open(app.config.database)  # as `mlx-workbench cloud on` in another terminal
        other.set_cloud_routing(True)
        other.close()
        await wait_for(pilot, lambda: app.status_markup.startswith("cloud on"), timeout=5)
        assert any(o.startswith("Turn cloud routing off") for o in await palette(pilot, "cloud"))
        await pilot.press("escape")
        app.workbench.store.set_cloud_routing(False)
        await wait_for(pilot, lambda: app.status_markup.startswith("cloud off"), timeout=5)
        await pilot.press("f3", "b")
        assert isinstance(app.screen, BackendForm) and "Cloud routing is off" in screen_text(app)


async def test_the_local_card_shows_running_and_queued(
    tmp_path: Path, tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_tiny_model(monkeypatch)
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        chat = await ask_for_a_long_answer(app, pilot)
        await wait_for(pilot, lambda: chat.live_tokens >= 2, timeout=30)
        await pilot.press("f4")
        body = app.query_one("#card-local .card-body")
        await wait_for(pilot, lambda: "running 1 · queued 0" in str(body.render()), timeout=5)
        await chat.stop_generation()
        await wait_for(pilot, lambda: "running 0 · queued 0" in str(body.render()), timeout=10)


async def test_the_prompt_cache_shows_in_the_models_pane_and_the_status_bar(
    tmp_path: Path, tiny_models_dir: Path
) -> None:
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(160, 40)) as pilot:
        chat = app.query_one(ChatPane)
        app.query_one("#max-tokens").value = "3"
        await ask(pilot, "hello there", model="tiny-llama-mlx")
        await wait_for(pilot, lambda: answered(chat, 2))
        await wait_for(pilot, lambda: app.workbench.local.memory().prompt_cache_bytes > 0, timeout=10)
        await pilot.press("f2")
        await wait_for(pilot, lambda: "prompt cache" in str(app.query_one("#memory").render()), timeout=5)
        assert "1 entries" in str(app.query_one("#memory").render())
        await wait_for(pilot, lambda: "cache " in app.status_markup, timeout=5)


def test_the_answer_line_says_when_loading_or_queueing_took_time() -> None:
    usage = Usage(20, 12, ttft_s=3.2, tokens_per_s=18.5, queued_s=1.24, load_s=2.9, cached_tokens=16)
    line = describe_answer("local", "demo", usage, "")
    assert line == (
        "local/demo · 20+12 tokens · TTFT 3200 ms · queued 1.2 s · loaded demo in 2.9 s · "
        "16 prompt tokens from cache · 18.5 tok/s"
    )
    quick = describe_answer("local", "demo", Usage(20, 12, 0.05, 18.5, queued_s=0.01, load_s=0.02), "")
    assert "queued" not in quick and "loaded" not in quick


async def test_a_request_log_write_that_failed_is_said_in_health(tmp_path: Path, tiny_models_dir: Path) -> None:
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        # What the store's writer publishes when it gives up on a row.
        app.workbench.events.publish(
            WriteFailed("write the request log", "the database is locked", "busy", detail="abc123")
        )
        await wait_for(
            pilot, lambda: any("could not write the request log" in n for n in notifications(app)), timeout=5
        )
        await pilot.press("f4")
        await wait_for(
            pilot,
            lambda: (
                "could not write the request log: the database is locked"
                in str(app.query_one("#health-status").render())
            ),
            timeout=5,
        )
