"""Files, written and read the one way talesmith does it: atomic replacement and sha256.

`write_atomic` replaces a file so that at every moment it is either the old file or the new one,
never half of each: a temporary file in the same folder, every byte written, fsync, rename, fsync of
the folder. Every writer in talesmith (documents, models.lock, saved state, caches) goes through it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import platformdirs

from talesmith.runtime.errors import InputError

_T = TypeVar("_T")

PRIVATE = 0o600
"""The mode of what a user wrote (stories, chats, their saved state): readable by its owner only."""
HOME_ENV = "TALESMITH_HOME"
"""Names the data folder (stories, chats, characters, lorebooks, presets), over the platform's default."""
MAX_IMPORT = 64 * 1024 * 1024
"""The largest file `talesmith import` reads."""
MAX_OWN_FILE = 4 * MAX_IMPORT
"""The largest file of talesmith's own read back (a saved document or lorebook, an export's source). A chat
keeps the file it came from beside its messages, so its document is larger than the import; an import whose
saved form would pass this is refused when imported, so everything imported can be read back."""
MAX_JSON_DEPTH = 100
"""How deeply an imported JSON file may nest (the files of other tools nest a few levels); deeper is refused
in one line."""
MAX_OWN_JSON_DEPTH = MAX_JSON_DEPTH + 20
"""How deeply talesmith's own files may nest: a document holds what was imported a few levels down."""


