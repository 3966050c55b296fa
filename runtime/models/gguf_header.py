"""A quick look inside a GGUF file before llama.cpp loads it: is it GGUF, is it whole, what is in it.

gguf's GGUFReader builds a numpy view of every vocabulary entry, which takes tens of seconds on
a 262k-token vocabulary; loading a model needs only a few scalars and a bounds check, so this
reader walks the header with `struct` and skips arrays without decoding them.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from talesmith.runtime.errors import ModelError

MAGIC = b"GGUF"
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# Bytes per block and elements per block of the ggml tensor types, enough to bound the data.
_BLOCKS = {0: (4, 1), 1: (2, 1), 2: (18, 32), 3: (20, 32), 6: (22, 32), 7: (24, 32), 8: (34, 32),
           9: (36, 32), 10: (84, 256), 11: (110, 256), 12: (144, 256), 13: (176, 256), 14: (210, 256),
           15: (292, 256), 16: (66, 256), 17: (74, 256), 18: (98, 256), 19: (50, 256), 20: (36, 32),
           21: (110, 256), 22: (82, 256), 23: (136, 256), 24: (1, 1), 25: (2, 1), 26: (4, 1), 27: (8, 1),
           28: (8, 1), 29: (56, 256), 30: (2, 1), 34: (54, 256), 35: (66, 256), 39: (17, 32)}


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    version: int
    metadata: dict[str, Any] = field(repr=False)
    """Scalar and string values; arrays are summarized as their length."""
    n_tensors: int = 0

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    @property
    def name(self) -> str:
        return str(self.metadata.get("general.name", self.path.stem))

    @property
    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return int(value) if value is not None else None


class _Truncated(Exception):
    pass


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _Truncated
    return data


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
                f.seek(_unpack(f, "<Q"), os.SEEK_CUR)
        elif item in _SCALARS:
            f.seek(struct.calcsize(_SCALARS[item]) * count, os.SEEK_CUR)
        else:
            raise ValueError(f"array of type {item}")
        return count
    if kind not in _SCALARS:
        raise ValueError(f"value type {kind}")
    return _unpack(f, _SCALARS[kind])


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
                raise ModelError(f"{p} is not a GGUF file (no GGUF magic); pass a .gguf model, "
                                 f"or convert a checkpoint with `talesmith convert`")
            version, n_tensors, n_kv = struct.unpack("<IQQ", _read(f, 20))
            metadata = {}
            for _ in range(n_kv):
                key = _string(f)
                metadata[key] = _value(f, _unpack(f, "<I"))
            alignment = int(metadata.get("general.alignment", 32))
            data_end = 0
            for _ in range(n_tensors):
                _string(f)
                dims = [_unpack(f, "<Q") for _ in range(_unpack(f, "<I"))]
                kind, offset = _unpack(f, "<I"), _unpack(f, "<Q")
                elements = 1
                for d in dims:
                    elements *= d
                block_bytes, block_size = _BLOCKS.get(kind, (0, 1))
                data_end = max(data_end, offset + elements // block_size * block_bytes)
            data_start = -(-f.tell() // alignment) * alignment
    except _Truncated:
        raise ModelError(f"{p} is truncated (its header ends early); download or convert it again") from None
    except (ValueError, UnicodeDecodeError, OverflowError, MemoryError) as e:
        raise ModelError(f"{p} is not a valid GGUF file ({e}); download or convert it again") from None
    if data_start + data_end > size:
        raise ModelError(f"{p} is truncated: {size} bytes on disk, its tensors need {data_start + data_end}; "
                         f"download or convert it again")
    return GGUFInfo(p, version, metadata, n_tensors)
