"""Batch generation: rows of prompts in, one output record per row and sample, resumable.

Each finished record is appended whole and flushed to disk at once (batch_output.py). Rerunning
the same command skips the records already there, so an interrupted run (even `kill -9`) loses
nothing and duplicates nothing. A record depends only on the command, its row and its sample:
every prompt is evaluated from an empty cache, so resumed, reordered or uninterrupted runs write
the same text.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talesmith.runtime import files
from talesmith.runtime.batch_output import OUTPUT_FIELDS, OutputFile, allow_big_csv_fields, file_kind
from talesmith.runtime.documents.formats import FIELDS, make_document
from talesmith.runtime.documents.lorebook import Lore
from talesmith.runtime.documents.prompts import plan
from talesmith.runtime.engine.generate import Completion, PreparedPrompt, collect, prepare, stream
from talesmith.runtime.engine.protocol import Backend
from talesmith.runtime.errors import ContextOverflowError, InputError, SettingsError, TalesmithError
from talesmith.runtime.settings import FIELD_NAMES, SamplingSettings, parse_value

__all__ = [
    "OUTPUT_FIELDS",
    "OutputFile",
    "Row",
    "Task",
    "Job",
    "read_rows",
    "row_seed",
    "plan_batch",
    "prepare_job",
    "make_record",
    "run_task",
    "run_batch",
]


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


def read_rows(path: Path, fmt: str) -> list[Row]:
    """Rows of an input file, checked against the format's fields and the sampling settings."""
    kind = file_kind(path)
    try:
        raw = path.read_text(encoding="utf-8-sig")  # a byte order mark is not part of the first column
    except FileNotFoundError:
        raise InputError(
            f"input file {path} does not exist; pass a .csv or .jsonl file with a 'prompt' column"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"input file {path} cannot be read ({e}); it must be UTF-8 text") from None
    if kind == "csv":
        allow_big_csv_fields()
        try:
            records = list(csv.DictReader(io.StringIO(raw, newline="")))
        except csv.Error as e:
            raise InputError(f"{path} is not valid CSV ({e}); check its quoting") from None
    else:
        records = files.jsonl_objects(raw, str(path))
    if not records:
        raise InputError(f"{path} has no rows")
    allowed = {"id", "prompt"} | set(FIELDS[fmt]) | FIELD_NAMES
    rows = []
    for n, record in enumerate(records, 1):
        if None in record:
            raise InputError(f"{path} row {n} has more fields than the header names; quote fields holding commas")
        unknown = sorted(set(record) - allowed)
        if unknown:
            raise InputError(
                f"{path} has a column {unknown[0]!r} that format {fmt!r} does not use; allowed columns: "
                f"id, prompt, {', '.join(FIELDS[fmt]) or '(no format fields)'} and sampling settings"
            )
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


# --- the run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchPlan:
    tasks: list[Task]
    """The tasks still to do."""
    skipped: int
    all_tasks: list[Task] = field(default_factory=list)
    """Every task of the command, done or not, in order (rows, then samples)."""


def plan_batch(rows: list[Row], samples: int, output: OutputFile, *, model_sha256: str) -> BatchPlan:
    """The tasks still to do, after checking that the existing output came from the same model."""
    if samples < 1:
        raise SettingsError(f"-n {samples}: the number of samples per row must be at least 1")
    for record in output.records:
        if record.get("model_sha256") and record["model_sha256"] != model_sha256:
            raise InputError(
                f"{output.path} was written with another model (sha256 {record['model_sha256'][:12]}...); "
                f"write to a new output file to use this one"
            )
    done = output.done()
    every = [Task(r, s) for r in rows for s in range(samples)]
    tasks = [t for t in every if (t.row.id, t.sample) not in done]
    return BatchPlan(tasks, len(every) - len(tasks), every)


def check_trimmed(document: Any, prepared: PreparedPrompt, *, n_ctx: int, max_new_tokens: int) -> None:
    """Refuse a prompt whose trimming left out everything that was written (it would generate from nothing)."""
    dropped = prepared.fitted.dropped
    if dropped and dropped >= len(plan(document).units):
        raise ContextOverflowError(
            f"all {dropped} lines of the text had to be left out to fit the context of {n_ctx} tokens with "
            f"{max_new_tokens} new ones; raise --ctx, lower --max-new-tokens or shorten the text"
        )


