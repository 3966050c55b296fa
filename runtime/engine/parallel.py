"""Parallel sequences in one llama.cpp context: one `llama_decode` per step for all of them.

Each sequence is a `Generation` (generate.py: its own sampler chain, stop strings, banned-phrase
rewinds, UTF-8 stream and token limit) in a slot of its own, under its own sequence id. One loop
drives them all, without threads: every sequence whose last request was evaluated samples one
token and asks for the next evaluation; then the decoder puts all their tokens into one batch,
decodes it once and each samples from its own row of the logits. A finished sequence frees its
slot for the next job (continuous batching). A prompt already in the cache of another sequence is
copied from it (`llama_memory_seq_cp`) instead of being evaluated again.

Every change to the cache happens in slot order, so a run is a deterministic function of its jobs:
the same jobs in the same order always give the same text. (Which other sequences share a batch
changes the floating-point rounding, so a job's text may differ from the one it gets alone or in
another group of jobs; callers that must reproduce a record group jobs the same way every time.)

The server's slots (slots.py) drive the same decoder, keeping each slot's cache between requests:
a new request reuses the longest cached prefix, or a cached run after a dropped range (context
shifting), or another slot's prefix.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any

import llama_cpp

from talesmith.runtime.engine.generate import Completion, Generation
from talesmith.runtime.engine.llama import LlamaCppBackend, LlamaSampler
from talesmith.runtime.engine.protocol import TokenSampler, common_prefix, shift_plan
from talesmith.runtime.engine.slots import MIN_SHARED, ParallelJob, Slot, SlotSteps, decode_jobs, donor
from talesmith.runtime.errors import ContextOverflowError, ModelError

MAX_BATCH = 2048
"""Tokens evaluated in one step at most; a longer prompt is evaluated over several steps."""


class _ContextView:
    """What a LlamaSampler reads from its backend, for the decoder's own context."""

    def __init__(self, base: LlamaCppBackend, ctx: Any, n_ctx: int):
        self.ctx = ctx
        self.n_ctx = n_ctx
        self.n_vocab = base.n_vocab
        self.vocab = base.vocab


class _RowSampler:
    """A sampler chain that reads its slot's row of the last batch's logits."""

    def __init__(self, inner: LlamaSampler, slot: Slot):
        self._inner = inner
        self._slot = slot

    def sample(self, banned: Collection[int] = ()) -> int:
        self._inner.index = self._slot.logits_row
        return self._inner.sample(banned)

    def reset(self, history: Sequence[int]) -> None:
        self._inner.reset(history)

    def close(self) -> None:
        self._inner.close()


