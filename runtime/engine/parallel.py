"""Parallel sequences in one llama.cpp context: one `llama_decode` per step for all of them.

Each sequence runs the ordinary generation loop (`generate.stream`: its own sampler chain, stop
strings, banned-phrase rewinds, UTF-8 stream and token limit) in a thread of its own, against a
`SequenceBackend` that looks like a whole backend to it. Evaluating is what the sequences share: a
sequence that asks to evaluate tokens waits; once every running sequence is waiting or done, the
decoder puts all their tokens into one batch, each under its own sequence id, decodes it once and
lets them sample from their own rows of the logits. A finished sequence frees its slot for the next
job (continuous batching). A prompt already in the cache of another sequence is copied from it
(`llama_memory_seq_cp`) instead of being evaluated again.

Every change to the cache happens at those barriers, in slot order, so a run is a deterministic
function of its jobs: the same jobs in the same order always give the same text. (Which other
sequences share a batch changes the floating-point rounding, so a job's text may differ from the
one it gets alone or in another group of jobs; callers that must reproduce a record group jobs the
same way every time.)
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import llama_cpp

from talesmith.runtime.engine.generate import Completion, collect, stream
from talesmith.runtime.engine.llama import LlamaCppBackend, LlamaSampler
from talesmith.runtime.engine.protocol import common_prefix
from talesmith.runtime.errors import ContextOverflowError, ModelError
from talesmith.runtime.settings import SamplingSettings

MIN_SHARED = 16
"""A cached prefix is copied from another sequence when it covers the whole prompt or at least this many tokens."""
MAX_BATCH = 2048
"""Tokens evaluated in one step at most; a longer prompt is evaluated over several steps."""


@dataclass(frozen=True)
class ParallelJob:
    tokens: Sequence[int]
    settings: SamplingSettings
    stops: tuple[str, ...] = ()


class _Cancelled(BaseException):
    """Raised inside a sequence's thread when the decoder stops early."""


@dataclass
class _Slot:
    seq_id: int
    backend: SequenceBackend | None = None
    job_index: int = -1
    thread: threading.Thread | None = None
    result: Completion | None = None
    error: BaseException | None = None
    finished: bool = False
    pending: list[int] = field(default_factory=list)
    """The tokens the sequence asks its cache to hold, with logits for the last one."""
    waiting: bool = False
    fresh: bool = False
    """The request is the first prefill of a new job (its cache is empty)."""
    todo: list[int] | None = None
    """Planned: the tokens still to evaluate for the request (None: not planned yet)."""
    evaluated: int = 0


class _ContextView:
    """What a LlamaSampler reads from its backend, for the decoder's own context."""

    def __init__(self, base: LlamaCppBackend, ctx: Any, n_ctx: int):
        self.ctx = ctx
        self.n_ctx = n_ctx
        self.n_vocab = base.n_vocab
        self.vocab = base.vocab


class _RowSampler:
    """A sampler chain that reads its sequence's row of the last batch's logits."""

    def __init__(self, inner: LlamaSampler, owner: SequenceBackend):
        self._inner = inner
        self._owner = owner

    def sample(self, banned: Collection[int] = ()) -> int:
        self._inner.index = self._owner.logits_row
        return self._inner.sample(banned)

    def reset(self, history: Sequence[int]) -> None:
        self._inner.reset(history)

    def close(self) -> None:
        self._inner.close()


class SequenceBackend:
    """One sequence of a ParallelDecoder, seen by the generation loop as a whole backend."""

    def __init__(self, decoder: ParallelDecoder, slot: _Slot):
        base = decoder.base
        self._decoder = decoder
        self._slot = slot
        self.name = base.name
        self.model_path = base.model_path
        self.n_ctx = decoder.n_ctx_seq
        self.eog_tokens = base.eog_tokens
        self.is_eog = base.is_eog
        self.token_bytes = base.token_bytes
        self.tokenize = base.tokenize
        self.cached: list[int] = []
        self.logits_row: int = -1

    @property
    def cached_tokens(self) -> Sequence[int]:
        return tuple(self.cached)

    def prefill(self, tokens: Sequence[int]) -> int:
        return self._decoder.wait_for(self._slot, list(tokens))

    def append(self, token: int) -> None:
        self._decoder.wait_for(self._slot, self.cached + [token])

    def reset(self) -> None:
        raise NotImplementedError("a parallel sequence starts empty and is never reset")

    def sampler(self, settings: SamplingSettings, *, seed: int, history: Sequence[int]) -> _RowSampler:
        view = _ContextView(self._decoder.base, self._decoder.ctx, self.n_ctx)
        return _RowSampler(LlamaSampler(view, settings, seed, history), self)  # type: ignore[arg-type]

    def close(self) -> None:
        pass


