"""Which story and which chat were open last, kept in `last.json` in the data folder, so that the app opens
them again on start. Plain data and file I/O, no Textual."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from talesmith.runtime import files

FILE = "last.json"
KINDS = ("story", "chat")


@dataclass(frozen=True)
class Last:
    kind: str = ""
    """The kind of the document on screen last ("story" or "chat"); "" when none was kept."""
    ids: dict[str, str] = field(default_factory=dict)
    """The last document of each kind."""


def load(data_dir: Path) -> Last:
    """What was open last; nothing when the file is missing or damaged (it only saves a few keystrokes)."""
    try:
        data = json.loads((Path(data_dir) / FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Last()
    if not isinstance(data, dict):
        return Last()
    ids = {k: v for k in KINDS if isinstance(v := data.get(k), str) and v}
    kind = data.get("last")
    return Last(kind if kind in ids else "", ids)


def remember(data_dir: Path, kind: str, doc_id: str) -> Last:
    """Keep `doc_id` as the last document of `kind`, shown last; what was kept, or the old state when the
    file cannot be written (a read-only folder is told about by the document's own save)."""
    old = load(data_dir)
    new = Last(kind, {**old.ids, kind: doc_id})
    if new == old:
        return old
    try:
        files.write_atomic(Path(data_dir) / FILE, json.dumps({"last": kind, **new.ids}) + "\n", mode=files.PRIVATE)
    except OSError:
        return old
    return new
