"""Suite-wide fixtures: isolated data dir, in-memory keyring, shared fixture plugins."""

from __future__ import annotations

import os
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend

pytest_plugins = ["tests.fixtures.tiny_model", "tests.fixtures.fake_upstream"]

# Resolved once, before any test points MLXWB_DATA_DIR at a temporary folder: `make test`
# fetches the demo model into the real data dir.
_REAL_DATA_DIR = os.environ.get("MLXWB_DATA_DIR")


class MemoryKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        from keyring.errors import PasswordDeleteError

        if (service, username) not in self.store:
            raise PasswordDeleteError("not found")
        del self.store[(service, username)]


@pytest.fixture(autouse=True)
def memory_keyring() -> MemoryKeyring:
    previous = keyring.get_keyring()
    ring = MemoryKeyring()
    keyring.set_keyring(ring)
    yield ring
    keyring.set_keyring(previous)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own data and config dir and no cloud keys from the environment."""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("MLXWB_DATA_DIR", str(data))
    monkeypatch.setenv("MLXWB_CONFIG", str(tmp_path / "config.toml"))
    for var in list(os.environ):
        if var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY") or var.startswith("MLXWB_KEY_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")
    return data


@pytest.fixture(scope="session")
def demo_model_path() -> Path:
    """The real demo model fetched by `make test` (mlx-workbench models fetch-demo)."""
    from engine.config import EngineConfig, default_data_dir
    from engine.local.demo import demo_path

    saved = os.environ.pop("MLXWB_DATA_DIR", None)
    try:
        base = Path(_REAL_DATA_DIR).expanduser() if _REAL_DATA_DIR else default_data_dir()
    finally:
        if saved is not None:
            os.environ["MLXWB_DATA_DIR"] = saved
    path = demo_path(EngineConfig(data_dir=base))
    if path is None:
        pytest.fail("demo model missing: run `make test` (it runs `mlx-workbench models fetch-demo`)")
    return path
