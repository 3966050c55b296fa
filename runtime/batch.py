"""Batch generation: rows of prompts in, one output record per row and sample, resumable.

Each finished record is appended whole and flushed to disk at once (batch_output.py). Rerunning
the same command skips the records already there, so an interrupted run (even `kill -9`) loses
nothing and duplicates nothing. A record depends only on the command, its row and its sample:
every prompt is evaluated from an empty cache, so resumed, reordered or uninterrupted runs write
the same bytes. What decides the records is kept beside the output, and a resume that differs is
refused.

One runner, `run_batch(plan, output, executor)`: the plan holds every task of the command and
which are still to do, cut into fixed groups; an executor decodes groups (one task at a time,
as parallel sequences in batch_parallel.py, or on Ray actors in batch_ray.py) and the runner
writes their records in task order.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from talesmith.runtime import files
from talesmith.runtime.batch_output import (
    OUTPUT_FIELDS,
    OutputFile,
    TimingsFile,
    allow_big_csv_fields,
    check_regular,
    file_kind,
    read_run,
    run_path,
    write_run,
)
from talesmith.runtime.documents.formats import FIELDS, make_document, with_lore
from talesmith.runtime.documents.instruct import reply_content
from talesmith.runtime.documents.lorebook import Lore
from talesmith.runtime.documents.prompts import plan
from talesmith.runtime.engine.generate import Completion, PreparedPrompt, Timing, collect, prepare, stream
from talesmith.runtime.engine.protocol import Backend
from talesmith.runtime.errors import ContextOverflowError, InputError, SettingsError, TalesmithError
from talesmith.runtime.settings import FIELD_NAMES, SamplingSettings, parse_value

__all__ = [
    "OUTPUT_FIELDS",
    "OutputFile",
    "Row",
    "Task",
    "RecordSpec",
    "BatchPlan",
    "Group",
    "Finished",
    "Executor",
    "SequentialExecutor",
    "Job",
    "read_rows",
    "row_seed",
    "plan_batch",
    "prepare_job",
    "make_record",
    "decode_task",
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
    check_regular(path, "input file")
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


# --- the plan ----------------------------------------------------------------------------------

ROUNDS = 4
"""A group holds this many tasks per parallel sequence."""


@dataclass(frozen=True)
class RecordSpec:
    """What decides a batch's records besides its rows: the same for every task of one command."""

    fmt: str
    fields: dict[str, Any]
    settings: SamplingSettings
    model: str
    model_sha256: str
    n_seq: int = 1
    """Sequences decoded together (`--parallel`): sequences that share a step share its rounding."""
    lore: Lore | None = None

    @property
    def base_seed(self) -> int:
        """The seed every row's seed is made from (`--seed`, else 0)."""
        return self.settings.seed if self.settings.seed is not None else 0


def groups(tasks: list[Any], n_seq: int) -> list[list[Any]]:
    """`tasks` cut into the fixed groups of `ROUNDS * n_seq` that are decoded together."""
    size = ROUNDS * n_seq
    return [tasks[i : i + size] for i in range(0, len(tasks), size)]


@dataclass(frozen=True)
class Group:
    """Consecutive tasks of a command, decoded together from an empty cache."""

    start: int
    """The index of its first task among every task of the command."""
    tasks: tuple[Task, ...]
    todo: frozenset[int]
    """The indices of its tasks still to do (the others were written before)."""

    def indexed(self) -> Iterator[tuple[int, Task]]:
        return enumerate(self.tasks, self.start)


@dataclass(frozen=True)
class BatchPlan:
    """Every task of a command, in order (rows, then samples), and which of them are still to do."""

    spec: RecordSpec
    all_tasks: list[Task]
    todo: frozenset[int]
    """Indices into `all_tasks`."""

    @property
    def tasks(self) -> list[Task]:
        """The tasks still to do, in order."""
        return [t for i, t in enumerate(self.all_tasks) if i in self.todo]

    @property
    def skipped(self) -> int:
        return len(self.all_tasks) - len(self.todo)

    def groups(self) -> list[Group]:
        """The groups that hold a task still to do, in order: a group is always decoded whole."""
        found = []
        start = 0
        for tasks in groups(self.all_tasks, self.spec.n_seq):
            todo = frozenset(i for i in range(start, start + len(tasks)) if i in self.todo)
            if todo:
                found.append(Group(start, tuple(tasks), todo))
            start += len(tasks)
        return found


