"""The palette (driven as a person does), the help screen, the [keymap] section, empty panes."""

from __future__ import annotations

from pathlib import Path

from tests.tui.helpers import make_app, notifications, screen_text, wait_for
from tui.keys import binding_groups, binding_ids
from tui.panes.chat import Turn
from tui.screens.help import HelpScreen


async def palette(pilot, query: str) -> list[str]:
    """Open the palette, type, and return the offered commands (plain text)."""
    from textual.command import CommandList, CommandPalette

    app = pilot.app
    if not isinstance(app.screen, CommandPalette):
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), timeout=5)
    field = app.screen.query_one("CommandInput")
    field.value = query
    box = app.screen.query_one(CommandList)
    await wait_for(pilot, lambda: box.option_count > 0 or not query, timeout=5)
    await pilot.pause()
    return [str(box.get_option_at_index(i).prompt).split("\n")[0] for i in range(box.option_count)]


async def test_the_palette_offers_what_can_be_done_now(tmp_path: Path, tiny_models_dir: Path, fake_upstream) -> None:
    # Defect 13: no Add backend / Set key / Open chat / Unload / Trip; "Load" for a loaded model;
    # no aliases.
    from router.store import BackendRecord

    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        app.workbench.store.save_backend(BackendRecord("openai", "openai", fake_upstream.openai_url))
        await wait_for(pilot, lambda: app.query_one("ModelsPane").scanned, timeout=10)
        for wanted in (
            "Add backend",
            "Set key for openai",
            "Open chat",
            "Trip breaker openai",
            "Load model tiny-llama-mlx",
        ):
            offered = await palette(pilot, wanted)
            assert any(o.startswith(wanted) for o in offered), (wanted, offered)
        assert not any(o.startswith("Unload") for o in await palette(pilot, "unload"))
        offered = await palette(pilot, "Load model tiny-llama-mlx")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.workbench.local.memory().loaded, timeout=20)
        assert app.query_one("TabbedContent").active == "models"
        offered = await palette(pilot, "model tiny-llama-mlx")
        assert any(o.startswith("Unload model tiny-llama-mlx") for o in offered)
        assert not any(o.startswith("Load model tiny-llama-mlx") for o in offered), "offered to load a loaded model"
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.workbench.local.memory().loaded, timeout=20)


async def test_the_palette_names_aliases(tmp_path: Path, tiny_gguf_model: Path) -> None:
    import shutil

    from engine.local.demo import DEMO_FILENAME, DEMO_ID

    # A GGUF where the demo model goes is known as `demo` too.
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_gguf_model, models / DEMO_FILENAME)
    app = make_app(tmp_path, models)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.query_one("ModelsPane").scanned, timeout=10)
        offered = await palette(pilot, "demo")
        assert f"Load model {DEMO_ID} (demo)" in offered, offered


async def test_help_lists_every_binding_by_pane_and_opens_from_anywhere(tmp_path: Path, tiny_models_dir: Path) -> None:
    # Defect 15 (help): no screen listed the keys of every pane.
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(100, 40)) as pilot:
        # In the chat every focusable is a text field: ? is text there, f10 opens the help.
        await pilot.press("question_mark")
        assert not isinstance(app.screen, HelpScreen) and app.query_one("#prompt").text == "?"
        await pilot.press("f10")
        assert isinstance(app.screen, HelpScreen)
        titles = [title for title, _ in app.screen.groups]
        assert titles[:6] == ["Everywhere", "Chat", "Models", "Rules", "Health (on a backend card)", "Requests"]
        for _, bindings, _ in binding_groups():
            for b in bindings:
                if b.description:
                    assert any(
                        b.description in row for _, rows in app.screen.groups for row in (what for _, what in rows)
                    ), b.description
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("f3")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        rows = dict((what, keys) for _, group in app.screen.groups for keys, what in group)
        assert rows["Help"] == "? / f10" and rows["New line"] == "ctrl+j / shift+enter / alt+enter"


async def test_every_binding_has_an_id_and_the_keymap_remaps_by_id(tmp_path: Path, tiny_models_dir: Path) -> None:
    for _, bindings, _ in binding_groups():
        for b in bindings:
            assert b.id, f"binding {b.key} -> {b.action} has no id (the [keymap] section cannot remap it)"
    assert {"chat-new", "rules-add", "app-help", "prompt-newline"} <= binding_ids()
    keymap = {"chat-new": "ctrl+b", "rules-add": "n", "no-such-binding": "x"}
    app = make_app(tmp_path, tiny_models_dir, keymap=keymap)
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_for(pilot, lambda: any("no-such-binding" in n for n in notifications(app)), timeout=10)
        chat = app.query_one("ChatPane")
        chat.session.turns.append(Turn("user", "x"))
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: not chat.session.turns, timeout=5)
        await pilot.press("f3")
        await wait_for(pilot, lambda: app.query_one("RulesPane").loaded, timeout=5)
        await pilot.press("a")
        assert not hasattr(app.screen, "rule")
        await pilot.press("n")
        assert type(app.screen).__name__ == "RuleForm"
        await pilot.press("escape")
        await pilot.press("f10")
        rows = dict((what, keys) for _, group in app.screen.groups for keys, what in group)
        assert rows["New chat"] == "ctrl+b" and rows["Add rule"] == "n"


async def test_every_empty_pane_says_what_to_do_first(tmp_path: Path, tmp_path_factory) -> None:
    # Defect 15 (empty panes): a new user saw empty tables.
    empty_models = tmp_path_factory.mktemp("no-models")
    app = make_app(tmp_path, empty_models)
    async with app.run_test(size=(120, 40)) as pilot:
        expected = {
            "chat": "press Enter to ask",
            "models": "press f to fetch the demo model",
            "rules": "Press a to add one",
            "health": "add a cloud backend in Rules",
            "requests": "ask something in Chat",
        }
        for pane, words in expected.items():
            app.action_show_pane(pane)
            await wait_for(pilot, lambda words=words: words in screen_text(app), timeout=10)


def test_docs_name_every_binding_id() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "tui.md").read_text()
    missing = sorted(i for i in binding_ids() if f"`{i}`" not in docs)
    assert missing == [], f"docs/tui.md does not list these binding ids: {missing}"
