"""Batch generation with parallel sequences (llama.cpp or ONNX Runtime): the tasks of a group decoded together.

The tasks of a command are cut into fixed groups of `ROUNDS * n_seq` consecutive tasks, counted
over every task of the command, done or not (batch.BatchPlan.groups). A group is always decoded
together from an empty cache, so each record depends only on the command (with `--parallel`), its
row and its sample: a group that was cut short by a crash is decoded whole again, and the runner
writes only its missing records, in task order, so a resumed file is the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from talesmith.runtime.batch import (
    ROUNDS,
    Finished,
    Group,
    Job,
    RecordSpec,
    SequentialExecutor,
    groups,
    make_record,
    prepare_job,
    quiet,
)
from talesmith.runtime.engine.generate import Completion
from talesmith.runtime.engine.loading import parallel_decoder
from talesmith.runtime.engine.slots import ParallelJob

__all__ = ["ROUNDS", "CTX_STEP", "groups", "ParallelExecutor", "local_executor", "run_group"]

CTX_STEP = 256


def context_per_sequence(jobs: list[Job], n_ctx: int) -> int:
    """The cache each sequence of a group needs: its longest prompt and reply, in steps of 256, at most `n_ctx`."""
    need = max(len(j.prepared.tokens) + j.settings.max_new_tokens + 1 for j in jobs)
    return min(n_ctx, -(-need // CTX_STEP) * CTX_STEP)


def run_group(backend: Any, n_seq: int, jobs: list[Job]) -> Iterator[tuple[Job, Completion]]:
    """(job, completion) for every job of a group, in the group's order, from a context of its own."""
    decoder = parallel_decoder(backend, n_seq, n_ctx_seq=context_per_sequence(jobs, backend.n_ctx))
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


class ParallelExecutor(SequentialExecutor):
    """The tasks of each group as `n_seq` sequences decoded together (`--parallel N`)."""

    def decode(self, group: Group, spec: RecordSpec, on_note: Callable[[str], None] = quiet) -> Iterator[Finished]:
        """Every task of the group, in order: those written before too, since they share its steps."""
        jobs = [
            prepare_job(self.backend, task, spec, on_note if index in group.todo else quiet)
            for index, task in group.indexed()
        ]
        for index, (job, completion) in enumerate(run_group(self.backend, spec.n_seq, jobs), group.start):
            yield Finished(index, make_record(job, completion, spec), completion.timing)


def local_executor(backend: Any, n_seq: int) -> SequentialExecutor | ParallelExecutor:
    """The executor for `n_seq` sequences on this machine: one at a time, or decoded together."""
    return SequentialExecutor(backend) if n_seq == 1 else ParallelExecutor(backend)