def another_model(path: Path, sha256: str) -> InputError:
    return InputError(
        f"{path} was written with another model (sha256 {sha256[:12]}...); write to a new output file to use this one"
    )


def plan_batch(rows: list[Row], samples: int, output: OutputFile, spec: RecordSpec) -> BatchPlan:
    """The tasks still to do, after checking that the existing output came from the same model."""
    if samples < 1:
        raise SettingsError(f"-n {samples}: the number of samples per row must be at least 1")
    other = sorted(output.models - {spec.model_sha256, ""})
    if other:
        raise another_model(output.path, other[0])
    done = output.done
    every = [Task(r, s) for r in rows for s in range(samples)]
    todo = frozenset(i for i, t in enumerate(every) if (t.row.id, t.sample) not in done)
    return BatchPlan(spec, every, todo)


def decided_by(spec: RecordSpec, samples: int, lorebooks: Sequence[str] = ()) -> dict[str, Any]:
    """What decides a command's records besides its rows: stored beside the output, compared on resume.

    `lorebooks` are the sha256 of the lorebook files. The number of samples decides records only with
    parallel sequences (it changes which tasks share a group).
    """
    return json.loads(
        json.dumps(
            {
                "model_sha256": spec.model_sha256,
                "model": spec.model,
                "format": spec.fmt,
                "fields": spec.fields,
                "sampling": spec.settings.replace(seed=spec.base_seed).to_dict(),
                "parallel": spec.n_seq,
                "samples": samples,
                "lorebooks": list(lorebooks),
            },
            ensure_ascii=False,
        )
    )


def _option(key: str, value: Any) -> str:
    shown = "unset" if value is None else value if isinstance(value, (str, int, float)) else json.dumps(value)
    if key.startswith("sampling."):
        return f"--{key.removeprefix('sampling.').replace('_', '-')} {shown}"
    flag = {"model": "--model", "format": "--format", "parallel": "--parallel", "samples": "-n"}.get(key)
    if flag:
        return f"{flag} {shown}"
    if key == "lorebooks":
        return f"lorebooks {len(value)} files (sha256 {', '.join(v[:12] for v in value) or 'none'})"
    return f"format fields {json.dumps(value, ensure_ascii=False, sort_keys=True)}"


def resume_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Each setting the stored run and this command disagree on, as "OPTION OLD, not OPTION NEW"."""

    def flat(d: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in d.items() if k != "sampling"}
        out.update({f"sampling.{k}": v for k, v in d.get("sampling", {}).items()})
        return out

    was, now = flat(stored), flat(current)
    if was.get("parallel") == now.get("parallel") == 1:
        was.pop("samples", None), now.pop("samples", None)  # one at a time, -n changes no record
    return [
        f"{_option(k, was.get(k))}, not {_option(k, now.get(k))}"
        for k in sorted(set(was) | set(now), key=lambda k: (k.startswith("sampling."), k))
        if k != "model_sha256" and was.get(k) != now.get(k)
    ]


def check_resume(output: OutputFile, current: dict[str, Any]) -> str | None:
    """Refuse to add records made another way to an output; store how they are made. A note, or None."""
    stored = read_run(output.path)
    note = None
    if output.count and stored is not None:
        if stored.get("model_sha256") != current["model_sha256"]:
            raise another_model(output.path, str(stored.get("model_sha256")))
        different = resume_differences(stored, current)
        if different:
            raise InputError(
                f"cannot resume {output.path}: it was written with {'; '.join(different)}; run the command "
                f"it was written with, or write to a new file with -o"
            )
        return None
    if output.count:
        note = (
            f"{output.path} has no {run_path(output.path).name}: the settings of its {output.count} records "
            f"cannot be checked; this command's are kept from now on"
        )
    write_run(output.path, current)
    return note


# --- one task ----------------------------------------------------------------------------------


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


def quiet(note: str) -> None:
    pass


def prepare_job(backend: Backend, task: Task, spec: RecordSpec, on_note: Callable[[str], None] = quiet) -> Job:
    """The settings, seed and fitted prompt of one sample of one row."""
    try:
        document = make_document(spec.fmt, task.row.text, {**spec.fields, **task.row.fields})
        row_settings = spec.settings.replace(**task.row.overrides)
    except (ValueError, TalesmithError) as e:
        raise InputError(f"row {task.row.id}: {e}") from None
    seed = row_settings.seed if "seed" in task.row.overrides else row_seed(spec.base_seed, task.row.id, task.sample)
    row_settings = row_settings.replace(seed=seed)
    try:
        prepared = prepare(backend, with_lore(document, spec.lore), row_settings)
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


def make_record(job: Job, result: Completion, spec: RecordSpec) -> dict[str, Any]:
    """The output record of a finished job: only what the command decides (no timings), so runs compare byte for byte."""
    return {
        "id": job.task.row.id,
        "sample": job.task.sample,
        "prompt": job.prepared.fitted.text,
        "text": reply_content(job.prepared.plan, job.prepared.fitted.text, result.text),
        "seed": job.settings.seed,
        "finish_reason": result.finish_reason,
        "prompt_tokens": result.timing.prompt_tokens,
        "completion_tokens": result.timing.generated_tokens,
        "model": spec.model,
        "model_sha256": spec.model_sha256,
        "settings": job.settings.to_json(),
    }


def timing_line(record: dict[str, Any], t: Timing) -> dict[str, Any]:
    """A record's line in the timings file (`--timings`)."""
    return {"id": record["id"], "sample": record["sample"], **timing_fields(t)}


