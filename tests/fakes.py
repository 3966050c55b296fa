"""A scripted backend: fast, exact, no model file. It implements the Backend protocol."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from talesmith.runtime.engine.protocol import ModelMetadata
from talesmith.runtime.settings import SamplingSettings

EOS = 1000


class ScriptedBackend:
    """A vocabulary of single bytes (ids 0-255) plus the `pieces` given; the "model" wants to write `script`.

    At each step it proposes the longest piece that continues the script at the current byte offset of
    the generated text, then shorter ones, then `fallback`; the sampler takes the first one not banned.
    After the script it proposes EOS.
    """

    name = "scripted"

    def __init__(
        self,
        script: str | bytes,
        *,
        pieces: Sequence[bytes] = (),
        n_ctx: int = 256,
        fallback: bytes = b"x",
        meta: ModelMetadata = ModelMetadata(),
    ):
        self.script = script.encode() if isinstance(script, str) else script
        self.vocab = [bytes([i]) for i in range(256)] + list(pieces)
        self.n_ctx = n_ctx
        self.fallback = self.vocab.index(fallback)
        self.model_path = "scripted"
        self.eog_tokens = frozenset({EOS})
        self.warnings: list[str] = []
        self.meta = meta
        self._tokens: list[int] = []
        self._prompt_len = 0
        self.evaluated = 0

    def metadata(self) -> ModelMetadata:
        return self.meta

    # vocabulary
    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = False) -> list[int]:
        return list(text.encode("utf-8"))

    def token_bytes(self, token: int) -> bytes:
        return b"" if token == EOS else self.vocab[token]

    def is_eog(self, token: int) -> bool:
        return token == EOS

    # cache
    @property
    def cached_tokens(self) -> Sequence[int]:
        return tuple(self._tokens)

    def prefill(self, tokens: Sequence[int]) -> int:
        tokens = list(tokens)
        common = 0
        for a, b in zip(self._tokens, tokens, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(tokens) - 1)
        self.evaluated += len(tokens) - common
        self._tokens = tokens
        return len(tokens) - common

    def reset(self) -> None:
        self._tokens = []

    def append(self, token: int) -> None:
        self._tokens.append(token)
        self.evaluated += 1

    def generated_bytes(self) -> bytes:
        return b"".join(self.token_bytes(t) for t in self._tokens[self._prompt_len :])

    def candidates(self) -> list[int]:
        rest = self.script[len(self.generated_bytes()) :]
        if not rest:
            return [EOS, self.fallback]
        found = sorted((i for i, p in enumerate(self.vocab) if rest.startswith(p)), key=lambda i: -len(self.vocab[i]))
        return found + [self.fallback, EOS]

    def sampler(self, settings: SamplingSettings, *, seed: int, history: Sequence[int]) -> ScriptedSampler:
        self._prompt_len = len(history)  # the loop primes the sampler with exactly the prompt
        return ScriptedSampler(self)

    def close(self) -> None:
        pass


class ScriptedSampler:
    def __init__(self, backend: ScriptedBackend):
        self.backend = backend

    def sample(self, banned: Collection[int] = ()) -> int:
        return next(t for t in self.backend.candidates() if t not in banned)

    def reset(self, history: Sequence[int]) -> None:
        pass

    def close(self) -> None:
        pass
