"""ModelManager on its own (run on the test thread: it is the only MLX user here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from engine.config import EngineConfig
from engine.local.discovery import discover
from engine.local.models import ModelManager, ModelTooLargeError
from engine.types import ModelNotFoundError, RejectedError


def infos(models_dir: Path, tmp_path: Path) -> dict:
    cfg = EngineConfig(data_dir=tmp_path / "data", model_dirs=[models_dir], scan_hf_cache=False)
    return {m.id: m for m in discover(cfg)}


def manager(tmp_path: Path, budget: int) -> ModelManager:
    return ModelManager(EngineConfig(data_dir=tmp_path / "data", memory_budget_bytes=budget))


def test_bytes_are_measured_from_the_parameters(tiny_models_dir: Path, tmp_path: Path) -> None:
    from mlx.utils import tree_flatten

    mgr = manager(tmp_path, 2**30)
    loaded = mgr.get(infos(tiny_models_dir, tmp_path)["tiny-llama-mlx"])
    assert loaded.bytes == sum(v.nbytes for _, v in tree_flatten(loaded.model.parameters())) > 0
    snap = mgr.snapshot("test-blas")
    assert snap.used_bytes == loaded.bytes and snap.budget_bytes == 2**30 and snap.blas == "test-blas"


def test_a_hit_refreshes_recency_so_the_other_model_is_evicted(tiny_models_dir: Path, tmp_path: Path) -> None:
    by_id = infos(tiny_models_dir, tmp_path)
    one = manager(tmp_path, 2**30).get(by_id["tiny-llama-mlx"]).bytes
    mgr = manager(tmp_path, int(one * 2.5))
    # A third model: the GGUF under another id, so three fit only two at a time.
    third = dataclasses.replace(by_id["tiny-llama"], id="tiny-llama-copy", aliases=())
    mgr.get(by_id["tiny-llama-mlx"])
    mgr.get(by_id["tiny-llama"])
    mgr.get(by_id["tiny-llama-mlx"])  # touched: now the most recently used
    mgr.get(third)
    assert [m.id for m in mgr.snapshot("").loaded] == ["tiny-llama-mlx", "tiny-llama-copy"]
    assert mgr.unload("tiny-llama-mlx") is True and mgr.unload("tiny-llama-mlx") is False
    assert [m.id for m in mgr.snapshot("").loaded] == ["tiny-llama-copy"]


def test_busy_models_are_not_evicted(tiny_models_dir: Path, tmp_path: Path) -> None:
    by_id = infos(tiny_models_dir, tmp_path)
    one = manager(tmp_path, 2**30).get(by_id["tiny-llama-mlx"]).bytes
    mgr = ModelManager(
        EngineConfig(data_dir=tmp_path / "data", memory_budget_bytes=int(one * 1.5)),
        busy=lambda model_id: model_id == "tiny-llama-mlx",
    )
    mgr.get(by_id["tiny-llama-mlx"])
    mgr.get(by_id["tiny-llama"])
    assert mgr.is_loaded("tiny-llama-mlx")


def test_missing_file_and_too_large_are_clear_errors(tiny_models_dir: Path, tmp_path: Path) -> None:
    info = infos(tiny_models_dir, tmp_path)["tiny-llama"]
    gone = dataclasses.replace(info, path=tmp_path / "gone.gguf")
    with pytest.raises(ModelNotFoundError, match="no longer exists"):
        manager(tmp_path, 2**30).get(gone)
    with pytest.raises(ModelTooLargeError, match="memory budget") as exc:
        manager(tmp_path, 100).get(info)
    assert isinstance(exc.value, RejectedError)
