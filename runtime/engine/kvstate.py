"""Saved KV state beside a story or chat file: reopen a long document without re-reading it.

The state file (`NAME.kv`, with `NAME.kv.meta` describing it; both named in talesmith.runtime.files) is
keyed by the model's sha256 and the exact tokens it holds; a state of another model or another prompt is
ignored, never loaded. Backends without state files (or prefix caches) simply skip this.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from talesmith.runtime import files
from talesmith.runtime.engine.protocol import Backend, CacheShifter, StatefulBackend, common_prefix
from talesmith.runtime.files import state_meta_path as meta_path
from talesmith.runtime.files import state_path
from talesmith.runtime.models.resolve import sha256


def save(backend: Backend, document_path: Path) -> bool:
    """Save the backend's cache beside the document; False when the backend keeps no state files."""
    if not isinstance(backend, StatefulBackend) or not backend.cached_tokens:
        return False
    path = state_path(document_path)
    backend.save_state(path, model_sha256=sha256(backend.model_path))
    for written in (path, meta_path(path)):  # what the user wrote can be read back from it: as private
        if written.exists():
            os.chmod(written, files.PRIVATE)
    return True


def state_files(folders: Iterable[Path]) -> list[Path]:
    """The saved state files (`.kv`) in `folders`, oldest first."""
    found = [p for folder in folders if Path(folder).is_dir() for p in Path(folder).glob(f"*{files.STATE_SUFFIX}")]
    return sorted(found, key=_mtime)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size + (meta_path(path).stat().st_size if meta_path(path).exists() else 0)
    except OSError:
        return 0


def total_size(folders: Iterable[Path]) -> int:
    """Bytes taken by the saved state of the documents in `folders`."""
    return sum(_size(p) for p in state_files(folders))


def enforce_cap(folders: Iterable[Path], cap_bytes: int) -> list[Path]:
    """Remove the oldest saved states until those left take at most `cap_bytes`; the state files removed."""
    states = state_files(folders)
    total = sum(_size(p) for p in states)
    removed = []
    for path in states:
        if total <= cap_bytes:
            break
        total -= _size(path)
        path.unlink(missing_ok=True)
        meta_path(path).unlink(missing_ok=True)
        removed.append(path)
    return removed


def restore(backend: Backend, document_path: Path, tokens: Sequence[int]) -> int:
    """Load the saved cache if it matches this model and a prefix of `tokens`; the tokens restored."""
    path = state_path(document_path)
    if not isinstance(backend, StatefulBackend) or not path.exists():
        return 0
    return backend.load_state(path, tokens, model_sha256=sha256(backend.model_path))


def reprocess_count(backend: Backend, tokens: Sequence[int]) -> int:
    """How many of `tokens` the next generation must evaluate, given what the backend has cached."""
    if isinstance(backend, CacheShifter):
        return backend.pending(tokens)
    common = common_prefix(backend.cached_tokens, tokens)
    return len(tokens) - max(min(common, len(tokens) - 1), 0)
