"""Batch generation: rows of prompts in, one output record per row and sample, resumable.

Each finished record is appended with one write and flushed to disk at once. Rerunning the same
command skips the records already there, so an interrupted run (even `kill -9`) loses nothing
and duplicates nothing; a record cut short by a crash mid-write is removed before resuming.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from talesmith.runtime.engine.protocol import Backend
from talesmith.runtime.documents.formats import FIELDS, make_document
from talesmith.runtime.errors import InputError, SettingsError, TalesmithError
from talesmith.runtime.engine.generate import collect, prepare, stream
from talesmith.runtime.settings import FIELD_NAMES, SamplingSettings, parse_value

OUTPUT_FIELDS = ("id", "sample", "prompt", "text", "seed", "finish_reason", "prompt_tokens", "completion_tokens",
                 "seconds", "tokens_per_second", "model", "model_sha256", "settings")


@dataclass(frozen=True)
class Row:
    id: str
    text: str
    fields: dict[str, str]
    overrides: dict[str, Any]


@dataclass(frozen=True)
class Task:
    row: Row
    sample: int


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise InputError(f"{path}: unknown file type {suffix or '(none)'}; use a .csv or .jsonl file")


def read_rows(path: Path, fmt: str) -> list[Row]:
    """Rows of an input file, checked against the format's fields and the sampling settings."""
    kind = _kind(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"input file {path} does not exist; pass a .csv or .jsonl file with a 'prompt' column") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"input file {path} cannot be read ({e}); it must be UTF-8 text") from None
    if kind == "csv":
        records = list(csv.DictReader(io.StringIO(raw)))
    else:
        records = []
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path} line {n} is not JSON ({e.msg}); each line must be one JSON object") from None
            if not isinstance(record, dict):
                raise InputError(f"{path} line {n} is not a JSON object")
            records.append(record)
    if not records:
        raise InputError(f"{path} has no rows")
    allowed = {"id", "prompt"} | set(FIELDS[fmt]) | FIELD_NAMES
    rows = []
    for n, record in enumerate(records, 1):
        unknown = sorted(set(record) - allowed)
        if unknown:
            raise InputError(f"{path} has a column {unknown[0]!r} that format {fmt!r} does not use; allowed columns: "
                             f"id, prompt, {', '.join(FIELDS[fmt]) or '(no format fields)'} and sampling settings")
        text = record.get("prompt")
        if text is None and not any(record.get(k) for k in FIELDS[fmt]):
            raise InputError(f"{path} row {n} has no 'prompt' and none of the {fmt!r} fields; add a 'prompt' column")
        try:
            overrides = {k: parse_value(k, v) for k, v in record.items() if k in FIELD_NAMES and v not in ("", None)}
        except SettingsError as e:
            raise InputError(f"{path} row {n}: {e}") from None
        fields = {k: v for k, v in record.items() if k in FIELDS[fmt]}
        rows.append(Row(str(record.get("id") or n), str(text or ""), fields, overrides))
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"{path}: id {dup!r} appears more than once; ids must be unique")
    return rows


