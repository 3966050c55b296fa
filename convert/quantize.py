"""Quantizing a GGUF with llama.cpp's own quantizer (llama_model_quantize through llama-cpp-python)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from gguf import LlamaFileType

from talesmith.runtime import files
from talesmith.runtime.errors import ConversionError

QUANT_TYPES = {
    name: LlamaFileType[f"MOSTLY_{name}"]
    for name in (
        "Q8_0",
        "Q6_K",
        "Q5_K_M",
        "Q5_K_S",
        "Q5_0",
        "Q5_1",
        "Q4_K_M",
        "Q4_K_S",
        "Q4_0",
        "Q4_1",
        "Q3_K_L",
        "Q3_K_M",
        "Q3_K_S",
        "Q2_K",
        "F16",
        "BF16",
    )
}
"""Names accepted by --quant, with llama.cpp's file types (LLAMA_FTYPE_MOSTLY_*)."""


def parse_quants(spec: str) -> list[str]:
    names = [q.strip().upper() for q in spec.split(",") if q.strip()]
    for name in names:
        if name not in QUANT_TYPES:
            raise ConversionError(f"unknown quantization type {name!r}; choose from {', '.join(QUANT_TYPES)}")
    return names


def quantize(source: Path, target: Path, qtype: str, *, threads: int | None = None) -> None:
    """Quantize `source` into `target`, which appears only once complete (files.atomic_path)."""
    import llama_cpp

    from talesmith.runtime.engine.llama import quiet_logs

    quiet_logs()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(QUANT_TYPES[qtype])
    params.nthread = threads or os.cpu_count() or 1
    with files.atomic_path(target) as partial:
        rc = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), ctypes.byref(params))
        if rc != 0:
            raise ConversionError(f"llama.cpp could not quantize {source.name} to {qtype} (code {rc})")
