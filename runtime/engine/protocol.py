"""The backend interface: what a model runtime must offer for talesmith to generate with it.

A backend owns the model, its KV cache and its samplers. The generation loop (generate.py) owns
everything else (token limits, stop strings, banned phrases, UTF-8 decoding), so every backend
behaves the same for the CLI, batch generation and the terminal app.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from talesmith.runtime.settings import SamplingSettings


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


MIN_SHIFT_KEPT = 16
"""Shift the cache only when at least this many cached tokens (or all that follow) are kept."""


def shift_plan(cached: Sequence[int], tokens: Sequence[int], common: int) -> tuple[int, int] | None:
    """(gap, kept): `tokens` continue `cached` after its `gap` tokens at `common` are dropped, for `kept` tokens.

    None when no later run of the cache continues the prompt for at least MIN_SHIFT_KEPT tokens (or all
    that is left of the prompt before its last token, which is evaluated again for fresh logits)."""
    if common >= len(cached) - 1:
        return None
    rest = tokens[common : len(tokens) - 1]
    if not rest:
        return None
    best = None
    for start in range(common + 1, len(cached)):
        if cached[start] != rest[0]:
            continue
        kept = 0
        while start + kept < len(cached) and kept < len(rest) and cached[start + kept] == rest[kept]:
            kept += 1
        if best is None or kept > best[1]:
            best = (start - common, kept)
        if start + kept == len(cached) or kept == len(rest):
            break
    if best is None or best[1] < min(MIN_SHIFT_KEPT, len(rest)):
        return None
    return best


@dataclass(frozen=True)
class ModelMetadata:
    """What a model converted by talesmith says about itself (GGUF metadata, talesmith.json); None: unsaid."""

    prompt_format: str | None = None
    preset: str | None = None


class TokenSampler(Protocol):
    def sample(self, banned: Collection[int] = ()) -> int:
        """Pick the next token from the backend's current logits, never one of `banned`, and remember it."""

    def reset(self, history: Sequence[int]) -> None:
        """Forget what was sampled and remember `history` instead (after a rewind)."""

    def close(self) -> None: ...


class Backend(Protocol):
    name: str
    """Short name of the runtime, e.g. "llama.cpp"."""

    model_path: str
    n_ctx: int
    """Context size in tokens."""

    @property
    def eog_tokens(self) -> frozenset[int]:
        """Tokens that end generation (end of text, end of turn)."""

    warnings: list[str]
    """Notes for the user from opening the model (e.g. a context beyond the trained one)."""

    def metadata(self) -> ModelMetadata:
        """The prompt format and preset the model names for itself."""

    @property
    def cached_tokens(self) -> Sequence[int]:
        """The tokens whose keys and values are in the cache now."""

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = False) -> list[int]:
        """Token ids; special tokens are parsed only with `special` (the prompt format's markers), never in
        text the user wrote."""

    def is_eog(self, token: int) -> bool:
        """Whether `token` ends generation."""

    def token_bytes(self, token: int) -> bytes:
        """The raw bytes a token stands for (possibly part of a UTF-8 character)."""

    def prefill(self, tokens: Sequence[int]) -> int:
        """Make the cache hold exactly `tokens` with logits ready for the next token.

        Reuses the longest common prefix with what is cached and evaluates only the rest
        (at least the last token). Returns how many tokens were evaluated.
        """

    def append(self, token: int) -> None:
        """Evaluate one more token after the cached ones."""

    def reset(self) -> None:
        """Empty the cache."""

    def sampler(self, settings: SamplingSettings, *, seed: int, history: Sequence[int]) -> TokenSampler:
        """A sampler that implements every field of `settings`, primed with `history` for penalties."""

    def close(self) -> None: ...


@runtime_checkable
class StatefulBackend(Protocol):
    """A backend that can save its cache to a file and load it back (kvstate.py uses this)."""

    def save_state(self, path: str | os.PathLike[str], *, model_sha256: str) -> None:
        """Save the cache (with its tokens) to `path`, and a description beside it."""

    def load_state(self, path: str | os.PathLike[str], tokens: Sequence[int], *, model_sha256: str) -> int:
        """Restore a saved cache of this model, keeping what it shares with `tokens`; how many tokens (0: none)."""


@runtime_checkable
class CacheShifter(Protocol):
    """A backend whose prefill can also reuse cached tokens past a gap (context shifting)."""

    def pending(self, tokens: Sequence[int]) -> int:
        """How many of `tokens` a prefill would evaluate now."""
