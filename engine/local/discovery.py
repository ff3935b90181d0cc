"""Finding models on disk: MLX folders (config.json + *.safetensors) and .gguf files."""

from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from engine.config import EngineConfig
from engine.local.demo import DEMO_ALIAS, DEMO_FILENAME, DEMO_ID
from engine.local.gguf_header import GGUFHeaderError, read_header

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    id: str
    path: Path
    format: str  # "mlx" | "gguf"
    architecture: str
    parameters: int
    quantization: str  # "F32", "Q4_1", "4-bit g64", "bfloat16"...
    size_bytes: int
    est_memory_bytes: int
    aliases: tuple[str, ...] = field(default=())
    # Tokens of prompt and answer together (None: the file does not say).
    context_length: int | None = None


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return home / "hub"


def _safetensors_params(path: Path) -> tuple[int, str]:
    """Parameter count and the dominant dtype from a safetensors header (no tensor data read)."""
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    total, dtypes = 0, dict[str, int]()
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for d in meta["shape"]:
            count *= d
        total += count
        dtypes[meta["dtype"]] = dtypes.get(meta["dtype"], 0) + count
    return total, (max(dtypes, key=lambda d: dtypes[d]) if dtypes else "unknown")


def _mlx_folder_info(folder: Path, model_id: str) -> ModelInfo:
    config = json.loads((folder / "config.json").read_text())
    files = sorted(folder.glob("*.safetensors"))
    stored, dtype = 0, "unknown"
    for f in files:
        n, dtype = _safetensors_params(f)
        stored += n
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    quant = config.get("quantization") or config.get("quantization_config")
    if isinstance(quant, dict) and "bits" in quant:
        bits = int(quant["bits"])
        # Packed uint32 weights hold 32/bits values each; scales and biases are small.
        parameters = int(stored * 32 / bits * 0.9) if bits else stored
        quantization = f"{bits}-bit g{quant.get('group_size', 64)}"
    else:
        parameters = stored
        quantization = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}.get(dtype, dtype)
    return ModelInfo(
        id=model_id,
        path=folder,
        format="mlx",
        architecture=str(config.get("model_type", "unknown")),
        parameters=parameters,
        quantization=quantization,
        size_bytes=size,
        est_memory_bytes=int(size * 1.1),
        context_length=_context_from_config(config),
    )


def _context_from_config(config: dict) -> int | None:
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    for source in (config, text):
        for key in ("max_position_embeddings", "max_sequence_length", "n_positions", "seq_length"):
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _gguf_info(path: Path, model_id: str, *, dequantize_on_cpu: bool) -> ModelInfo:
    from engine.local.gguf import estimate_memory_bytes

    header = read_header(path)
    quant = header.quantization
    size = path.stat().st_size
    aliases: tuple[str, ...] = ()
    if path.name == DEMO_FILENAME:
        model_id, aliases = DEMO_ID, (DEMO_ALIAS,)
    return ModelInfo(
        id=model_id,
        path=path,
        format="gguf",
        architecture=header.architecture or "unknown",
        parameters=header.parameters,
        quantization=quant,
        size_bytes=size,
        est_memory_bytes=estimate_memory_bytes(header.parameters, quant, dequantize=dequantize_on_cpu),
        aliases=aliases,
        context_length=_context_from_gguf(header.metadata, header.architecture),
    )


def _context_from_gguf(metadata: dict, architecture: str | None) -> int | None:
    value = metadata.get(f"{architecture}.context_length") if architecture else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _candidates(root: Path) -> list[tuple[Path, str]]:
    """(path, kind) for every model below root; MLX folders are not searched further."""
    found: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        d = Path(dirpath)
        if "config.json" in filenames and any(f.endswith(".safetensors") for f in filenames):
            found.append((d, "mlx"))
            dirnames[:] = []
            continue
        dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
        for f in sorted(filenames):
            if f.endswith(".gguf"):
                found.append((d / f, "gguf"))
    return found


def _id_for(path: Path, kind: str, root: Path) -> str:
    if kind == "gguf":
        return path.stem
    # HF cache: models--org--name/snapshots/<hash> -> org/name
    for part in path.parts:
        if part.startswith("models--"):
            return part[len("models--") :].replace("--", "/")
    return path.name


def discover(config: EngineConfig, *, dequantize_on_cpu: bool = True) -> list[ModelInfo]:
    """Every model in the data dir's models/, the configured folders and the HF cache.

    An unreadable entry is logged and left out: one broken file must not hide the others.
    """
    roots = [config.models_dir, *config.model_dirs]
    if config.scan_hf_cache and hf_cache_dir().is_dir():
        roots.append(hf_cache_dir())
    seen_paths: set[Path] = set()
    models: list[ModelInfo] = []
    taken: set[str] = set()
    for root in roots:
        if not root.is_dir():
            continue
        for path, kind in _candidates(root):
            real = path.resolve()
            if real in seen_paths:
                continue
            seen_paths.add(real)
            model_id = _id_for(path, kind, root)
            try:
                info = (
                    _mlx_folder_info(path, model_id)
                    if kind == "mlx"
                    else _gguf_info(path, model_id, dequantize_on_cpu=dequantize_on_cpu)
                )
            except (OSError, ValueError, KeyError, GGUFHeaderError, struct.error) as exc:
                log.warning("skipping %s: %s", path, exc)
                continue
            base, n = info.id, 2
            while info.id in taken:
                info = ModelInfo(**{**info.__dict__, "id": f"{base}-{n}"})
                n += 1
            taken.add(info.id)
            models.append(info)
    return models


def model_info_for_path(path: Path) -> ModelInfo:
    """A model named by its path (a .gguf file or an MLX folder), for the local user only."""
    if path.is_file():
        return _gguf_info(path, path.stem, dequantize_on_cpu=True)
    return _mlx_folder_info(path, path.name)
