"""LocalEngine on real MLX: the tiny random-weight model and the demo model."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path

import pytest

from engine.config import EngineConfig
from engine.local.demo import DEMO_ID
from engine.local.engine import LocalEngine
from engine.local.models import ModelLoadError, ModelTooLargeError
from engine.types import Backend, CancelledError, ChatRequest, Message, ModelNotFoundError, RejectedError, collect


def engine_for(models_dir: Path, tmp_path: Path, **kw) -> LocalEngine:
    return LocalEngine(EngineConfig(data_dir=tmp_path / "data", model_dirs=[models_dir], scan_hf_cache=False, **kw))


def ask(model: str, text: str = "Hello world", **kw) -> ChatRequest:
    kw.setdefault("temperature", 0)
    kw.setdefault("max_tokens", 16)
    return ChatRequest(model=model, messages=[Message("user", text)], **kw)


@pytest.fixture
async def engine(tiny_models_dir: Path, tmp_path: Path):
    eng = engine_for(tiny_models_dir, tmp_path)
    yield eng
    await eng.aclose()


def test_discovery_describes_both_formats(tiny_models_dir: Path, tmp_path: Path) -> None:
    eng = engine_for(tiny_models_dir, tmp_path)
    by_id = {m.id: m for m in eng.models()}
    assert set(by_id) == {"tiny-llama-mlx", "tiny-llama"}
    mlx, gguf = by_id["tiny-llama-mlx"], by_id["tiny-llama"]
    assert (mlx.format, mlx.architecture, mlx.quantization) == ("mlx", "llama", "float32")
    assert (gguf.format, gguf.architecture, gguf.quantization) == ("gguf", "llama", "F32")
    assert mlx.parameters == gguf.parameters > 10_000
    assert mlx.size_bytes > 0 and gguf.est_memory_bytes > 0
    assert isinstance(eng, Backend)


def test_constructing_the_engine_imports_no_mlx(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys; from engine.config import EngineConfig; from engine.local.engine import LocalEngine; "
        "LocalEngine(EngineConfig()); print('mlx' in sys.modules or 'mlx.core' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


async def test_stream_yields_text_then_a_final_chunk_with_usage(engine: LocalEngine) -> None:
    chunks = [c async for c in engine.stream(ask("tiny-llama-mlx", max_tokens=12))]
    assert chunks[-1].finish_reason in ("stop", "length")
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens > 3 and 0 < usage.completion_tokens <= 12
    assert usage.ttft_s is not None and usage.ttft_s > 0
    assert all(c.backend == "local" and c.model == "tiny-llama-mlx" for c in chunks)
    assert "".join(c.text for c in chunks[:-1])


async def test_max_tokens_is_respected(engine: LocalEngine) -> None:
    result = await collect(engine.stream(ask("tiny-llama-mlx", max_tokens=5)))
    assert result.usage.completion_tokens <= 5
    if result.finish_reason == "length":
        assert result.usage.completion_tokens == 5


async def test_same_answer_through_gguf_and_mlx_folder(engine: LocalEngine) -> None:
    a = await collect(engine.stream(ask("tiny-llama-mlx")))
    b = await collect(engine.stream(ask("tiny-llama")))
    assert a.text == b.text


async def test_stop_sequence_cuts_the_text_and_is_not_emitted(engine: LocalEngine) -> None:
    full = await collect(engine.stream(ask("tiny-llama-mlx", max_tokens=24)))
    assert len(full.text) > 6
    stop = full.text[3:6]
    cut = await collect(engine.stream(ask("tiny-llama-mlx", max_tokens=24, stop=[stop])))
    assert cut.finish_reason == "stop"
    assert stop not in cut.text
    assert cut.text == full.text[: full.text.find(stop)]


async def test_seed_makes_sampling_repeatable(engine: LocalEngine) -> None:
    def req(seed: int) -> ChatRequest:
        return ask("tiny-llama-mlx", temperature=1.0, seed=seed, max_tokens=24)

    a = await collect(engine.stream(req(1)))
    b = await collect(engine.stream(req(1)))
    others = {(await collect(engine.stream(req(s)))).text for s in (2, 3, 4)}
    assert a.text == b.text
    assert others - {a.text}, "different seeds never changed the text"


async def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(engine: LocalEngine) -> None:
    texts = ["Hello world", "The quick brown fox", "What is the capital of France?", "alpha beta gamma"]
    alone = [(await collect(engine.stream(ask("tiny-llama-mlx", t)))).text for t in texts]
    assert engine._worker.snapshot().models[0].max_running_seen == 1
    together = await asyncio.gather(*(collect(engine.stream(ask("tiny-llama-mlx", t))) for t in texts))
    assert [r.text for r in together] == alone
    assert engine._worker.snapshot().models[0].max_running_seen >= 2  # they did share a batch


async def test_cancel_mid_stream_frees_the_thread(engine: LocalEngine) -> None:
    stream = engine.stream(ask("tiny-llama-mlx", max_tokens=400, temperature=1.0, seed=3, stop=[]))
    got = []
    async for chunk in stream:
        got.append(chunk)
        if len(got) == 2:
            break
    started = time.perf_counter()
    await stream.aclose()
    assert time.perf_counter() - started < 1.0
    # The thread drops the request before its next step; a new request completes normally.
    result = await asyncio.wait_for(collect(engine.stream(ask("tiny-llama-mlx", max_tokens=4))), timeout=30)
    assert result.usage.completion_tokens >= 1
    deadline = time.perf_counter() + 1.0
    while engine._worker.active_count() and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    assert engine._worker.active_count() == 0


async def test_event_loop_keeps_running_during_generation(engine: LocalEngine) -> None:
    await engine.load("tiny-llama-mlx")
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    await collect(engine.stream(ask("tiny-llama-mlx", max_tokens=200, temperature=1.0, seed=1)))
    elapsed = time.perf_counter() - started
    done.set()
    await task
    # A blocked loop would tick about once; a free one ticks close to elapsed/10ms.
    assert ticks >= max(3, elapsed / 0.01 * 0.2)


async def test_load_reports_progress_and_unload_frees(engine: LocalEngine) -> None:
    stages: list[str] = []
    await engine.load("tiny-llama", progress=lambda p: stages.append(p.stage))
    assert stages[-1] == "done" and "reading" in stages
    snap = engine.memory()
    assert [m.id for m in snap.loaded] == ["tiny-llama"] and snap.used_bytes > 0
    assert snap.blas
    assert await engine.unload("tiny-llama") is True
    assert engine.memory().loaded == []


async def test_cancel_during_load(engine: LocalEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.local import gguf

    cancel, reacted = threading.Event(), threading.Event()
    real = gguf.load_gguf

    def held_between_stages(path, progress=None, cancel=None, **kw):
        def report(stage: str, fraction: float) -> None:
            progress(stage, fraction)
            reacted.wait(10)  # the MLX thread goes on once the event loop has seen the report

        return real(path, progress=report, cancel=cancel, **kw)

    monkeypatch.setattr(gguf, "load_gguf", held_between_stages)

    def progress(p) -> None:  # on the event loop, like the Models pane's Esc
        cancel.set()
        reacted.set()

    with pytest.raises(CancelledError):
        await engine.load("tiny-llama", progress=progress, cancel=cancel)
    assert engine.memory().loaded == []


async def test_lru_eviction_under_the_budget(tiny_models_dir: Path, tmp_path: Path) -> None:
    probe = engine_for(tiny_models_dir, tmp_path)
    await probe.load("tiny-llama-mlx")
    one = probe.memory().used_bytes
    await probe.aclose()
    eng = engine_for(tiny_models_dir, tmp_path, memory_budget_bytes=int(one * 1.5))
    try:
        await eng.load("tiny-llama-mlx")
        await eng.load("tiny-llama")
        assert [m.id for m in eng.memory().loaded] == ["tiny-llama"]
        await eng.load("tiny-llama-mlx")
        assert [m.id for m in eng.memory().loaded] == ["tiny-llama-mlx"]
        assert eng.memory().used_bytes <= eng.memory().budget_bytes
    finally:
        await eng.aclose()
    tiny = engine_for(tiny_models_dir, tmp_path, memory_budget_bytes=1000)
    try:
        with pytest.raises(ModelTooLargeError, match="memory budget"):
            await tiny.load("tiny-llama")
    finally:
        await tiny.aclose()


async def test_bad_requests_are_rejected_clearly(engine: LocalEngine) -> None:
    with pytest.raises(ModelNotFoundError, match="not found locally"):
        await collect(engine.stream(ask("no-such-model")))
    with pytest.raises(RejectedError, match="messages"):
        await collect(engine.stream(ChatRequest(model="tiny-llama", messages=[])))
    with pytest.raises(RejectedError, match="max_tokens"):
        await collect(engine.stream(ask("tiny-llama", max_tokens=0)))
    assert engine.snapshot().errors == 3


async def test_a_damaged_model_is_a_load_failure(tiny_gguf_model: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    data = tiny_gguf_model.read_bytes()
    (models / "broken.gguf").write_bytes(data[: len(data) // 2])
    eng = engine_for(models, tmp_path)
    try:
        with pytest.raises(ModelLoadError, match="cannot load broken") as exc:
            await collect(eng.stream(ask("broken")))
        assert exc.value.kind == "unavailable"
    finally:
        await eng.aclose()


@pytest.mark.demo
async def test_demo_model_says_paris(demo_model_path: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / demo_model_path.name).symlink_to(demo_model_path)
    eng = engine_for(models, tmp_path)
    try:
        assert eng.resolve("demo").id == DEMO_ID
        result = await collect(eng.stream(ask("demo", "What is the capital of France?", max_tokens=30)))
        assert "Paris" in result.text
        assert result.usage.tokens_per_s and result.usage.tokens_per_s > 0
        assert await eng.count_tokens("demo", [Message("user", "What is the capital of France?")]) == 37
    finally:
        await eng.aclose()


@pytest.mark.demo
def test_chat_cli_streams_the_answer(demo_model_path: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    data = tmp_path / "cli-data"
    (data / "models" / "demo").mkdir(parents=True)
    shutil.copy(demo_model_path, data / "models" / "demo" / demo_model_path.name)
    monkeypatch.setenv("MLXWB_DATA_DIR", str(data))
    from tui.cli import main

    assert main(["chat", "--local", "--model", "demo", "What is the capital of France?"]) == 0
    assert "Paris" in capsys.readouterr().out
    assert main(["chat", "--local", "--model", "nope", "hi"]) == 1
    err = capsys.readouterr().err
    assert "not found" in err and "Traceback" not in err
