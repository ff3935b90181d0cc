"""Models, Rules, Health and Requests: kept current by events, truthful, and safe to type in."""

from __future__ import annotations

from pathlib import Path

from engine.types import ChatRequest, Message, collect
from router.rules import Rule, Step
from router.store import BackendRecord
from tests.fixtures.fake_upstream import OPENAI_PATH
from tests.tui.helpers import make_app, notifications, screen_text, wait_for
from tui import messages
from tui.screens.dialogs import Confirm, RuleForm
from tui.widgets.backend_card import BackendCard
from tui.widgets.fit import FitTable


def cell(table: FitTable, row_key: str, column: str) -> str:
    return str(table.row_cells(row_key)[column])


async def test_models_pane_follows_a_load_made_elsewhere(tmp_path: Path, tiny_models_dir: Path) -> None:
    # Defect 4: after the chat (or the listener) loaded a model the pane said "State -", "Memory: 0 B".
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f2")
        table = app.query_one("#models-table", FitTable)
        await wait_for(pilot, lambda: table.row_count == 2, timeout=10)
        assert cell(table, "tiny-llama-mlx", "state") == "-"
        request = ChatRequest(model="tiny-llama-mlx", messages=[Message("user", "hi")], max_tokens=2)
        await collect(app.workbench.router.route(request, front_end="listener"))
        await wait_for(pilot, lambda: cell(table, "tiny-llama-mlx", "state") == "loaded", timeout=10)
        assert "Memory: 0 B" not in str(app.query_one("#memory").render())
        # The status bar follows within a second (events, then the 1 s tick).
        await wait_for(pilot, lambda: "1 loaded" in app.status_markup, timeout=5)
        # An unload asked of the pane (as the palette does) shows in the pane and the status bar.
        app.query_one("ModelsPane").post_message(messages.UnloadModel("tiny-llama-mlx"))
        await wait_for(pilot, lambda: cell(table, "tiny-llama-mlx", "state") == "-", timeout=10)
        await wait_for(pilot, lambda: "0 loaded" in app.status_markup, timeout=5)


async def test_the_local_card_has_no_breaker_to_trip_and_a_trip_says_when_it_half_opens(
    tmp_path: Path, tiny_models_dir: Path, fake_upstream
) -> None:
    # Defect 5: t on the local card asked to trip, then failed; a trip promised "until it is reset".
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        app.workbench.store.save_backend(
            BackendRecord("openai", "openai", fake_upstream.openai_url, {"reset_timeout": 30})
        )
        await pilot.press("f4")
        await wait_for(pilot, lambda: app.query("#card-openai"), timeout=5)
        local = app.query_one("#card-local", BackendCard)
        local.focus()
        await pilot.pause()
        keys = {b.binding.action for b in app.active_bindings.values() if b.enabled}
        assert "trip" not in keys and "reset" not in keys
        await pilot.press("t")
        await pilot.pause()
        assert not isinstance(app.screen, Confirm)
        assert not any("no cloud backend" in n for n in notifications(app))
        app.query_one("#card-openai", BackendCard).focus()
        await pilot.press("t")
        assert isinstance(app.screen, Confirm) and "half-opens" in str(app.screen.question)
        await pilot.press("y")
        await wait_for(pilot, lambda: app.workbench.backends()["openai"].breaker_state == "open", timeout=5)
        await wait_for(pilot, lambda: any("tripped" in n for n in notifications(app)), timeout=5)
        said = next(n for n in notifications(app) if "tripped" in n)
        assert "half-open" in said and "in 30 s" in said and "until it is reset" not in said
        await wait_for(
            pilot, lambda: "half-open in" in str(app.query_one("#card-openai .card-body").render()), timeout=5
        )


async def test_rules_naming_a_missing_backend_are_flagged(tmp_path: Path, tiny_models_dir: Path) -> None:
    # Defect 9 (the TUI half): a removed backend left its rules looking fine.
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        store = app.workbench.store
        store.save_backend(BackendRecord("openai", "openai", "http://127.0.0.1:9/v1"))
        store.add_rule(Rule("gpt-*", "openai"))
        store.add_rule(Rule("fast", "local", fallbacks=[Step("openai", "gpt-4o-mini")]))
        await pilot.press("f3")
        table = app.query_one("#rules-table", FitTable)
        await wait_for(pilot, lambda: table.row_count == 2, timeout=10)
        assert "missing" not in cell(table, "1", "backend")
        # Removed in the pane: the question names the rules that use it.
        backends = app.query_one("#backends-table", FitTable)
        backends.focus()
        backends.move_cursor(row=1)
        await pilot.press("x")
        assert isinstance(app.screen, Confirm) and "#1" in app.screen.question and "#2" in app.screen.question
        await pilot.press("y")
        await wait_for(pilot, lambda: "missing" in cell(table, "1", "backend"), timeout=10)
        assert "missing" in cell(table, "2", "fallbacks")
        assert "2 rule(s) name a backend that does not exist" in str(app.query_one("#rules-status").render())


