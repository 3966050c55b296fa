"""Saved KV state beside a story or chat file: reopen a long document without re-reading it.

The state file (`NAME.kv`, with `NAME.kv.json` describing it) is keyed by the model's sha256 and the
exact tokens it holds; a state of another model or another prompt is ignored, never loaded.
Backends without state files (or prefix caches) simply skip this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from talesmith.runtime.engine.protocol import common_prefix
from talesmith.runtime.models.resolve import sha256


def state_path(document_path: Path) -> Path:
    return document_path.with_suffix(".kv")


def save(backend: Any, document_path: Path) -> bool:
    """Save the backend's cache beside the document; False when the backend keeps no state files."""
    if not hasattr(backend, "save_state") or not backend.cached_tokens:
        return False
    backend.save_state(state_path(document_path), model_sha256=sha256(backend.model_path))
    return True


def restore(backend: Any, document_path: Path, tokens: Sequence[int]) -> int:
    """Load the saved cache if it matches this model and a prefix of `tokens`; the tokens restored."""
    path = state_path(document_path)
    if not hasattr(backend, "load_state") or not path.exists():
        return 0
    return backend.load_state(path, tokens, model_sha256=sha256(backend.model_path))


def reprocess_count(backend: Any, tokens: Sequence[int]) -> int:
    """How many of `tokens` the next generation must evaluate, given what the backend has cached."""
    if hasattr(backend, "pending"):
        return backend.pending(tokens)
    common = common_prefix(backend.cached_tokens, tokens)
    return len(tokens) - max(min(common, len(tokens) - 1), 0)
