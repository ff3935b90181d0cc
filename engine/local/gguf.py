"""GGUF -> mlx_lm llama model + tokenizer, through `mlx.core.load(path, return_metadata=True)`.

MLX reads Q4_0 / Q4_1 / Q8_0 tensors as its own quantized triples (uint32 weight, scales,
biases; group size 32), F16 / F32 as plain arrays. The tokenizer is rebuilt from the GGUF
vocabulary and merges with the `tokenizers` library; the chat template comes from the metadata.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.local.gguf_header import TYPE_BITS, GGUFHeaderError, read_header
from engine.types import CancelledError, ModelNotFoundError, RejectedError

SUPPORTED_ARCHITECTURES = ("llama",)
SUPPORTED_TYPES = ("F32", "F16", "Q4_0", "Q4_1", "Q8_0")
GGUF_GROUP_SIZE = 32

Progress = Callable[[str, float], None]

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}


class UnsupportedModelError(RejectedError):
    """The model uses an architecture, tensor type or tokenizer this engine cannot run."""


class CorruptModelError(RejectedError):
    """The model file cannot be read (truncated, damaged, or not a model file)."""


def _plain(value: Any) -> Any:
    """Metadata values arrive as 0-d mx.arrays; make them Python scalars."""
    if hasattr(value, "item") and getattr(value, "size", 2) == 1:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def check_supported(path: Path) -> None:
    """Fail fast, from the header alone, on what load_gguf cannot run."""
    try:
        header = read_header(path)
    except GGUFHeaderError as exc:
        raise CorruptModelError(f"cannot read {path.name}: {exc}") from None
    arch = header.architecture
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedModelError(
            f"{path.name}: architecture {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    bad = sorted({t.type for t in header.tensors} - set(SUPPORTED_TYPES))
    if bad:
        raise UnsupportedModelError(
            f"{path.name}: tensor type(s) {', '.join(bad)} are not supported (supported: {', '.join(SUPPORTED_TYPES)})"
        )
    tok_model = header.metadata.get("tokenizer.ggml.model")
    if tok_model not in ("gpt2",):
        raise UnsupportedModelError(
            f"{path.name}: tokenizer model {tok_model!r} is not supported (supported: byte-level BPE 'gpt2')"
        )


def load_gguf_metadata(path: str | Path) -> dict[str, Any]:
    """The GGUF key/value metadata, read from the header alone (no tensor data; cheap for discovery).

    Vocabulary-sized arrays (tokens, merges, token types) are left out; `tokenizer.chat_template`
    and the hyper-parameters are in. Missing file -> ModelNotFoundError, damaged -> CorruptModelError.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"model file not found: {path}")
    try:
        return dict(read_header(path, keep_arrays=False).metadata)
    except GGUFHeaderError as exc:
        raise CorruptModelError(f"cannot read {path.name}: {exc}") from None


def estimate_memory_bytes(parameters: int, quantization: str, *, dequantize: bool) -> int:
    bits = 32 if dequantize else TYPE_BITS.get(quantization, 16)
    # ~10% on top for the KV cache and activations of a short conversation.
    return int(parameters * bits / 8 * 1.1)


def default_dequantize() -> bool:
    """Dequantize to float32 on the CPU (twice as fast there, DESIGN.md); keep quantized on Metal."""
    import mlx.core as mx

    try:
        return not mx.metal.is_available()
    except AttributeError:
        return True


def load_gguf(
    path: str | Path,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    *,
    dequantize: bool | None = None,
) -> tuple[Any, Any]:
    """Load a llama-family GGUF file; returns (mlx_lm model, mlx_lm TokenizerWrapper)."""
    from engine.local import mlx_import

    path = Path(path)
    report = progress or (lambda stage, fraction: None)

    def stage(name: str, fraction: float) -> None:
        if cancel is not None and cancel.is_set():
            raise CancelledError(f"loading {path.name} was cancelled")
        report(name, fraction)

    if not path.is_file():
        raise ModelNotFoundError(f"model file not found: {path}")
    stage("checking", 0.0)
    check_supported(path)
    mx = mlx_import()
    stage("reading", 0.1)
    try:
        weights, metadata = mx.load(str(path), return_metadata=True)
    except Exception as exc:  # MLX raises plain ValueError/RuntimeError for damaged files
        raise CorruptModelError(f"cannot read {path.name}: {exc}") from None
    meta = {k: _plain(v) for k, v in metadata.items()}
    stage("building", 0.5)
    model = _build_llama(mx, weights, meta, path, default_dequantize() if dequantize is None else dequantize)
    stage("tokenizer", 0.8)
    tokenizer = build_tokenizer(meta, path)
    stage("done", 1.0)
    return model, tokenizer


