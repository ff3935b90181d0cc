"""GGUF loading on real files: the tiny fixture models of each tensor type and the demo model."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engine.local.gguf import CorruptModelError, UnsupportedModelError, load_gguf
from engine.local.gguf_header import read_header
from engine.types import CancelledError, ModelNotFoundError, RejectedError


def _greedy_tokens(model, ids: list[int], n: int = 12) -> list[int]:
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    return [int(t) for t, _ in generate_step(mx.array(ids), model, max_tokens=n)]


def _prompt_ids(tokenizer) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello world"}], add_generation_prompt=True, tokenize=False
    )
    return list(tokenizer.encode(text, add_special_tokens=False))


@pytest.fixture(scope="module")
def mlx_reference(tiny_mlx_model: Path):
    from mlx_lm import load

    return load(str(tiny_mlx_model))


def test_f32_gguf_generates_exactly_what_the_mlx_folder_does(tiny_gguf_model: Path, mlx_reference) -> None:
    """Same weights through GGUF (q/k permuted, traditional rope) and through mlx_lm: same tokens."""
    ref_model, ref_tok = mlx_reference
    model, tok = load_gguf(tiny_gguf_model)
    ids = _prompt_ids(ref_tok)
    assert _prompt_ids(tok) == ids
    assert _greedy_tokens(model, ids) == _greedy_tokens(ref_model, ids)


@pytest.mark.parametrize("qtype,tolerance", [("F16", 0.05), ("Q8_0", 0.08), ("Q4_0", 0.5), ("Q4_1", 0.5)])
@pytest.mark.parametrize("dequantize", [True, False])
def test_quantized_types_load_with_logits_close_to_f32(
    tiny_gguf_factory, mlx_reference, qtype: str, tolerance: float, dequantize: bool
) -> None:
    import mlx.core as mx

    ref_model, ref_tok = mlx_reference
    model, _ = load_gguf(tiny_gguf_factory(qtype), dequantize=dequantize)
    ids = mx.array([_prompt_ids(ref_tok)])
    ref = ref_model(ids)[0, -1]
    got = model(ids)[0, -1]
    rel = float(mx.abs(ref - got).max() / mx.abs(ref).max())
    assert rel < tolerance, f"{qtype}: relative error {rel:.3f}"
    # Quantized layers stay quantized unless asked to dequantize.
    import mlx.nn as nn

    q_layers = [m for _, m in model.named_modules() if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))]
    assert bool(q_layers) == (qtype not in ("F16",) and not dequantize)


def test_gguf_tokenizer_round_trips_and_keeps_specials_whole(tiny_gguf_model: Path) -> None:
    _, tok = load_gguf(tiny_gguf_model)
    text = "The quick brown fox: 123 numbers, ünïcödé."
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    ids = tok.encode("<|im_start|>user", add_special_tokens=False)
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
    assert tok.convert_tokens_to_ids("<|im_end|>") in tok.eos_token_ids


def test_header_reader_matches_the_file(tiny_gguf_factory) -> None:
    header = read_header(tiny_gguf_factory("Q8_0"))
    assert header.architecture == "llama"
    assert header.quantization == "Q8_0"
    assert header.metadata["llama.block_count"] == 2
    assert 20_000 < header.parameters < 200_000


def test_missing_truncated_and_unsupported_files_give_clear_errors(
    tmp_path: Path, truncated_gguf: Path, unsupported_arch_gguf: Path
) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        load_gguf(tmp_path / "nope.gguf")
    with pytest.raises(CorruptModelError, match=r"truncated|cannot read") as exc:
        load_gguf(truncated_gguf)
    assert isinstance(exc.value, RejectedError)
    with pytest.raises(UnsupportedModelError, match="architecture 'mamba' is not supported"):
        load_gguf(unsupported_arch_gguf)
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(CorruptModelError, match="not a GGUF file"):
        load_gguf(garbage)


def test_progress_stages_and_cancel_between_stages(tiny_gguf_model: Path) -> None:
    seen: list[tuple[str, float]] = []
    load_gguf(tiny_gguf_model, progress=lambda stage, f: seen.append((stage, f)))
    assert [s for s, _ in seen] == ["checking", "reading", "building", "tokenizer", "done"]
    assert [f for _, f in seen] == sorted(f for _, f in seen)

    cancel = threading.Event()

    def cancel_after_reading(stage: str, fraction: float) -> None:
        if stage == "reading":
            cancel.set()

    with pytest.raises(CancelledError, match="cancelled"):
        load_gguf(tiny_gguf_model, progress=cancel_after_reading, cancel=cancel)


@pytest.mark.demo
def test_demo_model_answers_paris_and_renders_its_own_chat_template(demo_model_path: Path) -> None:
    import jinja2
    from mlx_lm import generate

    model, tok = load_gguf(demo_model_path)
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi there"}]
    template = read_header(demo_model_path, keep_arrays=False).metadata["tokenizer.chat_template"]
    expected = jinja2.Environment().from_string(template).render(messages=messages, add_generation_prompt=True)
    assert tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == expected
    assert expected.startswith("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi there")

    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, tokenize=False
    )
    answer = generate(model, tok, prompt, max_tokens=20)
    assert "Paris" in answer


@pytest.mark.parametrize("qtype", ["Q5_0", "BF16"])
def test_unsupported_tensor_type_is_named(tiny_mlx_model: Path, tmp_path: Path, qtype: str) -> None:
    from tests.fixtures.tiny_model import write_tiny_gguf

    path = write_tiny_gguf(tiny_mlx_model, tmp_path / f"tiny.{qtype}.gguf", qtype)
    with pytest.raises(UnsupportedModelError, match=f"tensor type\\(s\\) {qtype} are not supported"):
        load_gguf(path)


def test_unsupported_tokenizer_model_is_named(tiny_mlx_model: Path, tmp_path: Path) -> None:
    from tests.fixtures.tiny_model import write_tiny_gguf

    path = write_tiny_gguf(tiny_mlx_model, tmp_path / "tiny-t5tok.gguf", tokenizer_model="t5")
    with pytest.raises(UnsupportedModelError, match="tokenizer model 't5' is not supported"):
        load_gguf(path)


def test_cancel_set_before_loading_reads_nothing(tiny_gguf_model: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    seen: list[str] = []
    with pytest.raises(CancelledError):
        load_gguf(tiny_gguf_model, progress=lambda stage, f: seen.append(stage), cancel=cancel)
    assert seen == []


def test_auto_dequantize_follows_the_device(tiny_gguf_factory) -> None:
    import mlx.core as mx
    import mlx.nn as nn

    model, _ = load_gguf(tiny_gguf_factory("Q4_0"))
    quantized = any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules())
    assert quantized == mx.metal.is_available()
