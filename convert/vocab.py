"""Tokenizer metadata for GGUF, so that llama.cpp tokenizes exactly as the Hugging Face tokenizer.

Two kinds: byte-level BPE from tokenizer.json (GPT-2, GPT-J, Falcon, BPE Llamas) and
SentencePiece from tokenizer.model (Llama 2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talesmith.runtime.errors import ConversionError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclass
class Vocab:
    model: str
    """tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)."""
    pre: str
    tokens: list[str]
    types: list[int]
    merges: list[str] = field(default_factory=list)
    scores: list[float] | None = None
    bos: int | None = None
    eos: int | None = None
    unk: int | None = None
    pad: int | None = None
    add_bos: bool = False

    def pad_to(self, size: int) -> None:
        """Pad the token list to the embedding size (GPT-J has 50,400 rows for 50,257 tokens)."""
        if size < len(self.tokens):
            raise ConversionError(f"the tokenizer has {len(self.tokens)} tokens but the model only {size} embeddings")
        for i in range(len(self.tokens), size):
            self.tokens.append(f"[PAD{i}]")
            self.types.append(UNUSED)
            if self.scores is not None:
                self.scores.append(-1000.0)


def _pre_tokenizer_name(pre: Any) -> str:
    """llama.cpp's name for the pre-tokenizer a tokenizer.json describes."""
    if pre is None:
        raise ConversionError("the tokenizer has no pre-tokenizer; talesmith supports byte-level BPE tokenizers")
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    if pre.get("type") == "Sequence":
        kinds = [p.get("type") for p in pre.get("pretokenizers", [])]
        if {"Punctuation", "Digits", "ByteLevel"} <= set(kinds):
            return "falcon"
        if kinds == ["Split", "ByteLevel"]:
            regex = pre["pretokenizers"][0].get("pattern", {}).get("Regex", "")
            if "\\p{N}{1,3}" in regex:
                return "llama-bpe"
    raise ConversionError(f"unsupported pre-tokenizer {json.dumps(pre)[:120]}; talesmith knows GPT-2, Falcon and "
                          f"Llama 3 byte-level BPE tokenizers")


def _special_id(folder: Path, key: str, token_ids: dict[str, int], config: dict[str, Any]) -> int | None:
    value = config.get(f"{key}_token_id")
    if isinstance(value, int):
        return value
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if path.exists():
            entry = json.loads(path.read_text(encoding="utf-8")).get(f"{key}_token")
            content = entry.get("content") if isinstance(entry, dict) else entry
            if content in token_ids:
                return token_ids[content]
    return None


def bpe_vocab(folder: Path, config: dict[str, Any]) -> Vocab:
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    model = data.get("model", {})
    if model.get("type") != "BPE":
        raise ConversionError(f"{folder}/tokenizer.json is a {model.get('type')} tokenizer; expected byte-level BPE")
    token_ids: dict[str, int] = dict(model["vocab"])
    special = set()
    for added in data.get("added_tokens", []):
        token_ids[added["content"]] = added["id"]
        if added.get("special"):
            special.add(added["id"])
    size = max(token_ids.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [UNUSED] * size
    for text, i in token_ids.items():
        tokens[i] = text
        types[i] = CONTROL if i in special else NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    post = data.get("post_processor") or {}
    add_bos = post.get("type") == "TemplateProcessing" and "bos" in json.dumps(post.get("single", "")).lower()
    return Vocab("gpt2", _pre_tokenizer_name(data.get("pre_tokenizer")), tokens, types, merges,
                 bos=_special_id(folder, "bos", token_ids, config), eos=_special_id(folder, "eos", token_ids, config),
                 unk=_special_id(folder, "unk", token_ids, config), pad=_special_id(folder, "pad", token_ids, config),
                 add_bos=add_bos)


def slow_bpe_vocab(folder: Path, config: dict[str, Any]) -> Vocab:
    """GPT-2's original files: vocab.json and merges.txt (older checkpoints have no tokenizer.json)."""
    try:
        token_ids: dict[str, int] = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{folder}: vocab.json / merges.txt could not be read ({e})") from None
    added = folder / "added_tokens.json"
    special = set()
    if added.exists():
        for text, i in json.loads(added.read_text(encoding="utf-8")).items():
            token_ids[text] = i
            special.add(i)
    special |= {i for text, i in token_ids.items() if text == "<|endoftext|>"}
    size = max(token_ids.values()) + 1
    tokens, types = [f"[PAD{i}]" for i in range(size)], [UNUSED] * size
    for text, i in token_ids.items():
        tokens[i], types[i] = text, CONTROL if i in special else NORMAL
    merges = [line for line in lines if line and not line.startswith("#version")]
    return Vocab("gpt2", "gpt-2", tokens, types, merges, bos=_special_id(folder, "bos", token_ids, config),
                 eos=_special_id(folder, "eos", token_ids, config), unk=_special_id(folder, "unk", token_ids, config))


def spm_vocab(folder: Path, config: dict[str, Any]) -> Vocab:
    try:
        import sentencepiece
    except ImportError:
        raise ConversionError("this checkpoint has a SentencePiece tokenizer; install sentencepiece "
                              "(pip install 'talesmith[convert]')") from None
    sp = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(UNKNOWN if sp.is_unknown(i) else CONTROL if sp.is_control(i) else UNUSED if sp.is_unused(i)
                     else BYTE if sp.is_byte(i) else NORMAL)
    added = folder / "added_tokens.json"
    if added.exists():
        for text, i in sorted(json.loads(added.read_text(encoding="utf-8")).items(), key=lambda kv: kv[1]):
            if i == len(tokens):
                tokens.append(text)
                scores.append(-1000.0)
                types.append(USER_DEFINED)
    bos, eos, unk = sp.bos_id(), sp.eos_id(), sp.unk_id()
    return Vocab("llama", "default", tokens, types, scores=scores, bos=bos if bos >= 0 else None,
                 eos=eos if eos >= 0 else None, unk=unk if unk >= 0 else None, add_bos=True)


def read_vocab(folder: Path, config: dict[str, Any]) -> Vocab:
    if (folder / "tokenizer.model").exists():
        return spm_vocab(folder, config)
    if (folder / "tokenizer.json").exists():
        return bpe_vocab(folder, config)
    if (folder / "vocab.json").exists() and (folder / "merges.txt").exists():
        return slow_bpe_vocab(folder, config)
    raise ConversionError(f"{folder} has no tokenizer (tokenizer.json, tokenizer.model or vocab.json + merges.txt); "
                          f"pass --tokenizer with the base model's folder or hub repo")
