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

import math
import os
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from talesmith.runtime.batch import BatchPlan, Finished, Group, RecordSpec
from talesmith.runtime.batch_parallel import local_executor
from talesmith.runtime.errors import ModelError, SettingsError, TalesmithError

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


class BatchWorker:
    """A Ray actor's body: one backend, decoding whole groups of tasks."""

    def __init__(self, source: ModelSource, threads: int):
        self.backend = open_on_node(source, threads)

    def pid(self) -> int:
        return os.getpid()

    def run(self, group: Group, spec: RecordSpec) -> tuple[list[Finished], list[str]]:
        """The group's decoded tasks, in order, and the notes decoding them gave (for the driver to show)."""
        notes: list[str] = []
        return list(local_executor(self.backend, spec.n_seq).decode(group, spec, notes.append)), notes


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

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise SettingsError(f"--ray-actors {self.actors} must be at least 1")
        if not (math.isfinite(self.cpus) and self.cpus > 0):
            raise SettingsError(f"--ray-cpus {self.cpus:g} must be more than 0 (CPUs per actor, e.g. 1 or 0.5)")
        if not (math.isfinite(self.gpus) and self.gpus >= 0):
            raise SettingsError(f"--ray-gpus {self.gpus:g} must be 0 or more (GPUs per actor, e.g. 1 or 0.5)")


def check_resources(options: RayOptions, resources: dict[str, float]) -> None:
    """Refuse actors the cluster cannot place (Ray would wait for them for ever, saying nothing)."""
    for name, per_actor, flag in (("CPU", options.cpus, "--ray-cpus"), ("GPU", options.gpus, "--ray-gpus")):
        if per_actor <= 0:
            continue
        have = float(resources.get(name, 0.0))
        fit = math.floor(have / per_actor + 1e-9)
        if fit < options.actors:
            what = f"{name}s" if have != 1 else name
            raise SettingsError(
                f"--ray-actors {options.actors} with {flag} {per_actor:g} need {options.actors * per_actor:g} "
                f"{name}s, but the Ray cluster has {have:g} {what}; "
                + (
                    "use --ray-gpus 0 or a cluster with GPUs"
                    if name == "GPU" and have == 0
                    else f"lower {flag} or --ray-actors, or add nodes"
                )
            )


WATCHDOG = """
import os, sys, time
import psutil

driver, session = int(sys.argv[1]), sys.argv[2]
known = {}


def look():
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid != os.getpid() and session in " ".join(p.info["cmdline"] or ()):
                for q in [p, *p.children(recursive=True)]:
                    known[q.pid] = q
        except psutil.Error:
            pass


while psutil.pid_exists(driver):
    look()
    time.sleep(0.5)
look()
for p in known.values():
    try:
        p.kill()  # psutil checks it is still the same process, not a new one with its number
    except psutil.Error:
        pass
"""
"""Runs beside a local cluster. Once the driver is gone, even by kill -9, it stops the cluster's processes
(found by the session folder on their command lines) and everything they started: Ray's agents, which
rename themselves (ray::DashboardAgent, ray::RuntimeEnvAgent, about 170 MB), otherwise keep running."""


class RayExecutor:
    """Spreads a batch's groups over Ray actors; the runner on the driver writes their records in task order."""

    def __init__(self, options: RayOptions, source: ModelSource):
        self.ray = _ray()
        self.options = options
        self.source = source
        self.started = False
        self._watchdog: subprocess.Popen[bytes] | None = None
        self.actors: list[Any] = []
        self.restarts = 0
        if not self.ray.is_initialized():
            if options.address:
                self.ray.init(address=options.address, logging_level="ERROR", log_to_driver=False)
            else:
                self.ray.init(
                    num_cpus=max(1, math.ceil(options.actors * options.cpus)),
                    include_dashboard=False,
                    logging_level="ERROR",
                    log_to_driver=False,
                )
                self.started = True
                self._watch()
        try:
            check_resources(options, self.ray.cluster_resources())
        except BaseException:
            self.close()
            raise
        self._remote = self.ray.remote(num_cpus=options.cpus, num_gpus=options.gpus, max_restarts=0)(BatchWorker)
        self.actors = [self._new_actor() for _ in range(options.actors)]

    def _watch(self) -> None:
        session = _session_dir(self.ray)
        if not session:
            return
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG, str(os.getpid()), session],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # it outlives the driver's process group
        )

    def _new_actor(self) -> Any:
        return self._remote.remote(self.source, max(1, int(self.options.cpus)))

    def run(self, plan: BatchPlan, on_note: Callable[[str], None]) -> Iterator[Finished]:
        """Every group still to do, on whichever actor is free; each group's tasks as it comes back."""
        pending = deque(plan.groups())
        spec_ref = self.ray.put(plan.spec)
        running: dict[Any, tuple[Any, Group]] = {}
        idle = list(self.actors)
        while pending or running:
            while idle and pending:
                actor = idle.pop(0)
                group = pending.popleft()
                running[actor.run.remote(group, spec_ref)] = (actor, group)
            ready, _ = self.ray.wait(list(running), num_returns=1)
            actor, group = running.pop(ready[0])
            try:
                finished, notes = self.ray.get(ready[0])
                idle.append(actor)
            except self.ray.exceptions.RayActorError as e:
                _raise_user_error(e)  # an actor that could not open the model says why
                _raise_creation_error(e)
                idle.append(self._replace(actor))
                pending.appendleft(group)
                continue
            except self.ray.exceptions.RayTaskError as e:
                _raise_user_error(e)
                raise
            for note in notes:
                on_note(note)
            yield from finished

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
        """Stop the actors, and the cluster when this executor started it."""
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        if self.started:
            self.ray.shutdown()
            self.started = False
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _session_dir(ray: Any) -> str | None:
    """The local cluster's session folder (every one of its processes names it on its command line)."""
    node = getattr(getattr(ray, "_private", None), "worker", None)
    node = getattr(node, "_global_node", None)
    folder = getattr(node, "get_session_dir_path", lambda: None)()
    return str(folder) if folder else None
