"""The chat pane: the prompt, the model field, what the status line says while waiting, the line
under each answer, and how turns are saved. Real router, tiny model, loopback fake upstream."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from textual import events

from router.rules import Rule, Step
from router.store import BackendRecord, Conversation, Store
from tests.fixtures.fake_upstream import OPENAI_PATH, Reply, openai_error, openai_text_stream
from tests.tui.helpers import ask, make_app, screen_text, wait_for
from tui import messages
from tui.panes.chat import ChatPane
from tui.widgets.chat_message import ChatMessage
from tui.widgets.prompt import PromptArea


def answered(chat: ChatPane, n: int) -> bool:
    t = chat.session.turns
    return len(t) == n and t[-1].role == "assistant" and t[-1].state != "unfinished" and not chat.session.saving


def slow_tiny_model(monkeypatch: pytest.MonkeyPatch, step_s: float = 0.02) -> list[float]:
    """Each forward pass of the tiny model takes step_s: a stream lasts long enough to act on it."""
    from mlx_lm.models import llama

    forward = llama.Model.__call__
    steps: list[float] = []

    def slow_forward(self, *args, **kwargs):
        steps.append(time.perf_counter())
        time.sleep(step_s)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(llama.Model, "__call__", slow_forward)
    return steps


async def ask_for_a_long_answer(app, pilot) -> ChatPane:
    """The tiny model loaded and asked a question whose greedy answer runs to its context."""
    await app.workbench.local.load("tiny-llama-mlx")
    app.query_one("#max-tokens").value = "5000"
    app.query_one("#temperature").value = "0"
    await ask(pilot, "alpha beta gamma", model="tiny-llama-mlx")
    return app.query_one(ChatPane)


def add_openai(app, fake_upstream, **settings) -> None:
    """An OpenAI backend on the fake upstream, with cloud routing on (a new data dir has it off)."""
    app.workbench.store.set_cloud_routing(True)
    app.workbench.store.save_backend(
        BackendRecord("openai", "openai", fake_upstream.openai_url, {"retries": 0, **settings})
    )


# ---------------------------------------------------------------- the prompt (defect 1)


async def test_a_multiline_paste_keeps_every_line_and_is_sent_whole(tmp_path: Path, tiny_models_dir: Path) -> None:
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        prompt = app.query_one(PromptArea)
        pasted = "\n".join(f"line {i}: some log output" for i in range(280))
        app.post_message(events.Paste(pasted))
        await wait_for(pilot, lambda: prompt.text, timeout=5)
        assert prompt.text == pasted, "the paste lost lines"
        # A large paste (a whole file) too.
        prompt.clear()
        big = "\n".join(f"{i} " + "x" * 60 for i in range(20000))
        app.post_message(events.Paste(big))
        await wait_for(pilot, lambda: prompt.text, timeout=20)
        assert prompt.text.count("\n") == 19999
        prompt.clear()
        app.post_message(events.Paste(pasted))
        await wait_for(pilot, lambda: prompt.text, timeout=5)
        app.query_one("#max-tokens").value = "2"
        app.query_one("#model").value = "tiny-llama-mlx"
        await pilot.press("enter")
        chat = app.query_one(ChatPane)
        await wait_for(pilot, lambda: answered(chat, 2))
        assert chat.session.turns[0].content == pasted
        [conv] = app.workbench.store.list_conversations()
        assert conv.messages[0]["content"].count("\n") == 279


async def test_enter_sends_and_ctrl_j_starts_a_new_line(tmp_path: Path, tiny_models_dir: Path) -> None:
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        chat = app.query_one(ChatPane)
        app.query_one("#model").value = "tiny-llama-mlx"
        app.query_one("#max-tokens").value = "2"
        await pilot.press("f", "i", "r", "s", "t", "ctrl+j", "s", "e", "c", "o", "n", "d")
        assert app.query_one(PromptArea).text == "first\nsecond" and not chat.session.turns
        await pilot.press("enter")
        await wait_for(pilot, lambda: answered(chat, 2))
        assert chat.session.turns[0].content == "first\nsecond"
        assert app.query_one(PromptArea).text == ""


async def test_up_and_down_on_an_empty_prompt_walk_earlier_prompts(tmp_path: Path, tiny_models_dir: Path) -> None:
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        chat = app.query_one(ChatPane)
        prompt = app.query_one(PromptArea)
        app.query_one("#max-tokens").value = "2"
        await ask(pilot, "one", model="tiny-llama-mlx")
        await wait_for(pilot, lambda: answered(chat, 2))
        await ask(pilot, "two\nlines")
        await wait_for(pilot, lambda: answered(chat, 4))
        prompt.focus()
        await pilot.press("up")
        assert prompt.text == "two\nlines"
        await pilot.press("up")
        assert prompt.text == "one"
        await pilot.press("up")
        assert prompt.text == "one", "walked past the oldest prompt"
        await pilot.press("down")
        assert prompt.text == "two\nlines"
        await pilot.press("down")
        assert prompt.text == ""
        # Once edited, Up moves the cursor again instead of replacing the text.
        await pilot.press("up", "up", "x")
        await pilot.press("up")
        assert prompt.text == "onex"


# ---------------------------------------------------------------- the model field (defect 2, 3)


async def test_a_name_only_a_glob_rule_knows_is_typed_shown_routed_and_timed(
    tmp_path: Path, tiny_models_dir: Path, fake_upstream
) -> None:
    fake_upstream.set_default(
        OPENAI_PATH, Reply(stream=openai_text_stream("one two three four five six", usage=(9, 6)), chunk_delay=0.02)
    )
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        add_openai(app, fake_upstream)
        app.workbench.store.add_rule(Rule("gpt-*", "openai", fallbacks=[Step("local", "tiny-llama-mlx")]))
        chat = app.query_one(ChatPane)
        await wait_for(pilot, lambda: chat._local_names, timeout=10)
        app.query_one("#model").value = "gpt-4o"
        route = app.query_one("#route")
        await wait_for(pilot, lambda: "openai/gpt-4o" in str(route.render()), timeout=5)
        assert "rule #1 gpt-*" in str(route.render()) and "local/tiny-llama-mlx" in str(route.render())
        await ask(pilot, "hello")
        await wait_for(pilot, lambda: answered(chat, 2))
        answer = list(app.query(ChatMessage))[-1]
        assert chat.session.turns[-1].content == "one two three four five six"
        # Defect 3: a cloud answer shows its TTFT and speed, measured by the router.
        assert answer.meta.startswith("openai/") and "9+6 tokens" in answer.meta
        assert "TTFT" in answer.meta and "tok/s" in answer.meta, answer.meta
        [record] = app.workbench.store.recent_requests()
        assert record.ttft_s is not None and record.tokens_per_s is not None and record.tokens_per_s > 0
        # ... and the Requests pane has them in its columns.
        await pilot.press("f5")
        # The row comes with the RequestLogged message the event pump hands the pane; the column
        # header and the status bar's "openai" are on screen before it: wait for the row itself.
        await wait_for(pilot, lambda: "gpt-4o" in screen_text(app) and "tok/s" in screen_text(app), timeout=5)
        row = next(line for line in screen_text(app).splitlines() if "gpt-4o" in line)
        assert " ms " in row and f"{record.tokens_per_s:.1f}" in row


async def test_the_model_field_completes_from_every_name_the_workbench_knows(
    tmp_path: Path, tiny_models_dir: Path
) -> None:
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        app.workbench.store.add_rule(Rule("my-exact-name", "local", model="tiny-llama-mlx"))
        app.workbench.store.add_rule(Rule("claude-*", "local"))
        app.workbench.store.save_conversation(Conversation(title="old", model="recently-used-model", messages=[]))
        chat = app.query_one(ChatPane)
        app.post_message(messages.ConfigWritten())
        field = app.query_one("#model")
        await wait_for(pilot, lambda: "my-exact-name" in field.names, timeout=10)
        await wait_for(pilot, lambda: "recently-used-model" in field.names, timeout=10)
        assert {"tiny-llama", "tiny-llama-mlx"} <= set(field.names)
        assert "claude-*" not in field.names, "a glob is not a name"
        field.value = ""
        field.focus()
        await pilot.press("m", "y")
        await wait_for(pilot, lambda: field._suggestion == "my-exact-name", timeout=5)
        await pilot.press("right")
        assert field.value == "my-exact-name"
        await wait_for(pilot, lambda: "rule #1 my-exact-name" in str(app.query_one("#route").render()), timeout=5)
        # A name nothing can serve says so before anything is sent.
        field.value = "nothing-like-this"
        await wait_for(pilot, lambda: "no such local model" in str(app.query_one("#route").render()), timeout=5)
        assert app.query_one("#route").has_class("-problem")
        assert chat.session.turns == []


# ---------------------------------------------------------------- status while waiting (defect 6)


async def test_the_status_line_follows_the_router_while_waiting(
    tmp_path: Path, tiny_models_dir: Path, fake_upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_upstream.set_default(OPENAI_PATH, 503)
    app = make_app(tmp_path, tiny_models_dir)
    shown: list[str] = []
    async with app.run_test(size=(120, 40)) as pilot:
        add_openai(app, fake_upstream)
        app.workbench.store.add_rule(Rule("gpt-*", "openai", fallbacks=[Step("local", "tiny-llama-mlx")]))
        chat = app.query_one(ChatPane)
        say = chat.say
        monkeypatch.setattr(chat, "say", lambda text, error=False: (shown.append(text), say(text, error)))
        app.query_one("#max-tokens").value = "3"
        await ask(pilot, "hi", model="gpt-4o")
        await wait_for(pilot, lambda: answered(chat, 2))
        assert "asking openai/gpt-4o" in shown
        fallback = next(t for t in shown if t.startswith("asking local/tiny-llama-mlx"))
        assert "openai" in fallback and "503" in fallback, fallback
        # The tiny model was not loaded: the load's progress is shown, from the engine through the router.
        loading = [t for t in shown if t.startswith("loading tiny-llama-mlx")]
        assert loading and loading[-1].endswith("100%"), shown
        assert "after openai unavailable" in chat.session.turns[-1].meta


# ---------------------------------------------------------------- failed and stopped turns (defects 7, 8)


async def test_a_rejected_turn_is_saved_with_its_error_and_turns_alternate(
    tmp_path: Path, tiny_models_dir: Path, fake_upstream
) -> None:
    fake_upstream.set_default(OPENAI_PATH, Reply(status=401, json=openai_error("bad key", "authentication_error")))
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        add_openai(app, fake_upstream)
        app.workbench.store.add_rule(Rule("gpt-*", "openai"))
        chat = app.query_one(ChatPane)
        await ask(pilot, "first try", model="gpt-4o")
        await wait_for(pilot, lambda: answered(chat, 2))
        await ask(pilot, "second try")
        await wait_for(pilot, lambda: answered(chat, 4))
        [conv] = app.workbench.store.list_conversations()
        assert [m["role"] for m in conv.messages] == ["user", "assistant", "user", "assistant"]
        assert conv.messages[1]["state"] == "error" and "bad key" in conv.messages[1]["meta"]
        # The failed question is not sent again as context: the model never answered it.
        sent = fake_upstream.requests[-1].json["messages"]
        assert [m["content"] for m in sent] == ["second try"]
        await pilot.press("ctrl+n")
        await chat.open_conversation(conv.id)
        roles = [m.role for m in app.query(ChatMessage)]
        assert roles == ["user", "assistant", "user", "assistant"]
        assert all(m.has_class("-error") for m in app.query(ChatMessage) if m.role == "assistant")


async def test_esc_keeps_who_was_answering_and_the_route(
    tmp_path: Path, tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_tiny_model(monkeypatch)
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        chat = await ask_for_a_long_answer(app, pilot)
        # Some tokens first.
        await wait_for(pilot, lambda: chat.live_tokens >= 3, timeout=30)
        app.simulate_key("escape")
        await wait_for(pilot, lambda: answered(chat, 2), timeout=10)
        turn = chat.session.turns[-1]
        assert turn.state == "stopped"
        assert turn.meta.startswith("stopped · local/tiny-llama-mlx · ") and "tokens so far" in turn.meta, turn.meta
        assert int(turn.meta.split(" · ")[-1].split()[0]) >= 3
        [record] = app.workbench.store.recent_requests()
        assert record.status == "client_gone"
        await pilot.press("f5")
        await wait_for(pilot, lambda: "client_gone" in screen_text(app), timeout=5)
        row = next(line for line in screen_text(app).splitlines() if "client_gone" in line)
        assert "local" in row, row


# ---------------------------------------------------------------- saving as it happens (issue 15)


async def test_the_question_is_on_disk_before_the_answer_and_the_answer_while_it_streams(
    tmp_path: Path, tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_tiny_model(monkeypatch, step_s=0.05)
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        other = Store.open(app.config.database)  # another connection, as after a crash

        def saved() -> list[dict]:
            convs = other.list_conversations()
            return convs[0].messages if convs else []

        chat = await ask_for_a_long_answer(app, pilot)
        await wait_for(pilot, lambda: saved(), timeout=10)
        assert saved()[0] == {"role": "user", "content": "alpha beta gamma"}
        # Within a few seconds of streaming, the partial answer is on disk, marked unfinished.
        await wait_for(pilot, lambda: len(saved()) == 2 and saved()[1]["content"], timeout=15)
        partial = saved()[1]
        assert partial["state"] == "unfinished" and chat._stream is not None
        await chat.stop_generation()
        await wait_for(pilot, lambda: saved()[1].get("state") == "stopped", timeout=10)
        assert saved()[1]["content"].startswith(partial["content"])
        other.close()


async def test_quitting_mid_answer_keeps_what_arrived_marked_unfinished(
    tmp_path: Path, tiny_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_tiny_model(monkeypatch, step_s=0.05)
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        chat = await ask_for_a_long_answer(app, pilot)
        await wait_for(pilot, lambda: chat.live_tokens >= 3, timeout=10)
        await app.action_quit()
    store = Store.open(app.config.database)
    [conv] = store.list_conversations()
    assert conv.messages[0]["content"] == "alpha beta gamma"
    assert conv.messages[1]["state"] in ("unfinished", "stopped")
    store.close()


def test_kill_9_mid_answer_keeps_the_question_and_the_partial_answer(tmp_path: Path, tiny_models_dir: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.tui.crash_driver", str(tmp_path), str(tiny_models_dir)],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "STREAMING"
        database = tmp_path / "data" / "workbench.db"
        store = Store.open(database)
        deadline = time.monotonic() + 60
        while True:
            convs = store.list_conversations()
            if convs and len(convs[0].messages) == 2 and convs[0].messages[1]["content"]:
                break
            assert time.monotonic() < deadline, "no partial answer was written while streaming"
            assert child.poll() is None, "the app ended before it was killed"
            time.sleep(0.1)
        store.close()
        assert child.poll() is None, "the answer ended before the kill"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    store = Store.open(database)
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    [conv] = store.list_conversations()
    question, answer = conv.messages
    assert question == {"role": "user", "content": "alpha beta gamma"}
    assert answer["role"] == "assistant" and answer["content"] and answer["state"] == "unfinished"
    store.close()


async def test_a_reopened_unfinished_answer_says_so(tmp_path: Path, tiny_models_dir: Path) -> None:
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(100, 30)) as pilot:
        conv = app.workbench.store.save_conversation(
            Conversation(
                title="t",
                model="tiny-llama-mlx",
                messages=[
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "part of an", "state": "unfinished"},
                ],
            )
        )
        await app.query_one(ChatPane).open_conversation(conv.id)
        await wait_for(pilot, lambda: "the app stopped before this answer ended" in screen_text(app), timeout=5)
        # What the model said so far is context for the next question.
        assert [m.content for m in app.query_one(ChatPane).session.context()] == ["q", "part of an"]


async def test_the_status_line_counts_a_cloud_backends_retries(
    tmp_path: Path, tiny_models_dir: Path, fake_upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_upstream.script(OPENAI_PATH, 503, 503)
    app = make_app(tmp_path, tiny_models_dir)
    shown: list[str] = []
    async with app.run_test(size=(120, 40)) as pilot:
        add_openai(app, fake_upstream, retries=2, backoff_factor=0.01)
        app.workbench.store.add_rule(Rule("gpt-*", "openai"))
        chat = app.query_one(ChatPane)
        say = chat.say
        monkeypatch.setattr(chat, "say", lambda text, error=False: (shown.append(text), say(text, error)))
        await ask(pilot, "hi", model="gpt-4o")
        await wait_for(pilot, lambda: answered(chat, 2))
        assert "openai: retry 1/2" in shown and "openai: retry 2/2" in shown, shown
        assert chat.session.turns[-1].state == "done" and fake_upstream.count(OPENAI_PATH) == 3


async def test_the_local_user_may_name_a_model_file_by_its_path(
    tmp_path: Path, tiny_models_dir: Path, tiny_gguf_model: Path
) -> None:
    # The TUI sets allow_model_paths (the listener never does) and asks with high priority.
    app = make_app(tmp_path, tmp_path / "no-model-dirs")
    seen: list = []
    async with app.run_test(size=(120, 40)) as pilot:
        chat = app.query_one(ChatPane)
        route = app.workbench.router.route

        def spy(request, **kw):
            seen.append(request)
            return route(request, **kw)

        app.workbench.router.route = spy
        app.query_one("#max-tokens").value = "2"
        await ask(pilot, "hi", model=str(tiny_gguf_model))
        await wait_for(pilot, lambda: answered(chat, 2))
        assert chat.session.turns[-1].state == "done", chat.session.turns[-1].meta
        assert seen[0].allow_model_paths is True and seen[0].priority == "high"
