"""Slots: many requests over one model in one loop, each keeping its cache between requests (the server's engine).

A `SlotEngine` runs in a thread of its own and drives a decoder: `ParallelDecoder` (llama.cpp, one
`llama_decode` per step for every slot) or `SerialDecoder` (any backend, one slot). Requests come
from other threads (`submit`); each waits for a free slot, preferring the slot whose cache shares
the longest prefix with its prompt (then the one used least recently), so a client that resends its
whole conversation each turn evaluates only what changed. Each request has its own sampler, stops,
banned phrases and token limit (a `Generation`), and gets its chunks as they come through its
`Ticket`; `Ticket.cancel()` frees its slot before the next step.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

from talesmith.runtime.engine.generate import Append, Chunk, Completion, Generation, Vocabulary, collect
from talesmith.runtime.engine.protocol import Backend, TokenSampler, common_prefix
from talesmith.runtime.errors import ContextOverflowError
from talesmith.runtime.settings import SamplingSettings

Event: TypeAlias = Chunk | BaseException | None
"""What a ticket receives: a chunk (the last one has a finish reason), an error, or None once cancelled."""


@dataclass(eq=False)
class Slot:
    """One sequence of a decoder: its cache, the generation it runs and what that asked to evaluate."""

    seq_id: int
    cached: list[int] = field(default_factory=list)
    """The tokens in this slot's cache, in order."""
    generation: Generation | None = None
    job: int = -1
    pending: list[int] | None = None
    """The tokens the generation asked the cache to hold, with logits for the last (None: not waiting)."""
    fresh: bool = False
    """The request is the first prefill of a new generation."""
    todo: list[int] | None = None
    """Planned: the tokens still to evaluate for the request (None: not planned yet)."""
    evaluated: int = 0
    logits_row: int = -1
    began: bool = False
    shifted: int = 0
    """Cached tokens dropped by context shifting when this generation's prompt came in."""
    ticket: Ticket | None = None
    last_used: int = 0

    @property
    def ready(self) -> bool:
        """Its last request was evaluated: it may sample."""
        return self.generation is not None and self.pending is None and self.generation.request is not None

    @property
    def done(self) -> bool:
        return self.generation is not None and self.generation.request is None


class SlotDecoder(Protocol):
    slots: list[Slot]
    vocab: Vocabulary
    n_ctx_seq: int
    steps: int

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = False) -> list[int]: ...

    def start(self, slot: Slot, generation: Generation) -> None: ...

    def advance(self, slot: Slot) -> Chunk | None: ...

    def release(self, slot: Slot, *, keep_cache: bool = False) -> None: ...

    def step(self) -> None: ...

    def close(self) -> None: ...


MIN_SHARED = 16
"""A cached prefix is taken from another slot when it covers the whole prompt or at least this many tokens."""


class SlotVocabulary:
    """A model's vocabulary with one slot's context size, as a Generation sees it."""

    def __init__(self, base: Vocabulary, n_ctx: int):
        self.n_ctx = n_ctx
        self.eog_tokens = base.eog_tokens
        self.is_eog = base.is_eog
        self.token_bytes = base.token_bytes


def take_request(slot: Slot) -> None:
    """Note what the slot's generation asks to evaluate next (`pending`: the tokens its cache must hold)."""
    request = slot.generation.request if slot.generation is not None else None
    slot.todo = None
    if request is None:
        slot.pending = None
    elif isinstance(request, Append):
        slot.pending, slot.fresh = slot.cached + [request.token], False
    else:
        slot.pending, slot.fresh = list(request.tokens), not slot.began


def donor(slots: Sequence[Slot], slot: Slot, tokens: list[int]) -> tuple[Slot | None, int]:
    """The other slot whose cache shares the longest prefix with `tokens` (at least MIN_SHARED), and its length."""
    best, best_n = None, 0
    for other in slots:
        if other is slot or not other.cached:
            continue
        n = min(common_prefix(other.cached, tokens), len(tokens) - 1)
        if n > best_n:
            best, best_n = other, n
    if best_n < min(MIN_SHARED, len(tokens) - 1):
        return None, 0
    return best, best_n


