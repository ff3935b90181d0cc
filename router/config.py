"""The application's settings: a TOML file, then MLXWB_* environment variables (pydantic-settings).

Built once at start-up and passed down explicitly; tests build their own. docs/config.md lists every
key. An error names the key and where its value came from: the file, or the environment variable.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from engine.config import EngineConfig, default_data_dir, total_memory_bytes
from router.secrets import env_var_for


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


Size = Annotated[int | None, BeforeValidator(parse_size)]


class _Listener(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)


class _Settings(BaseSettings):
    """The file's schema; env var names come from the prefix (MLXWB_LISTENER_PORT: listener.port)."""

    model_config = SettingsConfigDict(
        env_prefix="MLXWB_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
        validate_by_name=True,
        validate_default=False,
    )

    data_dir: Path | None = None
    model_dirs: list[Path] = []
    scan_hf_cache: bool = True
    memory_budget: Size = Field(None, gt=0)
    prompt_cache_bytes: Size = None
    max_batch: int = Field(8, ge=1, le=1024)
    db_path: Path | None = Field(None, validation_alias="MLXWB_DB")
    default_backend: str = "local"
    log_prompts: bool = False
    theme: str = "textual-dark"
    request_log_max_rows: int = Field(10000, ge=10, le=10**8)
    request_log_max_age_days: float = Field(30.0, ge=1, le=36500)
    listener: _Listener = _Listener()
    keymap: dict[str, str] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # load_config layers the given environment over the file itself


class _Env(EnvSettingsSource):
    """The MLXWB_* variables of a given mapping (os.environ in the app, a dict in tests)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        super().__init__(_Settings)
        # An empty variable counts as unset; the listener's key is a secret (secrets.py), not a setting.
        self.env_vars = {k.lower(): v for k, v in env.items() if v and k != env_var_for("listener")}

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        if field_name == "model_dirs":  # written like PATH, not as JSON
            return [d for d in str(value).split(os.pathsep) if d]
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:
            raise ConfigError(f"environment variable MLXWB_{field_name.upper()}: {value!r} is not JSON") from None


# pydantic's wording where it names Python types rather than TOML ones.
_PLAIN = {"model_type": "must be a table", "dict_type": "must be a table", "path_type": "must be a string (a path)"}


def _error_text(err: Any, from_env: dict[str, Any], file: Path) -> str:
    """One pydantic error as "<file or variable>: <key>: <problem>, not <value>"."""
    keys = [k for k in err["loc"] if isinstance(k, str)]
    node: Any = from_env
    for k in keys:
        node = node.get(k) if isinstance(node, dict) else None
    name = ".".join(keys)  # (db_path's alias MLXWB_DB never fails: any string is a path)
    where = str(file) if node is None else f"environment variable MLXWB_{'_'.join(keys).upper()}"
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown setting {name}"
    problem = _PLAIN.get(err["type"], err["msg"].removeprefix("Value error, "))
    return f"{where}: {name}: {problem}, not {err['input']!r}"


def _layer(raw: dict[str, Any], from_env: dict[str, Any]) -> dict[str, Any]:
    """The file's values with the environment's on top; tables ([listener], [keymap]) merge."""
    out = dict(raw)
    for key, value in from_env.items():
        below = raw.get(key)
        out[key] = {**below, **value} if isinstance(below, dict) and isinstance(value, dict) else value
    return out


def _read_file(file: Path, explicit: bool) -> dict[str, Any]:
    if explicit and not file.is_file():
        raise ConfigError(f"{file}: no such config file")
    try:
        return tomllib.loads(file.read_text()) if file.is_file() else {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None


_APP_KEYS = {"default_backend", "log_prompts", "theme", "request_log_max_rows", "request_log_max_age_days", "keymap"}


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> AppConfig:
    env = os.environ if env is None else env
    file = Path(path or env.get("MLXWB_CONFIG") or default_config_path()).expanduser()
    raw = _read_file(file, explicit=path is not None)
    try:
        from_env = _Env(env)()
        s = _Settings(**_layer(raw, from_env))
    except SettingsError as exc:  # a variable was not JSON: the ConfigError that says which is the cause
        raise ConfigError(str(exc.__cause__ or exc)) from None
    except ValidationError as exc:
        raise ConfigError("; ".join(_error_text(e, from_env, file) for e in exc.errors())) from None
    engine = EngineConfig(
        data_dir=s.data_dir.expanduser() if s.data_dir else default_data_dir(),
        model_dirs=[d.expanduser() for d in s.model_dirs],
        scan_hf_cache=s.scan_hf_cache,
    )
    if s.memory_budget is not None:
        engine.memory_budget_bytes = s.memory_budget
    for name, value in (("prompt_cache_bytes", s.prompt_cache_bytes), ("max_batch", s.max_batch)):
        if value is not None or not hasattr(engine, name):  # hasattr: until the local stream declares them
            setattr(engine, name, value)
    return AppConfig(
        engine=engine,
        db_path=s.db_path.expanduser() if s.db_path else None,
        listener_host=s.listener.host,
        listener_port=s.listener.port,
        source=str(file) if file.is_file() else "defaults",
        **s.model_dump(include=_APP_KEYS),
    )
