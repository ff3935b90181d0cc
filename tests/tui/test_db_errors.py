"""The TUI survives database errors: it says what failed, keeps what was typed, and the action can
be retried. The errors are real: another connection holds SQLite's write lock."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.tui.helpers import ask, make_app, notifications, wait_for
from tui.panes.chat import ChatPane
from tui.screens.dialogs import RuleForm


@contextmanager
def write_locked(path: Path) -> Iterator[sqlite3.Connection]:
    """Another process's long write transaction, as far as this file is concerned."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    finally:
        conn.execute("ROLLBACK")
        conn.close()


async def short_busy_wait(app) -> None:
    # The TUI's own connection gives up on the lock after 0.2 s instead of 5 s: the test is about
    # what happens after the error, not how long SQLite waits for it.
    await app.db.run(lambda store: store.db.execute("PRAGMA busy_timeout = 200"))


async def test_a_rule_that_cannot_be_saved_stays_in_its_form_and_saves_on_retry(
    tmp_path: Path, tiny_models_dir: Path
) -> None:
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await short_busy_wait(app)
        await pilot.press("f3")
        await wait_for(pilot, lambda: app.query_one("RulesPane").loaded, timeout=10)
        await pilot.press("a")
        form = app.screen
        assert isinstance(form, RuleForm)
        form.query_one("#pattern").value = "gpt-*"
        form.query_one("#note").value = "typed with care"
        await pilot.pause()
        with write_locked(app.config.database):
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: "could not save" in str(form.query_one("#form-error").render()), timeout=10)
            assert "locked" in str(form.query_one("#form-error").render())
            assert app.screen is form and app.is_running
            assert form.query_one("#note").value == "typed with care"
            assert not form.query_one("#save").disabled
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.workbench.store.list_rules(), timeout=10)
        [rule] = app.workbench.store.list_rules()
        assert (rule.pattern, rule.note) == ("gpt-*", "typed with care")
        # The rule is committed on the database thread before the form's save worker resumes on
        # the loop and closes the form: wait for that rather than expect it in the same instant.
        await wait_for(pilot, lambda: app.screen is not form, timeout=10)


async def test_a_delete_the_database_refuses_is_reported_and_can_be_retried(
    tmp_path: Path, tiny_models_dir: Path
) -> None:
    from router.rules import Rule

    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        app.workbench.store.add_rule(Rule("fast", "local"))
        await short_busy_wait(app)
        await pilot.press("f3")
        pane = app.query_one("RulesPane")
        await wait_for(pilot, lambda: pane.rules, timeout=10)
        app.query_one("#rules-table").focus()
        with write_locked(app.config.database):
            await pilot.press("d", "y")
            await wait_for(pilot, lambda: any("deleting rule 1 failed" in n for n in notifications(app)), timeout=10)
        said = next(n for n in notifications(app) if "deleting rule 1 failed" in n)
        assert "locked" in said and "Press d to try again" in said
        assert app.workbench.store.list_rules()
        await pilot.press("d", "y")
        await wait_for(pilot, lambda: not app.workbench.store.list_rules(), timeout=10)


async def test_a_chat_goes_on_while_the_database_refuses_and_is_saved_once_it_can(
    tmp_path: Path, tiny_models_dir: Path
) -> None:
    import asyncio

    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await short_busy_wait(app)
        chat = app.query_one(ChatPane)
        app.query_one("#max-tokens").value = "3"
        lock = write_locked(app.config.database)
        lock.__enter__()
        try:
            await ask(pilot, "are you there?", model="tiny-llama-mlx")
            await wait_for(
                pilot, lambda: any("saving the conversation failed" in n for n in notifications(app)), timeout=10
            )
            assert app.is_running and chat.session.turns[0].content == "are you there?"
            await asyncio.sleep(0.5)
        finally:
            lock.__exit__(None, None, None)
        await wait_for(pilot, lambda: chat.session.turns[-1].state == "done", timeout=30)
        await wait_for(pilot, lambda: app.workbench.store.list_conversations(), timeout=30)
        await wait_for(
            pilot,
            lambda: (
                len(app.workbench.store.list_conversations()[0].messages) == 2
                and "state" not in app.workbench.store.list_conversations()[0].messages[1]
            ),
            timeout=30,
        )
        # The row is committed on the database thread before the save worker resumes on the loop
        # and says so: wait for the notice rather than expect it in the same instant.
        await wait_for(pilot, lambda: any("saved again" in n for n in notifications(app)), timeout=10)
