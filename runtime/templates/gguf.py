"""The chat template of a GGUF file and the text of its special tokens, read without decoding the vocabulary.

A GGUF's `tokenizer.chat_template` (and its named variants `tokenizer.chat_template.NAME`) are strings in
the header; the template also needs the text of the BOS and EOS tokens, which sit in the token list by id.
The header is walked by the model reader (`gguf_header`); the token list only as far as the largest id needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import GGUFValueType

from talesmith.runtime.models.gguf_header import Cursor, read_header, walk_metadata

TEMPLATE_KEY = "tokenizer.chat_template"
TOKENS_KEY = "tokenizer.ggml.tokens"
ADD_BOS_KEY = "tokenizer.ggml.add_bos_token"
SPECIAL_IDS = {
    "bos": "tokenizer.ggml.bos_token_id",
    "eos": "tokenizer.ggml.eos_token_id",
    "eot": "tokenizer.ggml.eot_token_id",
    "eom": "tokenizer.ggml.eom_token_id",
}


@dataclass(frozen=True)
class GGUFTemplates:
    templates: dict[str, str] = field(default_factory=dict)
    """The chat templates by name: "default" is `tokenizer.chat_template`, others its `.NAME` variants."""
    tokens: dict[str, str] = field(default_factory=dict)
    """The text of the special tokens ("bos", "eos", "eot", "eom") the file names."""
    ids: dict[str, int] = field(default_factory=dict)
    add_bos: bool = False


def read_templates(path: str | os.PathLike[str]) -> GGUFTemplates:
    """The chat templates and special-token texts of the GGUF at `path`; ModelError when it cannot be read."""
    return read_header(path, _templates)


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _templates(p: Path, c: Cursor, _size: int) -> GGUFTemplates:
    _version, _n_tensors, metadata, arrays = walk_metadata(p, c)
    templates = {
        key[len(TEMPLATE_KEY) + 1 :] if key != TEMPLATE_KEY else "default": value
        for key, value in metadata.items()
        if key.startswith(TEMPLATE_KEY) and isinstance(value, str)
    }
    ids: dict[str, int] = {
        name: metadata[key]
        for name, key in SPECIAL_IDS.items()
        if key in metadata and key not in arrays and _is_id(metadata[key])
    }
    tokens: dict[str, str] = {}
    if TOKENS_KEY in arrays and ids:
        c.pos = arrays[TOKENS_KEY]
        if c.unpack("<I") == GGUFValueType.STRING:
            count = c.unpack("<Q")
            last = -1
            for index in sorted({i for i in ids.values() if 0 <= i < count}):
                c.skip_strings(index - last - 1)
                text = c.string()
                tokens.update((name, text) for name, i in ids.items() if i == index)
                last = index
    return GGUFTemplates(templates, tokens, ids, metadata.get(ADD_BOS_KEY) is True)
