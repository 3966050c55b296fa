"""No checkpoint code ever runs: a folder is checked before transformers, optimum or anything else sees it.

A Hugging Face folder can ask to run its own Python (`auto_map` in config.json or tokenizer_config.json,
with `trust_remote_code`). talesmith never does. The rules, checked on the JSON alone:

* config.json and tokenizer_config.json must be JSON objects;
* the `model_type` must be one that talesmith (for GGUF) or transformers (for ONNX) implements itself;
  an unknown one is refused, naming the code the folder asks to run;
* a tokenizer whose class only exists in the folder's own code (`auto_map`) is refused;
* an `auto_map` beside a known model type or tokenizer class is ignored: the library's own
  implementation is used, and a note says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from talesmith.runtime.errors import ConversionError

OWN_MODEL_TYPES = {
    "gpt2": "gguf",
    "gptj": "gguf",
    "llama": "gguf",
    "falcon": "gguf",
    "RefinedWeb": "gguf",
    "RefinedWebModel": "gguf",
}
"""Model types whose GGUF conversion is talesmith's own code (the RefinedWeb names are Falcon's old layout)."""


def read_object(path: Path, *, what: str) -> dict[str, Any] | None:
    """A JSON object from `path`, None when the file is absent; ConversionError for anything else."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path} is not valid JSON ({e}); download the {what} again") from None
    except OSError as e:
        raise ConversionError(f"{path} could not be read ({e.strerror or e})") from None
    if not isinstance(data, dict):
        raise ConversionError(
            f"{path} holds a JSON {type(data).__name__}, not an object; it is not a {what} file (download it again)"
        )
    return data


def _transformers_model_types() -> set[str]:
    try:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    except ImportError:
        return set()
    return set(CONFIG_MAPPING_NAMES)


def _tokenizer_class_known(name: str) -> bool:
    try:
        from transformers.models.auto.tokenization_auto import tokenizer_class_from_name
    except ImportError:
        return False
    try:
        return (
            tokenizer_class_from_name(name) is not None
            or tokenizer_class_from_name(name.removesuffix("Fast")) is not None
        )
    except Exception:  # transformers raises for some unknown names instead of returning None
        return False


def _code(auto_map: Any) -> str:
    if isinstance(auto_map, dict) and auto_map:
        key, value = next(iter(auto_map.items()))
        shown = (
            value
            if isinstance(value, str)
            else next((v for v in value or [] if v), "?")
            if isinstance(value, list)
            else "?"
        )
        return f" (auto_map {key} -> {shown})"
    return " (auto_map)" if auto_map else ""


def check_config(folder: Path, config: dict[str, Any], *, targets: tuple[str, ...]) -> list[str]:
    """Refuse a config.json that needs the checkpoint's own code for `targets`; returns notes."""
    model_type = config.get("model_type")
    auto_map = config.get("auto_map")
    if model_type is not None and not isinstance(model_type, str):
        raise ConversionError(f"{folder}/config.json has model_type {model_type!r}, not a name; download it again")
    ours = model_type in OWN_MODEL_TYPES
    # transformers takes seconds to import: asked only when its answer matters.
    known = _transformers_model_types() if "onnx" in targets or not ours else set()

    def lacking(target: str) -> bool:
        if auto_map and model_type is None:
            return True
        if target == "onnx":
            return model_type not in known
        return model_type is not None and not ours and model_type not in known

    needed = [t for t in targets if lacking(t)]
    if needed and ours:
        raise ConversionError(
            f"{folder}/config.json has model_type {model_type!r}{_code(auto_map)}, which "
            f"transformers does not implement, so an ONNX export would need the checkpoint's own "
            f"code; talesmith never runs it: convert to GGUF (--to gguf), which talesmith implements"
        )
    if needed:
        raise ConversionError(
            f"{folder}/config.json asks for model_type {model_type!r}{_code(auto_map)}, which only "
            f"the checkpoint's own code implements; talesmith never runs checkpoint code: convert a "
            f"supported architecture (GPT-2, GPT-J, Llama, Falcon)"
        )
    if auto_map:
        return [
            f"{folder.name}/config.json asks for its own code{_code(auto_map)}; ignored: talesmith uses the "
            f"library's own {model_type} and never runs a checkpoint's code"
        ]
    return []


def check_tokenizer_config(folder: Path) -> list[str]:
    """Refuse a tokenizer_config.json whose tokenizer class exists only in the folder's own code."""
    data = read_object(folder / "tokenizer_config.json", what="tokenizer config")
    if data is None:
        return []
    cls = data.get("tokenizer_class")
    auto_map = data.get("auto_map")
    if cls is not None and not isinstance(cls, str):
        raise ConversionError(f"{folder}/tokenizer_config.json has tokenizer_class {cls!r}, not a name")
    if cls and auto_map and not _tokenizer_class_known(cls):
        raise ConversionError(
            f"{folder}/tokenizer_config.json names tokenizer class {cls!r}{_code(auto_map)}, "
            f"which only its own code implements; talesmith never runs a checkpoint's code: "
            f"pass --tokenizer with a folder whose tokenizer transformers knows"
        )
    if auto_map and not cls:
        raise ConversionError(
            f"{folder}/tokenizer_config.json asks for its own tokenizer code{_code(auto_map)}; "
            f"talesmith never runs a checkpoint's code: pass --tokenizer with another folder"
        )
    if auto_map:
        return [
            f"{folder.name}/tokenizer_config.json asks for its own code{_code(auto_map)}; ignored: the "
            f"library's {cls} is used"
        ]
    return []


def check_folder(
    folder: Path, config: dict[str, Any], *, targets: tuple[str, ...], tokenizer_dir: Path | None = None
) -> list[str]:
    """Every check above, before anything else reads the folder; returns notes to show the user."""
    notes = check_config(folder, config, targets=targets)
    for tok in dict.fromkeys([folder, tokenizer_dir or folder]):
        if tok != folder:  # transformers reads a tokenizer folder's config.json too, to find its class
            tok_config = read_object(tok / "config.json", what="checkpoint config")
            notes += check_config(tok, tok_config, targets=targets) if tok_config else []
        notes += check_tokenizer_config(tok)
    return notes
