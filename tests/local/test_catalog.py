"""Model names: never a path from the network; unknown names cached; scans off the event loop."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from engine.config import EngineConfig
from engine.local import catalog
from engine.local.engine import LocalEngine
from engine.types import ChatRequest, Message, ModelNotFoundError, RejectedError, collect


def engine_for(models_dir: Path, tmp_path: Path) -> LocalEngine:
    return LocalEngine(EngineConfig(data_dir=tmp_path / "data", model_dirs=[models_dir], scan_hf_cache=False))


def ask(model: str, **kw: Any) -> ChatRequest:
    return ChatRequest(model=model, messages=[Message("user", "Hello")], temperature=0, max_tokens=4, **kw)


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The thread of every disk scan the catalog makes."""
    seen: list[int] = []
    real = catalog.discover

    def counting(config: EngineConfig) -> Any:
        seen.append(threading.get_ident())
        return real(config)

    monkeypatch.setattr(catalog, "discover", counting)
    return seen


@pytest.fixture
def outside_gguf(tiny_gguf_model: Path, tmp_path: Path) -> Path:
    """A usable GGUF outside every model folder."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return Path(shutil.copy(tiny_gguf_model, elsewhere / "stray.gguf"))


async def test_a_path_from_the_network_is_not_found_and_never_probed(
    tiny_models_dir: Path, tmp_path: Path, outside_gguf: Path
) -> None:
    eng = engine_for(tiny_models_dir, tmp_path)
    try:
        for name in (str(outside_gguf), "/etc/passwd", str(tmp_path)):
            with pytest.raises(ModelNotFoundError, match="not found locally") as exc:
                await collect(eng.stream(ask(name)))
            assert exc.value.status == 404
        assert eng.memory().loaded == []  # the stray GGUF was not loaded
    finally:
        await eng.aclose()


async def test_the_local_user_may_name_a_model_by_its_path(
    tiny_models_dir: Path, tmp_path: Path, outside_gguf: Path
) -> None:
    eng = engine_for(tiny_models_dir, tmp_path)
    try:
        result = await collect(eng.stream(ask(str(outside_gguf), allow_model_paths=True)))
        assert result.model == "stray" and result.usage.completion_tokens >= 1
        with pytest.raises(RejectedError, match="not a usable model") as exc:
            await collect(eng.stream(ask("/etc/passwd", allow_model_paths=True)))
        assert exc.value.status == 400
    finally:
        await eng.aclose()


async def test_unknown_names_are_remembered_and_scans_run_off_the_loop(
    tiny_models_dir: Path, tmp_path: Path, scans: list[int]
) -> None:
    eng = engine_for(tiny_models_dir, tmp_path)
    try:
        await collect(eng.stream(ask("tiny-llama")))
        assert len(scans) == 1  # the first scan
        for _ in range(5):
            with pytest.raises(ModelNotFoundError):
                await collect(eng.stream(ask("made-up-name")))
        assert len(scans) == 2  # one rescan for the new name, then it is remembered
        assert threading.get_ident() not in scans  # never on the event loop's thread
        eng.refresh_models()  # the user asked for a rescan: unknown names are forgotten
        with pytest.raises(ModelNotFoundError):
            await collect(eng.stream(ask("made-up-name")))
        assert len(scans) == 4
    finally:
        await eng.aclose()


async def test_concurrent_lookups_share_one_rescan(tiny_models_dir: Path, tmp_path: Path, scans: list[int]) -> None:
    eng = engine_for(tiny_models_dir, tmp_path)
    try:
        await eng.rescan()
        names = [f"unknown-{i}" for i in range(6)]
        results = await asyncio.gather(*(eng.aresolve(n) for n in names), return_exceptions=True)
        assert all(isinstance(r, ModelNotFoundError) for r in results)
        assert len(scans) == 2  # the initial scan and one shared rescan
    finally:
        await eng.aclose()


async def test_a_model_added_later_is_found_after_the_unknown_entry_expires(
    tiny_gguf_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    now = [1000.0]
    eng = engine_for(models, tmp_path)
    eng._catalog._clock = lambda: now[0]
    try:
        with pytest.raises(ModelNotFoundError):
            await eng.aresolve("late")
        shutil.copy(tiny_gguf_model, models / "late.gguf")
        with pytest.raises(ModelNotFoundError):
            await eng.aresolve("late")  # still remembered as unknown
        now[0] += catalog.UNKNOWN_TTL_S + 1
        assert (await eng.aresolve("late")).id == "late"
    finally:
        await eng.aclose()


async def test_limits_come_from_the_model_files(tiny_models_dir: Path, tmp_path: Path) -> None:
    eng = engine_for(tiny_models_dir, tmp_path)
    try:
        eng.models()
        for name in ("tiny-llama", "tiny-llama-mlx"):  # GGUF header and config.json
            limits = eng.limits(name)
            assert limits is not None
            assert (limits.context_length, limits.max_output_tokens) == (512, 511)
        assert eng.limits("made-up-name") is None
    finally:
        await eng.aclose()
