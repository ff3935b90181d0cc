"""`mlx-workbench rules | backends | keys` end to end through tui.cli.main, as a script would use them."""

from __future__ import annotations

import io
import json
import logging
import sqlite3
from pathlib import Path

import pytest

from tui.cli import main

KEY = "sk-cli-secret-0123456789abcdefghijkl"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def db_path(data_dir: Path) -> Path:
    return data_dir / "workbench.db"


# ---------------------------------------------------------------- rules


def test_rules_crud_and_explain(capsys) -> None:
    assert run(capsys, "backends", "add", "openai", "--kind", "openai", "--base-url", "http://127.0.0.1:9/v1")[0] == 0
    code, out, _ = run(capsys, "rules", "add", "gpt-*", "--backend", "openai", "-f", "local:demo", "-p", "2", "--json")
    assert code == 0
    rule = json.loads(out)
    assert rule["fallbacks"] == ["local:demo"] and rule["priority"] == 2
    code, out, _ = run(capsys, "rules", "list", "--json")
    assert [r["pattern"] for r in json.loads(out)] == ["gpt-*"]
    code, out, _ = run(capsys, "rules", "explain", "gpt-4o", "--json")
    ex = json.loads(out)
    assert ex["rule"]["id"] == rule["id"] and [s["backend"] for s in ex["chain"]] == ["openai", "local"]
    code, out, _ = run(capsys, "rules", "explain", "gpt-4o")
    assert "openai/gpt-4o" in out and "local/demo" in out
    assert run(capsys, "rules", "disable", str(rule["id"]))[0] == 0
    code, out, _ = run(capsys, "rules", "explain", "gpt-4o", "--json")
    assert json.loads(out)["default_used"] is True
    assert run(capsys, "rules", "edit", str(rule["id"]), "--pattern", "gpt-4*", "--no-fallbacks")[0] == 0
    code, out, _ = run(capsys, "rules", "list")
    assert "gpt-4*" in out and "no" in out
    assert run(capsys, "rules", "rm", str(rule["id"]))[0] == 0
    assert "no rules" in run(capsys, "rules", "list")[1]


def test_rules_add_every_option_then_edit_enable(capsys) -> None:
    run(capsys, "backends", "add", "openai", "--kind", "openai", "--base-url", "https://api.openai.com/v1")
    code, out, err = run(
        capsys,
        "rules",
        "add",
        "re:gpt-4o(-mini)?",
        "--backend",
        "openai",
        "--model",
        "gpt-4o",
        "--fallback",
        "local:demo",
        "--fallback",
        "local",
        "--priority",
        "5",
        "--disabled",
        "--note",
        "cloud first",
        "--json",
    )
    assert code == 0, err
    rule = json.loads(out)
    assert (rule["model"], rule["priority"], rule["enabled"], rule["note"]) == ("gpt-4o", 5, False, "cloud first")
    assert rule["fallbacks"] == ["local:demo", "local"]
    assert run(capsys, "rules", "enable", str(rule["id"]))[0] == 0
    code, out, _ = run(
        capsys, "rules", "edit", str(rule["id"]), "--priority", "1", "--fallback", "openai:gpt-4o-mini", "--json"
    )
    edited = json.loads(out)
    assert edited["enabled"] is True and edited["priority"] == 1 and edited["fallbacks"] == ["openai:gpt-4o-mini"]
    assert edited["note"] == "cloud first"  # options not given are kept
    code, out, _ = run(capsys, "rules", "explain", "gpt-4o-mini")
    assert code == 0 and f"#{rule['id']}" in out and "openai/gpt-4o" in out