class ParallelDecoder:
    """Up to `n_seq` generations at once over a LlamaCppBackend's model, in a context of its own."""

    def __init__(self, base: LlamaCppBackend, n_seq: int, *, n_ctx_seq: int | None = None):
        if n_seq < 1:
            raise ContextOverflowError(f"--parallel {n_seq} must be at least 1")
        self.base = base
        self.n_seq = n_seq
        self.n_ctx_seq = n_ctx_seq or base.n_ctx
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
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, n_seq)
        self._cond = threading.Condition()
        self._cancelled = False
        self.steps = 0
        """llama_decode calls made (one per step)."""

    # --- called from a sequence's thread --------------------------------------------------------

    def wait_for(self, slot: _Slot, tokens: list[int]) -> int:
        """Ask for the sequence's cache to hold `tokens` (logits for the last) and wait; returns how many were evaluated."""
        with self._cond:
            slot.pending = tokens
            slot.fresh = not slot.backend.cached  # type: ignore[union-attr]
            slot.todo = None
            slot.waiting = True
            self._cond.notify_all()
            while slot.waiting and not self._cancelled:
                self._cond.wait()
            if self._cancelled:
                raise _Cancelled()
            return slot.evaluated

    def _run_slot(self, slot: _Slot, job: ParallelJob) -> None:
        try:
            result = collect(stream(slot.backend, job.tokens, job.settings, stops=job.stops))  # type: ignore[arg-type]
        except _Cancelled:
            result = None
        except BaseException as e:  # handed to the caller's thread
            slot.error = e
            result = None
        with self._cond:
            slot.result = result
            slot.finished = True
            self._cond.notify_all()

    # --- the coordinator ------------------------------------------------------------------------

    def generate(self, jobs: Iterable[ParallelJob]) -> Iterator[tuple[int, Completion]]:
        """(index of the job, its completion) for every job, in the order they finish."""
        queue = list(jobs)
        slots = [_Slot(i) for i in range(self.n_seq)]
        llama_cpp.llama_memory_clear(self._memory, True)
        self._cancelled = False
        next_job = 0
        try:
            while True:
                for slot in slots:
                    if slot.backend is None and next_job < len(queue):
                        self._start(slot, next_job, queue[next_job])
                        next_job += 1
                if all(slot.backend is None for slot in slots):
                    return
                self._barrier(slots)
                for slot in slots:
                    if slot.backend is not None and slot.finished:
                        yield from self._finish(slot)
                self._step(slots)
        finally:
            self._stop(slots)

    def _start(self, slot: _Slot, index: int, job: ParallelJob) -> None:
        slot.backend = SequenceBackend(self, slot)
        slot.job_index, slot.result, slot.error, slot.finished, slot.waiting = index, None, None, False, False
        slot.thread = threading.Thread(
            target=self._run_slot, args=(slot, job), daemon=True, name=f"talesmith-seq-{slot.seq_id}"
        )
        slot.thread.start()

    def _barrier(self, slots: list[_Slot]) -> None:
        with self._cond:
            while not all(s.backend is None or s.waiting or s.finished for s in slots):
                self._cond.wait()

    def _finish(self, slot: _Slot) -> Iterator[tuple[int, Completion]]:
        slot.thread.join()  # type: ignore[union-attr]
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        index, result, error = slot.job_index, slot.result, slot.error
        slot.backend, slot.thread = None, None
        if error is not None:
            raise error
        assert result is not None
        yield index, result

    def _donor(self, slot: _Slot, tokens: list[int], slots: list[_Slot]) -> tuple[_Slot | None, int]:
        """The sequence whose cache shares the longest prefix with `tokens`, and how long it is."""
        best, best_n = None, 0
        for other in slots:
            if other is slot or other.backend is None:
                continue
            n = min(common_prefix(other.backend.cached, tokens), len(tokens) - 1)
            if n > best_n:
                best, best_n = other, n
        if best_n < min(MIN_SHARED, len(tokens) - 1):
            return None, 0
        return best, best_n

    def _defer(self, slot: _Slot, planned: list[_Slot]) -> bool:
        """A new prompt that another new sequence evaluates in this step waits one step to copy it."""
        return slot.fresh and any(
            o.fresh and common_prefix(o.pending, slot.pending) >= min(MIN_SHARED, len(slot.pending) - 1)
            for o in planned
        )

    def _plan(self, slot: _Slot, slots: list[_Slot]) -> None:
        """Make the sequence's cache a prefix of its request, copying a shared prompt where there is one."""
        seq = slot.backend
        assert seq is not None
        tokens = slot.pending
        if slot.fresh:
            donor, n = self._donor(slot, tokens, slots)
            if donor is not None:
                llama_cpp.llama_memory_seq_cp(self._memory, donor.seq_id, slot.seq_id, 0, n)
                seq.cached = list(tokens[:n])
        common = min(common_prefix(seq.cached, tokens), len(tokens) - 1)
        if common < len(seq.cached):
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, common, -1)
            del seq.cached[common:]
        slot.todo = list(tokens[common:])
        slot.evaluated = len(slot.todo)

    def _step(self, slots: list[_Slot]) -> None:
        """One llama_decode for every waiting sequence (as many tokens as fit), in slot order."""
        planned: list[_Slot] = []
        budget = self.n_batch
        rows: list[tuple[_Slot, int]] = []
        n = 0
        for slot in slots:
            if slot.backend is None or not slot.waiting:
                continue
            if slot.todo is None:
                if self._defer(slot, planned):
                    continue
                self._plan(slot, slots)
                planned.append(slot)
            assert slot.todo is not None
            take = slot.todo[:budget]
            if not take:
                continue
            base = len(slot.backend.cached)
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
        with self._cond:
            for slot, taken in rows:
                assert slot.backend is not None and slot.todo is not None
                slot.backend.cached.extend(slot.todo[:taken])
                row += taken
                if taken == len(slot.todo):
                    slot.backend.logits_row = row - 1
                    slot.todo, slot.pending, slot.waiting, slot.fresh = None, [], False, False
                else:
                    slot.todo = slot.todo[taken:]
            self._cond.notify_all()

    def _put(self, i: int, token: int, pos: int, seq_id: int, *, last: bool) -> None:
        b = self._batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq_id
        b.logits[i] = last

    def _stop(self, slots: list[_Slot]) -> None:
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()
        for slot in slots:
            if slot.thread is not None:
                slot.thread.join()
            slot.backend, slot.thread = None, None

    def close(self) -> None:
        if self.ctx:
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self.ctx)
            self.ctx = None