def timing_fields(t: Timing) -> dict[str, Any]:
    """How long a sample took, rounded as the timings file and `generate --json` write it."""
    return {
        "prompt_tokens": t.prompt_tokens,
        "prompt_evaluated": t.prompt_evaluated,
        "prompt_seconds": round(t.prompt_seconds, 4),
        "generated_tokens": t.generated_tokens,
        "generate_seconds": round(t.generate_seconds, 4),
        "first_token_seconds": round(t.first_token_seconds or 0.0, 4),
        "tokens_per_second": round(t.tokens_per_second, 2),
    }


class Finished(NamedTuple):
    """A decoded task: its number (index) among the command's tasks, its record and how long it took."""

    number: int
    record: dict[str, Any]
    timing: Timing


def decode_task(backend: Backend, task: Task, spec: RecordSpec, on_note: Callable[[str], None] = quiet):
    """One sample of one row, generated from an empty cache: (record, timing)."""
    job = prepare_job(backend, task, spec, on_note)
    backend.reset()  # what a record says must not depend on the record before it
    result = collect(stream(backend, job.prepared.tokens, job.settings, stops=job.prepared.stops))
    return make_record(job, result, spec), result.timing


# --- executors and the one runner --------------------------------------------------------------


class Executor(Protocol):
    """Decodes the groups of a plan; yields each task as it finishes, in any order."""

    def run(self, plan: BatchPlan, on_note: Callable[[str], None]) -> Iterator[Finished]: ...


class SequentialExecutor:
    """One task at a time on one backend (`--parallel 1`)."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def decode(self, group: Group, spec: RecordSpec, on_note: Callable[[str], None] = quiet) -> Iterator[Finished]:
        """The tasks of a group still to do, in order (each alone: the others need not be decoded again)."""
        for index, task in group.indexed():
            if index in group.todo:
                yield Finished(index, *decode_task(self.backend, task, spec, on_note))

    def run(self, plan: BatchPlan, on_note: Callable[[str], None] = quiet) -> Iterator[Finished]:
        for group in plan.groups():
            yield from self.decode(group, plan.spec, on_note)


def run_batch(
    plan: BatchPlan,
    output: OutputFile,
    executor: Executor,
    *,
    on_record: Callable[[dict[str, Any], Timing], None] = lambda record, timing: None,
    on_note: Callable[[str], None] = quiet,
    timings: TimingsFile | None = None,
) -> int:
    """Run the planned tasks on `executor`, appending their records in task order as soon as they can be.

    Returns how many were written. Whatever order the executor finishes tasks in, the file gets the
    records in the order of the command's tasks; a task written before is never written again.
    """
    order = sorted(plan.todo)
    upto = 0
    ready: dict[int, Finished] = {}
    for finished in executor.run(plan, on_note):
        if finished.number not in plan.todo:
            continue  # written before; decoded again only to keep its group the same
        ready[finished.number] = finished
        batch = []
        while upto < len(order) and order[upto] in ready:
            batch.append(ready.pop(order[upto]))
            upto += 1
        if batch:
            output.append_many([f.record for f in batch])  # one write and one fsync
            if timings is not None:
                timings.append_many([timing_line(f.record, f.timing) for f in batch])
            for f in batch:
                on_record(f.record, f.timing)
    return upto
