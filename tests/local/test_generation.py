"""The MLX thread: stop strings across token pieces, per-request seeds inside a batch, shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.config import EngineConfig
from engine.local.engine import LocalEngine
from engine.local.generation import Finished, MLXWorker, _Active
from engine.types import ChatRequest, Message, UnavailableError, collect


class _Sink:
    def __init__(self) -> None:
        self.items: list = []

    def deliver(self, item) -> None:
        self.items.append(item)


def _active(stops: tuple[str, ...]) -> _Active:
    return _Active(
        handle=_Sink(), uid=0, model_id="m", detok=None, eos=frozenset(), stops=stops, prompt_tokens=3, received=0.0
    )


def test_stop_string_split_over_pieces_is_cut_and_never_emitted() -> None:
    worker, act = MLXWorker(), _active(("o w",))
    ended = False
    for piece in ["Hel", "lo", " wor", "ld"]:
        act.text += piece
        act.tokens += 1
        if worker._emit(act, final=False, reason=None):
            ended = True
            break
    assert ended
    texts = [i for i in act.handle.items if isinstance(i, str)]
    assert "".join(texts) == "Hell"
    # The caller finishes it, after taking the sequence out of the batch and keeping its cache.
    assert not [i for i in act.handle.items if isinstance(i, Finished)]


def test_text_held_back_for_a_possible_stop_is_released_at_the_end() -> None:
    worker, act = MLXWorker(), _active(("STOP",))
    for piece in ["abc", "ST"]:
        act.text += piece
        worker._emit(act, final=False, reason=None)
    assert "".join(i for i in act.handle.items if isinstance(i, str)) == "ab"
    worker._emit(act, final=True, reason="length")
    assert "".join(i for i in act.handle.items if isinstance(i, str)) == "abcST"
    assert act.handle.items[-1].finish_reason == "length"


@pytest.fixture
async def engine(tiny_models_dir: Path, tmp_path: Path):
    eng = LocalEngine(EngineConfig(data_dir=tmp_path / "data", model_dirs=[tiny_models_dir], scan_hf_cache=False))
    yield eng
    await eng.aclose()


def _ask(text: str, **kw) -> ChatRequest:
    return ChatRequest(model="tiny-llama-mlx", messages=[Message("user", text)], max_tokens=12, **kw)


async def test_a_seed_gives_the_same_text_while_other_requests_share_the_batch(engine: LocalEngine) -> None:
    alone = (await collect(engine.stream(_ask("Hello", temperature=1.0, seed=42)))).text
    together = await asyncio.gather(
        collect(engine.stream(_ask("Hello", temperature=1.0, seed=42))),
        collect(engine.stream(_ask("Other words here", temperature=1.0, seed=7))),
        collect(engine.stream(_ask("Hello", temperature=1.0))),
    )
    assert together[0].text == alone
    assert engine._worker.snapshot().models[0].max_running_seen >= 2  # they did share a batch


async def test_after_aclose_new_requests_are_refused_clearly(engine: LocalEngine) -> None:
    await collect(engine.stream(_ask("Hello", temperature=0)))
    await engine.aclose()
    with pytest.raises(UnavailableError, match="shut down"):
        await collect(engine.stream(_ask("Hello", temperature=0)))
