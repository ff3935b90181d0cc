"""Saved conversations: date, title, count; filter as you type, rename, delete after asking."""

from __future__ import annotations

import time
from pathlib import Path

from router.store import Conversation
from tests.tui.helpers import make_app, screen_text, wait_for
from tui.screens.conversations import ConversationPicker
from tui.screens.dialogs import Confirm, TextPrompt
from tui.widgets.chat_message import ChatMessage


def seed(store) -> list[Conversation]:
    convs = []
    for title, model, n in (
        ("Reverse a list in Python", "gpt-4o", 2),
        ("Rust lifetimes", "demo", 4),
        ("Shopping list", "demo", 1),
    ):
        msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"{title} {i}"} for i in range(n)]
        convs.append(store.save_conversation(Conversation(title=title, model=model, messages=msgs)))
    return convs


async def open_picker(pilot) -> ConversationPicker:
    await pilot.press("ctrl+o")
    picker = pilot.app.screen
    assert isinstance(picker, ConversationPicker)
    await wait_for(pilot, lambda: picker.loaded, timeout=5)
    await pilot.pause()
    return picker


def listed(picker: ConversationPicker) -> list[str]:
    box = picker.query_one("#list")
    return [str(box.get_option_at_index(i).prompt) for i in range(box.option_count)]


async def test_the_list_shows_date_title_and_count_and_filters_as_you_type(
    tmp_path: Path, tiny_models_dir: Path
) -> None:
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        seed(app.workbench.store)
        picker = await open_picker(pilot)
        rows = listed(picker)
        today = time.strftime("%Y-%m-%d")
        assert len(rows) == 3 and all(r.startswith(today) for r in rows)
        assert any("Rust lifetimes  4 messages · demo" in r for r in rows)
        assert any("Shopping list  1 message · demo" in r for r in rows)
        await pilot.press(*"list")
        # Newest first.
        assert [r.split("  ")[1] for r in listed(picker)] == ["Shopping list", "Reverse a list in Python"]
        await pilot.press(*" in")
        assert [r.split("  ")[1] for r in listed(picker)] == ["Reverse a list in Python"]
        assert "1 of 3" in screen_text(app)
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(app.query(ChatMessage)) == 2, timeout=5)
        assert app.query_one("#model").value == "gpt-4o"


async def test_rename_and_delete_after_asking(tmp_path: Path, tiny_models_dir: Path) -> None:
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        store = app.workbench.store
        convs = seed(store)
        picker = await open_picker(pilot)
        await pilot.press(*"rust")
        await pilot.press("ctrl+r")
        assert isinstance(app.screen, TextPrompt)
        field = app.screen.query_one("#text")
        field.value = "Rust: lifetimes explained"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen is picker, timeout=5)
        assert any(c.title == "Rust: lifetimes explained" for c in store.list_conversations())
        # Dismissing the prompt pops it at once but only queues the picker's callback that redraws
        # the list: the picker is on top a moment before its list shows the new title.
        await wait_for(pilot, lambda: any("Rust: lifetimes explained" in r for r in listed(picker)), timeout=5)
        # Delete asks first; "no" keeps it.
        await pilot.press("f8")
        assert isinstance(app.screen, Confirm) and "Rust: lifetimes explained" in app.screen.question
        await pilot.press("escape")
        assert len(store.list_conversations()) == 3
        await pilot.press("f8")
        await pilot.press("y")
        await wait_for(pilot, lambda: len(store.list_conversations()) == 2, timeout=5)
        assert not any("Rust" in c.title for c in store.list_conversations())
        # The delete is committed on the database thread before the picker's delete worker
        # resumes on the loop and redraws the list: wait for the worker, then for the screen.
        await wait_for(pilot, lambda: convs[1].id in picker.deleted, timeout=5)
        assert listed(picker) == []
        await wait_for(pilot, lambda: "Nothing matches" in screen_text(app), timeout=5)


async def test_deleting_the_open_chat_leaves_it_on_screen_as_a_new_one(tmp_path: Path, tiny_models_dir: Path) -> None:
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        store = app.workbench.store
        convs = seed(store)
        chat = app.query_one("ChatPane")
        await chat.open_conversation(convs[1].id)
        picker = await open_picker(pilot)
        await pilot.press(*"rust")
        await pilot.press("f8", "y")
        await wait_for(pilot, lambda: convs[1].id in picker.deleted, timeout=5)
        await pilot.press("escape")
        await wait_for(pilot, lambda: chat.session.conv_id is None, timeout=5)
        assert len(app.query(ChatMessage)) == 4
