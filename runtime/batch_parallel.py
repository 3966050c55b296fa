"""Batch generation with parallel sequences (llama.cpp): many records decoded together.

The tasks of a command are cut into fixed groups ("rounds") of `ROUNDS * n_seq` consecutive tasks,
counted over every task of the command, done or not. A group is always decoded together from an
empty cache, so each record depends only on the command (with `--parallel`), its row and its
sample: a group that was cut short by a crash is decoded whole again and only its missing records
are written. Records are written in task order, so a resumed file is the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from talesmith.runtime.batch import BatchPlan, Job, Task, make_record, prepare_job
from talesmith.runtime.batch_output import OutputFile
from talesmith.runtime.documents.lorebook import Lore
from talesmith.runtime.engine.parallel import ParallelDecoder, ParallelJob
from talesmith.runtime.settings import SamplingSettings

ROUNDS = 4
"""A group holds this many tasks per parallel sequence."""
CTX_STEP = 256


def groups(tasks: list[Task], n_seq: int) -> list[list[Task]]:
    size = ROUNDS * n_seq
    return [tasks[i : i + size] for i in range(0, len(tasks), size)]


def context_per_sequence(jobs: list[Job], n_ctx: int) -> int:
    """The cache each sequence of a group needs: its longest prompt and reply, in steps of 256, at most `n_ctx`."""
    need = max(len(j.prepared.tokens) + j.settings.max_new_tokens + 1 for j in jobs)
    return min(n_ctx, -(-need // CTX_STEP) * CTX_STEP)


def run_group(backend: Any, n_seq: int, jobs: list[Job]):
    """(job, completion) for every job of a group, in the group's order, from a context of its own."""
    decoder = ParallelDecoder(backend, n_seq, n_ctx_seq=context_per_sequence(jobs, backend.n_ctx))
    finished: dict[int, Any] = {}
    upto = 0
    try:
        parallel_jobs = [ParallelJob(j.prepared.tokens, j.settings, j.prepared.stops) for j in jobs]
        for index, completion in decoder.generate(parallel_jobs):
            finished[index] = completion
            while upto in finished:
                yield jobs[upto], finished.pop(upto)
                upto += 1
    finally:
        decoder.close()


def run_batch_parallel(
    backend: Any,
    plan: BatchPlan,
    output: OutputFile,
    *,
    n_seq: int,
    fmt: str,
    fields: dict[str, Any],
    settings: SamplingSettings,
    model: str,
    model_sha256: str,
    on_record: Callable[[dict[str, Any]], None] = lambda r: None,
    on_note: Callable[[str], None] = lambda note: None,
    lore: Lore | None = None,
) -> int:
    """Run the planned tasks `n_seq` at a time, appending each record in task order. Returns how many were written."""
    base_seed = settings.seed if settings.seed is not None else 0
    todo = {(t.row.id, t.sample) for t in plan.tasks}
    written = 0
    for group in groups(plan.all_tasks, n_seq):
        if not any((t.row.id, t.sample) in todo for t in group):
            continue
        jobs = [
            prepare_job(
                backend,
                t,
                fmt=fmt,
                fields=fields,
                settings=settings,
                base_seed=base_seed,
                on_note=on_note if (t.row.id, t.sample) in todo else lambda note: None,
                lore=lore,
            )
            for t in group
        ]
        for job, completion in run_group(backend, n_seq, jobs):
            if (job.task.row.id, job.task.sample) not in todo:
                continue  # written before; decoded again only to keep its group the same
            record = make_record(job, completion, model=model, model_sha256=model_sha256)
            output.append(record)
            written += 1
            on_record(record)
    return written