class SlotSteps:
    """What the decoders that share one cache among slots do alike: start a generation in a slot, let a slot
    sample, release it. A subclass makes each slot's sampler (`sampler_for`) and empties a slot's cache (`forget`)."""

    def __init__(self, base: Backend, n_seq: int, n_ctx_seq: int | None):
        if n_seq < 1:
            raise ContextOverflowError(f"--parallel {n_seq} must be at least 1")
        self.n_seq = n_seq
        self.n_ctx_seq = n_ctx_seq or base.n_ctx
        self.slots = [Slot(i) for i in range(n_seq)]
        self.vocab: Vocabulary = SlotVocabulary(base, self.n_ctx_seq)
        self.tokenize = base.tokenize
        self.steps = 0
        """Model evaluations made (one per step, or per prompt evaluated alone)."""

    def sampler_for(self, slot: Slot, generation: Generation) -> TokenSampler:
        raise NotImplementedError

    def forget(self, slot: Slot) -> None:
        raise NotImplementedError

    def start(self, slot: Slot, generation: Generation) -> None:
        """Give `slot` a new generation; its prompt is evaluated in the next steps."""
        slot.generation, slot.began, slot.shifted = generation, False, 0
        take_request(slot)

    def advance(self, slot: Slot) -> Chunk | None:
        """Let a slot whose request was evaluated sample its next token (see Generation.step)."""
        generation = slot.generation
        assert generation is not None and slot.ready
        if not slot.began:
            generation.begin(self.sampler_for(slot, generation), slot.evaluated)
            slot.began = True
        chunk = generation.step()
        take_request(slot)
        return chunk

    def release(self, slot: Slot, *, keep_cache: bool = False) -> None:
        """End the slot's generation (finished or not); its cache is emptied unless `keep_cache`."""
        if slot.generation is not None:
            slot.generation.close()
        slot.generation, slot.pending, slot.todo = None, None, None
        if not keep_cache:
            self.forget(slot)
            slot.cached = []


@dataclass(frozen=True)
class ParallelJob:
    tokens: Sequence[int]
    settings: SamplingSettings
    stops: tuple[str, ...] = ()


def decode_jobs(decoder: SlotDecoder, jobs: Iterable[ParallelJob]) -> Iterator[tuple[int, Completion]]:
    """(index of the job, its completion) for every job, in the order they finish: each free slot takes the
    next job (continuous batching), every slot is released at the end. The slots start from empty caches."""
    queue = list(jobs)
    chunks: dict[int, list[Chunk]] = {}
    next_job = 0
    try:
        while True:
            for slot in decoder.slots:
                if slot.generation is None and next_job < len(queue):
                    job = queue[next_job]
                    decoder.start(slot, Generation(job.tokens, job.settings, vocab=decoder.vocab, stops=job.stops))
                    slot.job, chunks[slot.seq_id] = next_job, []
                    next_job += 1
            if all(slot.generation is None for slot in decoder.slots):
                return
            for slot in decoder.slots:
                if slot.ready:
                    chunk = decoder.advance(slot)
                    if chunk is not None:
                        chunks[slot.seq_id].append(chunk)
            for slot in decoder.slots:
                if slot.done:
                    index, completion = slot.job, collect(chunks[slot.seq_id])
                    decoder.release(slot)
                    yield index, completion
            decoder.step()
    finally:
        for slot in decoder.slots:
            decoder.release(slot)


