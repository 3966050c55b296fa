"""A quick look inside a GGUF file before llama.cpp loads it: is it GGUF, is it whole, what is in it.

gguf's GGUFReader builds a numpy view of every vocabulary entry, which takes tens of seconds on
a 262k-token vocabulary; loading a model needs only a few scalars and a bounds check, so this
reader walks the header with `struct` and skips arrays without decoding them.
"""

from __future__ import annotations

import math
import mmap
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, GGUFValueType, Keys

from talesmith.runtime.errors import ModelError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
MAX_LAYERS = 512
"""llama.cpp's LLAMA_MAX_LAYERS: a block_count past it, or 0, aborts the process inside llama.cpp."""
MAX_METADATA = 16_384
"""Metadata entries read at most: models carry a few dozen; a header declaring more is refused at once."""
MAX_ARRAY = 1 << 21
"""Items of one metadata array read at most (2,097,152): the largest vocabularies hold about 262,000 tokens."""
MAX_TENSORS = 1 << 16
"""Tensors read at most (65,536): the largest models hold a few thousand."""
MAX_DIMS = 4
"""GGML_MAX_DIMS: a tensor of more dimensions does not exist in ggml."""
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


class Cursor:
    """A read position in the file's bytes (mapped, not read: a header is walked, its arrays skipped)."""

    def __init__(self, data: mmap.mmap | bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def read(self, n: int) -> bytes:
        if n > self.remaining:  # a length past the end: no giant allocation, just "truncated"
            raise _Truncated
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return bytes(chunk)

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if size > self.remaining:
            raise _Truncated
        value = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += size
        return value

    def skip(self, n: int) -> None:
        if n > self.remaining:
            raise _Truncated
        self.pos += n

    def count(self, what: str, n: int, *, each: int, most: int) -> int:
        """A declared number of records of at least `each` bytes: more than the file can hold is a
        truncated file, more than `most` a header talesmith refuses before walking it."""
        if n * each > self.remaining:
            raise _Truncated
        if n > most:
            raise _Invalid(f"it declares {n} {what}, more than the {most} talesmith reads")
        return n

    def string(self) -> str:
        return self.read(self.unpack("<Q")).decode("utf-8", errors="replace")

    def skip_strings(self, n: int) -> None:
        data, pos, end = self.data, self.pos, len(self.data)
        for _ in range(n):
            if pos + 8 > end:
                raise _Truncated
            pos += 8 + struct.unpack_from("<Q", data, pos)[0]
            if pos > end:
                raise _Truncated
        self.pos = pos

    def value(self, kind: int, key: str) -> Any:
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item = self.unpack("<I")
            if item != _STRING and item not in _SCALARS:
                raise _Invalid(f"an array of unknown value type {item}")
            each = 8 if item == _STRING else struct.calcsize(_SCALARS[item])
            n = self.count(f"items in {key}", self.unpack("<Q"), each=each, most=MAX_ARRAY)
            if item == _STRING:
                self.skip_strings(n)
            else:
                self.skip(each * n)
            return n
        if kind not in _SCALARS:
            raise _Invalid(f"unknown value type {kind}")
        return self.unpack(_SCALARS[kind])


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


def _mapped(f: BinaryIO, size: int) -> mmap.mmap | bytes:
    return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""


def read_info(path: str | os.PathLike[str]) -> GGUFInfo:
    """Header, metadata and a bounds check of a GGUF file; ModelError if it is not a whole GGUF.

    Counts are checked against the file's size and against what a model holds before anything is
    walked, so a hand-made header declaring millions of entries is refused at once."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file {p} does not exist; pass the path of a .gguf file or a name from models.lock")
    if not p.is_file():
        raise ModelError(f"model path {p} is not a file; pass the path of a .gguf file")
    return read_header(p, _walk)


T = TypeVar("T")


def read_header(path: str | os.PathLike[str], walk: Callable[[Path, Cursor, int], T]) -> T:
    """`walk(path, cursor, size)` over the GGUF file at `path`, mapped; a header cut short, one that makes no
    sense or a file that cannot be read is a ModelError naming the file."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = _mapped(f, size)
            try:
                return walk(p, Cursor(data), size)
            finally:
                if isinstance(data, mmap.mmap):
                    data.close()
    except _Truncated:
        raise ModelError(f"{p} is truncated (its header ends early); download or convert it again") from None
    except _Invalid as e:
        raise ModelError(f"{p} is not a valid GGUF file: {e}; download or convert it again") from None
    except (ValueError, OverflowError, MemoryError) as e:
        why = str(e) or type(e).__name__
        raise ModelError(f"{p} is not a valid GGUF file ({why}); download or convert it again") from None
    except OSError as e:
        raise ModelError(f"{p} cannot be read ({e.strerror or e}); check the file and its permissions") from None


def walk_metadata(p: Path, c: Cursor) -> tuple[int, int, dict[str, Any], dict[str, int]]:
    """The header up to the tensor infos: (version, tensor count, metadata, where each array's value starts)."""
    if c.data[:4] != MAGIC:
        raise ModelError(
            f"{p} is not a GGUF file (no GGUF magic); pass a .gguf model, or convert a checkpoint with `talesmith convert`"
        )
    c.skip(4)
    version = c.unpack("<I")
    if version not in VERSIONS:
        raise _Invalid(f"GGUF version {version}; llama.cpp reads versions 2 and 3")
    n_tensors, n_kv = c.unpack("<Q"), c.unpack("<Q")
    # a key/value takes at least 13 bytes (key length, type, a one-byte value), a tensor's info 24
    c.count("metadata entries", n_kv, each=13, most=MAX_METADATA)
    metadata: dict[str, Any] = {}
    arrays: dict[str, int] = {}
    for _ in range(n_kv):
        key = c.string()
        kind = c.unpack("<I")
        if kind == _ARRAY:
            arrays[key] = c.pos
        metadata[key] = c.value(kind, key)
    return version, n_tensors, metadata, arrays


def _walk(p: Path, c: Cursor, size: int) -> GGUFInfo:
    version, n_tensors, metadata, arrays = walk_metadata(p, c)
    alignment = _alignment(metadata)
    c.count("tensors", n_tensors, each=24, most=MAX_TENSORS)
    data_end = 0
    blocks = set()
    for _ in range(n_tensors):
        block = _BLOCK.match(c.string())
        if block:
            blocks.add(int(block.group(1)))
        n_dims = c.unpack("<I")
        if n_dims > MAX_DIMS:
            raise _Invalid(f"a tensor has {n_dims} dimensions; ggml tensors have at most {MAX_DIMS}")
        dims = [c.unpack("<Q") for _ in range(n_dims)]
        kind, offset = c.unpack("<I"), c.unpack("<Q")
        elements = 1
        for d in dims:
            elements *= d
        block_size, block_bytes = _block_sizes(kind)
        data_end = max(data_end, offset + elements // block_size * block_bytes)
    data_start = -(-c.pos // alignment) * alignment
    if n_tensors and data_start + data_end > size:  # with no tensors there is no data section to pad to
        raise ModelError(
            f"{p} is truncated: {size} bytes on disk, its tensors need {data_start + data_end}; "
            f"download or convert it again"
        )
    return GGUFInfo(p, version, metadata, n_tensors, frozenset(blocks), frozenset(arrays))


# ---- what llama.cpp trusts -----------------------------------------------------------------------

_POSITIVE_INTS = (
    "block_count",
    "context_length",
    "embedding_length",
    "attention.head_count",
    "attention.key_length",
    "rope.dimension_count",
)
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
    return _rope_problem(info)


def head_size(info: GGUFInfo) -> int | None:
    """Elements per attention head of the keys, as llama.cpp counts them (key_length, else
    embedding_length / head_count); None when the metadata does not say."""
    if any(f"{info.architecture}.{k}" in info.arrays for k in ("attention.key_length", "attention.head_count")):
        return None
    k_len = info.hparam("attention.key_length")
    if _is_int(k_len):
        return k_len
    embd, heads = info.hparam("embedding_length"), info.hparam("attention.head_count")
    return embd // heads if _is_int(embd) and _is_int(heads) and heads > 0 else None


def _rope_problem(info: GGUFInfo) -> str | None:
    """ggml rotates `rope.dimension_count` elements of each head: more than a head holds makes it read past
    the tensor (a crash) or abort on GGML_ASSERT(n_dims <= ne0), and an odd count aborts too."""
    key = f"{info.architecture}.rope.dimension_count"
    dims, head = info.metadata.get(key), head_size(info)
    if not isinstance(dims, int) or not _is_int(dims) or key in info.arrays or head is None:
        return None
    if dims > head:
        return f"{key} is {dims}, more than the {head} elements of an attention head"
    if dims % 2:
        return f"{key} is {dims}; it must be even"
    return None


def check_loadable(info: GGUFInfo) -> None:
    """ModelError naming the value when llama.cpp could not load the file's metadata safely."""
    problem = load_problem(info)
    if problem:
        fix = "pass a model file" if info.n_tensors == 0 else "download or convert it again"
        raise ModelError(f"{info.path} cannot be loaded: {problem}; {fix}")


def read_loadable(path: str | os.PathLike[str]) -> GGUFInfo:
    """The header of a GGUF file that llama.cpp can be given safely: every command that hands a file to
    llama.cpp reads it through this first (ModelError naming the file and the value otherwise)."""
    info = read_info(path)
    check_loadable(info)
    return info


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
