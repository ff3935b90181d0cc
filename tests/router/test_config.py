"""load_config: TOML file, then MLXWB_* env overrides; bad values name the key and the source."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from router.config import AppConfig, ConfigError, load_config


def test_defaults_without_a_file(tmp_path: Path) -> None:
    cfg = load_config(env={"MLXWB_CONFIG": str(tmp_path / "absent.toml"), "MLXWB_DATA_DIR": str(tmp_path)})
    assert isinstance(cfg, AppConfig)
    assert (cfg.default_backend, cfg.listener_host, cfg.listener_port) == ("local", "127.0.0.1", 8765)
    assert cfg.log_prompts is False and cfg.theme == "textual-dark"
    assert (cfg.request_log_max_rows, cfg.request_log_max_age_days) == (10000, 30)
    assert cfg.database == tmp_path / "workbench.db"


def test_mlxwb_config_env_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text('theme = "nord"\nlog_prompts = true\ndefault_backend = "openai"\nrequest_log_max_rows = 50\n')
    cfg = load_config(env={"MLXWB_CONFIG": str(f)})
    assert (cfg.theme, cfg.log_prompts, cfg.default_backend, cfg.request_log_max_rows) == ("nord", True, "openai", 50)
    assert cfg.source == str(f)


def test_every_env_override(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('theme = "nord"\nlog_prompts = false\n[listener]\nhost = "127.0.0.1"\nport = 9000\n')
    env = {
        "MLXWB_DATA_DIR": str(tmp_path / "d"),
        "MLXWB_DB": str(tmp_path / "elsewhere.db"),
        "MLXWB_MODEL_DIRS": os.pathsep.join([str(tmp_path / "a"), "", str(tmp_path / "b")]),
        "MLXWB_MEMORY_BUDGET": "512MiB",
        "MLXWB_LISTENER_HOST": "localhost",
        "MLXWB_LISTENER_PORT": "9001",
        "MLXWB_THEME": "gruvbox",
        "MLXWB_LOG_PROMPTS": "yes",
    }
    cfg = load_config(f, env=env)
    assert cfg.engine.data_dir == tmp_path / "d" and cfg.database == tmp_path / "elsewhere.db"
    assert cfg.engine.model_dirs == [tmp_path / "a", tmp_path / "b"]
    assert cfg.engine.memory_budget_bytes == 512 * 2**20
    assert (cfg.listener_host, cfg.listener_port, cfg.theme, cfg.log_prompts) == ("localhost", 9001, "gruvbox", True)


@pytest.mark.parametrize("value,expected", [("8GiB", 8 * 2**30), ("1.5GB", 1_500_000_000), ("1024", 1024),
                                            ("100 MiB", 100 * 2**20)])
def test_memory_budget_sizes(value: str, expected: int) -> None:
    assert load_config(env={"MLXWB_MEMORY_BUDGET": value, "MLXWB_CONFIG": "/nonexistent/c.toml"}) \
        .engine.memory_budget_bytes == expected


def test_memory_budget_fraction_of_ram() -> None:
    from engine.config import total_memory_bytes

    cfg = load_config(env={"MLXWB_MEMORY_BUDGET": "0.5", "MLXWB_CONFIG": "/nonexistent/c.toml"})
    assert cfg.engine.memory_budget_bytes == int(total_memory_bytes() * 0.5)


@pytest.mark.parametrize("var,value,needle", [
    ("MLXWB_MEMORY_BUDGET", "lots", "MLXWB_MEMORY_BUDGET"),
    ("MLXWB_MEMORY_BUDGET", "-1GiB", "MLXWB_MEMORY_BUDGET"),
    ("MLXWB_LISTENER_PORT", "http", "MLXWB_LISTENER_PORT"),
    ("MLXWB_LISTENER_PORT", "70000", "MLXWB_LISTENER_PORT"),
    ("MLXWB_LOG_PROMPTS", "maybe", "MLXWB_LOG_PROMPTS"),
])
def test_bad_env_values_name_the_variable(var: str, value: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(env={var: value, "MLXWB_CONFIG": "/nonexistent/c.toml"})


@pytest.mark.parametrize("text,key", [
    ("log_prompts = 'perhaps'", "log_prompts"),
    ("request_log_max_rows = 'many'", "request_log_max_rows"),
    ("request_log_max_age_days = 0", "request_log_max_age_days"),
    ("model_dirs = 'not-a-list'", "model_dirs"),
    ("model_dirs = [1, 2]", "model_dirs"),
    ("listener = 5", "listener"),
    ("scan_hf_cache = 3", "scan_hf_cache"),
    ("memory_budget = true", "memory_budget"),
])
def test_bad_file_values_name_key_and_file(tmp_path: Path, text: str, key: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(text + "\n")
    with pytest.raises(ConfigError) as exc:
        load_config(f, env={})
    assert key in str(exc.value) and str(f) in str(exc.value)


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "typo.toml", env={})


def test_binary_file_is_a_config_error(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(f, env={})