@dataclass(frozen=True)
class Job:
    """A task with its settings, seed and prompt worked out: ready to generate."""

    task: Task
    settings: SamplingSettings
    prepared: PreparedPrompt


def prepare_job(
    backend: Backend,
    task: Task,
    *,
    fmt: str,
    fields: dict[str, Any],
    settings: SamplingSettings,
    base_seed: int,
    on_note: Callable[[str], None] = lambda note: None,
    lore: Lore | None = None,
) -> Job:
    """The settings, seed and fitted prompt of one sample of one row."""
    try:
        document = make_document(fmt, task.row.text, {**fields, **task.row.fields})
        row_settings = settings.replace(**task.row.overrides)
    except (ValueError, TalesmithError) as e:
        raise InputError(f"row {task.row.id}: {e}") from None
    seed = row_settings.seed if "seed" in task.row.overrides else row_seed(base_seed, task.row.id, task.sample)
    row_settings = row_settings.replace(seed=seed)
    try:
        prepared = prepare(backend, document, row_settings, lore=lore)
    except TalesmithError as e:
        raise type(e)(f"row {task.row.id}: {e}") from None
    try:
        check_trimmed(document, prepared, n_ctx=backend.n_ctx, max_new_tokens=row_settings.max_new_tokens)
    except ContextOverflowError as e:
        raise ContextOverflowError(f"row {task.row.id}: {e}") from None
    dropped = prepared.fitted.dropped
    if dropped and task.sample == 0:
        on_note(
            f"row {task.row.id}: left out its {dropped} oldest lines to fit the context of {backend.n_ctx} "
            f"tokens (raise --ctx to keep them)"
        )
    return Job(task, row_settings, prepared)


def make_record(job: Job, result: Completion, *, model: str, model_sha256: str) -> dict[str, Any]:
    """The output record of a finished job."""
    t = result.timing
    return {
        "id": job.task.row.id,
        "sample": job.task.sample,
        "prompt": job.prepared.fitted.text,
        "text": result.text,
        "seed": job.settings.seed,
        "finish_reason": result.finish_reason,
        "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.generated_tokens,
        "seconds": round(t.prompt_seconds + t.generate_seconds, 4),
        "tokens_per_second": round(t.tokens_per_second, 2),
        "model": model,
        "model_sha256": model_sha256,
        "settings": job.settings.to_json(),
    }


def run_task(
    backend: Backend,
    task: Task,
    *,
    fmt: str,
    fields: dict[str, Any],
    settings: SamplingSettings,
    base_seed: int,
    model: str,
    model_sha256: str,
    on_note: Callable[[str], None] = lambda note: None,
    lore: Lore | None = None,
) -> dict[str, Any]:
    """Generate one sample of one row from an empty cache and return its output record."""
    job = prepare_job(
        backend, task, fmt=fmt, fields=fields, settings=settings, base_seed=base_seed, on_note=on_note, lore=lore
    )
    backend.reset()  # what a record says must not depend on the record before it
    result = collect(stream(backend, job.prepared.tokens, job.settings, stops=job.prepared.stops))
    return make_record(job, result, model=model, model_sha256=model_sha256)


def run_batch(
    backend: Backend,
    plan: BatchPlan,
    output: OutputFile,
    *,
    fmt: str,
    fields: dict[str, Any],
    settings: SamplingSettings,
    model: str,
    model_sha256: str,
    on_record: Callable[[dict[str, Any]], None] = lambda r: None,
    on_note: Callable[[str], None] = lambda note: None,
    lore: Lore | None = None,
) -> int:
    """Run the planned tasks, appending each record as soon as it is done. Returns how many were written."""
    base_seed = settings.seed if settings.seed is not None else 0
    written = 0
    for task in plan.tasks:
        record = run_task(
            backend,
            task,
            fmt=fmt,
            fields=fields,
            settings=settings,
            base_seed=base_seed,
            model=model,
            model_sha256=model_sha256,
            on_note=on_note,
            lore=lore,
        )
        output.append(record)
        written += 1
        on_record(record)
    return written
