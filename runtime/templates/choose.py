"""Which chat template a model is prompted with: `--chat-template FILE|NAME`, else the model's own.

NAME is a built-in preset (`chatml`, `llama3`, ...), a prompt format imported from SillyTavern
(`<data dir>/formats/NAME.json`), or one of the model's named templates (`tool_use`, ...).
"""

from __future__ import annotations

import json
import os
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from talesmith.runtime.errors import InputError, ModelError, TemplateError
from talesmith.runtime.templates.gguf import read_templates
from talesmith.runtime.templates.presets import BUILTIN, InstructPreset, builtin_template, guess_family
from talesmith.runtime.templates.sources import ChatTemplate, model_template

FORMATS_DIR = "formats"
"""Where imported prompt formats live in the data folder."""


def formats_dir(data_dir: Path) -> Path:
    return data_dir / FORMATS_DIR


def load_user_preset(path: Path) -> InstructPreset:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path} cannot be read as a prompt format ({e})") from None
    known = {f.name for f in fields(InstructPreset)}
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise InputError(f"{path} is not a talesmith prompt format (no name)")
    return InstructPreset(**{k: v for k, v in data.items() if k in known})


def user_presets(data_dir: Path | None) -> dict[str, Path]:
    """Imported prompt formats by name."""
    folder = formats_dir(data_dir) if data_dir else None
    if folder is None or not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.glob("*.json")):
        try:
            found[load_user_preset(path).name] = path
        except InputError:
            continue  # not one of ours: `talesmith import` writes only readable ones
    return found


def _user_preset(data_dir: Path | None, spec: str) -> Path | None:
    kept = user_presets(data_dir)
    wanted = spec.strip().lower()
    return next((p for name, p in kept.items() if wanted in (name.lower(), p.stem.lower())), None)


def _model_tokens(model: str | os.PathLike[str] | None) -> dict[str, str]:
    if model is not None and str(model).endswith(".gguf") and Path(model).is_file():
        try:
            return read_templates(model).tokens
        except ModelError:  # not a GGUF llama.cpp can read: it says so when it loads
            return {}
    return {}


def choose_template(
    spec: str | None, *, model: str | os.PathLike[str] | None, data_dir: Path | None = None
) -> ChatTemplate | None:
    """The template to prompt `model` with: `spec` (a file or folder, a preset, an imported format, a named
    template of the model), else the model's own; None when the model has none and no spec is given."""
    if spec is None or not spec.strip():
        if model is None:
            return None
        where = Path(model)
        if not (where.is_dir() or where.suffix.lower() in (".gguf", ".onnx")):
            return None  # not a model file that carries a template (a model read another way)
        return model_template(where)
    path = Path(spec).expanduser()
    if path.exists():
        found = model_template(path)
        if found is None:
            raise InputError(f"{path} holds no chat template")
        return found
    eos = _model_tokens(model).get("eos", "")
    imported = _user_preset(data_dir, spec)  # an imported format of a built-in's name is the user's choice
    if imported is not None:
        return load_user_preset(imported).chat_template(eos_token=eos)
    preset = builtin_template(spec, eos_token=eos)
    if preset is not None:
        return preset
    if model is not None:
        try:
            own = model_template(model, name=spec)
        except InputError:
            own = None
        if own is not None:
            return own
    names = ", ".join([*BUILTIN, *user_presets(data_dir)])
    raise InputError(
        f"chat template {spec!r} is neither a file nor a prompt format; give a .jinja file or one of: {names}"
    )


def fallback_preset(template: ChatTemplate) -> ChatTemplate | None:
    """The built-in preset of a broken template's family (picked from its text), for when it cannot render."""
    guess = guess_family(template.text)
    if guess is None or guess[1] is None:
        return None
    return replace(BUILTIN[guess[1]].chat_template(eos_token=template.eos_token), source=f"preset {guess[1]}")


def describe(template: ChatTemplate) -> dict[str, Any]:
    """What `template show` prints about a template besides its text."""
    guess = guess_family(template.text)
    try:
        stops = template.stop_strings
    except TemplateError:
        stops = ()
    return {
        "source": template.source,
        "family": guess[0] if guess else None,
        "preset": guess[1] if guess else None,
        "bos_token": template.bos_token,
        "eos_token": template.eos_token,
        "stop_strings": list(stops),
        "variants": list(template.variants),
    }
