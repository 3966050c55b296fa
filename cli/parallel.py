"""`--parallel N`: how many sequences `batch` and `generate -n` decode together."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from typing import Any

import typer

from talesmith.cli.options import option
from talesmith.runtime.batch_ray import RayOptions  # ray itself is imported only when used
from talesmith.runtime.errors import SettingsError

DEFAULT_PARALLEL = 8
"""Sequences decoded together by default: on 2 CPU cores 8 give about twice the tokens/s of one (llama.cpp), and
more on ONNX Runtime."""

ParallelOpt = typer.Option(
    None,
    "--parallel",
    help=f"Sequences decoded together in one llama.cpp context or ONNX Runtime session "
    f"(default {DEFAULT_PARALLEL}); 1 decodes one at a time.",
)

RayOpt = typer.Option(
    None,
    "--ray",
    metavar="ADDRESS",
    help="Spread the rows over Ray actors: 'local' starts a "
    "cluster on this machine, 'auto' or HOST:PORT joins a running one (needs talesmith[scale]).",
    rich_help_panel="Ray",
)
RayActorsOpt = typer.Option(2, "--ray-actors", help="Actors, each holding the model.", rich_help_panel="Ray")
RayCpusOpt = typer.Option(1.0, "--ray-cpus", help="CPUs per actor (and its threads).", rich_help_panel="Ray")
RayGpusOpt = typer.Option(0.0, "--ray-gpus", help="GPUs per actor.", rich_help_panel="Ray")


@dataclasses.dataclass(frozen=True)
class RayArgs:
    """`batch --ray` and the resources of each actor (an option group)."""

    ray: str | None = option(RayOpt)
    ray_actors: int = option(RayActorsOpt)
    ray_cpus: float = option(RayCpusOpt)
    ray_gpus: float = option(RayGpusOpt)

    def options(self) -> RayOptions | None:
        """Ray's options where --ray is given; None runs on this process's model."""
        if self.ray is None:
            return None
        return RayOptions(None if self.ray == "local" else self.ray, self.ray_actors, self.ray_cpus, self.ray_gpus)


def parallel_sequences(asked: int | None, backend: Any, *, tasks: int) -> int:
    """The number of parallel sequences to use: as asked, or the default for the backend, never more than the tasks."""
    able = decodes_in_parallel(backend)
    if asked is None:
        return max(1, min(DEFAULT_PARALLEL, tasks)) if able else 1
    if asked < 1:
        raise SettingsError(f"--parallel {asked} must be at least 1")
    if asked > 1 and not able:
        raise SettingsError(
            f"--parallel {asked} needs the llama.cpp or ONNX backend; {backend.name} decodes one sequence at a "
            f"time, use --parallel 1"
        )
    return asked


def decodes_in_parallel(backend: Any) -> bool:
    """Whether the backend is llama.cpp's or ONNX Runtime's (an opened backend's module is imported already)."""
    llama = sys.modules.get("talesmith.runtime.engine.llama")
    ort = sys.modules.get("talesmith.runtime.engine.ort")
    return bool(
        (llama is not None and isinstance(backend, llama.LlamaCppBackend))
        or (ort is not None and isinstance(backend, ort.OnnxBackend))
    )


def parallel_chunks(
    backend: Any, tokens: list[int], settings: list[Any], *, stops: tuple[str, ...], n_seq: int
) -> Iterator[Any]:
    """One final chunk per sample, in order, decoded `n_seq` at a time (samples of one prompt share its cache)."""
    from talesmith.runtime.engine.generate import Chunk
    from talesmith.runtime.engine.loading import parallel_decoder
    from talesmith.runtime.engine.slots import ParallelJob

    decoder = parallel_decoder(backend, n_seq)
    finished: dict[int, Any] = {}
    upto = 0
    try:
        for index, done in decoder.generate([ParallelJob(tokens, s, stops) for s in settings]):
            finished[index] = done
            while upto in finished:
                c = finished.pop(upto)
                yield Chunk(c.text, c.tokens, c.finish_reason, c.timing, c.seed)
                upto += 1
    finally:
        decoder.close()
