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
    assert cfg.source == "defaults" and cfg.engine.data_dir == tmp_path and cfg.keymap == {}
    assert cfg.engine.max_batch == 8 and cfg.engine.scan_hf_cache is True


def test_every_file_key(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("""
data_dir = "/tmp/x"
model_dirs = ["/m1", "~/m2"]
scan_hf_cache = false
memory_budget = "2GiB"
prompt_cache_bytes = "256MiB"
max_batch = 4
db_path = "/tmp/db/w.db"
default_backend = "openai"
log_prompts = true
theme = "nord"
request_log_max_rows = 500
request_log_max_age_days = 7
[listener]
host = "0.0.0.0"
port = 9000
[keymap]
"app.quit" = "ctrl+q,f10"
"pane.chat" = "f1"
""")
    cfg = load_config(f, env={})
    e = cfg.engine
    assert (e.data_dir, e.model_dirs, e.scan_hf_cache) == (
        Path("/tmp/x"),
        [Path("/m1"), Path("~/m2").expanduser()],
        False,
    )
    assert (e.memory_budget_bytes, e.prompt_cache_bytes, e.max_batch) == (2 * 2**30, 256 * 2**20, 4)
    assert (cfg.database, cfg.default_backend, cfg.log_prompts, cfg.theme) == (
        Path("/tmp/db/w.db"),
        "openai",
        True,
        "nord",
    )
    assert (cfg.request_log_max_rows, cfg.request_log_max_age_days) == (500, 7)
    assert (cfg.listener_host, cfg.listener_port) == ("0.0.0.0", 9000)
    assert cfg.keymap == {"app.quit": "ctrl+q,f10", "pane.chat": "f1"}
    assert cfg.source == str(f)


def test_database_defaults_to_the_data_dir_from_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(f'data_dir = "{tmp_path / "d"}"\n')
    assert load_config(f, env={}).database == tmp_path / "d" / "workbench.db"


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
        "MLXWB_PROMPT_CACHE_BYTES": "1GiB",
        "MLXWB_MAX_BATCH": "16",
        "MLXWB_SCAN_HF_CACHE": "false",
    }
    cfg = load_config(f, env=env)
    assert (cfg.engine.prompt_cache_bytes, cfg.engine.max_batch, cfg.engine.scan_hf_cache) == (2**30, 16, False)
    assert cfg.engine.data_dir == tmp_path / "d" and cfg.database == tmp_path / "elsewhere.db"
    assert cfg.engine.model_dirs == [tmp_path / "a", tmp_path / "b"]
    assert cfg.engine.memory_budget_bytes == 512 * 2**20
    assert (cfg.listener_host, cfg.listener_port, cfg.theme, cfg.log_prompts) == ("localhost", 9001, "gruvbox", True)


@pytest.mark.parametrize(
    "value,expected", [("8GiB", 8 * 2**30), ("1.5GB", 1_500_000_000), ("1024", 1024), ("100 MiB", 100 * 2**20)]
)
def test_memory_budget_sizes(value: str, expected: int) -> None:
    assert (
        load_config(
            env={"MLXWB_MEMORY_BUDGET": value, "MLXWB_CONFIG": "/nonexistent/c.toml"}
        ).engine.memory_budget_bytes
        == expected
    )


@pytest.mark.parametrize("value", ["0.5", "0.25"])
def test_memory_budget_fraction_of_ram(value: str) -> None:
    from engine.config import total_memory_bytes

    cfg = load_config(env={"MLXWB_MEMORY_BUDGET": value, "MLXWB_CONFIG": "/nonexistent/c.toml"})
    assert cfg.engine.memory_budget_bytes == int(total_memory_bytes() * float(value))


