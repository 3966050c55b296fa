"""The output file of a batch: append-only CSV or JSONL, one writer at a time, resumable.

A file is opened only after deciding whose it is: every record must be one of ours, parsed exactly
as it was written, and only a torn last record (a crash or a full disk mid-write) is ever cut. A
file that is not a talesmith output is refused and left byte for byte as it was. Each record is
appended with every byte written and fsync'd; when the disk fills, the file is cut back to its last
whole record so that the same command resumes once there is space again.

Records hold only what the command decides, so that a resumed file is byte for byte the
uninterrupted one. Beside the output: `OUT.run.json`, what decided its records (checked when the
command resumes); `OUT.timings.jsonl` with `--timings`, how long each record took; `OUT.lock` while
a batch writes it.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from filelock import FileLock, Timeout

from talesmith.runtime.errors import InputError
from talesmith.runtime.files import write_all, write_atomic

OUTPUT_FIELDS = (
    "id",
    "sample",
    "prompt",
    "text",
    "seed",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "model",
    "model_sha256",
    "settings",
)
CSV_HEADER = (",".join(OUTPUT_FIELDS) + "\n").encode("utf-8")
TIMED_FIELDS = OUTPUT_FIELDS[:8] + ("seconds", "tokens_per_second") + OUTPUT_FIELDS[8:]
"""The fields of records written before timings moved to their own file."""
TIMED_HEADER = (",".join(TIMED_FIELDS) + "\n").encode("utf-8")


def file_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise InputError(f"{path}: unknown file type {suffix or '(none)'}; use a .csv or .jsonl file")


def allow_big_csv_fields() -> None:
    """Let the csv module read fields of any length (its default limit is 131,072 characters)."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


MAX_RECORD_BYTES = 64 * 2**20
"""The longest record an output file may hold (its lines are read with this bound, never to their end)."""


class ForeignFile(Exception):
    """Internal: the file holds something that is not a whole talesmith record."""


class OlderFile(ForeignFile):
    """Internal: a file an earlier talesmith wrote, with timings in its records."""


def _check_record(record: Any, where: str) -> dict[str, Any]:
    if isinstance(record, dict) and set(record) == set(TIMED_FIELDS):
        raise OlderFile()
    if not isinstance(record, dict) or set(record) != set(OUTPUT_FIELDS):
        raise ForeignFile(f"{where} is not a talesmith record")
    try:
        sample = int(record["sample"])
    except (TypeError, ValueError):
        raise ForeignFile(f"{where} has sample {record['sample']!r}") from None
    if record["id"] in ("", None) or sample < 0:
        raise ForeignFile(f"{where} has no id")
    return record


def _line(f: BinaryIO, where: str) -> bytes:
    """The next line of `f`, at most MAX_RECORD_BYTES long ("\n" ends a line; U+2028, \x0c and \x85 do not)."""
    line = f.readline(MAX_RECORD_BYTES + 1)
    if len(line) > MAX_RECORD_BYTES:
        raise ForeignFile(f"{where} is longer than {MAX_RECORD_BYTES >> 20} MB")
    return line


Scanned = Iterator[tuple[dict[str, Any] | None, int]]
"""(record, the byte length of the file up to its end): every whole record in order (None for the CSV header)."""


def _jsonl_records(f: BinaryIO) -> Scanned:
    end = 0
    n = 0
    while line := _line(f, f"line {n + 1}"):
        n += 1
        if not line.endswith(b"\n"):
            return  # torn by a crash mid-write: the only thing ever cut
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ForeignFile(f"line {n} is not JSON") from None
        end += len(line)
        yield _check_record(record, f"line {n}"), end


def _csv_records(f: BinaryIO) -> Scanned:
    head = f.read(len(CSV_HEADER))
    if head != CSV_HEADER:
        if CSV_HEADER.startswith(head):
            return  # the header itself was torn
        if (head + f.read(len(TIMED_HEADER) - len(head))) == TIMED_HEADER:
            raise OlderFile()
        raise ForeignFile("its first line is not talesmith's header")
    end = len(CSV_HEADER)
    yield None, end
    state = {"bytes": 0, "ended": True, "exhausted": False}
    count = 0

    def feed() -> Iterator[str]:
        while line := _line(f, f"record {count + 1}"):
            state["bytes"] += len(line)
            if state["bytes"] > MAX_RECORD_BYTES:
                raise ForeignFile(f"record {count + 1} is longer than {MAX_RECORD_BYTES >> 20} MB")
            state["ended"] = line.endswith(b"\n")
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError:
                raise ForeignFile("it is not UTF-8 text") from None
        state["exhausted"] = True

    allow_big_csv_fields()
    reader = csv.reader(feed(), strict=True)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            if state["exhausted"]:
                return  # a torn last record (the file ends inside it)
            raise ForeignFile(f"record {count + 1} cannot be read as CSV ({e})") from None
        if state["exhausted"] or not state["ended"]:
            return  # ended by the end of the file, not by its own line end: torn
        count += 1
        if len(fields) != len(OUTPUT_FIELDS):
            raise ForeignFile(f"record {count} has {len(fields)} fields, not {len(OUTPUT_FIELDS)}")
        end += state["bytes"]
        state["bytes"] = 0
        yield _check_record(dict(zip(OUTPUT_FIELDS, fields, strict=True)), f"record {count}"), end


