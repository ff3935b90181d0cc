"""Keys through keyring and env vars; settings through TOML and env vars."""

from __future__ import annotations

from pathlib import Path

import keyring
import pytest
from keyring.backends import fail

from router.config import ConfigError, load_config
from router.secrets import KeyringUnavailableError, Secrets, env_var_for


def test_keyring_then_env_override(memory_keyring) -> None:
    s = Secrets(env={})
    assert s.get("openai") is None and s.source("openai") is None
    s.set("openai", "sk-from-keyring-123")
    assert s.get("openai") == "sk-from-keyring-123" and s.source("openai") == "keyring"
    env = Secrets(env={"OPENAI_API_KEY": "sk-from-env"})
    assert env.get("openai") == "sk-from-env" and env.source("openai") == "env"
    assert Secrets(env={"MLXWB_KEY_MY_VLLM": "k"}).get("my-vllm") == "k"
    assert s.delete("openai") and not s.delete("openai")
    assert "sk-" not in repr(s)


def test_no_keyring_names_the_env_var() -> None:
    keyring.set_keyring(fail.Keyring())
    s = Secrets(env={})
    assert s.get("anthropic") is None
    with pytest.raises(KeyringUnavailableError, match="ANTHROPIC_API_KEY"):
        s.set("anthropic", "sk-ant-x")
    with pytest.raises(KeyringUnavailableError, match="MLXWB_KEY_GROQ"):
        s.set("groq", "x")
    assert Secrets(env={"ANTHROPIC_API_KEY": "sk-ant-env"}).get("anthropic") == "sk-ant-env"
    assert env_var_for("listener") == "MLXWB_LISTENER_KEY"


def test_config_file_and_env_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('data_dir = "/tmp/x"\nmemory_budget = "2GiB"\nmodel_dirs = ["/m1"]\n[listener]\nport = 9000\n')
    cfg = load_config(f, env={})
    assert cfg.engine.data_dir == Path("/tmp/x") and cfg.engine.memory_budget_bytes == 2 * 2**30
    assert cfg.engine.model_dirs == [Path("/m1")] and cfg.listener_port == 9000
    assert cfg.database == Path("/tmp/x/workbench.db")
    cfg = load_config(f, env={"MLXWB_LISTENER_PORT": "9100", "MLXWB_DATA_DIR": "/tmp/y", "MLXWB_MEMORY_BUDGET": "0.25"})
    assert cfg.listener_port == 9100 and cfg.engine.data_dir == Path("/tmp/y")
    assert 0 < cfg.engine.memory_budget_bytes < 2**40


@pytest.mark.parametrize("text,msg", [
    ("memory_budget = 'lots'", "memory_budget"),
    ("[listener]\nport = 99999", "listener port"),
    ("colour = 'red'", "unknown setting"),
    ("not toml ===", "not valid TOML"),
])
def test_bad_config_names_the_key_and_file(tmp_path: Path, text: str, msg: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=msg) as exc:
        load_config(f, env={})
    assert str(f) in str(exc.value)


def test_missing_default_file_means_defaults(tmp_path: Path) -> None:
    cfg = load_config(env={"MLXWB_CONFIG": str(tmp_path / "absent.toml"), "MLXWB_DATA_DIR": str(tmp_path)})
    assert cfg.source == "defaults" and cfg.engine.data_dir == tmp_path
