"""Between the HTTP routes and the slot engine: prompts to tokens, requests to settings, chunks to asyncio.

The engine runs in a thread of its own; each request's chunks come back to the event loop through an
asyncio queue. A request whose client goes away, or that `/api/extra/abort` names, is cancelled, and
its slot is free before the engine's next step.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from talesmith.cli.serve.requests import RequestError, read_sampling, settings_for
from talesmith.runtime.engine.generate import Chunk
from talesmith.runtime.engine.slots import Event, SlotEngine, Ticket
from talesmith.runtime.settings import SamplingSettings

log = logging.getLogger("talesmith.serve")

FINISH_REASONS = {"eos": "stop", "stop": "stop", "banned": "stop", "length": "length", "context": "length"}
"""talesmith's finish reasons as the OpenAI and Kobold APIs name them."""


@dataclass(frozen=True)
class Reply:
    """One finished sample of a request."""

    text: str
    finish_reason: str
    completion_tokens: int
    evaluated: int
    """Prompt tokens evaluated for it (the rest came from a cache)."""


class Service:
    """One model served: its engine, its defaults, and the requests running on it."""

    def __init__(
        self,
        engine: SlotEngine,
        *,
        model_id: str,
        base: SamplingSettings,
        chat_template: Any = None,
        backend_name: str = "llama.cpp",
        max_n: int = 16,
    ):
        self.engine = engine
        self.model_id = model_id
        self.base = base
        self.chat_template = chat_template
        self.backend_name = backend_name
        self.max_n = max_n
        self._logged: set[str] = set()
        self._by_key: dict[str, list[Ticket]] = {}
        self._running: dict[int, list[Ticket]] = {}
        self._ids = itertools.count()
        self.n_ctx: int = engine.n_ctx
        """Each slot's context, in tokens."""
        self.n_slots: int = engine.n_slots
        decoder = engine.decoder
        start = decoder.tokenize("", add_bos=True, special=True)
        self._bos = start[0] if len(start) == 1 else None

    def running(self) -> int:
        return len(self._running)

    # --- requests to tokens and settings ----------------------------------------------------------

    def tokens(self, prompt: str) -> list[int]:
        """A client's prompt as the model reads it: its special tokens parsed (the client wrote the template's
        markers), the model's start token added unless the prompt already begins with it."""
        tokens = self.engine.decoder.tokenize(prompt, add_bos=True, special=True)
        if self._bos is not None and tokens[:2] == [self._bos, self._bos]:
            del tokens[0]
        if not tokens:
            raise RequestError("the prompt is empty and the model adds no start token; send a prompt", param="prompt")
        return tokens

    def count(self, text: str) -> list[int]:
        return self.engine.decoder.tokenize(text, add_bos=False, special=True)

    def settings(self, tokens: Sequence[int], body: Mapping[str, Any]) -> SamplingSettings:
        """The request's settings; its reply is capped by what the context leaves after its prompt."""
        sampling = read_sampling(body)
        self._note_ignored(sampling.ignored)
        room = self.n_ctx - len(tokens)
        if room < 1:
            raise RequestError(
                f"the prompt is {len(tokens)} tokens but the context holds {self.n_ctx}; shorten it, or set the "
                f"client's context size to at most {self.n_ctx} minus the reply",
                param="prompt",
                code="context_length_exceeded",
            )
        return settings_for(self.base, sampling, room=room)

    def _note_ignored(self, names: Sequence[str]) -> None:
        new = [n for n in names if n not in self._logged]
        if new:
            self._logged.update(new)
            log.warning("ignored (talesmith has no such sampler): %s", ", ".join(new))

    # --- running -------------------------------------------------------------------------------------

    async def run(
        self,
        tokens: Sequence[int],
        settings: SamplingSettings,
        *,
        n: int = 1,
        stops: Sequence[str] = (),
        genkey: str | None = None,
    ) -> AsyncIterator[tuple[int, Chunk | None]]:
        """(sample index, chunk) as they come; (index, None) for a sample that was aborted. Leaving the
        iteration early (a client gone) cancels every sample."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()

        def sink(index: int) -> Any:
            def put(event: Event) -> None:
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, (index, event))
                except RuntimeError:  # the loop is closed: nobody waits for this request any more
                    pass

            return put

        tickets: list[Ticket] = []
        key = next(self._ids)
        try:
            for i in range(n):
                sample = settings if settings.seed is None else settings.replace(seed=(settings.seed + i) % 2**32)
                tickets.append(self.engine.submit(tokens, sample, stops=stops, sink=sink(i)))
            self._running[key] = tickets
            if genkey:
                self._by_key[genkey] = tickets
            left = n
            while left:
                index, event = await queue.get()
                if isinstance(event, BaseException):
                    raise event
                yield index, event
                if event is None or event.finish_reason is not None:
                    left -= 1
        finally:
            for ticket in tickets:
                ticket.cancel()
            self._running.pop(key, None)
            if genkey and self._by_key.get(genkey) is tickets:
                del self._by_key[genkey]

    # --- KoboldCpp's genkey calls ---------------------------------------------------------------------

    def _named(self, genkey: str) -> list[Ticket] | None:
        if genkey:
            return self._by_key.get(genkey)
        if len(self._running) == 1:  # no key: the one request running, as KoboldCpp does
            return next(iter(self._running.values()))
        return None

    def partial(self, genkey: str) -> str:
        """The text so far of the request `genkey` names (empty when none)."""
        tickets = self._named(genkey)
        return "".join(tickets[0].text) if tickets else ""

    def abort(self, genkey: str) -> bool:
        tickets = self._named(genkey)
        if not tickets:
            return False
        for ticket in tickets:
            ticket.cancel()
        return True


async def collect(events: AsyncIterator[tuple[int, Chunk | None]], *, n: int, prompt_tokens: int) -> list[Reply]:
    """The `n` whole replies of one request from its events (Service.run); an aborted sample counts its
    whole prompt as evaluated."""
    texts: list[list[str]] = [[] for _ in range(n)]
    reasons = ["stop"] * n
    counts = [0] * n
    evaluated = [prompt_tokens] * n
    async for index, chunk in events:
        if chunk is None:
            continue
        texts[index].append(chunk.text)
        if chunk.finish_reason is not None:
            reasons[index] = FINISH_REASONS[chunk.finish_reason]
            counts[index] = chunk.timing.generated_tokens
            evaluated[index] = chunk.timing.prompt_evaluated
    return [Reply("".join(texts[i]), reasons[i], counts[i], evaluated[i]) for i in range(n)]
