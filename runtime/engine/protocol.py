"""The backend interface: what a model runtime must offer for talesmith to generate with it.

A backend owns the model, its KV cache and its samplers. The generation loop (generate.py) owns
everything else (token limits, stop strings, banned phrases, UTF-8 decoding), so every backend
behaves the same for the CLI, batch generation and the terminal app.
"""

from __future__ import annotations

from typing import Collection, Protocol, Sequence

from talesmith.runtime.settings import SamplingSettings


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


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

    eog_tokens: frozenset[int]
    """Tokens that end generation (end of text, end of turn)."""

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
