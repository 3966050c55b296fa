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

from talesmith.runtime.engine.generate import Completion, Generation
from talesmith.runtime.engine.ort import OnnxBackend, OnnxSampler, SessionEngine
from talesmith.runtime.engine.ort_session import RowCache
from talesmith.runtime.engine.protocol import TokenSampler, common_prefix
from talesmith.runtime.engine.slots import (
    ParallelJob,
    Slot,
    SlotSteps,
    decode_jobs,
    donor,
)


class OnnxParallelDecoder(SlotSteps):
    """Up to `n_seq` generations at once over an OnnxBackend's model, sharing its session."""

    def __init__(self, base: OnnxBackend, n_seq: int, *, n_ctx_seq: int | None = None):
        super().__init__(base, n_seq, n_ctx_seq)
        self.base = base
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

    # --- one slot ------------------------------------------------------------------------------

    def sampler_for(self, slot: Slot, generation: Generation) -> TokenSampler:
        row = slot.seq_id
        return OnnxSampler(
            self.base,
            generation.settings,
            generation.seed,
            generation.prompt,
            logits=lambda: self.cache.logits[row, 0],
            n_ctx=self.n_ctx_seq,
        )

    def forget(self, slot: Slot) -> None:
        self.cache.truncate(slot.seq_id, 0)

    # --- a batch of jobs -----------------------------------------------------------------------

    def generate(self, jobs: Iterable[ParallelJob]) -> Iterator[tuple[int, Completion]]:
        """(index of the job, its completion) for every job, in the order they finish."""
        for slot in self.slots:
            self.cache.truncate(slot.seq_id, 0)
            slot.cached = []
        yield from decode_jobs(self, jobs)

    # --- the shared step -----------------------------------------------------------------------

    def _plan(self, slot: Slot) -> list[int]:
        """Cut the slot's cache back to a prefix of its request (copying a longer one from another row first);
        the tokens left to evaluate."""
        tokens = slot.pending
        assert tokens is not None
        own = min(common_prefix(slot.cached, tokens), len(tokens) - 1)
        if slot.fresh and self.cache.can_copy:
            source, n = donor(self.slots, slot, tokens)
            if source is not None and n > own:
                self.cache.copy(source.seq_id, slot.seq_id, n)
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
