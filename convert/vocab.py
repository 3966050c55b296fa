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

from .safety import read_object

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
    sep: int | None = None
    add_bos: bool = False
    chat_template: str | list[dict[str, str]] | None = None
    """A template, or named templates ({name, template})."""
    add_space_prefix: bool | None = None
    """SentencePiece only: whether a space is put before the text (llama.cpp's default: yes)."""

    def pad_to(self, size: int) -> None:
        """Pad the token list to the embedding size (GPT-J has 50,400 rows for 50,257 tokens)."""
        if size < len(self.tokens):
            raise ConversionError(f"the tokenizer has {len(self.tokens)} tokens but the model only {size} embeddings")
        for i in range(len(self.tokens), size):
            self.tokens.append(f"[PAD{i}]")
            self.types.append(UNUSED)
            if self.scores is not None:
                self.scores.append(-1000.0)


def _special_id(folder: Path, key: str, token_ids: dict[str, int], config: dict[str, Any]) -> int | None:
    value = config.get(f"{key}_token_id")
    if isinstance(value, list) and value and all(type(v) is int for v in value):
        value = value[0]  # several end tokens (Llama 3.1): the first is the one llama.cpp records
    if type(value) is int and 0 <= value:
        return value
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        data = read_object(folder / name, what="tokenizer config") or {}
        entry = data.get(f"{key}_token")
        content = entry.get("content") if isinstance(entry, dict) else entry
        if isinstance(content, str) and content in token_ids:
            return token_ids[content]
    return None


def _special_ids(folder: Path, token_ids: dict[str, int], config: dict[str, Any]) -> dict[str, int | None]:
    return {key: _special_id(folder, key, token_ids, config) for key in ("bos", "eos", "unk", "pad", "sep")}


def _load(path: Path):
    from tokenizers import Tokenizer

    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(spec, dict):
            raise ValueError(f"a JSON {type(spec).__name__}, not an object")
        return Tokenizer.from_str(json.dumps(spec)), spec
    except Exception as e:
        raise ConversionError(
            f"{path} is not a tokenizer the tokenizers library can read ({_short(e)}); download it again"
        ) from None


def _short(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0][:120] if lines else "") or type(error).__name__


def _merges(spec: dict[str, Any]) -> list[str]:
    """Merges as llama.cpp stores them ("a b"), from either of tokenizer.json's two spellings."""
    return [m if isinstance(m, str) else " ".join(m) for m in spec.get("model", {}).get("merges", [])]


def _is_byte_level(spec: dict[str, Any]) -> bool:
    return '"ByteLevel"' in json.dumps([spec.get("pre_tokenizer"), spec.get("decoder")])


def bpe_vocab(folder: Path, config: dict[str, Any]) -> Vocab:
    """A byte-level BPE tokenizer.json: any file the `tokenizers` library loads (old ones have no model.type)."""
    from .pretok import identify

    tok, spec = _load(folder / "tokenizer.json")
    kind = type(tok.model).__name__
    if kind != "BPE":
        raise ConversionError(
            f"{folder}/tokenizer.json is a {kind} tokenizer; talesmith converts byte-level BPE "
            f"(tokenizer.json) and SentencePiece (tokenizer.model) tokenizers"
        )
    if not _is_byte_level(spec):
        raise ConversionError(
            f"{folder}/tokenizer.json is a BPE tokenizer that is not byte-level (SentencePiece "
            f"style); pass --tokenizer with a folder that has its tokenizer.model"
        )
    token_ids: dict[str, int] = tok.get_vocab(with_added_tokens=True)
    added = tok.get_added_tokens_decoder()
    size = max(token_ids.values()) + 1
    tokens, types = [f"[PAD{i}]" for i in range(size)], [UNUSED] * size
    for text, i in token_ids.items():
        tokens[i], types[i] = text, NORMAL
    for i, token in added.items():
        # Special tokens are control tokens (parsed only in text marked as the format's own);
        # other added tokens are always matched, in llama.cpp as in the tokenizers library.
        tokens[i], types[i] = token.content, CONTROL if token.special else USER_DEFINED
    post = spec.get("post_processor") or {}
    add_bos = post.get("type") == "TemplateProcessing" and "bos" in json.dumps(post.get("single", "")).lower()
    tokenizer_config = read_object(folder / "tokenizer_config.json", what="tokenizer config") or {}
    if isinstance(tokenizer_config.get("add_bos_token"), bool):
        add_bos = tokenizer_config["add_bos_token"]
    clean = tokenizer_config.get("clean_up_tokenization_spaces", True) is not False
    ids = _special_ids(folder, token_ids, config)
    return Vocab(
        "gpt2",
        identify(tok, spec, clean_spaces=clean),
        tokens,
        types,
        _merges(spec),
        bos=ids["bos"],
        eos=ids["eos"],
        unk=ids["unk"],
        pad=ids["pad"],
        sep=ids["sep"],
        add_bos=add_bos,
        chat_template=_chat_template(tokenizer_config, folder),
    )


