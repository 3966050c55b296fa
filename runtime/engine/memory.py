"""Does a context fit in memory: llama.cpp's KV cache for a context size against what the system has free."""

from __future__ import annotations

import os

from talesmith.runtime.models.gguf_header import GGUFInfo, kv_bytes_per_token

_GIB = 2**30


def available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def context_that_fits(info: GGUFInfo, available: int) -> int:
    """The largest context (a multiple of 256) whose full KV cache takes at most 3/4 of `available`."""
    per_token = kv_bytes_per_token(info) or 1
    return available * 3 // 4 // per_token // 256 * 256


def _advice(info: GGUFInfo, available: int) -> str:
    fit = context_that_fits(info, available)
    if fit < 256:
        return "free some memory or use a smaller model"
    trained = info.context_length
    if trained and fit > trained:
        return f"use --ctx {fit} or less ({info.name} was trained on {trained})"
    return f"use --ctx {fit} or less"


def context_too_big(info: GGUFInfo, n_ctx: int, *, available: int | None) -> str | None:
    """Why a context of `n_ctx` tokens cannot fit in `available` bytes, or None when it may."""
    least = kv_bytes_per_token(info, lower_bound=True)
    if least is None or available is None or least * n_ctx <= available:
        return None
    return (
        f"--ctx {n_ctx} does not fit in memory: its KV cache alone needs at least {least * n_ctx / _GIB:.1f} GiB "
        f"and {available / _GIB:.1f} GiB are free; {_advice(info, available)}"
    )


def context_failed(info: GGUFInfo, n_ctx: int, *, available: int | None) -> str:
    """The message for llama.cpp failing to create a context of `n_ctx` tokens."""
    per_token = kv_bytes_per_token(info)
    need = f" (its KV cache needs about {per_token * n_ctx / _GIB:.1f} GiB)" if per_token else ""
    fix = _advice(info, available) if available is not None and per_token else "use a smaller --ctx"
    return f"llama.cpp could not create a context of {n_ctx} tokens for {info.path.name}{need}; {fix}"