def default_data_dir() -> Path:
    """Where stories, chats, characters, lorebooks and presets live: $TALESMITH_HOME, else the platform's
    user data folder (on Linux `$XDG_DATA_HOME/talesmith` or `~/.local/share/talesmith`)."""
    explicit = os.environ.get(HOME_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return Path(platformdirs.user_data_dir("talesmith", appauthor=False))


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


def write_atomic(
    path: str | os.PathLike[str], data: str | bytes, *, mode: int | None = None, replace: bool = True
) -> None:
    """Replace `path` with `data` (text is written as UTF-8, newlines as given).

    `mode` is the new file's permission bits; without it a file keeps the mode it had, and a new one
    gets the default of the umask. On any error the old file is left untouched and the temporary
    file removed. With `replace=False` an existing `path` is never written over: TargetExistsError,
    even when another process creates it meanwhile.
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
        if replace:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class TargetExistsError(FileExistsError):
    """`write_atomic(..., replace=False)` found its target taken."""


def _link_new(tmp: str, path: Path) -> None:
    """Give the finished temporary file the name `path` only if nothing has it (FileExistsError otherwise)."""
    try:
        os.link(tmp, path)  # fails when the name exists: no window in which another file is replaced
    except FileExistsError:
        raise TargetExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
    except OSError:  # a file system without hard links
        if path.exists() or path.is_symlink():
            raise TargetExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.replace(tmp, path)
        return
    Path(tmp).unlink(missing_ok=True)


def free_path(path: Path) -> Path:
    """`path`, or `NAME-2.ext`, `NAME-3.ext`... when it is taken (a broken link counts as taken)."""
    candidate, n = path, 2
    while candidate.exists() or candidate.is_symlink():
        candidate, n = path.with_name(f"{path.stem}-{n}{path.suffix}"), n + 1
    return candidate


def reason(e: OSError) -> str:
    """What went wrong, in the system's words ("No space left on device")."""
    return e.strerror or str(e)


def ensure_folder(folder: Path, what: str) -> None:
    """Make `folder` (and its parents) for `what`, or one InputError saying why it cannot be one."""
    for part in [*reversed(folder.parents), folder]:
        if part.is_symlink() and not part.exists():
            raise InputError(
                f"{part} is a broken link (to {os.readlink(part)}); remove it or point it at a folder for {what}"
            )
        if part.exists() and not part.is_dir():
            raise InputError(f"{part} is a file, not a folder; move it away or choose another folder for {what}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot make the folder {folder} for {what} ({reason(e)})") from None


def check_target(path: Path, *, force: bool, fix: str) -> None:
    """Before writing `path`: refuse a folder, and an existing file unless `force` (`fix` says how to force)."""
    if path.is_dir():
        raise InputError(f"{path} is a folder; give the name of a file to write")
    if not force and (path.exists() or path.is_symlink()):
        raise InputError(f"{path} already exists and was left as it is; {fix}")


def read_bounded(path: str | os.PathLike[str], *, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, read with that bound.

    A device, a pipe or a socket is refused without reading it (a FIFO is opened without waiting for a
    writer); a missing file, a folder or a file over the limit is one InputError naming it and `what`
    was expected."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputError(f"{p} does not exist; give the path of {what}") from None
    except IsADirectoryError:
        raise InputError(f"{p} is a folder; give the path of {what}") from None
    except OSError as e:
        raise InputError(f"{p} cannot be read ({reason(e)})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise InputError(f"{p} is a folder; give the path of {what}")
        raise InputError(f"{p} is not a regular file (a device, pipe or socket); give the path of {what}")
    with os.fdopen(fd, "rb") as f:
        if info.st_size > limit:
            raise InputError(f"{p}: {info.st_size} bytes is more than talesmith reads as {what} ({limit})")
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise InputError(f"{p} cannot be read ({reason(e)})") from None
    if len(data) > limit:
        raise InputError(f"{p} grew past {limit} bytes while it was read; talesmith reads {what} up to that size")
    return data


def read_text(
    path: Path,
    parse: Callable[[str], _T],
    *,
    missing: str,
    unreadable: Callable[[Exception], str],
    errors: tuple[type[Exception], ...] = (),
    nesting: str | None = None,
    encoding: str = "utf-8",
) -> _T:
    """`parse` applied to a text file, with one-line errors: InputError(`missing`) when the file does not
    exist, InputError(`unreadable(e)`) when it cannot be read or decoded or `parse` raises one of `errors`,
    InputError(`nesting`) when `parse` recurses too deeply (given that message)."""
    caught: tuple[type[Exception], ...] = (OSError, UnicodeDecodeError, *errors)
    try:
        return parse(path.read_text(encoding=encoding))
    except FileNotFoundError:
        raise InputError(missing) from None
    except caught as e:
        raise InputError(unreadable(e)) from None
    except RecursionError:
        if nesting is None:
            raise
        raise InputError(nesting) from None


_TOO_DEEP = object()


class NotJSONError(InputError):
    """Text that is not JSON at all (as opposed to JSON that is too deep or holds an infinite number)."""


class _Infinite(Exception):
    def __init__(self, text: str) -> None:
        self.text = text


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Infinite(text)
    return value


def _constant(text: str) -> float:
    raise _Infinite(text)  # NaN, Infinity, -Infinity: not JSON, though Python's reader takes them


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether parsed JSON nests lists and objects more than `limit` levels (walked without recursion)."""
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def parse_json(text: str | bytes, where: str, *, depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON text as Python values; malformed JSON, an infinite number (`1e999`, `NaN`) or nesting deeper
    than `depth` is one InputError naming `where`."""
    too = f"{where} is nested too deeply (more than {depth} levels of lists and objects)"
    try:
        value = json.loads(text, parse_float=_finite, parse_constant=_constant)
    except json.JSONDecodeError as e:
        raise NotJSONError(f"{where} is not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except UnicodeDecodeError:
        raise InputError(f"{where} is not UTF-8 text") from None
    except _Infinite as e:
        raise InputError(f"{where}: the number {e.text} is out of range; write a finite number") from None
    except RecursionError:
        raise InputError(too) from None
    if too_deep(value, depth):
        raise InputError(too)
    return value


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, read in 4 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def jsonl_numbered(raw: str, where: str) -> list[tuple[int, dict[str, Any]]]:
    """The JSON objects of a JSON Lines text with their line numbers, one per line; blank lines are skipped.

    Only "\n" ends a line: text inside a record may hold U+2028, "\x85" or "\x0c", which
    `str.splitlines` would also break on. A line that is not a JSON object is an InputError naming it.
    """
    objects = []
    for n, line in enumerate(raw.split("\n"), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line, parse_float=_finite, parse_constant=_constant)
        except json.JSONDecodeError as e:
            raise InputError(f"{where} line {n} is not JSON ({e.msg}); each line must be one JSON object") from None
        except _Infinite as e:
            raise InputError(f"{where} line {n}: the number {e.text} is out of range; write a finite number") from None
        except RecursionError:
            value = _TOO_DEEP
        if value is _TOO_DEEP or too_deep(value):
            raise InputError(f"{where} line {n} is not JSON (nested too deeply); each line must be one JSON object")
        if not isinstance(value, dict):
            raise InputError(f"{where} line {n} is not a JSON object")
        objects.append((n, value))
    return objects


def jsonl_objects(raw: str, where: str) -> list[dict[str, Any]]:
    """The JSON objects of a JSON Lines text, one per line (see `jsonl_numbered`)."""
    return [value for _, value in jsonl_numbered(raw, where)]


# ---- files that other code writes by name ---------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[Path]:
    """A temporary name beside `path` for a writer that writes a file by name itself (gguf's writer,
    llama.cpp's quantizer and state files): when the block ends, the file is synced, given `mode` (as in
    `write_atomic`) and renamed to `path`; on any error it is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        fsync_file(Path(tmp))
        if mode is None:
            mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_file(path: Path) -> None:
    """Make the bytes written to `path` (through any descriptor) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_folder(staged: Path, final: Path) -> None:
    """Put a finished folder in place of `final`: every file in it synced first; an older `final` is moved
    aside and removed only once the new one has its name, so `final` is at every moment whole."""
    for p in sorted(staged.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if p.is_file() and not p.is_symlink():
            fsync_file(p)
        elif p.is_dir() and not p.is_symlink():
            fsync_dir(p)
    fsync_dir(staged)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(staged, final)
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


STATE_SUFFIX = ".kv"


def state_path(document: Path) -> Path:
    """The model state saved beside a document (`NAME.kv`)."""
    return document.with_suffix(STATE_SUFFIX)


def state_meta_path(state: Path) -> Path:
    """What describes a saved state (its model's sha256, context, tokens): `NAME.kv.meta` beside it."""
    return state.with_name(state.name + ".meta")
