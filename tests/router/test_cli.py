"""The rules / backends / keys commands end to end through tui.cli.main."""

from __future__ import annotations

import io
import json

import pytest

from tui.cli import main

KEY = "sk-cli-secret-0123456789abcdefghijkl"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


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


@pytest.mark.parametrize("argv,msg", [
    (["rules", "add", "re:gpt-(", "--backend", "local"], "invalid regular expression"),
    (["rules", "add", "x", "--backend", "ghost"], "unknown backend 'ghost'"),
    (["rules", "rm", "99"], "no rule with id 99"),
    (["backends", "add", "b", "--kind", "openai", "--base-url", "ftp://x"], "base_url"),
    (["backends", "rm", "nope"], "no backend named nope"),
    (["backends", "add", "ollama", "--kind", "openai-compatible"], "--base-url is required for an openai-compatible"),
])
def test_bad_input_is_one_clear_line(capsys, argv: list[str], msg: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 1 and msg in err and "Traceback" not in err


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
    code, out, _ = run(capsys, "backends", "health")
    assert "anthropic" in out and "closed" in out and KEY not in out
    assert run(capsys, "keys", "rm", "anthropic")[0] == 0
    assert run(capsys, "keys", "rm", "anthropic")[0] == 1


def test_keys_set_without_keyring_names_the_env_var(capsys, monkeypatch) -> None:
    import keyring
    from keyring.backends import fail

    keyring.set_keyring(fail.Keyring())
    monkeypatch.setattr("sys.stdin", io.StringIO(KEY + "\n"))
    code, out, err = run(capsys, "keys", "set", "openai")
    assert code == 1 and "OPENAI_API_KEY" in err and KEY not in err + out


def test_openai_and_anthropic_backends_default_to_the_services_own_urls(capsys) -> None:
    assert run(capsys, "backends", "add", "oa", "--kind", "openai")[0] == 0
    assert run(capsys, "backends", "add", "an", "--kind", "anthropic")[0] == 0
    code, out, _ = run(capsys, "backends", "list", "--json")
    urls = {b["name"]: b["base_url"] for b in json.loads(out)}
    assert urls == {"oa": "https://api.openai.com/v1", "an": "https://api.anthropic.com"}
