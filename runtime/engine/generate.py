"""The generation loop, shared by every backend: one token step, a stream of chunks, a collector.

The backend samples and evaluates; this loop owns the token limits, end-of-text handling,
stop strings, banned phrases (by rewinding and banning the token a phrase began with) and
UTF-8-safe text. The CLI, batch generation and the terminal app all consume `stream()`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass

from talesmith.runtime.documents.formats import Document
from talesmith.runtime.documents.lorebook import Activation, Lore
from talesmith.runtime.documents.prompts import FittedPrompt, PromptPlan, fit, plan
from talesmith.runtime.engine.markers import tokenize_prompt
from talesmith.runtime.engine.protocol import Backend
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


def stream(
    backend: Backend, prompt_tokens: Sequence[int], settings: SamplingSettings, *, stops: Sequence[str] = ()
) -> Generator[Chunk, None, None]:
    """Generate after `prompt_tokens`, yielding text as soon as it is safe to show.

    `stops` are extra stop strings (the prompt format's own) besides `settings.stop`.
    Closing the iterator stops generation at once.
    """
    settings = with_seed(settings)
    seed = settings.seed
    assert seed is not None  # with_seed gave it one
    prompt = list(prompt_tokens)
    if len(prompt) >= backend.n_ctx:
        raise ContextOverflowError(
            f"the prompt is {len(prompt)} tokens but the context holds {backend.n_ctx}; "
            f"shorten the prompt or raise --ctx"
        )
    started = time.perf_counter()
    evaluated = backend.prefill(prompt)
    prompt_seconds = time.perf_counter() - started
    sampler = backend.sampler(settings, seed=seed, history=prompt)
    text = TextStream(stops=tuple(settings.stop) + tuple(stops), banned=settings.banned)
    generated: list[int] = []
    bans: dict[int, set[int]] = {}
    rewinds = 0
    first_token_at: float | None = None
    yielded = 0

    def timing() -> Timing:
        now = time.perf_counter()
        return Timing(
            len(prompt),
            evaluated,
            prompt_seconds,
            len(generated),
            now - first_token_at if first_token_at else 0.0,
            first_token_at - started if first_token_at else None,
        )

    try:
        while True:
            token = None
            reason = None
            position = len(generated)
            if position >= settings.max_new_tokens:
                event, reason = text.finish(), "length"
            elif len(prompt) + position >= backend.n_ctx:
                event, reason = text.finish(), "context"
            else:
                banned = bans.get(position, set())
                if position < settings.min_new_tokens:
                    banned = banned | backend.eog_tokens
                token = sampler.sample(banned)
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                if backend.is_eog(token):
                    event, reason, token = text.finish(), "eos", None
                else:
                    generated.append(token)
                    event = text.push(backend.token_bytes(token))

            if isinstance(event, Rewind):
                rewinds += 1
                if rewinds > MAX_REWINDS:
                    # Give up on this phrase: end just before it, never show it.
                    del generated[event.token_index :]
                    text.rewind(event.token_index)
                    final = text.finish()
                    yield Chunk(
                        final.text if isinstance(final, (Emit, Stopped)) else "",
                        tuple(generated[yielded:]),
                        "banned",
                        timing(),
                        seed,
                    )
                    return
                bad = generated[event.token_index]
                bans = {p: b for p, b in bans.items() if p <= event.token_index}
                bans.setdefault(event.token_index, set()).add(bad)
                del generated[event.token_index :]
                text.rewind(event.token_index)
                backend.prefill(prompt + generated)
                sampler.reset(prompt + generated)
                continue
            if isinstance(event, Stopped):
                yield Chunk(event.text, tuple(generated[yielded:]), "stop", timing(), seed)
                return
            if reason is not None:
                yield Chunk(event.text, tuple(generated[yielded:]), reason, timing(), seed)
                return
            confirmed = text.confirmed_tokens()
            if event.text or confirmed > yielded:
                yield Chunk(event.text, tuple(generated[yielded:confirmed]), None, timing(), seed)
                yielded = confirmed
            assert token is not None  # an end of text or a finish returned above
            backend.append(token)
    finally:
        sampler.close()


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


def prepare(
    backend: Backend, document: Document, settings: SamplingSettings, *, lore: Lore | None = None
) -> PreparedPrompt:
    """The document's prompt, with the lorebook entries it activates, trimmed by its format's policy so that
    it and the reply fit the context."""
    budget = backend.n_ctx - settings.max_new_tokens
    if budget < 1:
        raise ContextOverflowError(
            f"max_new_tokens {settings.max_new_tokens} leaves no room for a prompt in a context of "
            f"{backend.n_ctx} tokens; lower --max-new-tokens or raise --ctx"
        )
    prompt_plan, activation = plan(document), None
    lore = lore if lore is not None else getattr(document, "lore", None)
    lore = lore() if callable(lore) else lore  # built here, so that a broken lorebook is an error of this prompt
    if lore and settings.seed is not None:  # lorebook probabilities follow the sampling seed when there is one
        lore = lore.with_seed(settings.seed)
    count = lambda t: len(backend.tokenize(t, add_bos=False))  # noqa: E731
    if lore:
        prompt_plan, activation = lore.for_document(document).apply(
            prompt_plan, count_tokens=count, n_ctx=backend.n_ctx
        )
    fitted = fit(prompt_plan, lambda t: len(backend.tokenize(t)), budget)
    return PreparedPrompt(
        fitted, tokenize_prompt(backend, document, fitted.text), prompt_plan.stops, activation, prompt_plan
    )


def stream_document(
    backend: Backend, document: Document, settings: SamplingSettings, prepared: PreparedPrompt | None = None
) -> Iterator[Chunk]:
    """Stream the continuation of a document (story, chat, ...)."""
    prepared = prepared or prepare(backend, document, settings)
    return stream(backend, prepared.tokens, settings, stops=prepared.stops)
