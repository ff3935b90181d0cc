"""The application's settings: a TOML file, then MLXWB_* environment variables (which win).

Built once at start-up and passed down explicitly; tests build their own. docs/config.md lists every
key. An error names the key and where its value came from: the file, or the environment variable.

pydantic-settings does this job too, and a version built on it was no shorter; but importing it (with
pydantic's schema building) added 0.15-0.4 s to every start here, +65% to the TUI's first frame
(bench/startup.py: 1.03 s -> 1.7 s). So the keys are a table below, each with its parser.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.config import EngineConfig, total_memory_bytes


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
    keymap: dict[str, str] = field(default_factory=dict)  # binding id -> keys, for App.set_keymap
    source: str = "defaults"

    @property
    def database(self) -> Path:
        return self.db_path or self.engine.data_dir / "workbench.db"


def default_config_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("mlx-workbench", appauthor=False)) / "config.toml"


_SIZE = re.compile(r"^\s*([0-9.]+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1} | {
    prefix + suffix: base**power
    for power, prefix in enumerate("kmgt", 1)
    for suffix, base in (("", 1000), ("b", 1000), ("ib", 1024))
}


def parse_size(value: Any) -> int:
    """A size: "8GiB", "512MB", 8589934592, 0, or a fraction of RAM such as 0.5."""
    if isinstance(value, str) and (m := _SIZE.match(value)) and (unit := (m.group(2) or "").lower()) in _UNITS:
        number = float(m.group(1))
        value = number if not unit and 0 < number <= 1 else int(number * _UNITS[unit])
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if 0 < value <= 1:
            return int(total_memory_bytes() * value)
        if value == 0 or (value > 1 and isinstance(value, int)):
            return int(value)
    raise ValueError("must be a size like '8GiB' or a fraction of RAM like 0.5")


def _positive_size(value: Any) -> int:
    if size := parse_size(value):
        return size
    raise ValueError("must be more than 0")


_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _BOOLS:
        return _BOOLS[value.lower()]
    raise ValueError("must be true or false")


def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi:
            return value
        raise ValueError(f"must be a whole number from {lo} to {hi}")

    return parse


def _str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError("must be a string")


def _path(value: Any) -> Path:
    return Path(_str(value)).expanduser()


def _paths(value: Any) -> list[Path]:
    if isinstance(value, list):
        return [_path(v) for v in value]
    raise ValueError("must be a list of folders")


def _keymap(value: Any) -> dict[str, str]:
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return dict(value)
    raise ValueError('must be a table of binding id = "keys"')


# Every key and its parser.
_KEYS: dict[str, Callable[[Any], Any]] = {
    "data_dir": _path,
    "model_dirs": _paths,  # the variable is os.pathsep-separated, like PATH
    "scan_hf_cache": _bool,
    "memory_budget": _positive_size,
    "prompt_cache_bytes": parse_size,
    "max_batch": _int(1, 1024),
    "db_path": _path,
    "default_backend": _str,
    "log_prompts": _bool,
    "theme": _str,
    "request_log_max_rows": _int(10, 10**8),
    "request_log_max_age_days": _int(1, 36500),
    "listener.host": _str,
    "listener.port": _int(0, 65535),
    "keymap": _keymap,
}
# A key's environment variable is MLXWB_<KEY> (listener.port: MLXWB_LISTENER_PORT), except these.
_ENV = {"db_path": "MLXWB_DB", "keymap": None}
_TABLES = ("listener",)  # tables whose keys are settings; [keymap] is one setting
# EngineConfig's fields (memory_budget is memory_budget_bytes there); the others are AppConfig's.
_ENGINE = {"data_dir", "model_dirs", "scan_hf_cache", "memory_budget", "prompt_cache_bytes", "max_batch"}


def env_var(key: str) -> str | None:
    return _ENV.get(key, "MLXWB_" + key.replace(".", "_").upper())


def _read_file(file: Path, explicit: bool) -> dict[str, Any]:
    """The file's settings, tables flattened to "listener.port"."""
    if explicit and not file.is_file():
        raise ConfigError(f"{file}: no such config file")
    try:
        raw = tomllib.loads(file.read_text()) if file.is_file() else {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    for table in _TABLES:
        if not isinstance(raw.get(table, {}), dict):
            raise ConfigError(f"{file}: {table}: must be a table, not {raw[table]!r}")
        raw |= {f"{table}.{k}": v for k, v in raw.pop(table, {}).items()}
    return raw


def _values(raw: dict[str, Any], env: Mapping[str, str], file: Path) -> dict[str, Any]:
    """Every key that is set, parsed; a ConfigError lists every bad one with its source."""
    values, errors = {}, [f"{file}: unknown setting {k}" for k in raw if k not in _KEYS]
    for key, parse in _KEYS.items():
        value: Any
        var = env_var(key)
        if var and env.get(var):
            value, where = env[var], f"environment variable {var}"
            if key == "model_dirs":  # like PATH
                value = [d for d in value.split(os.pathsep) if d]
        elif key in raw:
            value, where = raw[key], str(file)
        else:
            continue
        try:
            values[key] = parse(value)
        except ValueError as exc:
            errors.append(f"{where}: {key}: {exc}, not {value!r}")
    if errors:
        raise ConfigError("; ".join(errors))
    return values


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> AppConfig:
    env = os.environ if env is None else env
    file = Path(path or env.get("MLXWB_CONFIG") or default_config_path()).expanduser()
    values = _values(_read_file(file, explicit=path is not None), env, file)
    engine_values = {
        ("memory_budget_bytes" if k == "memory_budget" else k): v for k, v in values.items() if k in _ENGINE
    }
    declared = {f.name for f in fields(EngineConfig)}
    engine = EngineConfig(**{k: v for k, v in engine_values.items() if k in declared})
    # Until engine/config.py declares prompt_cache_bytes and max_batch (the local stream adds them).
    for name, default in (("prompt_cache_bytes", None), ("max_batch", 8)):
        if name not in declared:
            setattr(engine, name, engine_values.get(name, default))
    app_values = {k.replace(".", "_"): v for k, v in values.items() if k not in _ENGINE}
    return AppConfig(engine=engine, source=str(file) if file.is_file() else "defaults", **app_values)
