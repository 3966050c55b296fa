"""Choosing and opening a backend for a model: llama.cpp for GGUF files, ONNX Runtime for ONNX models.

Both backends are imported only when a model is opened, so that importing talesmith's CLI stays light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from talesmith.runtime.errors import ModelError

BACKENDS = ("llama", "onnx")
DEVICES = ("cpu", "cuda")


def backend_for(path: str | os.PathLike[str]) -> str:
    """"onnx" for a .onnx file or a folder holding model.onnx, "llama" otherwise."""
    p = Path(path)
    if p.suffix.lower() == ".onnx" or (p.is_dir() and (p / "model.onnx").exists()):
        return "onnx"
    return "llama"


def open_backend(path: str | os.PathLike[str], *, backend: str | None = None, device: str = "cpu",
                 n_ctx: int | None = None, gpu_layers: int = 0, threads: int | None = None) -> Any:
    """The model at `path` in the backend asked for (default: chosen from the file)."""
    kind = backend or backend_for(path)
    if kind not in BACKENDS:
        raise ModelError(f"--backend {kind} is unknown; use llama or onnx")
    if device not in DEVICES:
        raise ModelError(f"--device {device} is unknown; use cpu or cuda")
    if kind == "onnx":
        if backend_for(path) != "onnx":
            raise ModelError(f"--backend onnx needs an ONNX model (model.onnx or its folder), not {path}; convert it "
                             f"with `talesmith convert --to onnx` or use --backend llama")
        try:
            from talesmith.runtime.engine.ort import open_onnx
        except ImportError as e:
            raise ModelError(f"the ONNX backend needs onnxruntime ({e.name} is missing); install talesmith's onnx "
                             f"extra: pip install -e '.[onnx]'") from None
        return open_onnx(path, n_ctx=n_ctx, device=device, threads=threads)
    if backend_for(path) == "onnx":
        raise ModelError(f"{path} is an ONNX model; llama.cpp reads GGUF files: use --backend onnx")
    from talesmith.runtime.engine.llama import LlamaCppBackend

    if device == "cuda" and not gpu_layers:
        gpu_layers = -1  # --device cuda with llama.cpp: offload every layer
    return LlamaCppBackend(path, n_ctx=n_ctx, gpu_layers=gpu_layers, threads=threads)


def model_metadata(backend: Any) -> dict[str, Any]:
    """What a model converted by talesmith says about itself: prompt format and preset, if any."""
    if getattr(backend, "name", "").startswith("onnxruntime"):
        meta = backend.metadata
        return {"prompt_format": meta.get("prompt_format"), "preset": meta.get("preset")}
    meta = backend.info.metadata
    return {"prompt_format": meta.get("talesmith.prompt_format"), "preset": meta.get("talesmith.preset")}
