"""Files, written and read the one way talesmith does it: atomic replacement and sha256.

`write_atomic` replaces a file so that at every moment it is either the old file or the new one,
never half of each: a temporary file in the same folder, every byte written, fsync, rename, fsync of
the folder. Every writer in talesmith (documents, models.lock, saved state, caches) goes through it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from talesmith.runtime.errors import InputError

PRIVATE = 0o600
"""The mode of what a user wrote (stories, chats, their saved state): readable by its owner only."""


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable; a file system that cannot sync folders is left as it is."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to `fd`: `os.write` may write fewer than it was given."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(f"wrote {n} bytes")
        view = view[n:]


def write_atomic(path: str | os.PathLike[str], data: str | bytes, *, mode: int | None = None) -> None:
    """Replace `path` with `data` (text is written as UTF-8, newlines as given).

    `mode` is the new file's permission bits; without it a file keeps the mode it had, and a new one
    gets the default of the umask. On any error the old file is left untouched and the temporary
    file removed.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            write_all(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        if mode is None:
            mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, read in 4 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def jsonl_objects(raw: str, where: str) -> list[dict[str, Any]]:
    """The JSON objects of a JSON Lines text, one per line; blank lines are skipped.

    Only "\n" ends a line: text inside a record may hold U+2028, "\x85" or "\x0c", which
    `str.splitlines` would also break on. A line that is not a JSON object is an InputError naming it.
    """
    objects = []
    for n, line in enumerate(raw.split("\n"), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            reason = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
            raise InputError(f"{where} line {n} is not JSON ({reason}); each line must be one JSON object") from None
        if not isinstance(value, dict):
            raise InputError(f"{where} line {n} is not a JSON object")
        objects.append(value)
    return objects
