"""Batch generation across machines with Ray: groups of tasks on actors, one writer on the driver.

The tasks are cut into the same fixed groups as a parallel batch on one machine (batch_parallel.py,
`--parallel 1` included), and each group is decoded by one actor from an empty cache: a record is
the same whichever actor writes it, and the same as on one machine with the same command. Actors
hold a backend each (the model reaches a node by path or by its models.lock entry, pulled and
checked against the driver's sha256 there) and send back whole groups; the driver alone appends
them to the output file, in task order, so the file stays append-only, fsync'd and resumable. A
group whose actor dies is given to a new actor.

Ray is an optional extra: `pip install 'talesmith[scale]'`.
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from talesmith.runtime.batch import BatchPlan, Task, make_record, prepare_job, run_task
from talesmith.runtime.batch_output import OutputFile
from talesmith.runtime.batch_parallel import groups, run_group
from talesmith.runtime.documents.lorebook import Lore
from talesmith.runtime.errors import ModelError, SettingsError, TalesmithError
from talesmith.runtime.settings import SamplingSettings

MAX_RESTARTS = 3
"""Times a group is given to a new actor after the one running it died, before the batch stops."""


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SettingsError("--ray needs Ray; install it with: pip install 'talesmith[scale]'") from None
    return ray


@dataclass(frozen=True)
class ModelSource:
    """How an actor finds the model: a path, or a name in models.lock (whose text travels along), and its sha256."""

    spec: str | None
    lock_path: str
    lock_text: str
    sha256: str
    gpu_layers: int = 0
    n_ctx: int | None = None
    backend: str | None = None
    device: str = "cpu"


def _lock_on_node(source: ModelSource) -> Path:
    here = Path(source.lock_path)
    if source.lock_path and here.is_file() and here.read_text(encoding="utf-8") == source.lock_text:
        return here
    folder = Path(tempfile.mkdtemp(prefix="talesmith-lock-"))
    (folder / "models.lock").write_text(source.lock_text, encoding="utf-8")
    return folder / "models.lock"


def open_on_node(source: ModelSource, threads: int) -> Any:
    """The backend of `source` on this node: found by path or lock entry, pulled if missing, sha256 checked."""
    from talesmith.runtime.engine.loading import open_backend
    from talesmith.runtime.files import sha256_file
    from talesmith.runtime.models.manage import pull
    from talesmith.runtime.models.resolve import resolve

    lock = _lock_on_node(source)
    try:
        ref = resolve(source.spec, lock=lock)
    except ModelError:
        if source.spec is None or Path(source.spec).suffix:
            raise
        pull(source.spec, lock=lock)  # a hub entry: downloaded at its pinned commit and verified
        ref = resolve(source.spec, lock=lock)
    path = ref.path / "model.onnx" if ref.path.is_dir() and (ref.path / "model.onnx").exists() else ref.path
    digest = sha256_file(path)
    if digest != source.sha256:
        raise ModelError(
            f"{path} on {os.uname().nodename} has sha256 {digest[:12]}..., not the driver's "
            f"{source.sha256[:12]}...; give every node the same model file"
        )
    return open_backend(
        ref.path,
        backend=source.backend,
        device=source.device,
        n_ctx=source.n_ctx,
        gpu_layers=source.gpu_layers,
        threads=threads,
    )


@dataclass(frozen=True)
class GroupSpec:
    """What an actor needs to decode a group: the same for every group of a batch."""

    n_seq: int
    fmt: str
    fields: dict[str, Any]
    settings: SamplingSettings
    model: str
    model_sha256: str
    lore: Lore | None


class BatchWorker:
    """A Ray actor's body: one backend, decoding whole groups of tasks."""

    def __init__(self, source: ModelSource, threads: int):
        self.backend = open_on_node(source, threads)

    def pid(self) -> int:
        return os.getpid()

    def run(self, tasks: list[Task], spec: GroupSpec) -> list[dict[str, Any]]:
        """The records of every task of the group, in order."""
        base_seed = spec.settings.seed if spec.settings.seed is not None else 0
        kw: dict[str, Any] = dict(
            fmt=spec.fmt, fields=spec.fields, settings=spec.settings, base_seed=base_seed, lore=spec.lore
        )
        if spec.n_seq == 1:
            return [run_task(self.backend, t, model=spec.model, model_sha256=spec.model_sha256, **kw) for t in tasks]
        jobs = [prepare_job(self.backend, t, **kw) for t in tasks]
        return [
            make_record(job, completion, model=spec.model, model_sha256=spec.model_sha256)
            for job, completion in run_group(self.backend, spec.n_seq, jobs)
        ]