def _hparams(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    def need(key: str) -> Any:
        if f"llama.{key}" not in meta:
            raise CorruptModelError(f"{path.name}: metadata lacks llama.{key}")
        return meta[f"llama.{key}"]

    hidden = int(need("embedding_length"))
    heads = int(need("attention.head_count"))
    return {
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": int(need("block_count")),
        "intermediate_size": int(need("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get("llama.attention.head_count_kv", heads)),
        "rms_norm_eps": float(meta.get("llama.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(meta.get("llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(meta.get("llama.context_length", 2048)),
        "head_dim": int(meta.get("llama.rope.dimension_count", hidden // heads)),
        # GGUF stores q/k permuted for llama.cpp's interleaved rotary embedding.
        "rope_traditional": True,
    }


def _mlx_name(gguf_name: str) -> str:
    parts = gguf_name.split(".")
    if parts[0] == "token_embd":
        return "model.embed_tokens." + parts[-1]
    if parts[0] == "output_norm":
        return "model.norm." + parts[-1]
    if parts[0] == "output":
        return "lm_head." + parts[-1]
    if parts[0] == "blk" and len(parts) == 4 and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{parts[3]}"
    raise UnsupportedModelError(f"unexpected tensor {gguf_name!r} for a llama model")


def _build_llama(mx: Any, weights: dict[str, Any], meta: dict[str, Any], path: Path, dequantize: bool) -> Any:
    from mlx.nn.layers.quantized import quantize  # not via mlx.nn: mypy misses that re-export
    from mlx_lm.models import llama

    args = _hparams(meta, path)
    args["vocab_size"] = int(meta.get("llama.vocab_size") or weights["token_embd.weight"].shape[0])
    args["tie_word_embeddings"] = "output.weight" not in weights
    mapped = {}
    for name, value in weights.items():
        if name.startswith("rope_freqs"):
            continue  # llama 3.1 rope scaling factors: mlx_lm computes them itself
        mapped[_mlx_name(name)] = value

    quantized: dict[str, int] = {}  # module path -> bits
    for name in list(mapped):
        if name.endswith(".scales"):
            module = name[: -len(".scales")]
            w = mapped[module + ".weight"]
            bits = w.shape[-1] * 32 // (mapped[name].shape[-1] * GGUF_GROUP_SIZE)
            if dequantize:
                full = mx.dequantize(
                    w, mapped[name], mapped.pop(module + ".biases"), group_size=GGUF_GROUP_SIZE, bits=bits
                )
                mapped[module + ".weight"] = full.astype(mx.float32)
                del mapped[name]
            else:
                quantized[module] = bits
    if dequantize:
        mapped = {k: (v.astype(mx.float32) if v.dtype == mx.float16 else v) for k, v in mapped.items()}
    if args["tie_word_embeddings"]:
        vocab_embed = mapped["model.embed_tokens.weight"]
        args["vocab_size"] = vocab_embed.shape[0]

    model = llama.Model(llama.ModelArgs(**args))
    if quantized:

        def predicate(p: str, m: Any) -> Any:
            if p in quantized:
                return {"group_size": GGUF_GROUP_SIZE, "bits": quantized[p]}
            return False

        quantize(model, group_size=GGUF_GROUP_SIZE, bits=4, class_predicate=predicate)
    try:
        model.load_weights(list(mapped.items()), strict=True)
    except ValueError as exc:
        raise CorruptModelError(f"{path.name}: weights do not match a llama model: {exc}") from None
    mx.eval(model.parameters())
    return model


# ---------------------------------------------------------------- tokenizer

# GPT-2's split, and the llama-3 one ("llama-bpe"), as tokenizers' Split patterns.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def build_tokenizer(meta: dict[str, Any], path: Path | None = None) -> Any:
    """A TokenizerWrapper around a PreTrainedTokenizerFast built from GGUF vocabulary + merges."""
    from mlx_lm.tokenizer_utils import BPEStreamingDetokenizer, TokenizerWrapper
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    name = path.name if path else "model"
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise UnsupportedModelError(f"{name}: tokenizer model {kind!r} is not supported (byte-level BPE 'gpt2' is)")
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    pre = meta.get("tokenizer.ggml.pre", "default")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=pre not in ("llama-bpe", "llama3"))
    if pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre in ("llama-bpe", "llama3"):
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"), byte_level]
        )
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    # Control (3) and user-defined (4) tokens must never be split by the BPE.
    specials = [
        AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types, strict=False) if ty in (3, 4)
    ]
    tok.add_special_tokens(specials)

    def token(key: str) -> str | None:
        idx = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[int(idx)] if idx is not None and 0 <= int(idx) < len(tokens) else None

    template = meta.get("tokenizer.chat_template")
    hf = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # transformers has no annotations here
        tokenizer_object=tok,
        bos_token=token("bos"),
        eos_token=token("eos"),
        unk_token=token("unknown"),
        pad_token=token("padding"),
        chat_template=template,
        clean_up_tokenization_spaces=False,
    )
    eos_ids = {int(meta["tokenizer.ggml.eos_token_id"])} if "tokenizer.ggml.eos_token_id" in meta else set()
    # Chat models end turns with <|im_end|> / <|eot_id|> even when the GGUF's eos is another token.
    for end in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        if end in vocab:
            eos_ids.add(vocab[end])
    return TokenizerWrapper(hf, detokenizer_class=BPEStreamingDetokenizer, eos_token_ids=sorted(eos_ids))
