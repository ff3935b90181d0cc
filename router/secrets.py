"""API keys: keyring (service "mlx-workbench", user = backend name), env vars as override.

Keys never go to SQLite, logs, error text or argv. Env vars: MLXWB_KEY_<NAME> for any backend;
OPENAI_API_KEY / ANTHROPIC_API_KEY for the backends named "openai" / "anthropic";
MLXWB_LISTENER_KEY for the listener's own key (name "listener").
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

SERVICE = "mlx-workbench"
_WELL_KNOWN = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "listener": "MLXWB_LISTENER_KEY"}


class KeyringUnavailableError(RuntimeError):
    """No usable keyring backend on this machine; the message says what to do instead."""


def env_vars_for(name: str) -> list[str]:
    """The env vars that can hold the key of backend `name`, the first found wins."""
    own = "MLXWB_KEY_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
    well_known = _WELL_KNOWN.get(name.lower())
    return [own] + ([well_known] if well_known and well_known != own else [])


def env_var_for(name: str) -> str:
    """The env var to suggest for backend `name`."""
    return _WELL_KNOWN.get(name.lower()) or env_vars_for(name)[0]


class Secrets:
    def __init__(self, service: str = SERVICE, env: Mapping[str, str] | None = None) -> None:
        self.service = service
        self._env = env

    @property
    def env(self) -> Mapping[str, str]:
        return os.environ if self._env is None else self._env

    def __repr__(self) -> str:
        return f"Secrets(service={self.service!r})"

    def _keyring_error(self, name: str, exc: Exception) -> KeyringUnavailableError:
        return KeyringUnavailableError(
            f"no usable keyring on this machine ({type(exc).__name__}); set the environment variable "
            f"{env_var_for(name)} instead, or install a keyring backend (e.g. the Secret Service on Linux)"
        )

    def _from_env(self, name: str) -> str | None:
        for var in env_vars_for(name):
            value = self.env.get(var)
            if value:
                return value
        return None

    def _from_keyring(self, name: str) -> str | None:
        import keyring
        from keyring.errors import KeyringError

        try:
            return keyring.get_password(self.service, name)
        except (KeyringError, RuntimeError) as exc:
            raise self._keyring_error(name, exc) from None

    def get(self, name: str) -> str | None:
        """The key, or None. A missing keyring is not an error here: env vars still work."""
        value = self._from_env(name)
        if value:
            return value
        try:
            return self._from_keyring(name)
        except KeyringUnavailableError:
            return None

    def source(self, name: str) -> str | None:
        """ "env", "keyring" or None — never the key."""
        if self._from_env(name):
            return "env"
        try:
            return "keyring" if self._from_keyring(name) else None
        except KeyringUnavailableError:
            return None

    def set(self, name: str, key: str) -> None:
        import keyring
        from keyring.errors import KeyringError

        if not key or not key.strip():
            raise ValueError("the key is empty")
        try:
            keyring.set_password(self.service, name, key.strip())
        except (KeyringError, RuntimeError) as exc:
            raise self._keyring_error(name, exc) from None

    def delete(self, name: str) -> bool:
        import keyring
        from keyring.errors import KeyringError, PasswordDeleteError

        try:
            keyring.delete_password(self.service, name)
            return True
        except PasswordDeleteError:
            return False
        except (KeyringError, RuntimeError) as exc:
            raise self._keyring_error(name, exc) from None

    def status(self, names: Iterable[str]) -> dict[str, str | None]:
        return {n: self.source(n) for n in names}

    def keyring_usable(self) -> bool:
        try:
            self._from_keyring("__probe__")
            return True
        except KeyringUnavailableError:
            return False
