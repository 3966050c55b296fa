"""File hashes: sha256 of a file, the lock's {name, sha256, size} record of it, and a remembered
result per file so that `talesmith models list` can say "verified" without re-reading gigabytes.

A remembered hash is used only while the file keeps the size and modification time it had when it
was hashed; `talesmith models verify` always re-reads the files.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from talesmith.runtime import files
from talesmith.runtime.files import write_atomic

CACHE_ENV = "TALESMITH_CACHE"


@lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return remembered(path) or rehash(path)


def sha256(path: str | os.PathLike[str]) -> str:
    """The file's sha256, read once for as long as the file keeps its size and modification time
    (remembered across runs in talesmith's cache folder)."""
    st = os.stat(path)
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


def mismatch(path: str | os.PathLike[str], pinned: str) -> str | None:
    """The file's sha256 when it differs from the `pinned` one, else None (cheap for an unchanged file)."""
    digest = sha256(path)
    return digest if digest != pinned else None


def file_entry(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The lock's record of one file: its name, sha256 and size in bytes."""
    p = Path(path)
    return {"name": p.name, "sha256": sha256(p), "size": p.stat().st_size}


def cache_home() -> Path:
    """talesmith's own cache folder: $TALESMITH_CACHE, else $XDG_CACHE_HOME/talesmith, else ~/.cache/talesmith."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "talesmith"


def _record_path() -> Path:
    return cache_home() / "hashes.json"


def _records() -> dict[str, Any]:
    try:
        data = json.loads(_record_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _key(path: Path) -> str:
    return str(path.resolve())


def rehash(path: str | os.PathLike[str]) -> str:
    """Read the whole file again, remember its sha256 for this size and modification time, return it."""
    p = Path(path)
    st = p.stat()
    digest = files.sha256_file(p)
    records = _records()
    records[_key(p)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    try:
        write_atomic(_record_path(), json.dumps(records, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass  # remembering is an optimization: a read-only cache folder only costs a later re-read
    return digest


def remembered(path: str | os.PathLike[str]) -> str | None:
    """The sha256 last computed for this file, if it still has the same size and modification time."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return None
    record = _records().get(_key(p))
    if isinstance(record, dict) and record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns:
        digest = record.get("sha256")
        return digest if isinstance(digest, str) else None
    return None