def check_regular(path: Path, what: str) -> None:
    """Refuse anything but a regular file (a device or a FIFO would be read without end, or block)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing: opening it says so
    if stat.S_ISREG(mode):
        return
    kind = next(
        (name for test, name in _KINDS if test(mode)),
        "not a file",
    )
    link = f"a link to {os.path.realpath(path)}, " if path.is_symlink() else ""
    raise InputError(f"{what} {path} is {link}{kind}, not a regular file; pass the path of a .csv or .jsonl file")


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
)


def scan_output(path: Path, kind: str) -> Scanned:
    """The whole records of an existing output file, read in bounded lines, each with the length up to its end.

    Raises InputError when the file is not a talesmith output (anything but a torn last record).
    """
    check_regular(path, "output")
    with open(path, "rb") as f:
        try:
            yield from (_jsonl_records if kind == "jsonl" else _csv_records)(f)
        except OlderFile:
            raise InputError(
                f"{path} was written by an earlier talesmith, whose records held timings; it was left as it is, "
                f"write to a new file with -o"
            ) from None
        except ForeignFile as e:
            raise InputError(
                f"{path} is not a talesmith batch output ({e}); it was left as it is, write to a new file with -o"
            ) from None


def read_output(path: Path, kind: str) -> tuple[list[dict[str, Any]], int]:
    """The records of an existing output file and the byte length of its whole records."""
    records, good = [], 0
    for record, end in scan_output(path, kind):
        good = end
        if record is not None:
            records.append(record)
    return records, good


def read_records(path: Path) -> list[dict[str, Any]]:
    """The whole records of an output file, for reading only (no lock, nothing cut)."""
    return read_output(path, file_kind(path))[0]


class WriterLock:
    """An exclusive lock on `PATH.lock` beside an output file (filelock), holding the writer's process id."""

    def __init__(self, output: Path):
        self.path = output.with_name(output.name + ".lock")
        self._lock = FileLock(self.path, timeout=0, on_acquired=_write_pid)

    def acquire(self) -> None:
        try:
            self._lock.acquire()
        except Timeout:
            output = self.path.name[: -len(".lock")]
            raise InputError(
                f"another talesmith batch (pid {self._holder()}) is writing {output}; wait for it to "
                f"end or write to another file"
            ) from None
        except OSError as e:
            self._remove_empty()
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InputError(
                    f"cannot write {self.path} ({e.strerror}); free some space and run the same command again"
                ) from None
            raise InputError(
                f"cannot write in {self.path.parent} ({e.strerror or e}); choose an output folder you can write to"
            ) from None

    def _holder(self) -> str:
        try:
            with open(self.path, "rb") as f:
                return f.read(32).decode("ascii", errors="replace").strip() or "unknown"
        except OSError:
            return "unknown"

    def _remove_empty(self) -> None:
        """A lock file left empty by a failed start is not left behind (nobody holds it)."""
        try:
            if self.path.stat().st_size == 0 and not self._lock.is_locked:
                self.path.unlink()
        except OSError:
            pass

    def release(self) -> None:
        if self._lock.is_locked:
            self.path.unlink(missing_ok=True)  # while still held: a waiter that opened it sees it gone, and retries
            self._lock.release()


def _write_pid(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    write_all(fd, f"{os.getpid()}\n".encode())


RUN_SUFFIX = ".run.json"
MAX_RUN_BYTES = 2**20


def run_path(output: Path) -> Path:
    """Where what decided an output's records is kept."""
    return output.with_name(output.name + RUN_SUFFIX)


def read_run(output: Path) -> dict[str, Any] | None:
    """What decided an output's records, as stored beside it; None when nothing is stored."""
    path = run_path(output)
    if not path.exists():
        return None
    check_regular(path, "run file")
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(MAX_RUN_BYTES + 1))
    except (OSError, ValueError) as e:
        raise InputError(
            f"{path} cannot be read ({e}); it says how {output.name} was made: restore it, or write to a new file with -o"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("decided_by"), dict):
        raise InputError(f"{path} is not a talesmith run file; restore it, or write to a new file with -o")
    return data["decided_by"]


