"""onnxruntime-genai's Generator as the forward engine of an ONNX model (its own int4 build, `genai/`).

The converter adds that build for int4 Llama models when onnxruntime-genai is installed. Its Generator
(append_tokens, get_logits, rewind_to) runs the forward passes; talesmith still tokenizes, keeps the
cache bookkeeping and samples. CPU only, one sequence.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from talesmith.runtime.errors import ModelError

GENAI_DIR = "genai"


def genai_available(folder: Path) -> bool:
    """Whether `folder` holds onnxruntime-genai's build of the model and onnxruntime-genai is installed."""
    if not (folder / GENAI_DIR / "genai_config.json").exists():
        return False
    try:
        import onnxruntime_genai  # noqa: F401
    except ImportError:
        return False
    return True


class GenaiEngine:
    """onnxruntime-genai's Generator over the folder's genai/ build (its fused attention and shared KV buffer)."""

    name = "onnxruntime-genai"
    device = "cpu"
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def __init__(self, folder: Path, *, n_ctx: int, threads: int | None):
        import onnxruntime_genai as og

        self.n_ctx = n_ctx
        try:
            og_config = og.Config(str(folder / GENAI_DIR))
            options = {"intra_op_num_threads": threads or os.cpu_count() or 1, "inter_op_num_threads": 1}
            og_config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
            self._model = og.Model(og_config)
        except Exception as e:
            raise ModelError(
                f"onnxruntime-genai could not load {folder / GENAI_DIR}: {str(e).splitlines()[0]}; "
                f"convert the model again"
            ) from None
        self.reset()
        self.n_vocab = int(self.run([0], start=0).shape[-1])  # the build names no vocabulary size: probe it
        self.reset()

    def run(self, tokens: Sequence[int], *, start: int) -> np.ndarray:
        self._generator.append_tokens(np.asarray(tokens, dtype=np.int32))
        return np.asarray(self._generator.get_logits(), dtype=np.float32).reshape(-1)

    def truncate(self, n: int) -> None:
        if n == 0:
            self.reset()
        else:
            self._generator.rewind_to(n)

    def reset(self) -> None:
        import onnxruntime_genai as og

        params = og.GeneratorParams(self._model)
        params.set_search_options(max_length=self.n_ctx, do_sample=False)
        self._generator = og.Generator(self._model, params)

    def close(self) -> None:
        self._generator = None
        self._model = None