def test_env_wins_key_by_key_inside_a_table(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[listener]\nhost = "0.0.0.0"\nport = 9000\n[keymap]\n"app.quit" = "f10"\n')
    cfg = load_config(f, env={"MLXWB_LISTENER_PORT": "9100", "MLXWB_THEME": ""})
    assert (cfg.listener_host, cfg.listener_port, cfg.theme) == ("0.0.0.0", 9100, "textual-dark")
    assert cfg.keymap == {"app.quit": "f10"}


def test_the_listener_key_variable_is_not_a_setting() -> None:
    env = {"MLXWB_LISTENER_KEY": "sk-listener-secret", "MLXWB_LISTENER_HOST": "localhost", "MLXWB_CONFIG": "/x.toml"}
    cfg = load_config(env=env)
    assert cfg.listener_host == "localhost" and "sk-listener-secret" not in repr(cfg)


def test_prompt_cache_can_be_turned_off() -> None:
    cfg = load_config(env={"MLXWB_PROMPT_CACHE_BYTES": "0", "MLXWB_CONFIG": "/nonexistent/c.toml"})
    assert cfg.engine.prompt_cache_bytes == 0


@pytest.mark.parametrize(
    "var,value,needle",
    [
        ("MLXWB_MEMORY_BUDGET", "lots", "MLXWB_MEMORY_BUDGET"),
        ("MLXWB_MEMORY_BUDGET", "-1GiB", "MLXWB_MEMORY_BUDGET"),
        ("MLXWB_LISTENER_PORT", "http", "MLXWB_LISTENER_PORT"),
        ("MLXWB_LISTENER_PORT", "70000", "MLXWB_LISTENER_PORT"),
        ("MLXWB_LOG_PROMPTS", "maybe", "MLXWB_LOG_PROMPTS"),
        ("MLXWB_MAX_BATCH", "0", "MLXWB_MAX_BATCH: max_batch"),
        ("MLXWB_PROMPT_CACHE_BYTES", "lots", "MLXWB_PROMPT_CACHE_BYTES: prompt_cache_bytes"),
        ("MLXWB_MEMORY_BUDGET", "0", "MLXWB_MEMORY_BUDGET: memory_budget"),
    ],
)
def test_bad_env_values_name_the_variable(var: str, value: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(env={var: value, "MLXWB_CONFIG": "/nonexistent/c.toml"})


@pytest.mark.parametrize(
    "text,key",
    [
        ("log_prompts = 'perhaps'", "log_prompts"),
        ("request_log_max_rows = 'many'", "request_log_max_rows"),
        ("request_log_max_age_days = 0", "request_log_max_age_days"),
        ("model_dirs = 'not-a-list'", "model_dirs"),
        ("model_dirs = [1, 2]", "model_dirs"),
        ("listener = 5", "listener"),
        ("scan_hf_cache = 3", "scan_hf_cache"),
        ("memory_budget = true", "memory_budget"),
        ("memory_budget = 'lots'", "memory_budget"),
        ("max_batch = 0", "max_batch"),
        ("prompt_cache_bytes = -1", "prompt_cache_bytes"),
        ("keymap = 'ctrl+q'", "keymap"),
        ("[keymap]\n'app.quit' = 3", "keymap"),
        ("[listener]\nport = 99999", "listener.port"),
        ("colour = 'red'", "unknown setting colour"),
        ("[listener]\ncolour = 'red'", "unknown setting listener.colour"),
    ],
)
def test_bad_file_values_name_key_and_file(tmp_path: Path, text: str, key: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(text + "\n")
    with pytest.raises(ConfigError) as exc:
        load_config(f, env={})
    assert key in str(exc.value) and str(f) in str(exc.value)


def test_an_error_names_the_source_the_bad_value_came_from(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("max_batch = 4\n[listener]\nport = 99999\n")
    with pytest.raises(ConfigError) as exc:  # the file's port is bad, the variable's batch is bad
        load_config(f, env={"MLXWB_MAX_BATCH": "none"})
    msg = str(exc.value)
    assert f"{f}: listener.port" in msg and "environment variable MLXWB_MAX_BATCH: max_batch" in msg
    with pytest.raises(ConfigError, match=r"^environment variable MLXWB_LISTENER_PORT: listener\.port"):
        load_config(f, env={"MLXWB_LISTENER_PORT": "70000"})
    assert load_config(f, env={"MLXWB_LISTENER_PORT": "9001"}).listener_port == 9001


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "typo.toml", env={})


def test_binary_file_is_a_config_error(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(f, env={})
