"""An ONNX model folder's vocabulary: its tokenizer.json (read with `tokenizers`), each token's raw bytes for
UTF-8-safe streaming, and its end-of-text ids."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

from talesmith.runtime.errors import ModelError


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte as a printable character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=False))


class Vocabulary:
    """A tokenizer.json, with each token's raw bytes (for UTF-8-safe streaming)."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer

        path = folder / "tokenizer.json"
        if not path.exists():
            raise ModelError(
                f"{folder} has no tokenizer.json; convert the model again with `talesmith convert --to onnx`"
            )
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
            spec = json.loads(path.read_text(encoding="utf-8"))
        except Exception as e:
            raise ModelError(f"{path} could not be read ({e}); convert the model again") from None
        self._special = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
        text = json.dumps([spec.get("pre_tokenizer"), spec.get("decoder")])
        model = spec.get("model") or {}
        if '"ByteLevel"' in text:
            self._kind = "byte-level"
            self._alphabet = {c: b for b, c in _bytes_to_unicode().items()}
        elif model.get("byte_fallback") or '"ByteFallback"' in text or '"Metaspace"' in text:
            self._kind = "sentencepiece"
        else:
            self._kind = "decode"
        self.size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self.token_bytes: Callable[[int], bytes] = functools.cache(self._piece)
        """A token's raw bytes (b"" for special and unknown ids), worked out once per token."""

    def encode(self, text: str, *, add_special: bool, special: bool = False) -> list[int]:
        """`special`: the text is the prompt format's own; otherwise special tokens in it stay plain text."""
        self.tokenizer.encode_special_tokens = not special
        return self.tokenizer.encode(text, add_special_tokens=add_special).ids

    def _piece(self, token: int) -> bytes:
        if token in self._special or not 0 <= token < self.size:
            return b""
        text = self.tokenizer.id_to_token(token)
        if text is None:
            return b""
        if self._kind == "byte-level":
            try:
                return bytes(self._alphabet[c] for c in text)
            except KeyError:  # an added token written as plain text
                return text.encode("utf-8")
        if self._kind == "sentencepiece":
            if len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
                return bytes([int(text[3:5], 16)])
            return text.replace("▁", " ").encode("utf-8")
        return self.tokenizer.decode([token], skip_special_tokens=False).encode("utf-8")


def eos_ids(folder: Path) -> set[int]:
    ids: set[int] = set()
    for name in ("config.json", "generation_config.json"):
        try:
            value = json.loads((folder / name).read_text(encoding="utf-8")).get("eos_token_id")
        except (OSError, ValueError):
            continue
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(v for v in value if isinstance(v, int))
    return ids
