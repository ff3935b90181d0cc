"""The application's settings: a TOML file, then MLXWB_* environment overrides.

Built once at start-up and passed down explicitly; tests build their own.

    # ~/.config/mlx-workbench/config.toml (or the file named by MLXWB_CONFIG)
    data_dir = "~/mlx-data"            # MLXWB_DATA_DIR
    model_dirs = ["~/models"]          # MLXWB_MODEL_DIRS (os.pathsep-separated)
    scan_hf_cache = true
    memory_budget = "8GiB"             # or a fraction of RAM: 0.5; MLXWB_MEMORY_BUDGET
    db_path = "~/mlx-data/workbench.db"  # MLXWB_DB
    default_backend = "local"
    log_prompts = false                # MLXWB_LOG_PROMPTS
    theme = "textual-dark"             # MLXWB_THEME
    request_log_max_rows = 10000
    request_log_max_age_days = 30
    [listener]
    host = "127.0.0.1"                 # MLXWB_LISTENER_HOST
    port = 8765                        # MLXWB_LISTENER_PORT
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from engine.config import EngineConfig, default_data_dir, total_memory_bytes


class ConfigError(ValueError):
    """A setting is invalid; the message names the key and where it came from."""


@dataclass
class AppConfig:
    engine: EngineConfig = field(default_factory=EngineConfig)
    db_path: Path | None = None  # None: <data_dir>/workbench.db
    default_backend: str = "local"
    listener_host: str = "127.0.0.1"
    listener_port: int = 8765
    log_prompts: bool = False
    theme: str = "textual-dark"
    request_log_max_rows: int = 10000
    request_log_max_age_days: float = 30.0
    source: str = "defaults"

    @property
    def database(self) -> Path:
        return self.db_path or self.engine.data_dir / "workbench.db"


def default_config_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("mlx-workbench", appauthor=False)) / "config.toml"


_SIZE = re.compile(r"^\s*([0-9.]+)\s*([kmgt]?i?b?)?\s*$", re.I)
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
          "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}


def parse_budget(value: Any, where: str) -> int:
    """"8GiB", "512MB", 8589934592, or a fraction of RAM such as 0.5."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: memory_budget must be a size like '8GiB' or a fraction like 0.5")
    if isinstance(value, (int, float)) and 0 < value <= 1:
        return int(total_memory_bytes() * value)
    if isinstance(value, int) and value > 1:
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            number, unit = float(m.group(1)), (m.group(2) or "").lower()
            if unit in _UNITS:
                if not unit and 0 < number <= 1:
                    return int(total_memory_bytes() * number)
                return int(number * _UNITS[unit])
    raise ConfigError(f"{where}: memory_budget {value!r} is not a size like '8GiB' or a fraction like 0.5")


def _bool(value: Any, key: str, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    raise ConfigError(f"{where}: {key} must be true or false, not {value!r}")


def _int(value: Any, key: str, where: str, lo: int, hi: int) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {key} must be an integer, not {value!r}") from None
    if not lo <= n <= hi or isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be between {lo} and {hi}, not {value!r}")
    return n


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> AppConfig:
    env = os.environ if env is None else env
    file = Path(path or env.get("MLXWB_CONFIG") or default_config_path()).expanduser()
    raw: dict[str, Any] = {}
    if file.is_file():
        try:
            raw = tomllib.loads(file.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    elif path is not None:
        raise ConfigError(f"{file}: no such config file")
    where = str(file)
    known = {"data_dir", "model_dirs", "scan_hf_cache", "memory_budget", "db_path", "default_backend",
             "log_prompts", "theme", "request_log_max_rows", "request_log_max_age_days", "listener"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}")

    def pick(key: str, env_key: str | None) -> tuple[Any, str]:
        if env_key and env.get(env_key) not in (None, ""):
            return env[env_key], f"environment variable {env_key}"
        return raw.get(key), where

    data_dir_val, _ = pick("data_dir", "MLXWB_DATA_DIR")
    data_dir = Path(str(data_dir_val)).expanduser() if data_dir_val else default_data_dir()
    dirs_val, dirs_where = pick("model_dirs", "MLXWB_MODEL_DIRS")
    if isinstance(dirs_val, str) and dirs_where != where:
        dirs_val = [d for d in dirs_val.split(os.pathsep) if d]
    if dirs_val is not None and not (isinstance(dirs_val, list) and all(isinstance(d, str) for d in dirs_val)):
        raise ConfigError(f"{dirs_where}: model_dirs must be a list of folders")
    engine = EngineConfig(data_dir=data_dir, model_dirs=[Path(d).expanduser() for d in dirs_val or []])
    if raw.get("scan_hf_cache") is not None:
        engine.scan_hf_cache = _bool(raw["scan_hf_cache"], "scan_hf_cache", where)
    budget, budget_where = pick("memory_budget", "MLXWB_MEMORY_BUDGET")
    if budget is not None:
        engine.memory_budget_bytes = parse_budget(budget, budget_where)

    cfg = AppConfig(engine=engine, source=where if file.is_file() else "defaults")
    db, _ = pick("db_path", "MLXWB_DB")
    if db:
        cfg.db_path = Path(str(db)).expanduser()
    if raw.get("default_backend") is not None:
        cfg.default_backend = str(raw["default_backend"])
    lp, lp_where = pick("log_prompts", "MLXWB_LOG_PROMPTS")
    if lp is not None:
        cfg.log_prompts = _bool(lp, "log_prompts", lp_where)
    theme, _ = pick("theme", "MLXWB_THEME")
    if theme:
        cfg.theme = str(theme)
    if raw.get("request_log_max_rows") is not None:
        cfg.request_log_max_rows = _int(raw["request_log_max_rows"], "request_log_max_rows", where, 10, 10**8)
    if raw.get("request_log_max_age_days") is not None:
        cfg.request_log_max_age_days = float(_int(raw["request_log_max_age_days"], "request_log_max_age_days",
                                                  where, 1, 36500))
    listener = raw.get("listener") or {}
    if not isinstance(listener, dict):
        raise ConfigError(f"{where}: [listener] must be a table")
    host = env.get("MLXWB_LISTENER_HOST") or listener.get("host")
    if host:
        cfg.listener_host = str(host)
    port = env.get("MLXWB_LISTENER_PORT") or listener.get("port")
    if port is not None:
        cfg.listener_port = _int(port, "listener port", where if "MLXWB_LISTENER_PORT" not in env
                                 else "environment variable MLXWB_LISTENER_PORT", 0, 65535)
    return cfg