class SerialDecoder:
    """One slot over any backend (ONNX Runtime, a scripted test model): one sequence at a time."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.slots = [Slot(0)]
        self.vocab: Vocabulary = backend
        self.n_ctx_seq = backend.n_ctx
        self.tokenize = backend.tokenize
        self.steps = 0

    def start(self, slot: Slot, generation: Generation) -> None:
        slot.generation, slot.began, slot.shifted = generation, False, 0
        slot.pending = generation.prompt

    def advance(self, slot: Slot) -> Chunk | None:
        generation = slot.generation
        assert generation is not None and slot.ready
        if not slot.began:
            sampler = self.backend.sampler(generation.settings, seed=generation.seed, history=generation.prompt)
            generation.begin(sampler, slot.evaluated)
            slot.began = True
        chunk = generation.step()
        request = generation.request
        if request is not None:
            slot.pending = [*slot.cached, request.token] if isinstance(request, Append) else request.tokens
        return chunk

    def release(self, slot: Slot, *, keep_cache: bool = False) -> None:
        if slot.generation is not None:
            slot.generation.close()
        slot.generation, slot.pending = None, None
        if not keep_cache:
            self.backend.reset()
            slot.cached = []

    def step(self) -> None:
        slot = self.slots[0]
        if slot.generation is None or slot.pending is None:
            return
        request = slot.generation.request
        if isinstance(request, Append):
            self.backend.append(request.token)
        else:
            slot.evaluated = self.backend.prefill(slot.pending)
            if not slot.began:
                slot.shifted = getattr(self.backend, "last_shift", 0)
        slot.cached = list(self.backend.cached_tokens)
        slot.pending = None
        self.steps += 1

    def close(self) -> None:
        slot = self.slots[0]
        if slot.generation is not None:
            slot.generation.close()
            slot.generation = None


class Ticket:
    """One request in the engine. Its events go to `sink` (from the engine's thread), or to a queue read by iterating."""

    def __init__(self, generation: Generation, sink: Callable[[Event], None] | None = None):
        self.generation = generation
        self._queue: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._sink = sink or self._queue.put
        self._cancelled = threading.Event()
        self.text: list[str] = []
        """The text so far (for a client that asks what was written before the end)."""
        self.finished = False
        self.shifted = 0
        """Cached tokens dropped by context shifting to take this request's prompt."""

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop this request; its slot is free before the next step."""
        self._cancelled.set()

    def put(self, event: Event) -> None:
        if isinstance(event, Chunk):
            self.text.append(event.text)
            self.finished = event.finish_reason is not None
        elif event is None or isinstance(event, BaseException):
            self.finished = True
        self._sink(event)

    def __iter__(self) -> Iterator[Chunk]:
        """The chunks as they come (blocking); an error is raised; a cancelled request just ends."""
        while True:
            event = self._queue.get()
            if event is None:
                return
            if isinstance(event, BaseException):
                raise event
            yield event
            if event.finish_reason is not None:
                return


class SlotEngine:
    """The loop over a decoder's slots; `start()` runs it in a thread, `submit()` may be called from any thread."""

    def __init__(self, decoder: SlotDecoder):
        self.decoder = decoder
        self._waiting: deque[Ticket] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._uses = 0
        self.served = 0
        """Requests that ran to their end."""

    @property
    def n_ctx(self) -> int:
        return self.decoder.n_ctx_seq

    @property
    def n_slots(self) -> int:
        return len(self.decoder.slots)

    def submit(
        self,
        tokens: Sequence[int],
        settings: SamplingSettings,
        *,
        stops: Sequence[str] = (),
        sink: Callable[[Event], None] | None = None,
    ) -> Ticket:
        """Queue a generation after `tokens`; a prompt the context cannot hold raises ContextOverflowError here."""
        ticket = Ticket(Generation(tokens, settings, vocab=self.decoder.vocab, stops=stops), sink)
        with self._cond:
            self._waiting.append(ticket)
            self._cond.notify_all()
        return ticket

    def busy(self) -> int:
        """Requests running or waiting."""
        return len(self._waiting) + sum(slot.ticket is not None for slot in self.decoder.slots)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="talesmith-slots")
        self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        for ticket in self._waiting:
            ticket.put(None)
        self._waiting.clear()
        for slot in self.decoder.slots:
            if slot.ticket is not None:
                slot.ticket.put(None)
                slot.ticket = None
        self.decoder.close()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._waiting and self.busy() == 0:
                    self._cond.wait()
                if self._stopping:
                    return
            self.run_once()

    def _place(self, ticket: Ticket) -> bool:
        free = [slot for slot in self.decoder.slots if slot.generation is None]
        if not free:
            return False
        prompt = ticket.generation.prompt
        slot = max(free, key=lambda s: (common_prefix(s.cached, prompt), -s.last_used))
        self._uses += 1
        slot.ticket, slot.last_used = ticket, self._uses
        self.decoder.start(slot, ticket.generation)
        return True

    def _end(self, slot: Slot, event: Event, *, keep_cache: bool = True) -> None:
        ticket = slot.ticket
        slot.ticket = None
        if ticket is not None:
            ticket.shifted = slot.shifted
        self.decoder.release(slot, keep_cache=keep_cache)
        if ticket is not None:
            ticket.put(event)

    def run_once(self) -> None:
        """Free cancelled slots, place waiting requests, let every ready slot sample, then one decoder step."""
        for slot in self.decoder.slots:
            if slot.ticket is not None and slot.ticket.cancelled:
                self._end(slot, None)
        with self._cond:
            while self._waiting and self._waiting[0].cancelled:
                self._waiting.popleft().put(None)
            while self._waiting and self._place(self._waiting[0]):
                self._waiting.popleft()
                while self._waiting and self._waiting[0].cancelled:
                    self._waiting.popleft().put(None)
        try:
            for slot in self.decoder.slots:
                if slot.ready and slot.ticket is not None:
                    chunk = self.decoder.advance(slot)
                    if chunk is not None:
                        if slot.done:
                            self.served += 1
                            self._end(slot, chunk)
                        else:
                            slot.ticket.put(chunk)
            self.decoder.step()
        except Exception as e:  # a failed step ends every request in it; the engine keeps serving
            for slot in self.decoder.slots:
                if slot.ticket is not None:
                    self._end(slot, e, keep_cache=False)