def write_run(output: Path, decided_by: dict[str, Any]) -> None:
    try:
        write_atomic(
            run_path(output),
            json.dumps({"decided_by": decided_by}, ensure_ascii=False, indent=2, sort_keys=True) + "\n",
        )
    except OSError as e:
        raise InputError(
            f"cannot write {run_path(output)} ({e.strerror or e}); free some space or choose another -o path"
        ) from None


class TimingsFile:
    """`OUT.timings.jsonl`: how long each record took (it is not part of the record: it differs every run)."""

    def __init__(self, output: Path):
        self.path = output.with_name(output.name + ".timings.jsonl")
        check_regular(self.path, "timings file")
        self._fd: int | None = None
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            raise InputError(f"cannot write {self.path} ({e.strerror}); choose another -o path") from None

    def append_many(self, lines: list[dict[str, Any]]) -> None:
        assert self._fd is not None, "append after close"
        try:
            write_all(self._fd, b"".join((json.dumps(x, ensure_ascii=False) + "\n").encode() for x in lines))
        except OSError as e:
            raise InputError(
                f"cannot write {self.path} ({e.strerror or e}); the records are kept, run the same command again"
            ) from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class OutputFile:
    """An append-only CSV or JSONL file of finished records, written by this process alone."""

    def __init__(self, path: Path):
        self.path = path
        self.kind = file_kind(path)
        self.done: set[tuple[str, int]] = set()
        """(id, sample) of every record the file held when it was opened: all that resuming needs."""
        self.models: set[str] = set()
        """The model_sha256 of those records."""
        self.count = 0
        """Whole records in the file."""
        self._lock = WriterLock(path)
        self._fd: int | None = None
        self._size = 0
        self._torn = False
        self._prepare_folder()
        self._lock.acquire()
        try:
            self._open_existing()
        except BaseException:
            self._lock.release()
            raise

    def _prepare_folder(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(
                f"cannot create the output folder {self.path.parent} ({e.strerror}); choose another -o path"
            ) from None
        if self.path.is_dir():
            raise InputError(f"output {self.path} is a folder; pass a .csv or .jsonl file path")
        check_regular(self.path, "output")

    def _open_existing(self) -> None:
        if not self.path.exists():
            return
        if not os.access(self.path, os.W_OK):
            raise InputError(f"output {self.path} is not writable; fix its permissions or write to another file")
        good = 0
        for record, end in scan_output(self.path, self.kind):  # one record at a time: memory stays flat
            good = end
            if record is not None:
                self.done.add((str(record["id"]), int(record["sample"])))
                self.models.add(str(record["model_sha256"]))
                self.count += 1
        self._torn = good < self.path.stat().st_size  # a record torn by a crash mid-write: cut before writing
        self._size = good

    def _open(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                if self._torn:
                    os.ftruncate(self._fd, self._size)
                    self._torn = False
            except OSError as e:
                raise InputError(f"cannot write {self.path} ({e.strerror}); choose another -o path") from None
        return self._fd

    def _write(self, data: bytes) -> None:
        fd = self._open()
        try:
            write_all(fd, data)
            os.fsync(fd)
        except OSError as e:
            try:
                os.ftruncate(fd, self._size)  # back to the last whole record
            except OSError:
                pass  # the torn record is cut when the same command runs again
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            why = "the disk is full" if full else f"writing failed ({e.strerror or e})"
            raise InputError(
                f"{self.path}: {why}; its {self.count} whole records are kept, "
                f"{'free some space' if full else 'fix the cause'} and run the same command "
                f"again to resume"
            ) from None
        self._size += len(data)

    def encode(self, record: dict[str, Any], *, header: bool | None = None) -> bytes:
        """One record's bytes (a new CSV file's first record comes with the header)."""
        if self.kind == "jsonl":
            return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        row = ["" if record[k] is None else record[k] for k in OUTPUT_FIELDS]
        # The writer leaves a lone "\r" unquoted, where a reader would take it for a line end.
        buf = io.StringIO()
        if any("\r" in str(v) for v in row):
            csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL).writerow(row)
        else:
            csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL).writerow(row)
        data = buf.getvalue().encode("utf-8")
        return CSV_HEADER + data if (self._size == 0 if header is None else header) else data

    def append(self, record: dict[str, Any]) -> None:
        self.append_many([record])

    def append_many(self, records: list[dict[str, Any]]) -> None:
        """Append whole records with one write and one fsync (a crash may tear only the last one)."""
        if not records:
            return
        self._write(b"".join(self.encode(r, header=i == 0 and self._size == 0) for i, r in enumerate(records)))
        self.count += len(records)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._lock.release()

    def __enter__(self) -> OutputFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
