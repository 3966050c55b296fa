"""Quantizing a GGUF with llama.cpp's own quantizer (llama_model_quantize through llama-cpp-python)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from talesmith.runtime.errors import ConversionError

QUANT_TYPES = {
    "Q8_0": 7,
    "Q6_K": 18,
    "Q5_K_M": 17,
    "Q5_K_S": 16,
    "Q5_0": 8,
    "Q5_1": 9,
    "Q4_K_M": 15,
    "Q4_K_S": 14,
    "Q4_0": 2,
    "Q4_1": 3,
    "Q3_K_L": 13,
    "Q3_K_M": 12,
    "Q3_K_S": 11,
    "Q2_K": 10,
    "F16": 1,
    "BF16": 32,
}
"""Names accepted by --quant, with llama.cpp's file-type numbers (LLAMA_FTYPE_MOSTLY_*)."""


def parse_quants(spec: str) -> list[str]:
    names = [q.strip().upper() for q in spec.split(",") if q.strip()]
    for name in names:
        if name not in QUANT_TYPES:
            raise ConversionError(f"unknown quantization type {name!r}; choose from {', '.join(QUANT_TYPES)}")
    return names


def quantize(source: Path, target: Path, qtype: str, *, threads: int | None = None) -> None:
    """Quantize `source` into `target` (written as a `.partial` file, renamed when complete)."""
    import llama_cpp

    from talesmith.runtime.engine.llama import quiet_logs

    quiet_logs()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[qtype]
    params.nthread = threads or os.cpu_count() or 1
    partial = target.with_name(target.name + ".partial")
    try:
        rc = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), ctypes.byref(params))
        if rc != 0:
            raise ConversionError(f"llama.cpp could not quantize {source.name} to {qtype} (code {rc})")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