def _chat_template(tokenizer_config: dict[str, Any], folder: Path | None = None) -> str | list[dict[str, str]] | None:
    """The checkpoint's chat template, first found wins: chat_template.jinja, chat_template.json, then
    tokenizer_config.json's chat_template. Named templates (a list of {name, template}) are kept whole: the
    GGUF gets the default one as tokenizer.chat_template and each other as tokenizer.chat_template.NAME."""
    template: Any = None
    if folder is not None and (folder / "chat_template.jinja").is_file():
        try:
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConversionError(f"{folder / 'chat_template.jinja'} cannot be read as UTF-8 text ({e})") from None
    elif folder is not None and (folder / "chat_template.json").is_file():
        template = (read_object(folder / "chat_template.json", what="chat template") or {}).get("chat_template")
    else:
        template = tokenizer_config.get("chat_template")
    if isinstance(template, list):
        named = [
            {"name": str(t["name"]), "template": str(t["template"])}
            for t in template
            if isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("template"), str)
        ]
        return named or None
    return template if isinstance(template, str) else None


def _named_specials(folder: Path) -> set[str]:
    """The tokens special_tokens_map.json and tokenizer_config.json call special."""
    names: set[str] = set()
    for file in ("special_tokens_map.json", "tokenizer_config.json"):
        data = read_object(folder / file, what="tokenizer config") or {}
        for key, value in data.items():
            if key.endswith("_token") or key == "additional_special_tokens":
                for v in value if isinstance(value, list) else [value]:
                    v = v.get("content") if isinstance(v, dict) else v
                    if isinstance(v, str):
                        names.add(v)
    return names


def _json_ids(path: Path) -> dict[str, int]:
    data = read_object(path, what="tokenizer vocabulary") or {}
    if not all(type(i) is int and 0 <= i < 10_000_000 for i in data.values()):
        raise ConversionError(f"{path} maps tokens to something other than ids; download it again")
    return data


def slow_bpe_vocab(folder: Path, config: dict[str, Any]) -> Vocab:
    """GPT-2's original files: vocab.json and merges.txt (older checkpoints have no tokenizer.json)."""
    try:
        lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(f"{folder}/merges.txt could not be read ({e})") from None
    token_ids = _json_ids(folder / "vocab.json")
    added = _json_ids(folder / "added_tokens.json")
    token_ids.update(added)
    special = _named_specials(folder) | {"<|endoftext|>"}
    size = max(token_ids.values()) + 1
    tokens, types = [f"[PAD{i}]" for i in range(size)], [UNUSED] * size
    for text, i in token_ids.items():
        tokens[i] = text
        types[i] = CONTROL if text in special else USER_DEFINED if text in added else NORMAL
    merges = [line for line in lines if line and not line.startswith("#version")]
    ids = _special_ids(folder, token_ids, config)
    tokenizer_config = read_object(folder / "tokenizer_config.json", what="tokenizer config") or {}
    return Vocab(
        "gpt2",
        "gpt-2",
        tokens,
        types,
        merges,
        bos=ids["bos"],
        eos=ids["eos"],
        unk=ids["unk"],
        pad=ids["pad"],
        sep=ids["sep"],
        chat_template=_chat_template(tokenizer_config, folder),
    )


