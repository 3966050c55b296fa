"""A quick look inside a GGUF file before llama.cpp loads it: is it GGUF, is it whole, what is in it.

gguf's GGUFReader builds a numpy view of every vocabulary entry, which takes tens of seconds on
a 262k-token vocabulary; loading a model needs only a few scalars and a bounds check, so this
reader walks the header with `struct` and skips arrays without decoding them.
"""

from __future__ import annotations

import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, GGUFValueType, Keys

from talesmith.runtime.errors import ModelError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
MAX_LAYERS = 512
"""llama.cpp's LLAMA_MAX_LAYERS: a block_count past it, or 0, aborts the process inside llama.cpp."""
_SCALARS = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
_STRING, _ARRAY = GGUFValueType.STRING, GGUFValueType.ARRAY
_BLOCK = re.compile(r"blk\.(\d+)\.")


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    version: int
    metadata: dict[str, Any] = field(repr=False)
    """Scalar and string values; arrays are summarized as their length."""
    n_tensors: int = 0
    blocks: frozenset[int] = frozenset()
    """The N of every `blk.N.*` tensor."""
    arrays: frozenset[str] = frozenset()
    """The metadata keys whose values are arrays (summarized in `metadata` as their length)."""

    @property
    def architecture(self) -> str:
        return str(self.metadata.get(Keys.General.ARCHITECTURE, "unknown"))

    @property
    def name(self) -> str:
        return str(self.metadata.get(Keys.General.NAME, self.path.stem))

    @property
    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return value if _is_int(value) else None

    def hparam(self, key: str, default: Any = None) -> Any:
        """The architecture's own metadata value `key` (e.g. "block_count")."""
        return self.metadata.get(f"{self.architecture}.{key}", default)


class _Truncated(Exception):
    pass