def _raise_user_error(error: BaseException) -> None:
    """Raise the TalesmithError an actor raised (a bad row, a missing model) as it was, without Ray's wrapping."""
    seen: BaseException | None = error
    for _ in range(8):
        cause = getattr(seen, "cause", None)
        if cause is None or cause is seen:
            return
        if isinstance(cause, TalesmithError) and not isinstance(cause, _ray().exceptions.RayError):
            raise cause from None
        seen = cause


def _raise_creation_error(error: BaseException) -> None:
    """An actor that failed while starting is not replaced (the next would fail too): say why, in one line."""
    if "creation task" not in str(error):
        return
    cause: Any = error
    while getattr(cause, "cause", None) is not None and cause.cause is not cause:
        cause = cause.cause
    raise ModelError(
        f"a Ray actor could not open the model: {type(cause).__name__}: "
        f"{str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}; check the model and "
        f"talesmith are installed on every node"
    ) from None


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None
    """A running cluster (`ray start --head` prints it); None starts a local one."""
    actors: int = 2
    cpus: float = 1
    """CPUs per actor (also its threads)."""
    gpus: float = 0
    """GPUs per actor."""


class RayBatch:
    """Spreads a batch's groups over Ray actors and writes their records on the driver, in task order."""

    def __init__(self, options: RayOptions, source: ModelSource):
        self.ray = _ray()
        self.options = options
        self.source = source
        if not self.ray.is_initialized():
            if options.address:
                self.ray.init(address=options.address, logging_level="ERROR", log_to_driver=False)
            else:
                self.ray.init(
                    num_cpus=max(1, int(options.actors * options.cpus)),
                    include_dashboard=False,
                    logging_level="ERROR",
                    log_to_driver=False,
                )
        self._remote = self.ray.remote(num_cpus=options.cpus, num_gpus=options.gpus, max_restarts=0)(BatchWorker)
        self.actors = [self._new_actor() for _ in range(options.actors)]
        self.restarts = 0

    def _new_actor(self) -> Any:
        return self._remote.remote(self.source, max(1, int(self.options.cpus)))

    def run(
        self,
        plan: BatchPlan,
        output: OutputFile,
        spec: GroupSpec,
        on_record: Callable[[dict[str, Any]], None] = lambda r: None,
    ) -> int:
        todo = {(t.row.id, t.sample) for t in plan.tasks}
        pending = deque(
            g for g in enumerate(groups(plan.all_tasks, spec.n_seq)) if any((t.row.id, t.sample) in todo for t in g[1])
        )
        order = [index for index, _ in pending]
        spec_ref = self.ray.put(spec)
        running: dict[Any, tuple[Any, int, list[Task]]] = {}
        idle = list(self.actors)
        finished: dict[int, list[dict[str, Any]]] = {}
        written = 0
        upto = 0
        while pending or running:
            while idle and pending:
                actor = idle.pop(0)
                index, tasks = pending.popleft()
                running[actor.run.remote(tasks, spec_ref)] = (actor, index, tasks)
            ready, _ = self.ray.wait(list(running), num_returns=1)
            actor, index, tasks = running.pop(ready[0])
            try:
                finished[index] = self.ray.get(ready[0])
                idle.append(actor)
            except self.ray.exceptions.RayActorError as e:
                _raise_user_error(e)  # an actor that could not open the model says why
                _raise_creation_error(e)
                idle.append(self._replace(actor))
                pending.appendleft((index, tasks))
                continue
            except self.ray.exceptions.RayTaskError as e:
                _raise_user_error(e)
                raise
            while upto < len(order) and order[upto] in finished:
                new = [r for r in finished.pop(order[upto]) if (r["id"], r["sample"]) in todo]
                output.append_many(new)  # a whole group, one write and one fsync
                for record in new:
                    on_record(record)
                written += len(new)
                upto += 1
        return written

    def _replace(self, dead: Any) -> Any:
        self.restarts += 1
        if self.restarts > MAX_RESTARTS * max(1, len(self.actors)):
            raise ModelError(
                f"Ray actors died {self.restarts} times; see `ray status` and the workers' logs, then "
                f"run the same command again to resume"
            )
        self.actors = [a for a in self.actors if a is not dead]
        fresh = self._new_actor()
        self.actors.append(fresh)
        return fresh

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []


def run_batch_ray(
    backend: Any,
    plan: BatchPlan,
    output: OutputFile,
    *,
    options: RayOptions,
    source: ModelSource,
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
    """run_batch's counterpart on Ray (`backend` is unused: each actor opens its own)."""
    runner = RayBatch(options, source)
    try:
        return runner.run(
            plan, output, GroupSpec(n_seq, fmt, fields, settings, model, model_sha256, lore), on_record=on_record
        )
    finally:
        runner.close()
