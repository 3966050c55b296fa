"""Whether an ONNX conversion fits in memory, estimated before anything is written.

The graph builder holds one source tensor at a time, plus a few slices of CHUNK_BYTES (a float32 slice, its
transposed or quantized form), so the peak is the interpreter with torch and ONNX Runtime loaded plus the
largest tensor of the checkpoint as it is read: 2 bytes a value for fp16, 4 for float32, 6 for bf16 (read,
then widened to float32 beside it) and 14 where an adapter is merged (the stored tensor, its float32 copy,
the delta and its scaled copy). Measured (int4, 2 cores): a GPT-J-6B-shaped fp16 checkpoint peaks at
0.85 GB against an estimate of 1.24 GB; Falcon-7B's widths in bf16 at 2.16 GB against 2.60 GB.
"""

from __future__ import annotations

import math
from pathlib import Path

from talesmith.runtime.errors import ConversionError

from .onnx_graph import CHUNK_BYTES

BASELINE_BYTES = 600 * 2**20
"""Python with torch, onnx, onnxruntime and transformers' tokenizer loaded (measured: about 450 MB)."""
WIDTHS = {"float16": 2, "bfloat16": 6}
"""Bytes per value held while one tensor is read, by the checkpoint's dtype (4 otherwise)."""
MERGED_WIDTH = 14
GB = 1e9


def estimate_peak(ckpt, *, merged: frozenset[str] | set[str] = frozenset()) -> int:
    """Bytes of memory the ONNX conversion of `ckpt` needs at its peak (an upper estimate); `merged` names
    the tensors an adapter changes."""
    width = WIDTHS.get(str(ckpt.config.get("torch_dtype") or ckpt.config.get("dtype")), 4)
    largest = max(
        (math.prod(ckpt.shape(n)) * (MERGED_WIDTH if n in merged else width) for n in ckpt.names()), default=0
    )
    return BASELINE_BYTES + largest + 3 * CHUNK_BYTES


def available_memory() -> int | None:
    """Bytes this process may still use: what the system has available, less where a cgroup limit is lower."""
    available: int | None
    try:
        import psutil

        available = int(psutil.virtual_memory().available)
    except ImportError:
        available = _meminfo_available()
    limit = _cgroup_room()
    if available is None:
        return limit
    return min(available, limit) if limit is not None else available


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((root / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def check_fits(weights, *, available: int | None = None) -> int:
    """Raise ConversionError (one line) when converting `weights` (a MergedWeights) would not fit; returns
    the estimate."""
    ckpt = weights.ckpt
    needed = estimate_peak(ckpt, merged=weights.merged_names)
    room = available if available is not None else available_memory()
    if room is not None and needed > room:
        raise ConversionError(
            f"converting {ckpt.folder.name} to ONNX needs about {needed / GB:.1f} GB of memory at "
            f"its peak but only {room / GB:.1f} GB is available; close other programs or convert "
            f"on a machine with more memory"
        )
    return needed
