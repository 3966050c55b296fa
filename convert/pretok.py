"""Which of llama.cpp's pre-tokenizers a tokenizer.json uses, found by what it does, not by its name.

llama.cpp splits text into words with a fixed set of regular expressions per family ("gpt-2",
"llama-bpe", "falcon", ...) and records the family as `tokenizer.ggml.pre`. A tokenizer.json can
spell the same behaviour many ways (SmolLM's `Sequence[Digits(individual), ByteLevel]` is StarCoder's),
so the checkpoint's own pre-tokenizer splits a fixed probe text, and that split is compared with
each family's reference pre-tokenizer (the one its original model ships). The vocabulary plays no
part: a fine-tune or a retrained vocabulary keeps its family.
"""

from __future__ import annotations

import json
from typing import Any

from talesmith.runtime.errors import ConversionError

PROBE = (
    # llama.cpp's own check text (convert_hf_to_gguf.py, get_vocab_base_pre) ...
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you "
    "sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
    # ... and story text, code, digit and whitespace runs, Japanese.
    '\nOnce upon a time, Tim said: "It\'s 12:30!"  def f(x):\n    return x**2 + 1_000  # ok\n'
    "勇者は異世界で仲間を作り、冒険しよう！それは予知だ。 A dragon 🐉 and fire 🔥✨ over the castle 🏰!\r\n\r\n end"
)

_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
_BYTES_ONLY = {**_BYTE_LEVEL, "use_regex": False}


def _splits(*patterns: str) -> dict[str, Any]:
    steps = [{"type": "Split", "pattern": {"Regex": p}, "behavior": "Isolated", "invert": False} for p in patterns]
    return {"type": "Sequence", "pretokenizers": [*steps, _BYTES_ONLY]}


_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
_QWEN2 = _LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")

FAMILIES: dict[str, dict[str, Any]] = {
    "gpt-2": _BYTE_LEVEL,
    "llama-bpe": _splits(_LLAMA3),
    "qwen2": _splits(_QWEN2),
    "falcon": {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Punctuation", "behavior": "Contiguous"},
            _BYTE_LEVEL,
            {"type": "Digits", "individual_digits": False},
            {"type": "Split", "pattern": {"Regex": "[0-9][0-9][0-9]"}, "behavior": "Isolated", "invert": False},
        ],
    },
    "starcoder": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
    "deepseek-coder": _splits("[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[一-龥ࠀ-一가-퟿]+", "\\p{N}"),
    "deepseek-v3": _splits(
        "\\p{N}{1,3}",
        "[一-龥぀-ゟ゠-ヿ]+",
        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
        "| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
    ),
}
"""Each family llama.cpp supports, by its `tokenizer.ggml.pre` name, with its original model's pre-tokenizer."""

SAME_SPLIT = {"starcoder": "smollm"}
"""Families that split alike and differ only in llama.cpp's decoding: the second keeps spaces before
punctuation as they are (HF `clean_up_tokenization_spaces: false`)."""


def _split_with(pre: dict[str, Any] | None, text: str) -> list[str]:
    from tokenizers import Tokenizer

    spec = {
        "version": "1.0",
        "model": {"type": "WordLevel", "vocab": {"[UNK]": 0}, "unk_token": "[UNK]"},
        "pre_tokenizer": pre,
    }
    tok = Tokenizer.from_str(json.dumps(spec))
    return [piece for piece, _ in tok.pre_tokenizer.pre_tokenize_str(text)] if tok.pre_tokenizer else [text]


def describe(pre: Any) -> str:
    """`Sequence[Digits, ByteLevel]` for a pre-tokenizer's JSON."""
    if not isinstance(pre, dict):
        return "none"
    if pre.get("type") == "Sequence":
        return f"Sequence[{', '.join(describe(p) for p in pre.get('pretokenizers', []))}]"
    return str(pre.get("type"))


def _first_difference(a: list[str], b: list[str]) -> str:
    for x, y in zip(a, b, strict=False):
        if x != y:
            return f"{x!r} where it expects {y!r}"
    return f"{len(a)} pieces where it expects {len(b)}"


def identify(tokenizer, spec: dict[str, Any], *, clean_spaces: bool = True) -> str:
    """llama.cpp's pre-tokenizer name for a loaded `tokenizers.Tokenizer` (its JSON is `spec`)."""
    text = PROBE
    if tokenizer.normalizer is not None:
        text = tokenizer.normalizer.normalize_str(PROBE)
        if text != PROBE:
            raise ConversionError(
                f"tokenizer.json normalizes text ({describe(spec.get('normalizer'))}) in a way "
                f"llama.cpp does not; convert to ONNX (--to onnx), which uses the tokenizer as it is"
            )
    pieces = [p for p, _ in tokenizer.pre_tokenizer.pre_tokenize_str(text)] if tokenizer.pre_tokenizer else [text]
    closest, best = "", -1
    for name, reference in FAMILIES.items():
        expected = _split_with(reference, PROBE)
        if pieces == expected:
            return SAME_SPLIT[name] if name in SAME_SPLIT and not clean_spaces else name
        same = sum(x == y for x, y in zip(pieces, expected, strict=False))
        if same > best:
            closest, best = name, same
    found = describe(spec.get("pre_tokenizer"))
    diff = _first_difference(pieces, _split_with(FAMILIES[closest], PROBE))
    raise ConversionError(
        f"tokenizer.json's pre-tokenizer ({found}) splits text like none of llama.cpp's families "
        f"({', '.join([*FAMILIES, *SAME_SPLIT.values()])}); nearest is {closest}, but it gives "
        f"{diff}. Convert to ONNX instead (--to onnx), which uses the tokenizer as it is"
    )