def row_seed(base: int, row_id: str, sample: int) -> int:
    """A seed that depends only on the base seed, the row and the sample: same command, same output."""
    digest = hashlib.sha256(f"{base}:{row_id}:{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


# --- the output file ---------------------------------------------------------------------------

def _complete_records(path: Path, kind: str) -> tuple[list[dict[str, Any]], int]:
    """The whole records of an output file and the byte length they take (a torn tail excluded)."""
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    good = 0
    if kind == "jsonl":
        offset = 0
        for line in data.splitlines(keepends=True):
            offset += len(line)
            if not line.endswith(b"\n"):
                break
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
            good = offset
        return records, good
    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines(keepends=True)
    consumed = 0
    position = {"i": 0, "chars": 0}

    def feed() -> Iterator[str]:
        while position["i"] < len(lines):
            line = lines[position["i"]]
            position["i"] += 1
            position["chars"] += len(line)
            yield line

    reader = csv.reader(feed())
    header = None
    try:
        for fields in reader:
            whole_line = text[:position["chars"]].endswith("\n")
            if header is None and whole_line:
                header = fields
            elif header is not None and whole_line and len(fields) == len(header):
                records.append(dict(zip(header, fields)))
            else:
                break
            consumed = position["chars"]
    except csv.Error:
        pass
    return records, len(text[:consumed].encode("utf-8"))


class OutputFile:
    """An append-only CSV or JSONL file of finished records."""

    def __init__(self, path: Path):
        self.path = path
        self.kind = _kind(path)
        self.records: list[dict[str, Any]] = []
        if path.exists() and path.stat().st_size:
            self.records, good = _complete_records(path, self.kind)
            if good < path.stat().st_size:
                os.truncate(path, good)  # a record torn by a crash mid-write
        self._fd: int | None = None

    def done(self) -> set[tuple[str, int]]:
        return {(str(r["id"]), int(r["sample"])) for r in self.records}

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(self._fd, data)
        os.fsync(self._fd)

    def append(self, record: dict[str, Any]) -> None:
        if self.kind == "jsonl":
            self._write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
            return
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if not self.path.exists() or self.path.stat().st_size == 0:
            writer.writerow(OUTPUT_FIELDS)
        writer.writerow(["" if record[k] is None else record[k] for k in OUTPUT_FIELDS])
        self._write(buf.getvalue().encode("utf-8"))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# --- the run -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchPlan:
    tasks: list[Task]
    skipped: int


def plan_batch(rows: list[Row], samples: int, output: OutputFile, *, model_sha256: str) -> BatchPlan:
    """The tasks still to do, after checking that the existing output came from the same model."""
    if samples < 1:
        raise SettingsError(f"-n {samples}: the number of samples per row must be at least 1")
    for record in output.records:
        if record.get("model_sha256") and record["model_sha256"] != model_sha256:
            raise InputError(f"{output.path} was written with another model (sha256 {record['model_sha256'][:12]}...); "
                             f"write to a new output file to use this one")
    done = output.done()
    tasks = [Task(r, s) for r in rows for s in range(samples) if (r.id, s) not in done]
    return BatchPlan(tasks, len(rows) * samples - len(tasks))


def run_task(backend: Backend, task: Task, *, fmt: str, fields: dict[str, Any], settings: SamplingSettings,
             base_seed: int, model: str, model_sha256: str) -> dict[str, Any]:
    """Generate one sample of one row and return its output record."""
    try:
        document = make_document(fmt, task.row.text, {**fields, **task.row.fields})
        row_settings = settings.replace(**task.row.overrides)
    except (ValueError, TalesmithError) as e:
        raise InputError(f"row {task.row.id}: {e}") from None
    seed = row_settings.seed if "seed" in task.row.overrides else row_seed(base_seed, task.row.id, task.sample)
    row_settings = row_settings.replace(seed=seed)
    prepared = prepare(backend, document, row_settings)
    result = collect(stream(backend, prepared.tokens, row_settings, stops=prepared.stops))
    t = result.timing
    return {
        "id": task.row.id, "sample": task.sample, "prompt": prepared.fitted.text, "text": result.text,
        "seed": seed, "finish_reason": result.finish_reason, "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.generated_tokens, "seconds": round(t.prompt_seconds + t.generate_seconds, 4),
        "tokens_per_second": round(t.tokens_per_second, 2), "model": model, "model_sha256": model_sha256,
        "settings": row_settings.to_json(),
    }


def run_batch(backend: Backend, plan: BatchPlan, output: OutputFile, *, fmt: str, fields: dict[str, Any],
              settings: SamplingSettings, model: str, model_sha256: str,
              on_record: Callable[[dict[str, Any]], None] = lambda r: None) -> int:
    """Run the planned tasks, appending each record as soon as it is done. Returns how many were written."""
    base_seed = settings.seed if settings.seed is not None else 0
    written = 0
    for task in plan.tasks:
        record = run_task(backend, task, fmt=fmt, fields=fields, settings=settings, base_seed=base_seed,
                          model=model, model_sha256=model_sha256)
        output.append(record)
        written += 1
        on_record(record)
    return written
