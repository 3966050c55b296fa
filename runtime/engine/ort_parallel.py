"""Parallel sequences on ONNX Runtime: N generations over one session and one preallocated KV cache.

The ONNX counterpart of parallel.py, driven the same way (slots.SlotDecoder: `start`, `advance`,
`release`, `step`; `generate` for a list of jobs, as batch and `generate -n` use it; a SlotEngine for
the server). Each slot is one row of a RowCache (ort_session.py): its own length, so its own
attention mask, and rewinds (banned phrases, a shorter prompt) that only lower that row's length.

A step first evaluates, row by row in slot order, the prompts (and rewound tails) that asked for more
than one token, each exactly as it would be alone; a new prompt that another slot's cache already
holds is copied from that row first. Then one run decodes the single next token of every other
waiting row together. A finished slot takes the next job (continuous batching). Every change happens
in slot order, so the same jobs in the same order always give the same text; a row's numbers differ
from the same prompt alone only by the rounding of a batched matrix product.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from talesmith.runtime.engine.generate import Append, Chunk, Completion, Generation, Vocabulary
from talesmith.runtime.engine.ort import OnnxBackend, OnnxSampler, SessionEngine
from talesmith.runtime.engine.ort_session import RowCache
from talesmith.runtime.engine.protocol import common_prefix
from talesmith.runtime.engine.slots import ParallelJob, Slot, decode_jobs
from talesmith.runtime.errors import ContextOverflowError

MIN_SHARED = 16
"""A cached prefix is copied from another row when it covers the whole prompt or at least this many tokens."""


class _SlotVocabulary:
    """The model's vocabulary with one slot's context size, as a Generation sees it."""

    def __init__(self, base: OnnxBackend, n_ctx: int):
        self.n_ctx = n_ctx
        self.eog_tokens = base.eog_tokens
        self.is_eog = base.is_eog
        self.token_bytes = base.token_bytes


class OnnxParallelDecoder:
    """Up to `n_seq` generations at once over an OnnxBackend's model, sharing its session."""

    def __init__(self, base: OnnxBackend, n_seq: int, *, n_ctx_seq: int | None = None):
        if n_seq < 1:
            raise ContextOverflowError(f"--parallel {n_seq} must be at least 1")
        self.base = base
        self.n_seq = n_seq
        self.n_ctx_seq = n_ctx_seq or base.n_ctx
        engine = base.engine
        shared = engine.cache.session if isinstance(engine, SessionEngine) else None
        self.cache = RowCache(
            base.folder,
            rows=n_seq,
            positions=self.n_ctx_seq,
            device=base.device,
            threads=base.threads,
            session=shared,
        )
        self.slots = [Slot(i) for i in range(n_seq)]
        self.vocab: Vocabulary = _SlotVocabulary(base, self.n_ctx_seq)
        self.tokenize = base.tokenize
        self.steps = 0
        """Session runs made."""

    # --- one slot ------------------------------------------------------------------------------

    def start(self, slot: Slot, generation: Generation) -> None:
        """Give `slot` a new generation; its prompt is evaluated in the next step."""
        slot.generation, slot.began, slot.shifted = generation, False, 0
        self._request(slot)

    def advance(self, slot: Slot) -> Chunk | None:
        """Let a slot whose request was evaluated sample its next token (see Generation.step)."""
        generation = slot.generation
        assert generation is not None and slot.ready
        if not slot.began:
            row = slot.seq_id
            sampler = OnnxSampler(
                self.base,
                generation.settings,
                generation.seed,
                generation.prompt,
                logits=lambda: self.cache.logits[row, 0],
                n_ctx=self.n_ctx_seq,
            )
            generation.begin(sampler, slot.evaluated)
            slot.began = True
        chunk = generation.step()
        self._request(slot)
        return chunk

    def release(self, slot: Slot, *, keep_cache: bool = False) -> None:
        """End the slot's generation (finished or not); its cache is emptied unless `keep_cache`."""
        if slot.generation is not None:
            slot.generation.close()
        slot.generation, slot.pending, slot.todo = None, None, None
        if not keep_cache:
            self.cache.truncate(slot.seq_id, 0)
            slot.cached = []

    def _request(self, slot: Slot) -> None:
        request = slot.generation.request if slot.generation is not None else None
        slot.todo = None
        if request is None:
            slot.pending = None
        elif isinstance(request, Append):
            slot.pending, slot.fresh = slot.cached + [request.token], False
        else:
            slot.pending, slot.fresh = list(request.tokens), not slot.began

    # --- a batch of jobs -----------------------------------------------------------------------

    def generate(self, jobs: Iterable[ParallelJob]) -> Iterator[tuple[int, Completion]]:
        """(index of the job, its completion) for every job, in the order they finish."""
        for slot in self.slots:
            self.cache.truncate(slot.seq_id, 0)
            slot.cached = []
        yield from decode_jobs(self, jobs)

    # --- the shared step -----------------------------------------------------------------------

    def _donor(self, slot: Slot, tokens: list[int]) -> tuple[Slot | None, int]:
        """The slot whose cache shares the longest prefix with `tokens`, and how long it is."""
        best, best_n = None, 0
        for other in self.slots:
            if other is slot or not other.cached:
                continue
            n = min(common_prefix(other.cached, tokens), len(tokens) - 1)
            if n > best_n:
                best, best_n = other, n
        if best_n < min(MIN_SHARED, len(tokens) - 1):
            return None, 0
        return best, best_n

    def _plan(self, slot: Slot) -> list[int]:
        """Cut the slot's cache back to a prefix of its request (copying a longer one from another row first);
        the tokens left to evaluate."""
        tokens = slot.pending
        assert tokens is not None
        own = min(common_prefix(slot.cached, tokens), len(tokens) - 1)
        if slot.fresh and self.cache.can_copy:
            donor, n = self._donor(slot, tokens)
            if donor is not None and n > own:
                self.cache.copy(donor.seq_id, slot.seq_id, n)
                slot.cached, own = list(tokens[:n]), n
        self.cache.truncate(slot.seq_id, own)
        del slot.cached[own:]
        return list(tokens[own:])

    def step(self) -> None:
        """Evaluate what every waiting slot asked for: longer requests row by row, then one run for the single tokens."""
        singles: dict[int, int] = {}
        for slot in self.slots:
            if slot.generation is None or slot.pending is None:
                continue
            todo = self._plan(slot)
            slot.evaluated = len(todo) if slot.fresh else slot.evaluated
            if len(todo) == 1:
                singles[slot.seq_id] = todo[0]
                continue
            self.cache.prefill(slot.seq_id, todo)
            self.steps += 1
            self._done(slot, todo)
        if singles:
            self.cache.decode(singles)
            self.steps += 1
            for row in singles:
                self._done(self.slots[row], [singles[row]])

    def _done(self, slot: Slot, evaluated: list[int]) -> None:
        slot.cached.extend(evaluated)
        slot.pending, slot.fresh = None, False

    def close(self) -> None:
        for slot in self.slots:
            if slot.generation is not None:
                slot.generation.close()
                slot.generation = None
        self.cache.close()
