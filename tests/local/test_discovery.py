"""Discovery on real files: fixture MLX folder and GGUF files, HF cache layout, demo alias, bad entries."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from engine.config import EngineConfig
from engine.local.demo import DEMO_ALIAS, DEMO_FILENAME, DEMO_ID
from engine.local.discovery import discover
from engine.local.gguf import CorruptModelError, load_gguf_metadata
from engine.types import ModelNotFoundError
from tests.fixtures.tiny_model import FFN, HEADS, HIDDEN, KV_HEADS, LAYERS


def _config(tmp_path: Path, *dirs: Path, hf: bool = False) -> EngineConfig:
    return EngineConfig(data_dir=tmp_path / "data", model_dirs=list(dirs), scan_hf_cache=hf)


def _expected_parameters(vocab: int) -> int:
    head_dim = HIDDEN // HEADS
    attn = HIDDEN * HIDDEN * 2 + HIDDEN * KV_HEADS * head_dim * 2
    layer = attn + 3 * HIDDEN * FFN + 2 * HIDDEN
    return vocab * HIDDEN + LAYERS * layer + HIDDEN


def test_finds_both_fixture_models_with_exact_parameter_counts(tiny_models_dir: Path, tmp_path: Path) -> None:
    vocab = json.loads((tiny_models_dir / "tiny-llama-mlx" / "config.json").read_text())["vocab_size"]
    by_id = {m.id: m for m in discover(_config(tmp_path, tiny_models_dir))}
    assert set(by_id) == {"tiny-llama-mlx", "tiny-llama"}
    mlx, gguf = by_id["tiny-llama-mlx"], by_id["tiny-llama"]
    assert (mlx.format, mlx.architecture, mlx.quantization) == ("mlx", "llama", "float32")
    assert (gguf.format, gguf.architecture, gguf.quantization) == ("gguf", "llama", "F32")
    assert mlx.parameters == gguf.parameters == _expected_parameters(vocab)
    assert mlx.path == tiny_models_dir / "tiny-llama-mlx" and gguf.path == tiny_models_dir / "tiny-llama.gguf"
    assert gguf.size_bytes == gguf.path.stat().st_size
    assert gguf.est_memory_bytes >= gguf.parameters * 4  # float32 on the CPU
    assert mlx.aliases == gguf.aliases == ()


def test_quantized_gguf_is_labelled_and_estimated_by_its_type(tiny_gguf_factory, tmp_path: Path) -> None:
    folder = tmp_path / "q"
    folder.mkdir()
    shutil.copy(tiny_gguf_factory("Q4_1"), folder / "tiny-q41.gguf")
    shutil.copy(tiny_gguf_factory("Q8_0"), folder / "tiny-q80.gguf")
    by_id = {m.id: m for m in discover(_config(tmp_path, folder), dequantize_on_cpu=False)}
    assert by_id["tiny-q41"].quantization == "Q4_1" and by_id["tiny-q80"].quantization == "Q8_0"
    assert by_id["tiny-q41"].parameters == by_id["tiny-q80"].parameters
    assert by_id["tiny-q41"].est_memory_bytes < by_id["tiny-q80"].est_memory_bytes
    dequantized = {m.id: m for m in discover(_config(tmp_path, folder), dequantize_on_cpu=True)}
    assert dequantized["tiny-q41"].est_memory_bytes > by_id["tiny-q80"].est_memory_bytes


def test_duplicate_names_get_distinct_stable_ids(tiny_gguf_model: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        shutil.copy(tiny_gguf_model, d / "same.gguf")
    first = [(m.id, m.path) for m in discover(_config(tmp_path, a, b))]
    assert first == [("same", a / "same.gguf"), ("same-2", b / "same.gguf")]
    assert [(m.id, m.path) for m in discover(_config(tmp_path, a, b))] == first


def test_the_same_folder_listed_twice_is_reported_once(tiny_models_dir: Path, tmp_path: Path) -> None:
    models = discover(_config(tmp_path, tiny_models_dir, tiny_models_dir))
    assert sorted(m.id for m in models) == ["tiny-llama", "tiny-llama-mlx"]


def test_unreadable_entries_are_skipped_with_a_warning(
    tiny_gguf_model: Path, truncated_gguf: Path, tmp_path: Path, caplog
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(tiny_gguf_model, folder / "good.gguf")
    (folder / "garbage.gguf").write_bytes(b"definitely not gguf" * 4)
    broken = folder / "broken-mlx"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"\x00" * 16)
    with caplog.at_level(logging.WARNING, logger="engine.local.discovery"):
        models = discover(_config(tmp_path, folder))
    assert [m.id for m in models] == ["good"]
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "garbage.gguf" in warned and "broken-mlx" in warned


def test_hf_cache_snapshots_are_found_only_when_enabled(tiny_mlx_model: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "hub"
    snapshot = cache / "models--tiny-org--tiny-llama" / "snapshots" / "0123abcd"
    shutil.copytree(tiny_mlx_model, snapshot)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    found = discover(_config(tmp_path, hf=True))
    assert [(m.id, m.format, m.path) for m in found] == [("tiny-org/tiny-llama", "mlx", snapshot)]
    assert discover(_config(tmp_path, hf=False)) == []


def test_demo_file_gets_its_id_and_alias(demo_model_path: Path, tmp_path: Path) -> None:
    config = _config(tmp_path)
    (config.models_dir / "demo").mkdir(parents=True)
    (config.models_dir / "demo" / DEMO_FILENAME).symlink_to(demo_model_path)
    [demo] = discover(config)
    assert (demo.id, demo.aliases, demo.format) == (DEMO_ID, (DEMO_ALIAS,), "gguf")
    assert (demo.architecture, demo.quantization) == ("llama", "Q4_1")
    assert 100_000_000 < demo.parameters < 170_000_000


def test_metadata_reader_gives_hyperparameters_and_template_without_vocabulary(
    tiny_gguf_model: Path, tmp_path: Path
) -> None:
    meta = load_gguf_metadata(tiny_gguf_model)
    assert meta["general.architecture"] == "llama"
    assert meta["llama.embedding_length"] == HIDDEN and meta["llama.attention.head_count_kv"] == KV_HEADS
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert "<|im_start|>" in meta["tokenizer.chat_template"]
    assert not isinstance(meta["tokenizer.ggml.tokens"], list)  # vocabulary skipped, not decoded
    with pytest.raises(ModelNotFoundError, match="not found"):
        load_gguf_metadata(tmp_path / "missing.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 16)
    with pytest.raises(CorruptModelError, match=r"bad\.gguf"):
        load_gguf_metadata(bad)


def test_quantized_mlx_folder_is_labelled_with_bits_and_group(tiny_mlx_model: Path, tmp_path: Path) -> None:
    from mlx_lm import convert

    root = tmp_path / "models"
    root.mkdir()
    convert(str(tiny_mlx_model), mlx_path=str(root / "tiny-4bit"), quantize=True, q_bits=4, q_group_size=64)
    [plain] = discover(_config(tmp_path / "p", tiny_mlx_model.parent))
    [quant] = discover(_config(tmp_path, root))
    assert (quant.id, quant.format, quant.quantization) == ("tiny-4bit", "mlx", "4-bit g64")
    # Estimated from packed sizes, so approximate; within 25% of the float model's count.
    assert abs(quant.parameters - plain.parameters) < 0.25 * plain.parameters
    assert quant.size_bytes < plain.size_bytes
