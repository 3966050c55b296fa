"""The output file of a batch: append-only CSV or JSONL, one writer at a time, resumable.

A file is opened only after deciding whose it is: every record must be one of ours, parsed exactly
as it was written, and only a torn last record (a crash or a full disk mid-write) is ever cut. A
file that is not a talesmith output is refused and left byte for byte as it was. Each record is
appended with every byte written and fsync'd; when the disk fills, the file is cut back to its last
whole record so that the same command resumes once there is space again.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from talesmith.runtime.errors import InputError
from talesmith.runtime.files import write_all

OUTPUT_FIELDS = (
    "id",
    "sample",
    "prompt",
    "text",
    "seed",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "seconds",
    "tokens_per_second",
    "model",
    "model_sha256",
    "settings",
)
CSV_HEADER = (",".join(OUTPUT_FIELDS) + "\n").encode("utf-8")


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


def split_lines(data: bytes) -> list[bytes]:
    """Lines ending at b"\\n" only, each with its ending (U+2028, \\x0c and \\x85 are not line ends here)."""
    lines = data.split(b"\n")
    out = [line + b"\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


class ForeignFile(Exception):
    """Internal: the file holds something that is not a whole talesmith record."""


def _check_record(record: Any, where: str) -> dict[str, Any]:
    if not isinstance(record, dict) or set(record) != set(OUTPUT_FIELDS):
        raise ForeignFile(f"{where} is not a talesmith record")
    try:
        sample = int(record["sample"])
    except (TypeError, ValueError):
        raise ForeignFile(f"{where} has sample {record['sample']!r}") from None
    if record["id"] in ("", None) or sample < 0:
        raise ForeignFile(f"{where} has no id")
    return record


def _jsonl_records(data: bytes) -> tuple[list[dict[str, Any]], int]:
    records: list[dict[str, Any]] = []
    good = 0
    for n, line in enumerate(split_lines(data), 1):
        if not line.endswith(b"\n"):
            break  # torn by a crash mid-write: the only thing ever cut
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ForeignFile(f"line {n} is not JSON") from None
        records.append(_check_record(record, f"line {n}"))
        good += len(line)
    return records, good


def _csv_records(data: bytes) -> tuple[list[dict[str, Any]], int]:
    if not data.startswith(CSV_HEADER):
        if CSV_HEADER.startswith(data):
            return [], 0  # the header itself was torn
        raise ForeignFile("its first line is not talesmith's header")
    try:
        text_lines = [line.decode("utf-8") for line in split_lines(data[len(CSV_HEADER) :])]
    except UnicodeDecodeError:
        raise ForeignFile("it is not UTF-8 text") from None
    state = {"read": 0, "exhausted": False}

    def feed() -> Iterator[str]:
        for line in text_lines:
            state["read"] += 1
            yield line
        state["exhausted"] = True

    allow_big_csv_fields()
    records: list[dict[str, Any]] = []
    good = len(CSV_HEADER)
    consumed = 0
    reader = csv.reader(feed(), strict=True)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            if state["read"] == len(text_lines) and not text_lines[-1].endswith("\n"):
                break  # a torn last record
            raise ForeignFile(f"record {len(records) + 1} cannot be read as CSV ({e})") from None
        if state["exhausted"] or not text_lines[state["read"] - 1].endswith("\n"):
            break  # ended by the end of the file, not by its own line end: torn
        if len(fields) != len(OUTPUT_FIELDS):
            raise ForeignFile(f"record {len(records) + 1} has {len(fields)} fields, not {len(OUTPUT_FIELDS)}")
        records.append(_check_record(dict(zip(OUTPUT_FIELDS, fields, strict=False)), f"record {len(records) + 1}"))
        good += sum(len(line.encode("utf-8")) for line in text_lines[consumed : state["read"]])
        consumed = state["read"]
    return records, good


def read_output(path: Path, kind: str) -> tuple[list[dict[str, Any]], int]:
    """The records of an existing output file and the byte length of its whole records.

    Raises InputError when the file is not a talesmith output (anything but a torn last record).
    """
    data = path.read_bytes()
    try:
        return (_jsonl_records if kind == "jsonl" else _csv_records)(data)
    except ForeignFile as e:
        raise InputError(
            f"{path} is not a talesmith batch output ({e}); it was left as it is, write to a new file with -o"
        ) from None


def read_records(path: Path) -> list[dict[str, Any]]:
    """The whole records of an output file, for reading only (no lock, nothing cut)."""
    return read_output(path, file_kind(path))[0]


class WriterLock:
    """An exclusive lock on `PATH.lock` beside an output file, holding the writer's process id."""

    def __init__(self, output: Path):
        self.path = output.with_name(output.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise InputError(
                    f"cannot write in {self.path.parent} ({e.strerror}); choose an output folder you can write to"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.read(fd, 32).decode("ascii", errors="replace").strip() or "unknown"
                os.close(fd)
                output = self.path.name[: -len(".lock")]
                raise InputError(
                    f"another talesmith batch (pid {pid}) is writing {output}; wait for it to "
                    f"end or write to another file"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file its last holder removed while we waited for it
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        write_all(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


class OutputFile:
    """An append-only CSV or JSONL file of finished records, written by this process alone."""

    def __init__(self, path: Path):
        self.path = path
        self.kind = file_kind(path)
        self.records: list[dict[str, Any]] = []
        self._lock = WriterLock(path)
        self._fd: int | None = None
        self._size = 0
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

    def _open_existing(self) -> None:
        if not self.path.exists():
            return
        if not os.access(self.path, os.W_OK):
            raise InputError(f"output {self.path} is not writable; fix its permissions or write to another file")
        self.records, good = read_output(self.path, self.kind)
        if good < self.path.stat().st_size:
            os.truncate(self.path, good)  # a record torn by a crash mid-write
        self._size = good

    def done(self) -> set[tuple[str, int]]:
        return {(str(r["id"]), int(r["sample"])) for r in self.records}

    def _open(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
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
                f"{self.path}: {why}; its {len(self.records)} whole records are kept, "
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
        self.records.extend(records)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._lock.release()

    def __enter__(self) -> OutputFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
