"""One `[models.NAME]` entry of models.lock as typed data, built from its TOML table as checked by
`lockfile.EntryTable` (runtime.schema's one validation path).

The table itself is kept (`table`) and is what gets written back, so a lock read and rewritten
stays byte for byte the same; these classes are how the entry is read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from talesmith.runtime.models.lockfile import UNRESOLVED, check_entry


@dataclass(frozen=True)
class LockedFile:
    """A file the lock pins: its name inside the model's folder, size in bytes, sha256 when known."""

    name: str
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class Source:
    """Where the model comes from: exactly one of a hub repository, a local path or a PyPI package."""

    hub: str | None = None
    revision: str | None = None
    commit: str = UNRESOLVED
    path: str | None = None
    pypi: str | None = None


@dataclass(frozen=True)
class ModelEntry:
    format: str
    source: Source | None
    files: tuple[LockedFile, ...] = ()
    path: str | None = None
    quantization: str | None = None
    prompt_format: str | None = None
    preset: str | None = None
    format_fields: dict[str, Any] = field(default_factory=dict)
    table: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The entry as it stands in the lock (what is written back)."""

    @classmethod
    def from_table(cls, name: str, table: Any, where: str = "models.lock") -> ModelEntry:
        """The entry of model `name`; LockError naming the first field with the wrong shape."""
        t = check_entry(name, table, where)
        source = t.source
        return cls(
            format=t.format,
            source=None
            if source is None
            else Source(source.hub, source.revision, source.commit, source.path, source.pypi),
            files=tuple(LockedFile(f.name, f.size, f.sha256) for f in t.files),
            path=t.path,
            quantization=t.quantization,
            prompt_format=t.prompt_format,
            preset=t.preset,
            format_fields=dict(t.format_fields),
            table=table,
        )

    @property
    def from_hub(self) -> bool:
        return self.source is not None and self.source.hub is not None

    @property
    def local_path(self) -> str | None:
        """The entry's own path, else its local source path (None when neither is given)."""
        return self.path or (self.source.path if self.source else None)

    def pinned_sha256(self, file_name: str) -> str | None:
        return next((f.sha256 for f in self.files if f.name == file_name), None)
