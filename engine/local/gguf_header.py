"""A reader for the GGUF header (metadata and tensor directory) that never touches tensor data.

Discovery needs architecture, parameter count and quantization of files that may be many GB;
`mx.load` reads every tensor, so the header is parsed here (the format is a short, stable spec).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

GGML_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    6: "Q5_0",
    7: "Q5_1",
    8: "Q8_0",
    9: "Q8_1",
    10: "Q2_K",
    11: "Q3_K",
    12: "Q4_K",
    13: "Q5_K",
    14: "Q6_K",
    15: "Q8_K",
    16: "IQ2_XXS",
    17: "IQ2_XS",
    18: "IQ3_XXS",
    19: "IQ1_S",
    20: "IQ4_NL",
    21: "IQ3_S",
    22: "IQ2_S",
    23: "IQ4_XS",
    24: "I8",
    25: "I16",
    26: "I32",
    27: "I64",
    28: "F64",
    29: "IQ1_M",
    30: "BF16",
}
# Bits per weight of each type, for memory estimates.
TYPE_BITS = {
    "F32": 32,
    "F16": 16,
    "BF16": 16,
    "Q4_0": 4.5,
    "Q4_1": 5,
    "Q8_0": 8.5,
    "Q5_0": 5.5,
    "Q5_1": 6,
    "Q4_K": 4.5,
    "Q5_K": 5.5,
    "Q6_K": 6.5625,
    "Q2_K": 2.625,
    "Q3_K": 3.4375,
}

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class GGUFHeaderError(ValueError):
    """The file is not a readable GGUF file."""


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type: str

    @property
    def count(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class GGUFHeader:
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    @property
    def parameters(self) -> int:
        return sum(t.count for t in self.tensors)

    def tensor_types(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.tensors:
            counts[t.type] = counts.get(t.type, 0) + t.count
        return counts

    @property
    def quantization(self) -> str:
        """The type holding most weights, e.g. "Q4_1"."""
        counts = self.tensor_types()
        return max(counts, key=lambda t: counts[t]) if counts else "unknown"


class _Reader:
    def __init__(self, f: BinaryIO, size: int, *, keep_arrays: bool) -> None:
        self.f, self.size, self.keep_arrays = f, size, keep_arrays

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise GGUFHeaderError("the file ends inside its header (truncated?)")
        return data

    def scalar(self, code: int) -> Any:
        fmt = _SCALARS[code]
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        (n,) = struct.unpack("<Q", self.read(8))
        if n > self.size:
            raise GGUFHeaderError("a string length runs past the end of the file")
        return self.read(n).decode("utf-8", "replace")

    def value(self, code: int) -> Any:
        if code in _SCALARS:
            return self.scalar(code)
        if code == 8:
            return self.string()
        if code == 9:
            (item, count) = struct.unpack("<IQ", self.read(12))
            if count > self.size:
                raise GGUFHeaderError("an array length runs past the end of the file")
            if not self.keep_arrays and item in _SCALARS:
                # Large arrays (vocabularies) are skipped, not decoded: discovery doesn't need them.
                self.f.seek(struct.calcsize(_SCALARS[item]) * count, 1)
                return f"<array of {count}>"
            items = [self.value(item) for _ in range(count)]
            return items if self.keep_arrays else f"<array of {count}>"
        raise GGUFHeaderError(f"unknown metadata value type {code}")


def read_header(path: str | Path, *, keep_arrays: bool = False) -> GGUFHeader:
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        r = _Reader(f, size, keep_arrays=keep_arrays)
        if r.read(4) != b"GGUF":
            raise GGUFHeaderError(f"{path.name} is not a GGUF file (bad magic)")
        (version,) = struct.unpack("<I", r.read(4))
        if version not in (2, 3):
            raise GGUFHeaderError(f"GGUF version {version} is not supported (2 and 3 are)")
        n_tensors, n_kv = struct.unpack("<QQ", r.read(16))
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = r.string()
            (code,) = struct.unpack("<I", r.read(4))
            metadata[key] = r.value(code)
        tensors: list[TensorInfo] = []
        for _ in range(n_tensors):
            name = r.string()
            (n_dims,) = struct.unpack("<I", r.read(4))
            dims = struct.unpack(f"<{n_dims}Q", r.read(8 * n_dims))
            type_code, _offset = struct.unpack("<IQ", r.read(12))
            # GGUF lists dimensions fastest-first; report them row-major like numpy/MLX.
            tensors.append(TensorInfo(name, tuple(reversed(dims)), GGML_TYPES.get(type_code, f"type{type_code}")))
    return GGUFHeader(version=version, metadata=metadata, tensors=tensors)