class _Invalid(Exception):
    """A header that is whole but makes no sense; its message says what."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read(f: BinaryIO, n: int) -> bytes:
    if n > _remaining(f):  # a length past the end: no giant allocation, just "truncated"
        raise _Truncated
    data = f.read(n)
    if len(data) != n:
        raise _Truncated
    return data


def _remaining(f: BinaryIO) -> int:
    return os.fstat(f.fileno()).st_size - f.tell()


def _unpack(f: BinaryIO, fmt: str) -> Any:
    return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]


def _string(f: BinaryIO) -> str:
    return _read(f, _unpack(f, "<Q")).decode("utf-8", errors="replace")


def _value(f: BinaryIO, kind: int) -> Any:
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        item, count = _unpack(f, "<I"), _unpack(f, "<Q")
        if item == _STRING:
            for _ in range(count):
                _skip(f, _unpack(f, "<Q"))
        elif item in _SCALARS:
            _skip(f, struct.calcsize(_SCALARS[item]) * count)
        else:
            raise _Invalid(f"an array of unknown value type {item}")
        return count
    if kind not in _SCALARS:
        raise _Invalid(f"unknown value type {kind}")
    return _unpack(f, _SCALARS[kind])


def _skip(f: BinaryIO, n: int) -> None:
    if n > _remaining(f):
        raise _Truncated
    f.seek(n, os.SEEK_CUR)


def _block_sizes(kind: int) -> tuple[int, int]:
    """Elements and bytes per block of ggml tensor type `kind` ((1, 0) for a type gguf does not know)."""
    try:
        return GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
    except (ValueError, KeyError):
        return 1, 0


def _alignment(metadata: dict[str, Any]) -> int:
    value = metadata.get(Keys.General.ALIGNMENT, GGUF_DEFAULT_ALIGNMENT)
    if not _is_int(value) or value <= 0 or value & (value - 1):
        raise _Invalid(f"{Keys.General.ALIGNMENT} is {value!r}, not a power of two")
    return value


def read_info(path: str | os.PathLike[str]) -> GGUFInfo:
    """Header, metadata and a bounds check of a GGUF file; ModelError if it is not a whole GGUF."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file {p} does not exist; pass the path of a .gguf file or a name from models.lock")
    if not p.is_file():
        raise ModelError(f"model path {p} is not a file; pass the path of a .gguf file")
    size = p.stat().st_size
    try:
        with p.open("rb") as f:
            if f.read(4) != MAGIC:
                raise ModelError(
                    f"{p} is not a GGUF file (no GGUF magic); pass a .gguf model, "
                    f"or convert a checkpoint with `talesmith convert`"
                )
            version, n_tensors, n_kv = struct.unpack("<IQQ", _read(f, 20))
            if version not in VERSIONS:
                raise _Invalid(f"GGUF version {version}; llama.cpp reads versions 2 and 3")
            metadata, arrays = {}, set()
            for _ in range(n_kv):
                key = _string(f)
                kind = _unpack(f, "<I")
                metadata[key] = _value(f, kind)
                if kind == _ARRAY:
                    arrays.add(key)
            alignment = _alignment(metadata)
            data_end = 0
            blocks = set()
            for _ in range(n_tensors):
                block = _BLOCK.match(_string(f))
                if block:
                    blocks.add(int(block.group(1)))
                dims = [_unpack(f, "<Q") for _ in range(_unpack(f, "<I"))]
                kind, offset = _unpack(f, "<I"), _unpack(f, "<Q")
                elements = 1
                for d in dims:
                    elements *= d
                block_size, block_bytes = _block_sizes(kind)
                data_end = max(data_end, offset + elements // block_size * block_bytes)
            data_start = -(-f.tell() // alignment) * alignment
    except _Truncated:
        raise ModelError(f"{p} is truncated (its header ends early); download or convert it again") from None
    except _Invalid as e:
        raise ModelError(f"{p} is not a valid GGUF file: {e}; download or convert it again") from None
    except (ValueError, OverflowError, MemoryError) as e:
        why = str(e) or type(e).__name__
        raise ModelError(f"{p} is not a valid GGUF file ({why}); download or convert it again") from None
    if n_tensors and data_start + data_end > size:  # with no tensors there is no data section to pad to
        raise ModelError(
            f"{p} is truncated: {size} bytes on disk, its tensors need {data_start + data_end}; "
            f"download or convert it again"
        )
    return GGUFInfo(p, version, metadata, n_tensors, frozenset(blocks), frozenset(arrays))


# ---- what llama.cpp trusts -----------------------------------------------------------------------

_POSITIVE_INTS = ("block_count", "context_length", "embedding_length", "attention.head_count")
"""Hyper-parameters llama.cpp divides by, sizes arrays with or asserts on: whole numbers of at least 1."""


def load_problem(info: GGUFInfo) -> str | None:
    """What in the metadata would make llama.cpp abort or fail without a message (None: nothing found).

    llama.cpp asserts on some values (block_count 0 or past its layer limit, a NaN epsilon) and
    aborts the whole process; these are checked here, before it sees the file."""
    if info.n_tensors == 0:
        return "it holds no tensors (a vocabulary-only file?)"
    for key, value in info.metadata.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"{key} is {value}, not a finite number"
    for name in _POSITIVE_INTS:
        key = f"{info.architecture}.{name}"
        value = info.metadata.get(key)
        if value is None or key in info.arrays:
            continue
        if not _is_int(value):
            return f"{key} is {value!r}, not a whole number"
        if value < 1:
            return f"{key} is {value}; it must be at least 1"
    layers = info.hparam("block_count")
    if _is_int(layers) and layers > MAX_LAYERS:
        held = len(info.blocks)
        return (
            f"{info.architecture}.block_count is {layers} (its tensors hold {held} block{'s' * (held != 1)}); "
            f"llama.cpp loads at most {MAX_LAYERS}"
        )
    return None


def check_loadable(info: GGUFInfo) -> None:
    """ModelError naming the value when llama.cpp could not load the file's metadata safely."""
    problem = load_problem(info)
    if problem:
        fix = "pass a model file" if info.n_tensors == 0 else "download or convert it again"
        raise ModelError(f"{info.path} cannot be loaded: {problem}; {fix}")


def kv_bytes_per_token(info: GGUFInfo, *, lower_bound: bool = False) -> int | None:
    """Bytes of llama.cpp's f16 KV cache per context token (None when the metadata does not say).

    With `lower_bound`, a model with sliding-window attention counts one full-size layer only (its
    other layers may keep just the window)."""
    keys = (
        "block_count",
        "embedding_length",
        "attention.head_count",
        "attention.head_count_kv",
        "attention.key_length",
        "attention.value_length",
    )
    if any(f"{info.architecture}.{k}" in info.arrays for k in keys):
        return None
    layers, embd, heads = (info.hparam(k) for k in keys[:3])
    if not all(_is_int(v) and v > 0 for v in (layers, embd, heads)):
        return None
    kv_heads = info.hparam("attention.head_count_kv", heads)
    k_len = info.hparam("attention.key_length", embd // heads)
    v_len = info.hparam("attention.value_length", embd // heads)
    if not all(_is_int(v) and v >= 0 for v in (kv_heads, k_len, v_len)):
        return None
    if lower_bound and info.hparam("attention.sliding_window") is not None:
        layers = 1
    return layers * kv_heads * (k_len + v_len) * 2
