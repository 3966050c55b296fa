"""What a backend is asked to use, checked the same way for every backend: the context size and the device."""

from __future__ import annotations

from talesmith.runtime.errors import ModelError

DEFAULT_CTX = 4096
"""The context used when none is asked for (or the model's own, when smaller)."""
MIN_CTX = 16
"""The smallest --ctx accepted (llama.cpp rounds any context up to a multiple of 256)."""
DEVICES = ("cpu", "cuda")


def check_device(device: str) -> str:
    """`device` when it is one talesmith knows; a ModelError naming the choices otherwise."""
    if device not in DEVICES:
        raise ModelError(f"--device {device} is unknown; use {' or '.join(DEVICES)}")
    return device


def context_size(n_ctx: int | None, *, trained: int | None, name: str, warnings: list[str]) -> int:
    """The context to use: `n_ctx` once checked, else the model's `trained` one up to DEFAULT_CTX.

    Past the trained context, a note for the user is added to `warnings` (`name` names the model in it).
    """
    if n_ctx is None:
        return min(trained or DEFAULT_CTX, DEFAULT_CTX)
    if n_ctx < MIN_CTX:
        raise ModelError(f"--ctx {n_ctx} is too small; use --ctx {MIN_CTX} or more")
    if trained and n_ctx > trained:
        warnings.append(
            f"--ctx {n_ctx} is beyond the {trained} tokens {name} was trained on; expect worse text past {trained}"
        )
    return n_ctx