def test_rules_list_orders_by_match_precedence(capsys) -> None:
    run(capsys, "rules", "add", "*", "--backend", "local")
    run(capsys, "rules", "add", "demo", "--backend", "local")
    rules = json.loads(run(capsys, "rules", "list", "--json")[1])
    assert [r["pattern"] for r in rules] == ["demo", "*"]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["rules", "add", "re:gpt-(", "--backend", "local"], "invalid regular expression"),
        (["rules", "add", "x", "--backend", "ghost"], "unknown backend 'ghost'"),
        (["rules", "rm", "99"], "no rule with id 99"),
        (["rules", "edit", "42", "--note", "x"], "no rule with id 42"),
        (["rules", "enable", "7"], "no rule with id 7"),
        (["rules", "add", "x", "--backend", "local", "--fallback", ":m"], "fallback"),
        (["rules", "add", "", "--backend", "local"], "pattern"),
        (["backends", "add", "b", "--kind", "openai", "--base-url", "ftp://x"], "error: --base-url: must start with"),
        (["backends", "add", "b", "--kind", "openai", "--retries", "-3"], "error: --retries: must be 0 or more"),
        (["backends", "add", "b", "--kind", "openai", "--timeout", "0"], "error: --timeout: must be positive"),
        (["backends", "add", "b", "--kind", "openai", "--deadline", "0"], "error: --deadline: must be positive"),
        (["backends", "trip", "nope"], "error: no cloud backend named 'nope'\n"),
        (["backends", "rm", "nope"], "no backend named nope"),
        (
            ["backends", "add", "ollama", "--kind", "openai-compatible"],
            "--base-url is required for an openai-compatible",
        ),
        (["keys", "rm", "nobody"], "no key stored for nobody"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_1(capsys, argv: list[str], needle: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 1 and needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


# ---------------------------------------------------------------- backends


def test_backends_add_list_rm_with_settings(capsys, isolated_env: Path) -> None:
    code, out, err = run(
        capsys,
        "backends",
        "add",
        "vllm",
        "--kind",
        "openai-compatible",
        "--base-url",
        "http://127.0.0.1:8000/v1",
        "--retries",
        "4",
        "--fail-max",
        "3",
        "--reset-timeout",
        "12.5",
        "--timeout",
        "90",
    )
    assert code == 0, err
    code, out, _ = run(capsys, "backends", "list", "--json")
    rows = {b["name"]: b for b in json.loads(out)}
    assert rows["vllm"]["kind"] == "openai-compatible" and rows["vllm"]["key"] is None
    assert rows["vllm"]["settings"] == {"retries": 4, "fail_max": 3, "reset_timeout": 12.5, "total_timeout": 90.0}
    code, out, _ = run(capsys, "backends", "list")
    assert "vllm" in out and "local" in out and "none" in out
    assert run(capsys, "backends", "rm", "vllm")[0] == 0
    assert "vllm" not in run(capsys, "backends", "list", "--json")[1]


def test_openai_and_anthropic_backends_default_to_the_services_own_urls(capsys) -> None:
    assert run(capsys, "backends", "add", "oa", "--kind", "openai")[0] == 0
    assert run(capsys, "backends", "add", "an", "--kind", "anthropic")[0] == 0
    code, out, _ = run(capsys, "backends", "list", "--json")
    assert code == 0
    urls = {b["name"]: b["base_url"] for b in json.loads(out)}
    assert urls == {"oa": "https://api.openai.com/v1", "an": "https://api.anthropic.com"}


def test_backends_get_no_cap_on_the_whole_answer_unless_asked(capsys, isolated_env: Path) -> None:
    from router.store import Store
    from router.workbench import cloud_config

    assert run(capsys, "backends", "add", "plain", "--kind", "openai")[0] == 0
    assert run(capsys, "backends", "add", "capped", "--kind", "openai", "--timeout", "90")[0] == 0
    store = Store.open(db_path(isolated_env))
    try:
        configs = {rec.name: cloud_config(rec) for rec in store.list_backends()}
    finally:
        store.close()
    assert (configs["plain"].total_timeout, configs["plain"].idle_timeout) == (None, 60.0)
    assert configs["capped"].total_timeout == 90.0


def test_backends_rm_refuses_while_rules_use_it_unless_forced(capsys, monkeypatch) -> None:
    for name in ("oa", "spare"):
        assert run(capsys, "backends", "add", name, "--kind", "openai")[0] == 0
    assert run(capsys, "rules", "add", "gpt-*", "--backend", "oa")[0] == 0
    assert run(capsys, "rules", "add", "smart", "--backend", "local", "-f", "oa:gpt-4o", "--disabled")[0] == 0
    code, out, err = run(capsys, "backends", "rm", "oa")
    assert code == 1 and out == ""
    assert err.startswith("error: backend oa is in use by rule #1 gpt-* (target), rule #2 smart (fallback)")
    assert "--force" in err and len(err.strip().splitlines()) == 1
    assert {b["name"] for b in json.loads(run(capsys, "backends", "list", "--json")[1])} == {"oa", "spare"}
    code, out, err = run(capsys, "backends", "rm", "oa", "--force")
    assert code == 0 and out.strip() == "removed backend oa"
    assert err.startswith("warning: oa is still named by rule #1 gpt-* (target), rule #2 smart (fallback)")
    assert {b["name"] for b in json.loads(run(capsys, "backends", "list", "--json")[1])} == {"spare"}
    chain = json.loads(run(capsys, "rules", "explain", "gpt-4", "--json")[1])["chain"]
    assert (chain[0]["backend"], chain[0]["reason"]) == ("oa", "no such backend")
    # The default route uses it too.
    monkeypatch.setenv("MLXWB_DEFAULT_BACKEND", "spare")
    code, _, err = run(capsys, "backends", "rm", "spare")
    assert code == 1 and "in use by the default route" in err
    monkeypatch.delenv("MLXWB_DEFAULT_BACKEND")
    # Unused: removed without a word more.
    code, out, err = run(capsys, "backends", "rm", "spare")
    assert (code, out.strip(), err) == (0, "removed backend spare", "")


def test_health_has_a_row_per_backend(capsys) -> None:
    run(capsys, "backends", "add", "anthropic", "--kind", "anthropic", "--base-url", "http://127.0.0.1:9")
    code, out, _ = run(capsys, "backends", "health")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert code == 0 and set(rows) == {"local", "anthropic"}
    # NAME KIND STATE FAILS REQS ERRS P50 P95: a cloud backend shows its breaker's failures of fail_max.
    assert rows["anthropic"][:6] == ["anthropic", "anthropic", "closed", "0/5", "0", "0"]
    assert rows["local"][:4] == ["local", "local", "closed", "-"]
    code, out, _ = run(capsys, "backends", "health", "--json")
    snaps = {s["name"]: s for s in json.loads(out)}
    assert code == 0 and (snaps["anthropic"]["kind"], snaps["anthropic"]["fail_max"]) == ("anthropic", 5)
    run(capsys, "backends", "rm", "anthropic")
    assert [s["name"] for s in json.loads(run(capsys, "backends", "health", "--json")[1])] == ["local"]


# ---------------------------------------------------------------- keys


def test_keys_set_from_stdin_status_and_rm(capsys, monkeypatch, memory_keyring) -> None:
    run(capsys, "backends", "add", "anthropic", "--kind", "anthropic", "--base-url", "https://api.anthropic.com")
    monkeypatch.setattr("sys.stdin", io.StringIO(KEY + "\n"))
    code, out, err = run(capsys, "keys", "set", "anthropic")
    assert code == 0 and KEY not in out + err
    assert memory_keyring.get_password("mlx-workbench", "anthropic") == KEY
    code, out, _ = run(capsys, "keys", "status", "--json")
    assert json.loads(out)["anthropic"] == "keyring" and KEY not in out
    code, out, _ = run(capsys, "backends", "list")
    assert "keyring" in out and KEY not in out
    assert run(capsys, "keys", "rm", "anthropic")[0] == 0
    assert run(capsys, "keys", "rm", "anthropic")[0] == 1


def test_keys_set_without_keyring_names_the_env_var(capsys, monkeypatch) -> None:
    import keyring
    from keyring.backends import fail

    keyring.set_keyring(fail.Keyring())
    monkeypatch.setattr("sys.stdin", io.StringIO(KEY + "\n"))
    code, out, err = run(capsys, "keys", "set", "openai")
    assert code == 1 and "OPENAI_API_KEY" in err and KEY not in err + out


def test_keys_set_through_hidden_prompt_on_a_tty(capsys, monkeypatch, memory_keyring) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    prompts: list[str] = []
    monkeypatch.setattr("sys.stdin", Tty(""))
    monkeypatch.setattr("getpass.getpass", lambda prompt="": prompts.append(prompt) or KEY)
    code, out, err = run(capsys, "keys", "set", "openai")
    assert code == 0 and prompts and "hidden" in prompts[0]
    assert memory_keyring.get_password("mlx-workbench", "openai") == KEY
    assert KEY not in out + err


def test_keys_set_empty_stdin_is_refused(capsys, monkeypatch, memory_keyring) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(capsys, "keys", "set", "openai")
    assert code == 1 and "no key given" in err and memory_keyring.store == {}


def test_ctrl_d_at_the_prompt_is_a_clean_refusal(capsys, monkeypatch, memory_keyring) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    def eof(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr("sys.stdin", Tty(""))
    monkeypatch.setattr("getpass.getpass", eof)
    code, _, err = run(capsys, "keys", "set", "openai")
    assert code == 1 and "no key given" in err and memory_keyring.store == {}


def test_keys_set_reads_one_line_only(capsys, monkeypatch, memory_keyring) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{KEY}\nsecond line\n"))
    assert run(capsys, "keys", "set", "listener")[0] == 0
    assert memory_keyring.get_password("mlx-workbench", "listener") == KEY


def test_key_is_never_accepted_on_the_command_line(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["keys", "set", "openai", KEY])
    assert exc.value.code == 2


def test_keys_status_shows_env_and_keyring_sources(capsys, monkeypatch, memory_keyring) -> None:
    run(capsys, "backends", "add", "openai", "--kind", "openai", "--base-url", "https://api.openai.com/v1")
    run(capsys, "backends", "add", "anthropic", "--kind", "anthropic", "--base-url", "https://api.anthropic.com")
    run(
        capsys, "backends", "add", "groq", "--kind", "openai-compatible", "--base-url", "https://api.groq.com/openai/v1"
    )
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    memory_keyring.set_password("mlx-workbench", "anthropic", KEY)
    code, out, _ = run(capsys, "keys", "status", "--json")
    assert code == 0 and json.loads(out) == {"openai": "env", "anthropic": "keyring", "groq": None, "listener": None}
    code, out, _ = run(capsys, "keys", "status")
    assert code == 0
    assert "MLXWB_KEY_GROQ" in out and "ANTHROPIC_API_KEY" in out and KEY not in out


def test_keys_set_works_even_when_the_database_cannot_be_opened(
    capsys, monkeypatch, tmp_path: Path, memory_keyring
) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    monkeypatch.setenv("MLXWB_DB", str(blocker / "wb.db"))
    monkeypatch.setattr("sys.stdin", io.StringIO(KEY + "\n"))
    assert run(capsys, "keys", "set", "openai")[0] == 0
    assert memory_keyring.get_password("mlx-workbench", "openai") == KEY
    assert run(capsys, "keys", "rm", "openai")[0] == 0
    assert not blocker.is_dir()


def test_no_key_in_output_logs_or_database(capsys, monkeypatch, memory_keyring, isolated_env: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    run(capsys, "backends", "add", "openai", "--kind", "openai", "--base-url", "http://127.0.0.1:9/v1")
    monkeypatch.setattr("sys.stdin", io.StringIO(KEY + "\n"))
    outputs = [run(capsys, "keys", "set", "openai")]
    for argv in (
        ["keys", "status"],
        ["keys", "status", "--json"],
        ["backends", "list"],
        ["backends", "list", "--json"],
        ["backends", "health"],
        ["backends", "health", "--json"],
        ["rules", "explain", "gpt-4o", "--json"],
    ):
        outputs.append(run(capsys, *argv))
    assert all(code == 0 for code, _, _ in outputs)
    assert KEY not in "".join(o + e for _, o, e in outputs) and KEY not in caplog.text
    blob = b"".join(p.read_bytes() for p in isolated_env.iterdir() if p.is_file())
    assert blob and KEY.encode() not in blob


# ---------------------------------------------------------------- database and config


def test_corrupt_database_is_reported_and_replaced(capsys, isolated_env: Path) -> None:
    junk = b"\x00garbage, not a database\xff" * 64
    db_path(isolated_env).write_bytes(junk)
    code, _out, err = run(capsys, "rules", "list")
    assert code == 0 and "moved aside" in err
    aside = [p for p in isolated_env.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes() == junk


def test_newer_database_is_one_line_and_untouched(capsys, isolated_env: Path) -> None:
    path = db_path(isolated_env)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 999")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    code, _out, err = run(capsys, "rules", "list")
    assert code == 1 and "newer mlx-workbench" in err and len(err.strip().splitlines()) == 1
    assert path.read_bytes() == before


def test_bad_config_file_is_one_line(capsys, tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("listener = 5\n")
    code, _out, err = run(capsys, "--config", str(cfg), "rules", "list")
    assert code == 1 and str(cfg) in err and "Traceback" not in err


def test_db_path_under_a_regular_file_is_one_line(capsys, tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    monkeypatch.setenv("MLXWB_DB", str(blocker / "wb.db"))
    code, _out, err = run(capsys, "backends", "list")
    assert code == 1 and "cannot create the folder" in err and "Traceback" not in err