def spm_vocab(folder: Path, config: dict[str, Any]) -> Vocab:
    try:
        import sentencepiece
    except ImportError:
        raise ConversionError(
            "this checkpoint has a SentencePiece tokenizer; install sentencepiece (pip install 'talesmith[convert]')"
        ) from None
    try:
        sp = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    except Exception as e:
        raise ConversionError(
            f"{folder}/tokenizer.model is not a SentencePiece model ({_short(e)}); download it again"
        ) from None
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(
            UNKNOWN
            if sp.is_unknown(i)
            else CONTROL
            if sp.is_control(i)
            else UNUSED
            if sp.is_unused(i)
            else BYTE
            if sp.is_byte(i)
            else NORMAL
        )
    special = _named_specials(folder)
    for text, i in sorted(_json_ids(folder / "added_tokens.json").items(), key=lambda kv: kv[1]):
        if i == len(tokens):
            tokens.append(text)
            scores.append(-1000.0)
            types.append(CONTROL if text in special else USER_DEFINED)
    _hf_added_tokens(tokens, scores, types, read_object(folder / "tokenizer_config.json", what="tokenizer config"))
    bos, eos, unk = sp.bos_id(), sp.eos_id(), sp.unk_id()
    ids = _special_ids(folder, {t: i for i, t in enumerate(tokens)}, config)
    tokenizer_config = read_object(folder / "tokenizer_config.json", what="tokenizer config") or {}
    add_bos = tokenizer_config.get("add_bos_token", True) is not False
    prefix = tokenizer_config.get("add_prefix_space")
    return Vocab(
        "llama",
        "default",
        tokens,
        types,
        scores=scores,
        bos=bos if bos >= 0 else None,
        eos=eos if eos >= 0 else None,
        unk=unk if unk >= 0 else None,
        pad=ids["pad"],
        sep=ids["sep"],
        add_bos=add_bos,
        chat_template=_chat_template(tokenizer_config, folder),
        add_space_prefix=prefix if isinstance(prefix, bool) else True,
    )


def _hf_added_tokens(tokens: list[str], scores: list[float], types: list[int], config: dict[str, Any] | None) -> None:
    """tokenizer_config.json's added_tokens_decoder over a SentencePiece vocabulary, as llama.cpp reads it:
    special ones become control tokens, others user-defined (with SentencePiece's space as a space)."""
    for key, entry in ((config or {}).get("added_tokens_decoder") or {}).items():
        if not (str(key).isdigit() and isinstance(entry, dict) and isinstance(entry.get("content"), str)):
            continue
        i = int(key)
        if i >= len(tokens):
            continue
        special = bool(entry.get("special"))
        tokens[i] = entry["content"] if special else entry["content"].replace("\u2581", " ")
        types[i] = CONTROL if special else USER_DEFINED
        scores[i] = -1000.0


def read_vocab(folder: Path, config: dict[str, Any]) -> Vocab:
    if (folder / "tokenizer.model").exists():
        return spm_vocab(folder, config)
    if (folder / "tokenizer.json").exists():
        return bpe_vocab(folder, config)
    if (folder / "vocab.json").exists() and (folder / "merges.txt").exists():
        return slow_bpe_vocab(folder, config)
    raise ConversionError(
        f"{folder} has no tokenizer (tokenizer.json, tokenizer.model or vocab.json + merges.txt); "
        f"pass --tokenizer with the base model's folder or hub repo"
    )