class ParallelDecoder(SlotSteps):
    """Up to `n_seq` generations at once over a LlamaCppBackend's model, in a context of its own."""

    def __init__(self, base: LlamaCppBackend, n_seq: int, *, n_ctx_seq: int | None = None):
        super().__init__(base, n_seq, n_ctx_seq)
        self.base = base
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.n_ctx_seq * n_seq
        params.n_batch = params.n_ubatch = min(MAX_BATCH, params.n_ctx)
        params.n_seq_max = n_seq
        params.swa_full = True  # a copied prompt keeps every cell its window needs
        params.kv_unified = True  # one cache for all sequences, so a prompt copies between them in part
        threads = llama_cpp.llama_n_threads(base.ctx)
        params.n_threads = params.n_threads_batch = threads
        self.ctx = llama_cpp.llama_init_from_model(llama_cpp.llama_get_model(base.ctx), params)
        if not self.ctx:
            raise ModelError(
                f"llama.cpp could not make a context for {n_seq} sequences of {self.n_ctx_seq} tokens; "
                f"lower --parallel or --ctx"
            )
        self.n_batch = llama_cpp.llama_n_batch(self.ctx)
        self._memory = llama_cpp.llama_get_memory(self.ctx)
        self._can_shift = bool(llama_cpp.llama_memory_can_shift(self._memory))
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, n_seq)

    # --- one slot ------------------------------------------------------------------------------

    def sampler_for(self, slot: Slot, generation: Generation) -> TokenSampler:
        view = _ContextView(self.base, self.ctx, self.n_ctx_seq)
        inner = LlamaSampler(view, generation.settings, generation.seed, generation.prompt)  # type: ignore[arg-type]
        return _RowSampler(inner, slot)

    def forget(self, slot: Slot) -> None:
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)

    # --- a batch of jobs -----------------------------------------------------------------------

    def generate(self, jobs: Iterable[ParallelJob]) -> Iterator[tuple[int, Completion]]:
        """(index of the job, its completion) for every job, in the order they finish."""
        llama_cpp.llama_memory_clear(self._memory, True)
        for slot in self.slots:
            slot.cached = []
        yield from decode_jobs(self, jobs)

    # --- the shared step -----------------------------------------------------------------------

    def _defer(self, slot: Slot, planned: list[Slot]) -> bool:
        """A new prompt that another new sequence evaluates in this step waits one step to copy it."""
        if not slot.fresh:
            return False
        assert slot.pending is not None
        own = common_prefix(slot.cached, slot.pending)
        for other in planned:
            if not other.fresh:
                continue
            assert other.pending is not None
            shared = common_prefix(other.pending, slot.pending)
            if shared >= min(MIN_SHARED, len(slot.pending) - 1) and (own == 0 or shared > own):
                return True
        return False

    def _plan(self, slot: Slot) -> None:
        """Make the slot's cache a prefix of its request: copy a shared prompt, or shift, or cut it back."""
        tokens = slot.pending
        assert tokens is not None
        if not slot.fresh and len(tokens) == len(slot.cached) + 1 and tokens[:-1] == slot.cached:
            # the usual step: the token just sampled after what the cache holds (no walk over the cache)
            slot.todo, slot.evaluated = tokens[-1:], 1
            return
        if slot.fresh:
            own = min(common_prefix(slot.cached, tokens), len(tokens) - 1)
            donor_slot, n = donor(self.slots, slot, tokens)
            if donor_slot is not None and n > own:
                if slot.cached:
                    llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
                llama_cpp.llama_memory_seq_cp(self._memory, donor_slot.seq_id, slot.seq_id, 0, n)
                slot.cached = list(tokens[:n])
            elif self._can_shift:
                self._shift(slot, tokens, own)
        common = min(common_prefix(slot.cached, tokens), len(tokens) - 1)
        if common < len(slot.cached):
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, common, -1)
            del slot.cached[common:]
        slot.todo = list(tokens[common:])
        slot.evaluated = len(slot.todo)

    def _shift(self, slot: Slot, tokens: list[int], common: int) -> None:
        """Drop a cached range the new prompt left out and slide what follows back (context shifting)."""
        plan = shift_plan(slot.cached, tokens, common)
        if plan is None:
            return
        gap, kept = plan
        seq, end = slot.seq_id, common + gap + kept
        llama_cpp.llama_memory_seq_rm(self._memory, seq, end, -1)
        llama_cpp.llama_memory_seq_rm(self._memory, seq, common, common + gap)
        llama_cpp.llama_memory_seq_add(self._memory, seq, common + gap, -1, -gap)
        slot.cached = slot.cached[:common] + slot.cached[common + gap : end]
        slot.shifted = gap

    def step(self) -> None:
        """One llama_decode for every waiting slot (as many tokens as fit), in slot order."""
        planned: list[Slot] = []
        budget = self.n_batch
        rows: list[tuple[Slot, int]] = []
        n = 0
        for slot in self.slots:
            if slot.generation is None or slot.pending is None:
                continue
            if slot.todo is None:
                if self._defer(slot, planned):
                    continue
                self._plan(slot)
                planned.append(slot)
            assert slot.todo is not None
            take = slot.todo[:budget]
            if not take:
                continue
            base = len(slot.cached)
            for i, token in enumerate(take):
                self._put(n, token, base + i, slot.seq_id, last=(i == len(slot.todo) - 1))
                n += 1
            budget -= len(take)
            rows.append((slot, len(take)))
        if n == 0:
            return
        self._batch.n_tokens = n
        rc = llama_cpp.llama_decode(self.ctx, self._batch)
        self.steps += 1
        if rc != 0:
            raise ContextOverflowError(
                f"llama.cpp could not evaluate {n} tokens of {len(rows)} sequences (code {rc}); "
                f"lower --parallel or raise --ctx"
            )
        row = 0
        for slot, taken in rows:
            assert slot.todo is not None
            slot.cached.extend(slot.todo[:taken])
            row += taken
            if taken == len(slot.todo):
                slot.logits_row = row - 1
                slot.todo, slot.pending, slot.fresh = None, None, False
            else:
                slot.todo = slot.todo[taken:]

    def _put(self, i: int, token: int, pos: int, seq_id: int, *, last: bool) -> None:
        b = self._batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq_id
        b.logits[i] = last

    def close(self) -> None:
        if self.ctx:
            for slot in self.slots:
                if slot.generation is not None:
                    slot.generation.close()
                    slot.generation = None
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self.ctx)
            self.ctx = None
