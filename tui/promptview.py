"""What the model sees: the exact prompt of the next generation, its parts with token counts, what the
trimming policy dropped and what must be evaluated again. Plain logic over the runtime, no Textual."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from talesmith.runtime.documents.adventure import Adventure
from talesmith.runtime.documents.formats import Chat, Story
from talesmith.runtime.documents.instruct import InstructChat, InstructStory, TemplatePlan
from talesmith.runtime.documents.prompts import plan
from talesmith.runtime.engine import kvstate
from talesmith.runtime.engine.generate import prepare
from talesmith.runtime.settings import SamplingSettings


@dataclass(frozen=True)
class Part:
    name: str
    text: str
    tokens: int


@dataclass(frozen=True)
class PromptReport:
    text: str
    """The exact prompt text of the next generation."""
    n_tokens: int
    n_ctx: int
    max_new_tokens: int
    parts: tuple[Part, ...]
    dropped_units: int
    """History units (story lines, chat messages) the trimming policy left out."""
    total_units: int
    dropped: Part
    reprocess: int
    """Tokens of the prompt the next generation evaluates (not in the cache)."""
    reprocess_text: str
    notes: tuple[str, ...] = ()
    """What the chat template needed changed (a system message folded, roles merged)."""


def _head_names(document: Any) -> tuple[str, str, str]:
    if isinstance(document, Adventure):
        document = document.story
    if isinstance(document, InstructStory):
        return "instruction", "header", "memory"
    if isinstance(document, InstructChat):
        return "system prompt", "character (persona, scenario, user persona)", "example dialogue"
    if isinstance(document, Story):
        return "memory", "header / synopsis", "lore (after header)"
    if isinstance(document, Chat):
        return "system prompt", "character (persona, user persona, scenario)", "example dialogue"
    return "prompt", "", ""


def report(backend: Any, document: Any, settings: SamplingSettings) -> PromptReport:
    """The prompt report of `document`; the caller holds the backend's lock. Raises TalesmithError."""
    prepared = prepare(backend, document, settings)
    prompt = prepared.plan or plan(document)  # with its lorebook entries placed
    dropped = prepared.fitted.dropped

    def part(name: str, text: str) -> Part:
        return Part(name, text, len(backend.tokenize(text, add_bos=False)) if text else 0)

    a, b = prompt.head_slots if prompt.head_slots != (0, 0) else (len(prompt.head), len(prompt.head))
    first, second, third = _head_names(document)
    kept = prompt.units[dropped:]
    parts = [
        part(first, prompt.head[:a]),
        part(second, prompt.head[a:b]),
        part(third, prompt.head[b:]),
        part("author's note", prompt.note),
        *(part(f"inserted {depth} from the end", text) for depth, text in prompt.inserts),
        part(f"history ({len(kept)} of {len(prompt.units)} kept)", "".join(kept)),
        part("after the history (reply cue, instructions)", prompt.tail),
    ]
    lore = prepared.lore
    parts += [
        Part(f"lorebook entry {a.entry.title!r} ({how})", a.entry.content, a.tokens)
        for how, found in (
            ("fired", lore.entries if lore else ()),
            ("quiet, kept where it stands", lore.lingering if lore else ()),
        )
        for a in found
    ]
    reprocess = kvstate.reprocess_count(backend, prepared.tokens)
    tail = b"".join(backend.token_bytes(t) for t in prepared.tokens[len(prepared.tokens) - reprocess :])
    return PromptReport(
        text=prepared.fitted.text,
        n_tokens=len(prepared.tokens),
        n_ctx=backend.n_ctx,
        max_new_tokens=settings.max_new_tokens,
        parts=tuple(p for p in parts if p.text or p.name.startswith("history")),
        dropped_units=dropped,
        total_units=len(prompt.units),
        dropped=part("dropped", "".join(prompt.units[:dropped])),
        reprocess=reprocess,
        reprocess_text=tail.decode("utf-8", errors="replace"),
        notes=prompt.rendered(dropped).notes if isinstance(prompt, TemplatePlan) else (),
    )
