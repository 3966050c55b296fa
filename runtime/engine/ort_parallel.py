"""Parallel sequences on ONNX Runtime: N generations over one session and one preallocated KV cache.

The ONNX counterpart of parallel.py, driven the same way (slots.SlotDecoder: `start`, `advance`,
`release`, `step`; `generate` for a list of jobs, as batch and `generate -n` use it; a SlotEngine for
the server). Each slot is one row of a RowCache (ort_session.py): its own length, so its own
attention mask, and rewinds (banned phrases, a shorter prompt) that only lower that row's length.

A step first evaluates the prompts (and rewound tails) that asked for more than one token, in slot order:
the short prompts (SHORT tokens at most) of neighbouring empty rows in one run, right-padded to the
longest, while the padding (and the empty rows between them that wait for one token or none) stays under
a quarter of the run (ONNX Runtime's GroupQueryAttention takes several tokens of several rows at once
only as their first); any other request is evaluated alone, as cheaply per token on the CPU. A row whose request is shorter than its run's longest leaves its last token to the
step's single-token run, where its logits come from. A new prompt that another slot's cache already
holds is copied from that row first (a run in the making is evaluated before a prompt that could take
its tokens is planned). Then one run decodes the single next token of every other waiting row
together. A finished slot takes the next job (continuous batching). Every change happens in slot order
and depends only on the slots' requests, so the same jobs in the same order always give the same text;
a row's numbers differ from the same prompt alone only by the rounding of batched matrix products.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from talesmith.runtime.engine.generate import Completion, Generation
from talesmith.runtime.engine.ort import OnnxBackend, OnnxSampler, SessionEngine
from talesmith.runtime.engine.ort_session import RowCache
from talesmith.runtime.engine.protocol import TokenSampler, common_prefix
from talesmith.runtime.engine.slots import MIN_SHARED, ParallelJob, Slot, SlotSteps, decode_jobs, donor

SHORT = 16
"""The longest request a run of several rows' prompts takes. Shorter prompts alone leave ONNX Runtime reading the
weights for few tokens, and a run of 8 or 16 rows of 8 tokens costs 1.3x to 1.4x less CPU time than those prompts
alone; from about 24 tokens on, a prompt alone costs as little per token, or less, when other work shares the cores."""

PADDING = 0.25
"""The most of a prompt run that padding and idle rows may take (the CPU's cost grows with every position)."""


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
            spin=base.spin,
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
        if not slot.fresh and len(tokens) == len(slot.cached) + 1 and tokens[:-1] == slot.cached:
            return tokens[-1:]  # the usual step: the token just sampled after what the cache holds
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
        """Evaluate what every waiting slot asked for: longer requests in runs of neighbouring rows (or alone),
        then one run for the single tokens."""
        singles: dict[int, int] = {}
        group: list[tuple[Slot, list[int]]] = []
        for slot in self.slots:
            if slot.generation is None or slot.pending is None:
                continue
            if group and self._shares(group, slot):
                self._prefill(group, singles)  # its prompt is copied from a row of the run, once evaluated
                group = []
            todo = self._plan(slot)
            slot.evaluated = len(todo) if slot.fresh else slot.evaluated
            if len(todo) == 1:
                singles[slot.seq_id] = todo[0]
                continue
            if group and not self._joins(group, slot, todo):
                self._prefill(group, singles)
                group = []
            group.append((slot, todo))
        if group:
            self._prefill(group, singles)
        if singles:
            self.cache.decode(singles)
            self.steps += 1
            for row in singles:
                self._done(self.slots[row], [singles[row]])

    def _shares(self, group: list[tuple[Slot, list[int]]], slot: Slot) -> bool:
        """Whether a fresh prompt would copy more from a row of the run once the run is evaluated."""
        tokens = slot.pending
        if not slot.fresh or not self.cache.can_copy or tokens is None:
            return False
        for other, _todo in group:
            assert other.pending is not None
            n = min(common_prefix(other.pending, tokens), len(tokens) - 1)
            if n > len(other.cached) and n >= min(MIN_SHARED, len(tokens) - 1):
                return True
        return False

    def _joins(self, group: list[tuple[Slot, list[int]]], slot: Slot, todo: list[int]) -> bool:
        """Whether the slot's request joins the run: every request in it is short, padding and idle rows stay under
        a quarter of it, and every row in its range is empty (GroupQueryAttention takes several rows' tokens at once
        only as their first)."""
        first, last = group[0][0].seq_id, slot.seq_id
        width = max(len(todo), *(len(t) for _, t in group))
        real = len(todo) + sum(len(t) for _, t in group)
        if width > SHORT or (last - first + 1) * width * (1 - PADDING) > real:
            return False
        return not any(self.cache.lengths[first : last + 1])

    def _prefill(self, group: list[tuple[Slot, list[int]]], singles: dict[int, int]) -> None:
        """Evaluate a run of requests: alone when it is one; a shorter row's last token goes to `singles`."""
        self.steps += 1
        if len(group) == 1:
            slot, todo = group[0]
            self.cache.prefill(slot.seq_id, todo)
            self._done(slot, todo)
            return
        width = max(len(t) for _, t in group)
        self.cache.prefill_rows({slot.seq_id: todo if len(todo) == width else todo[:-1] for slot, todo in group})
        for slot, todo in group:
            if len(todo) == width:
                self._done(slot, todo)
            else:
                slot.cached.extend(todo[:-1])
                singles[slot.seq_id] = todo[-1]

    def _done(self, slot: Slot, evaluated: list[int]) -> None:
        slot.cached.extend(evaluated)
        slot.pending, slot.fresh = None, False

    def close(self) -> None:
        for slot in self.slots:
            if slot.generation is not None:
                slot.generation.close()
                slot.generation = None
        self.cache.close()
