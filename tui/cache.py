"""A document's saved model state (its KV cache beside the file), without Textual: resumed when the
document is opened, saved after a generation in it, the folders held under the user's cap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from talesmith.runtime.engine import kvstate
from talesmith.runtime.engine.generate import prepare
from talesmith.runtime.engine.protocol import Backend
from talesmith.runtime.errors import TalesmithError
from talesmith.runtime.settings import SamplingSettings

from .model import ModelSession


def restore(model: ModelSession, backend: Backend, path: Path, document: Any, settings: SamplingSettings) -> int:
    """Resume the state saved beside `path` as far as it matches `document`'s prompt: how many tokens
    (0 when there is none, it does not match, or the model is busy)."""
    try:
        with model.exclusive(backend):
            return kvstate.restore(backend, path, prepare(backend, document, settings).tokens)
    except (TalesmithError, OSError):
        return 0


def keep(model: ModelSession, backend: Backend, path: Path, folders: list[Path], cap_mb: int) -> bool:
    """Save the backend's state beside `path`, then remove the oldest states in `folders` over `cap_mb`;
    whether it was saved (it is only a cache: without it the document is read again next time)."""
    try:
        with model.exclusive(backend):
            kvstate.save(backend, path)
            kvstate.enforce_cap(folders, cap_mb * 1024 * 1024)
    except (TalesmithError, OSError):
        return False
    return True
