"""The generation core, shared by every backend: a token step, a stream of text chunks, a collector.

`TokenSteps` is the token level of one generation (sample with the positions' bans, append, and for a
banned phrase rewind to the token where it began and ban that token there; token limits and end of
text). `Generation` puts the text level on it (UTF-8-safe text, stop strings, banned phrases, chunks)
and says what the model must evaluate next, but calls no model itself: `stream()` drives one on one
backend, the parallel decoder and the server's slots drive many in one loop, and `collect()` gathers
a stream. The CLI, batch generation and the terminal app consume `stream()`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from talesmith.runtime.documents.formats import PromptDocument
from talesmith.runtime.documents.instruct import TemplatePlan
from talesmith.runtime.documents.lorebook import Activation, lore_of
from talesmith.runtime.documents.prompts import FittedPrompt, PromptPlan, fit, plan
from talesmith.runtime.engine.markers import tokenize_prompt
from talesmith.runtime.engine.protocol import Backend, TokenSampler
from talesmith.runtime.engine.textstream import Emit, Rewind, Stopped, TextStream
from talesmith.runtime.errors import ContextOverflowError
from talesmith.runtime.settings import SamplingSettings

MAX_REWINDS = 64
"""Rewinds for banned phrases allowed in one generation before it ends with reason "banned"."""


@dataclass(frozen=True)
class Timing:
    prompt_tokens: int
    """Tokens in the prompt."""
    prompt_evaluated: int
    """Prompt tokens that had to be evaluated (the rest were reused from the cache)."""
    prompt_seconds: float
    generated_tokens: int
    generate_seconds: float
    """Seconds from the first sampled token to now."""
    first_token_seconds: float | None
    """Seconds from the start of the call to the first sampled token."""

    @property
    def tokens_per_second(self) -> float:
        return (
            (self.generated_tokens - 1) / self.generate_seconds
            if self.generated_tokens > 1 and self.generate_seconds > 0
            else 0.0
        )


@dataclass(frozen=True)
class Chunk:
    text: str
    tokens: tuple[int, ...]
    """Tokens whose text is complete in this chunk (all remaining ones in the final chunk)."""
    finish_reason: str | None
    """None while streaming; then "eos", "length", "stop", "context" or "banned"."""
    timing: Timing
    seed: int


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: tuple[int, ...]
    finish_reason: str
    timing: Timing
    seed: int


def with_seed(settings: SamplingSettings) -> SamplingSettings:
    """The settings with a concrete seed (a random one if none was given)."""
    return settings if settings.seed is not None else settings.replace(seed=secrets.randbelow(2**31))


@dataclass(frozen=True)
class Prefill:
    """Make the cache hold exactly `tokens`, with logits ready for the next token."""

    tokens: list[int]


@dataclass(frozen=True)
class Append:
    """Evaluate one more token after the cached ones."""

    token: int


Request = Prefill | Append


class Vocabulary(Protocol):
    """What a generation reads from its model besides the logits."""

    n_ctx: int

    @property
    def eog_tokens(self) -> frozenset[int]: ...

    def is_eog(self, token: int) -> bool: ...

    def token_bytes(self, token: int) -> bytes: ...


class TokenSteps:
    """The token level of one generation: what may be sampled at each position, the tokens so far, rewinds.

    No text and no model calls: `next()` samples from whatever logits the driver evaluated last.
    """

    def __init__(self, prompt: list[int], settings: SamplingSettings, vocab: Vocabulary):
        self.prompt = prompt
        self.settings = settings
        self.vocab = vocab
        self.generated: list[int] = []
        self.sampler: TokenSampler | None = None
        self._bans: dict[int, set[int]] = {}
        """Tokens banned at a position by banned-phrase rewinds (a phrase began with them there)."""

    def next(self) -> int | str:
        """Sample and append the next token; or the reason generation ends here ("length", "context", "eos")."""
        assert self.sampler is not None
        settings, position = self.settings, len(self.generated)
        if position >= settings.max_new_tokens:
            return "length"
        if len(self.prompt) + position >= self.vocab.n_ctx:
            return "context"
        banned = self._bans.get(position, set())
        if position < settings.min_new_tokens:
            banned = banned | self.vocab.eog_tokens
        token = self.sampler.sample(banned)
        if self.vocab.is_eog(token):
            return "eos"
        self.generated.append(token)
        return token

    def rewind(self, index: int) -> list[int]:
        """Go back to generated token `index` and ban that token there; the tokens the cache must hold now."""
        assert self.sampler is not None
        bad = self.generated[index]
        self._bans = {p: b for p, b in self._bans.items() if p <= index}
        self._bans.setdefault(index, set()).add(bad)
        del self.generated[index:]
        history = self.prompt + self.generated
        self.sampler.reset(history)
        return history


class Generation:
    """One generation as a step machine, driven from outside: no model calls of its own.

    The driver evaluates what `request` asks (first the prompt), hands over a sampler once the prompt
    is in (`begin`), then calls `step()` after each evaluation. A step takes one token from the token
    level (`TokenSteps`: sample, append, and on a banned phrase rewind), feeds the text stream (UTF-8,
    stop strings, banned phrases) and says what to evaluate next: the token (`Append`), or after a
    rewind the shorter sequence (`Prefill`); `request` is None once the generation is over. `stream()`
    drives one generation on one backend; the parallel decoder and the server's slots drive many in
    one loop.
    """

    def __init__(
        self, prompt_tokens: Sequence[int], settings: SamplingSettings, *, vocab: Vocabulary, stops: Sequence[str] = ()
    ):
        self.settings = with_seed(settings)
        assert self.settings.seed is not None  # with_seed gave it one
        self.seed: int = self.settings.seed
        self.prompt = list(prompt_tokens)
        self.vocab = vocab
        if len(self.prompt) >= vocab.n_ctx:
            raise ContextOverflowError(
                f"the prompt is {len(self.prompt)} tokens but the context holds {vocab.n_ctx}; "
                f"shorten the prompt or raise --ctx"
            )
        self.tokens = TokenSteps(self.prompt, self.settings, vocab)
        self.text = TextStream(stops=tuple(self.settings.stop) + tuple(stops), banned=self.settings.banned)
        self.request: Request | None = Prefill(self.prompt)
        self.finish_reason: str | None = None
        self._rewinds = 0
        self._yielded = 0
        self._started = time.perf_counter()
        self._evaluated = 0
        self._prompt_seconds = 0.0
        self._first_token_at: float | None = None

    @property
    def generated(self) -> list[int]:
        return self.tokens.generated

    @property
    def sampler(self) -> TokenSampler | None:
        return self.tokens.sampler

    def begin(self, sampler: TokenSampler, evaluated: int) -> None:
        """The prompt is in the cache (`evaluated` of its tokens had to be evaluated); sample with `sampler`."""
        self._evaluated = evaluated
        self._prompt_seconds = time.perf_counter() - self._started
        self.tokens.sampler = sampler

    def timing(self) -> Timing:
        now, first = time.perf_counter(), self._first_token_at
        return Timing(
            len(self.prompt),
            self._evaluated,
            self._prompt_seconds,
            len(self.generated),
            now - first if first else 0.0,
            first - self._started if first else None,
        )

    def _chunk(self, text: str, upto: int | None, reason: str | None) -> Chunk:
        tokens = tuple(self.generated[self._yielded : upto])
        if upto is not None:
            self._yielded = upto
        if reason is not None:
            self.finish_reason, self.request = reason, None
        return Chunk(text, tokens, reason, self.timing(), self.seed)

    def step(self) -> Chunk | None:
        """Sample from the logits the driver evaluated last; a chunk when there is text (or the end) to show."""
        assert self.sampler is not None and self.request is not None, "step() before begin() or after the end"
        token = self.tokens.next()
        if self._first_token_at is None and token not in ("length", "context"):
            self._first_token_at = time.perf_counter()
        if isinstance(token, str):
            final = self.text.finish()
            if isinstance(final, Rewind):
                return self._rewind(final.token_index)
            return self._chunk(final.text, None, "stop" if isinstance(final, Stopped) else token)
        event = self.text.push(self.vocab.token_bytes(token))
        if isinstance(event, Rewind):
            return self._rewind(event.token_index)
        if isinstance(event, Stopped):
            return self._chunk(event.text, None, "stop")
        self.request = Append(token)
        confirmed = self.text.confirmed_tokens()
        if event.text or confirmed > self._yielded:
            return self._chunk(event.text, confirmed, None)
        return None

    def _rewind(self, index: int) -> Chunk | None:
        """A banned phrase began at generated token `index`: go back there and ban that token there."""
        self._rewinds += 1
        if self._rewinds > MAX_REWINDS:
            # Give up on this phrase: end just before it, never show it.
            del self.generated[index:]
            self.text.rewind(index)
            final = self.text.finish()
            return self._chunk(final.text if isinstance(final, (Emit, Stopped)) else "", None, "banned")
        self.request = Prefill(self.tokens.rewind(index))
        self.text.rewind(index)
        return None

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()


def stream(
    backend: Backend, prompt_tokens: Sequence[int], settings: SamplingSettings, *, stops: Sequence[str] = ()
) -> Generator[Chunk, None, None]:
    """Generate after `prompt_tokens`, yielding text as soon as it is safe to show.

    `stops` are extra stop strings (the prompt format's own) besides `settings.stop`.
    Closing the iterator stops generation at once.
    """
    generation = Generation(prompt_tokens, settings, vocab=backend, stops=stops)
    evaluated = backend.prefill(generation.prompt)
    try:
        generation.begin(
            backend.sampler(generation.settings, seed=generation.seed, history=generation.prompt), evaluated
        )
        while True:
            chunk = generation.step()
            if chunk is not None:
                yield chunk
            request = generation.request
            if request is None:
                return
            if isinstance(request, Append):
                backend.append(request.token)
            else:
                backend.prefill(request.tokens)
    finally:
        generation.close()


def collect(chunks: Iterable[Chunk]) -> Completion:
    """Gather a stream into one completion."""
    parts: list[str] = []
    tokens: list[int] = []
    last = None
    for chunk in chunks:
        parts.append(chunk.text)
        tokens.extend(chunk.tokens)
        last = chunk
    assert last is not None and last.finish_reason is not None, "stream ended without a final chunk"
    return Completion("".join(parts), tuple(tokens), last.finish_reason, last.timing, last.seed)


@dataclass(frozen=True)
class PreparedPrompt:
    fitted: FittedPrompt
    tokens: list[int]
    stops: tuple[str, ...]
    lore: Activation | None = None
    """The lorebook entries that fired, with their tokens (None without lorebooks)."""
    plan: PromptPlan | None = None
    """The prompt plan the text was fitted from (lorebook entries placed)."""


def prepare(backend: Backend, document: PromptDocument, settings: SamplingSettings) -> PreparedPrompt:
    """The document's prompt, with the lorebook entries it activates (the document's own: `formats.with_lore`
    gives it lorebooks), trimmed by its format's policy so that it and the reply fit the context."""
    budget = backend.n_ctx - settings.max_new_tokens
    if budget < 1:
        raise ContextOverflowError(
            f"max_new_tokens {settings.max_new_tokens} leaves no room for a prompt in a context of "
            f"{backend.n_ctx} tokens; lower --max-new-tokens or raise --ctx"
        )
    prompt_plan, activation = plan(document), None
    lore = lore_of(document)
    if lore and settings.seed is not None:  # lorebook probabilities follow the sampling seed when there is one
        lore = lore.with_seed(settings.seed)
    count = lambda t: len(backend.tokenize(t, add_bos=False))  # noqa: E731
    if lore:
        prompt_plan, activation = lore.for_document(document).apply(
            prompt_plan, count_tokens=count, n_ctx=backend.n_ctx
        )
    if isinstance(prompt_plan, TemplatePlan):  # a chat template's markers count as the special tokens they are
        fitted = fit(prompt_plan, lambda t: len(tokenize_prompt(backend, document, t)), budget)
    else:
        fitted = fit(prompt_plan, lambda t: len(backend.tokenize(t)), budget)
    return PreparedPrompt(
        fitted, tokenize_prompt(backend, document, fitted.text), prompt_plan.stops, activation, prompt_plan
    )


def stream_document(
    backend: Backend, document: PromptDocument, settings: SamplingSettings, prepared: PreparedPrompt | None = None
) -> Iterator[Chunk]:
    """Stream the continuation of a document (story, chat, ...)."""
    prepared = prepared or prepare(backend, document, settings)
    return stream(backend, prepared.tokens, settings, stops=prepared.stops)
