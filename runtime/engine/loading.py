"""Choosing and opening a backend for a model: llama.cpp for GGUF files, ONNX Runtime for ONNX models.

Both backends are imported only when a model is opened, so that importing talesmith's CLI stays light.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from talesmith.runtime.engine.choices import check_device
from talesmith.runtime.engine.protocol import Backend
from talesmith.runtime.errors import ModelError, SettingsError

if TYPE_CHECKING:
    from talesmith.runtime.models.resolve import ModelRef


class LoadOptions(TypedDict, total=False):
    """How to open a model, as every front-end asks for it (each key optional; the defaults below)."""

    backend: str | None
    """"llama" or "onnx"; None or left out: chosen from the file."""
    device: str
    """"cpu" (default) or "cuda"."""
    n_ctx: int | None
    gpu_layers: int
    threads: int | None
    spin: bool
    """ONNX Runtime: idle threads spin between steps (default True; False on cores other work needs)."""


Opener = Callable[..., Backend]
"""Opens the model at a path: `opener(path, device=..., n_ctx=..., gpu_layers=..., threads=..., spin=...)`."""


def _open_llama(
    path: Path, *, device: str, n_ctx: int | None, gpu_layers: int, threads: int | None, spin: bool
) -> Backend:
    if backend_for(path) == "onnx":
        raise ModelError(f"{path} is an ONNX model; llama.cpp reads GGUF files: use --backend onnx")
    from talesmith.runtime.engine.llama import LlamaCppBackend

    if device == "cuda" and not gpu_layers:
        gpu_layers = -1  # --device cuda with llama.cpp: offload every layer
    del spin  # llama.cpp's threads wait as its own defaults say
    return LlamaCppBackend(path, n_ctx=n_ctx, gpu_layers=gpu_layers, threads=threads)


def _open_onnx(
    path: Path, *, device: str, n_ctx: int | None, gpu_layers: int, threads: int | None, spin: bool
) -> Backend:
    if backend_for(path) != "onnx":
        raise ModelError(
            f"--backend onnx needs an ONNX model (model.onnx or its folder), not {path}; convert it "
            f"with `talesmith convert --to onnx` or use --backend llama"
        )
    try:
        from talesmith.runtime.engine.ort import open_onnx
    except ImportError as e:
        raise ModelError(
            f"the ONNX backend needs onnxruntime ({e.name} is missing); install talesmith's onnx "
            f"extra: pip install -e '.[onnx]'"
        ) from None
    return open_onnx(path, n_ctx=n_ctx, device=device, threads=threads, spin=spin)


OPENERS: dict[str, Opener] = {"llama": _open_llama, "onnx": _open_onnx}
"""The backends by --backend name. An embedding program (or a test) may put its own opener here."""


def backend_for(path: str | os.PathLike[str]) -> str:
    """ "onnx" for a .onnx file or a folder holding model.onnx, "llama" otherwise."""
    p = Path(path)
    if p.suffix.lower() == ".onnx" or (p.is_dir() and (p / "model.onnx").exists()):
        return "onnx"
    return "llama"


def open_backend(path: str | os.PathLike[str], **how: Unpack[LoadOptions]) -> Backend:
    """The model at `path` in the backend asked for (default: chosen from the file)."""
    kind = how.get("backend") or backend_for(path)
    if kind not in OPENERS:
        raise ModelError(f"--backend {kind} is unknown; use {' or '.join(OPENERS)}")
    device = how.get("device", "cpu")
    check_device(device)
    return OPENERS[kind](
        Path(path),
        device=device,
        n_ctx=how.get("n_ctx"),
        gpu_layers=how.get("gpu_layers", 0),
        threads=how.get("threads"),
        spin=how.get("spin", True),
    )


@dataclass(frozen=True)
class OpenedModel:
    """A model resolved and opened: what the CLI, batch and the app all start from."""

    ref: ModelRef
    """Its prompt format and preset filled from the model's own metadata where the lock names none; its path
    the file outputs hash (an ONNX folder's model.onnx)."""
    backend: Backend
    notes: tuple[str, ...]
    """For the user: the lock's (a file no longer matching its sha256) and the backend's."""


def open_model(
    model: str | None, *, lock: str | os.PathLike[str] | None = None, **how: Unpack[LoadOptions]
) -> OpenedModel:
    """Resolve `model` (a path, a models.lock name, None: the bundled one), open it and read what it says."""
    from talesmith.runtime.models.resolve import resolve

    return open_resolved(resolve(model, lock=lock), **how)


def open_resolved(ref: ModelRef, **how: Unpack[LoadOptions]) -> OpenedModel:
    """Open a model already resolved (the app resolves first, to refuse a bad name before its screen opens)."""
    opened = open_backend(ref.path, **how)
    meta = opened.metadata()  # a model converted by talesmith names its prompt format and preset
    # An ONNX model is a folder; its model.onnx is the file that JSON output and batch records hash.
    path = ref.path / "model.onnx" if ref.path.is_dir() and (ref.path / "model.onnx").exists() else ref.path
    ref = dataclasses.replace(
        ref, path=path, prompt_format=ref.prompt_format or meta.prompt_format, preset=ref.preset or meta.preset
    )
    return OpenedModel(ref, opened, (*ref.warnings, *opened.warnings))


def parallel_decoder(backend: Backend, n_seq: int, *, n_ctx_seq: int | None = None) -> Any:
    """A decoder of `n_seq` sequences together over the opened model (slots.SlotDecoder, with `generate`):
    one llama.cpp context, or one ONNX Runtime session over a shared KV cache."""
    llama = sys.modules.get("talesmith.runtime.engine.llama")  # an opened backend's module is imported already
    if llama is not None and isinstance(backend, llama.LlamaCppBackend):
        from talesmith.runtime.engine.parallel import ParallelDecoder

        return ParallelDecoder(backend, n_seq, n_ctx_seq=n_ctx_seq)
    ort = sys.modules.get("talesmith.runtime.engine.ort")
    if ort is not None and isinstance(backend, ort.OnnxBackend):
        from talesmith.runtime.engine.ort_parallel import OnnxParallelDecoder

        return OnnxParallelDecoder(backend, n_seq, n_ctx_seq=n_ctx_seq)
    raise SettingsError(f"--parallel {n_seq} needs the llama.cpp or ONNX backend, not {backend.name}; use --parallel 1")
