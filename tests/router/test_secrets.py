"""Secrets: env vars first, then the keyring; a missing keyring is a clear message, never a crash."""

from __future__ import annotations

import logging

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail
from keyring.errors import KeyringError

from router.secrets import KeyringUnavailableError, Secrets, env_var_for, env_vars_for

KEY = "sk-test-secret-abcdefghijklmnop"


class LockedKeyring(KeyringBackend):
    """A keyring that exists but refuses every operation (e.g. a locked Secret Service)."""

    priority = 1  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        raise KeyringError("collection is locked")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise KeyringError("collection is locked")

    def delete_password(self, service: str, username: str) -> None:
        raise KeyringError("collection is locked")


@pytest.mark.parametrize(
    "name,var",
    [
        ("openai", "OPENAI_API_KEY"),
        ("anthropic", "ANTHROPIC_API_KEY"),
        ("listener", "MLXWB_LISTENER_KEY"),
        ("my-vllm", "MLXWB_KEY_MY_VLLM"),
        ("groq.eu 2", "MLXWB_KEY_GROQ_EU_2"),
    ],
)
def test_env_var_names(name: str, var: str) -> None:
    assert env_var_for(name) == var
    own = "MLXWB_KEY_" + "".join(c if c.isalnum() else "_" for c in name).upper()
    assert own in env_vars_for(name)


def test_own_var_wins_over_the_well_known_one_and_both_beat_keyring(memory_keyring) -> None:
    Secrets(env={}).set("openai", "from-keyring")
    both = Secrets(env={"MLXWB_KEY_OPENAI": "own", "OPENAI_API_KEY": "shared"})
    assert both.get("openai") == "own" and both.source("openai") == "env"
    assert Secrets(env={"OPENAI_API_KEY": "shared"}).get("openai") == "shared"
    # The shared vendor var belongs to the backend *named* openai, not to every openai-kind backend.
    assert Secrets(env={"OPENAI_API_KEY": "shared"}).get("openai-eu") is None
    assert Secrets(env={}).get("openai") == "from-keyring"
    assert Secrets(env={"OPENAI_API_KEY": ""}).source("openai") == "keyring"  # empty var = unset
    assert Secrets(env={"MLXWB_KEY_MY_VLLM": "k"}).get("my-vllm") == "k"


def test_status_reports_sources_never_keys(memory_keyring) -> None:
    s = Secrets(env={"ANTHROPIC_API_KEY": KEY})
    s.set("openai", KEY)
    status = s.status(["openai", "anthropic", "ghost", "listener"])
    assert status == {"openai": "keyring", "anthropic": "env", "ghost": None, "listener": None}
    assert KEY not in repr(s) and KEY not in str(status)


def test_set_strips_and_refuses_empty(memory_keyring) -> None:
    s = Secrets(env={})
    s.set("x", f"  {KEY}\n")
    assert memory_keyring.get_password("mlx-workbench", "x") == KEY
    with pytest.raises(ValueError, match="empty"):
        s.set("x", "   ")


def test_custom_service_name(memory_keyring) -> None:
    Secrets(service="other-app", env={}).set("openai", KEY)
    assert Secrets(env={}).get("openai") is None
    assert Secrets(service="other-app", env={}).get("openai") == KEY


@pytest.mark.parametrize("ring", [fail.Keyring, LockedKeyring])
def test_unusable_keyring_gives_a_message_with_the_env_var(ring, caplog) -> None:
    keyring.set_keyring(ring())
    caplog.set_level(logging.DEBUG)
    s = Secrets(env={})
    assert s.get("openai") is None and s.source("openai") is None
    assert s.keyring_usable() is False
    with pytest.raises(KeyringUnavailableError) as exc:
        s.set("openai", KEY)
    msg = str(exc.value)
    assert "OPENAI_API_KEY" in msg and "install a keyring backend" in msg and KEY not in msg
    with pytest.raises(KeyringUnavailableError, match="MLXWB_KEY_VLLM"):
        s.delete("vllm")
    with pytest.raises(KeyringUnavailableError, match="MLXWB_LISTENER_KEY"):
        s.set("listener", KEY)
    assert Secrets(env={"MLXWB_KEY_VLLM": KEY}).get("vllm") == KEY
    assert KEY not in caplog.text


def test_keyring_error_does_not_carry_the_key_in_its_chain() -> None:
    class EchoingKeyring(LockedKeyring):
        def set_password(self, service: str, username: str, password: str) -> None:
            raise KeyringError(f"could not store {password}")

    keyring.set_keyring(EchoingKeyring())
    with pytest.raises(KeyringUnavailableError) as exc:
        Secrets(env={}).set("openai", KEY)
    assert KEY not in str(exc.value)
    # `from None`: a traceback printer shows no chained exception that could echo the key.
    assert exc.value.__suppress_context__ is True and exc.value.__cause__ is None


def test_delete_reports_whether_there_was_a_key(memory_keyring) -> None:
    s = Secrets(env={})
    assert s.delete("openai") is False
    s.set("openai", KEY)
    assert s.delete("openai") is True and s.get("openai") is None
