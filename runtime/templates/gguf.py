"""The chat template of a GGUF file and the text of its special tokens, read without decoding the vocabulary.

A GGUF's `tokenizer.chat_template` (and its named variants `tokenizer.chat_template.NAME`) are strings in
the header; the template also needs the text of the BOS and EOS tokens, which sit in the token list by id.
The list is walked only as far as the largest id needed.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import GGUFValueType

from talesmith.runtime.errors import ModelError

TEMPLATE_KEY = "tokenizer.chat_template"
TOKENS_KEY = "tokenizer.ggml.tokens"
SPECIAL_IDS = {
    "bos": "tokenizer.ggml.bos_token_id",
    "eos": "tokenizer.ggml.eos_token_id",
    "eot": "tokenizer.ggml.eot_token_id",
    "eom": "tokenizer.ggml.eom_token_id",
}
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


@dataclass(frozen=True)
class GGUFTemplates:
    templates: dict[str, str] = field(default_factory=dict)
    """The chat templates by name: "default" is `tokenizer.chat_template`, others its `.NAME` variants."""
    tokens: dict[str, str] = field(default_factory=dict)
    """The text of the special tokens ("bos", "eos", "eot", "eom") the file names."""
    ids: dict[str, int] = field(default_factory=dict)
    add_bos: bool = False


class _Short(Exception):
    pass


class _Reader:
    def __init__(self, data: Any) -> None:
        self.data, self.pos = data, 0

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise _Short
        value = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += size
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        if self.pos + n > len(self.data):
            raise _Short
        text = bytes(self.data[self.pos : self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return text

    def skip_string(self) -> None:
        n = self.unpack("<Q")
        self.pos += n

    def skip_value(self, kind: int) -> None:
        if kind == GGUFValueType.STRING:
            self.string()
        elif kind == GGUFValueType.ARRAY:
            item, count = self.unpack("<I"), self.unpack("<Q")
            if item == GGUFValueType.STRING:
                for _ in range(count):
                    self.skip_string()
            elif item in _SCALARS:
                self.pos += struct.calcsize(_SCALARS[item]) * count
            else:
                raise _Short
        elif kind in _SCALARS:
            self.unpack(_SCALARS[kind])
        else:
            raise _Short


def read_templates(path: str | os.PathLike[str]) -> GGUFTemplates:
    """The chat templates and special-token texts of the GGUF at `path`; ModelError when it cannot be read."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 24:
                raise _Short
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _walk(_Reader(data))
    except OSError as e:
        raise ModelError(f"{p} cannot be read ({e.strerror}); check the path") from None
    except (_Short, ValueError, OverflowError):
        raise ModelError(f"{p} is not a whole GGUF file; download or convert it again") from None


def _walk(r: _Reader) -> GGUFTemplates:
    if bytes(r.data[:4]) != b"GGUF":
        raise _Short
    r.pos = 4
    _version, _n_tensors, n_kv = r.unpack("<I"), r.unpack("<Q"), r.unpack("<Q")
    templates: dict[str, str] = {}
    ids: dict[str, int] = {}
    add_bos = False
    tokens_at = None
    for _ in range(n_kv):
        key = r.string()
        kind = r.unpack("<I")
        if key == TOKENS_KEY and kind == GGUFValueType.ARRAY:
            tokens_at = r.pos
            r.skip_value(kind)
        elif key.startswith(TEMPLATE_KEY) and kind == GGUFValueType.STRING:
            name = key[len(TEMPLATE_KEY) + 1 :] if key != TEMPLATE_KEY else "default"
            templates[name] = r.string()
        elif key in SPECIAL_IDS.values() and kind in _SCALARS:
            ids[next(k for k, v in SPECIAL_IDS.items() if v == key)] = int(r.unpack(_SCALARS[kind]))
        elif key == "tokenizer.ggml.add_bos_token" and kind == GGUFValueType.BOOL:
            add_bos = bool(r.unpack("<?"))
        else:
            r.skip_value(kind)
    tokens: dict[str, str] = {}
    if tokens_at is not None and ids:
        r.pos = tokens_at
        if r.unpack("<I") == GGUFValueType.STRING:
            count = r.unpack("<Q")
            wanted = {i: name for name, i in ids.items() if 0 <= i < count}
            for index in range(max(wanted, default=-1) + 1):
                if index in wanted:
                    text = r.string()
                    for name, i in ids.items():
                        if i == index:
                            tokens[name] = text
                else:
                    r.skip_string()
    return GGUFTemplates(templates, tokens, ids, add_bos)
