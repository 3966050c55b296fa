"""Starting the app on a real model: resolve it, build the backend factory, run."""

from __future__ import annotations

from pathlib import Path

from talesmith.runtime.files import default_data_dir

from .app import AppConfig, TalesmithApp


def run(
    *,
    model: str | None = None,
    lock: Path | None = None,
    ctx: int | None = None,
    gpu_layers: int = 0,
    threads: int | None = None,
    spin: bool = True,
    data_dir: Path | None = None,
    mode: str = "",
) -> None:
    from talesmith.runtime.models.resolve import DEFAULT_MODEL, resolve

    ref = resolve(model, lock=lock)  # a bad name fails here, before the screen opens

    def factory():
        from talesmith.runtime.engine.loading import open_resolved  # llama.cpp for GGUF files, ONNX Runtime for .onnx

        return open_resolved(ref, n_ctx=ctx, gpu_layers=gpu_layers, threads=threads, spin=spin)

    config = AppConfig(
        data_dir=data_dir or default_data_dir(),
        model_name=ref.name or DEFAULT_MODEL,
        mode=mode,
        preset=ref.preset,
        reopen=True,
    )
    TalesmithApp(factory, config).run()