def test_backends_rm_refuses_while_rules_use_it(tmp_path: Path, capsys) -> None:
    # Defect 9 (the CLI half): `backends rm` succeeded silently.
    from router.config import load_config
    from router.store import Store
    from tui.cli import main

    store = Store.open(load_config().database)
    store.save_backend(BackendRecord("openai", "openai", "http://127.0.0.1:9/v1"))
    store.add_rule(Rule("gpt-*", "openai"))
    store.close()
    assert main(["backends", "rm", "openai"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: backend openai is in use by rule #1 gpt-*") and "--force" in err
    assert main(["backends", "rm", "openai", "--force"]) == 0
    out, err = capsys.readouterr()
    assert "removed backend openai" in out and "still named by rule #1 gpt-*" in err


async def test_the_rule_form_checks_local_models_and_names_the_field_at_fault(
    tmp_path: Path, tiny_models_dir: Path
) -> None:
    # Defect 10: a local target model that does not exist was accepted; a bad fallback was blamed
    # on the backend field.
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        await wait_for(pilot, lambda: app.query_one("RulesPane").loaded, timeout=10)
        await pilot.press("a")
        form = app.screen
        assert isinstance(form, RuleForm)
        form.query_one("#pattern").value = "fast"
        form.query_one("#model").value = "no-such-model"
        await pilot.pause()
        error = str(form.query_one("#form-error").render())
        assert error.startswith("target model: no local model named 'no-such-model'") and "tiny-llama-mlx" in error
        assert form.query_one("#save").disabled and form.query_one("#model").has_class("-invalid")
        form.query_one("#model").value = "tiny-llama-mlx"
        form.query_one("#fallbacks").value = "ghost"
        await pilot.pause()
        error = str(form.query_one("#form-error").render())
        assert error.startswith("fallbacks: unknown backend 'ghost'"), error
        assert form.query_one("#fallbacks").has_class("-invalid") and not form.query_one("#model").has_class("-invalid")
        form.query_one("#fallbacks").value = "local:nope"
        await pilot.pause()
        assert str(form.query_one("#form-error").render()).startswith("fallbacks: no local model named 'nope'")
        form.query_one("#fallbacks").value = "local:tiny-llama"
        await pilot.pause()
        assert not form.query_one("#save").disabled
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.workbench.store.list_rules(), timeout=5)
        [rule] = app.workbench.store.list_rules()
        assert (rule.model, [str(s) for s in rule.fallbacks]) == ("tiny-llama-mlx", ["local:tiny-llama"])


async def test_focus_has_a_shape_explain_is_one_key_away_and_digits_do_not_switch_panes(
    tmp_path: Path, tiny_models_dir: Path
) -> None:
    # Defect 11.
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        await wait_for(pilot, lambda: app.query_one("RulesPane").loaded, timeout=10)
        table = app.query_one("#rules-table", FitTable)
        assert app.focused is table
        # Typing a model name on the table: no pane switch (digits were pane keys), nothing changes.
        await pilot.press(*"gpt4o")
        assert app.query_one("TabbedContent").active == "rules"
        await pilot.press("slash")
        assert app.focused is app.query_one("#try-model")
        # Focus shows by shape: the focused field's border differs in type, not only in colour.
        field = app.query_one("#try-model")
        focused_edge = field.styles.border_left[0]
        table.focus()
        await pilot.pause()
        assert field.styles.border_left[0] != focused_edge
        assert table.styles.border_left[0] == "heavy"
        field.focus()
        await pilot.pause()
        assert table.styles.border_left[0] != "heavy"
        # In a text field digits are text.
        await pilot.press("4")
        assert field.value.endswith("4") and app.query_one("TabbedContent").active == "rules"
        # Alt+digit and F-keys still switch.
        await pilot.press("alt+4")
        assert app.query_one("TabbedContent").active == "health"


async def test_requests_pane_adds_each_finished_request_and_keeps_a_cancelled_route(
    tmp_path: Path, tiny_models_dir: Path
) -> None:
    from router.store import RequestRecord

    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f5")
        pane = app.query_one("RequestsPane")
        await wait_for(pilot, lambda: pane.loaded, timeout=5)
        assert "No requests yet" in screen_text(app)
        # A request stopped mid-answer whose log has no attempt list still shows who answered.
        failed = {"backend": "openai", "model": "gpt-4o", "outcome": "unavailable", "latency_s": 0.1, "error": "503"}
        record = RequestRecord(
            "tui",
            "canonical",
            "m",
            None,
            [failed],
            "local",
            "tiny-llama-mlx",
            status="cancelled",
            at=1.0,
            request_id="abc",
        )
        pane.post_message(messages.RequestLogged(record))
        await wait_for(pilot, lambda: "openai:unavailable → local:cancelled" in screen_text(app), timeout=5)
        request = ChatRequest(model="tiny-llama-mlx", messages=[Message("user", "hi")], max_tokens=2)
        await collect(app.workbench.router.route(request))
        table = app.query_one("#requests-table", FitTable)
        await wait_for(pilot, lambda: table.row_count == 2, timeout=5)
        # Newest first.
        assert table.coordinate_to_cell_key((0, 0)).row_key.value != "abc"
        assert "No requests yet" not in screen_text(app)


async def test_a_failing_backend_is_failed_over_and_the_line_says_so(
    tmp_path: Path, tiny_models_dir: Path, fake_upstream
) -> None:
    fake_upstream.set_default(OPENAI_PATH, 503)
    app = make_app(tmp_path, tiny_models_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        app.workbench.store.set_cloud_routing(True)
        app.workbench.store.save_backend(BackendRecord("openai", "openai", fake_upstream.openai_url, {"retries": 0}))
        app.workbench.store.add_rule(Rule("gpt-*", "openai", fallbacks=[Step("local", "tiny-llama-mlx")]))
        request = ChatRequest(model="gpt-4o", messages=[Message("user", "hi")], max_tokens=2)
        await collect(app.workbench.router.route(request))
        await pilot.press("f5")
        await wait_for(pilot, lambda: "openai:unavailable → local:ok" in screen_text(app), timeout=5)
