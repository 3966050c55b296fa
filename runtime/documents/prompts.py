"""Pure prompt builders: a document in, the exact prompt text out.

Each builder returns a PromptPlan: a part that is always kept (header, memory, persona, example
dialogue), the history as units that may be dropped oldest first when the context is too small,
and a tail that is always kept (`NAME:` in a chat). This is the one trimming policy of talesmith:

* stories drop their oldest lines (long lines are split at sentence ends first);
* chats drop their oldest messages, never the persona, scenario or example dialogue;
* genre, TinyStories and raw prompts are never trimmed: a prompt too long is an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import singledispatch

from talesmith.runtime.documents.cards import fill_macros
from talesmith.runtime.documents.formats import (
    CHARACTER,
    USER,
    Chat,
    GenrePrompt,
    PromptDocument,
    RawText,
    Story,
    TinyStory,
)
from talesmith.runtime.errors import ContextOverflowError, SettingsError

SEPARATOR = "***"
START = "<START>"
TINY_START = "<|startoftext|>"
TINY_END = "<|endoftext|>"
LONG_LINE = 400
"""Lines longer than this many characters are split at sentence ends into separate trim units."""


@dataclass(frozen=True)
class PromptPlan:
    head: str
    units: tuple[str, ...] = ()
    tail: str = ""
    note: str = ""
    note_depth: int = 1
    stops: tuple[str, ...] = ()
    """Stop strings that the format itself needs (for example the user's next chat line)."""
    head_slots: tuple[int, int] = (0, 0)
    """Where lore goes in the head: before and after the story header / character definition (offsets)."""
    inserts: tuple[tuple[int, str], ...] = ()
    """Lore placed in the history: (units from the end, text), moved back to the start of a line."""

    def render(self, drop: int = 0) -> str:
        """The prompt text with the `drop` oldest history units left out."""
        units = list(self.units[drop:])
        places = [(_note_index(units, self.note_depth), self.note)] if self.note else []
        places += [(_line_start(units, len(units) - depth), text) for depth, text in self.inserts]
        for index, text in reversed(sorted(places, key=lambda p: p[0])):
            units.insert(index, text)
        return self.head + "".join(units) + self.tail


@dataclass(frozen=True)
class FittedPrompt:
    text: str
    n_tokens: int
    dropped: int
    """How many history units were left out to fit the context."""


def _line_start(units: list[str], index: int) -> int:
    """`index` clamped to the units, moved back until the unit before it ends a line."""
    index = max(0, min(index, len(units)))
    while index > 0 and not units[index - 1].endswith("\n"):
        index -= 1
    return index


def _note_index(units: list[str], depth: int) -> int:
    """Where a note goes so that it stands before the `depth`-th line from the end."""
    newlines = 0
    for i in range(len(units) - 1, -1, -1):
        if units[i].endswith("\n"):
            newlines += 1
            if newlines == depth:
                return i + 1
    return 0


_SENTENCE_END = re.compile(r"(?<=[.!?。！？…])[\"'”’」』)]*\s*")


def split_units(text: str) -> tuple[str, ...]:
    """Lines (with their newline); a line longer than LONG_LINE is split after sentence ends."""
    units: list[str] = []
    for line in text.splitlines(keepends=True):
        if len(line) <= LONG_LINE:
            units.append(line)
            continue
        start = 0
        for m in _SENTENCE_END.finditer(line):
            if m.end() > start and m.end() < len(line):
                units.append(line[start : m.end()])
                start = m.end()
        units.append(line[start:])
    return tuple(u for u in units if u)


def header_line(story: Story) -> str:
    h = story.header
    parts = [
        (name, value)
        for name, value in (
            ("Title", h.title),
            ("Author", h.author),
            ("Genre", h.genre),
            ("Tags", ", ".join(h.tags)),
            ("Style", h.style),
        )
        if value
    ]
    return "[ " + "; ".join(f"{name}: {value}" for name, value in parts) + " ]\n"


def author_note(story: Story) -> str:
    """The story's author's note as a prompt carries it ("" without one); SettingsError for a depth under 1."""
    if story.author_note_depth < 1:
        raise SettingsError(f"author's note depth {story.author_note_depth} must be at least 1 (lines from the end)")
    return f"[ Author's note: {story.author_note.strip()} ]\n" if story.author_note.strip() else ""


def _block(text: str) -> str:
    """A block of text that ends with exactly one newline (or nothing if empty)."""
    text = text.strip("\n")
    return text + "\n" if text else ""


@singledispatch
def plan(document: object) -> PromptPlan:
    raise SettingsError(f"no prompt format for {type(document).__name__}")


@plan.register
def _(story: Story) -> PromptPlan:
    head = _block(story.memory)
    if story.japanese:
        if story.synopsis.strip():
            head += f"あらすじ：{story.synopsis.strip()}\n{SEPARATOR}\n"
    elif story.header:
        head += header_line(story) + f"{SEPARATOR}\n"
    return PromptPlan(
        head=head,
        units=split_units(story.text),
        note=author_note(story),
        note_depth=story.author_note_depth,
        head_slots=(len(_block(story.memory)), len(head)),
    )


def _speaker_name(chat: Chat, speaker: str) -> str:
    return chat.character if speaker == CHARACTER else chat.user_name


def chat_stops(user: str) -> tuple[str, ...]:
    """Where a chat reply ends: the user's next line in the shapes models write it, a new block, `<END>`."""
    return (
        f"\n{user}:",
        f"\n{START}",
        "<END>",
        f"\n{user} :",
        f"[ {user}:",
        f"[{user}:",
        f"\n*{user}:",
        f"\n**{user}:**",
        f"\n### {user}:",
    )


@plan.register
def _(chat: Chat) -> PromptPlan:
    if not chat.character.strip():
        raise SettingsError("a chat needs a character name; pass --character NAME")

    def fill(text: str) -> str:
        return fill_macros(text, char=chat.character, user=chat.user_name)

    head = _block(fill(chat.system_prompt))
    definition_start = len(head)
    head += f"{chat.character}'s Persona: {fill(chat.persona).strip()}\n"
    if chat.user_persona.strip():
        head += f"{chat.user_name}'s Persona: {fill(chat.user_persona).strip()}\n"
    if chat.scenario.strip():
        head += f"Scenario: {fill(chat.scenario).strip()}\n"
    definition_end = len(head)
    for example in chat.examples:
        head += f"{START}\n" + _block(fill(example))
    head += f"{START}\n"
    units = tuple(f"{_speaker_name(chat, m.speaker)}: {fill(m.text).strip()}\n" for m in chat.messages)
    writer = _speaker_name(chat, chat.writer)
    other = _speaker_name(chat, USER if chat.writer == CHARACTER else CHARACTER)
    started = fill(chat.started).strip()
    tail = _block(fill(chat.post_history)) + f"{writer}:" + (f" {started}" if started else "")
    return PromptPlan(
        head=head,
        units=units,
        tail=tail,
        stops=chat_stops(other),
        head_slots=(definition_start, definition_end),
    )


GENRE_INSTRUCTIONS = {
    "horror": "horror story",
    "fairy tale": "fairy tale",
    "fairy-tale": "fairy tale",
    "fairytale": "fairy tale",
}


def genre_instruction(genre: str) -> str:
    g = genre.strip().lower()
    return "Write me a " + GENRE_INSTRUCTIONS.get(g, f"{g} story")


@plan.register
def _(prompt: GenrePrompt) -> PromptPlan:
    instruction = genre_instruction(prompt.genre)
    if prompt.style == "falcon":
        head, stops = f"<human> {instruction[0].lower()}{instruction[1:]}\n<assistant>", ("<human>",)
    elif prompt.style == "llama":
        head, stops = f"### Human: {instruction} \n ### Assistant:", ("### Human:",)
    else:
        raise SettingsError(f"genre style {prompt.style!r} is unknown; use falcon or llama")
    return PromptPlan(head=head + prompt.text, stops=stops)


@plan.register
def _(story: TinyStory) -> PromptPlan:
    text = story.text.lstrip()
    return PromptPlan(head=TINY_START + (" " + text if text else ""), stops=(TINY_END,))


@plan.register
def _(raw: RawText) -> PromptPlan:
    return PromptPlan(head=raw.text)


def render(document: PromptDocument) -> str:
    """The full prompt of a document, nothing trimmed."""
    return plan(document).render()


def fit(prompt: PromptPlan, count_tokens: Callable[[str], int], budget: int) -> FittedPrompt:
    """The prompt with the fewest oldest history units dropped so that it fits `budget` tokens.

    Raises ContextOverflowError when even the kept parts alone do not fit.
    """
    text = prompt.render()
    n = count_tokens(text)
    if n <= budget:
        return FittedPrompt(text, n, 0)
    everything = len(prompt.units)
    if not everything:
        raise ContextOverflowError(
            f"the prompt is {n} tokens but only {budget} fit the context with the reply; "
            f"shorten the prompt, lower --max-new-tokens, or raise --ctx"
        )
    n_min = count_tokens(prompt.render(everything))
    if n_min > budget:
        what = "the persona, scenario and example dialogue" if prompt.tail else "the header, memory and author's note"
        raise ContextOverflowError(
            f"{what} alone take {n_min} tokens but only {budget} fit the context with the reply; "
            f"shorten them, lower --max-new-tokens, or raise --ctx"
        )
    lo, hi = 1, everything  # the answer lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if count_tokens(prompt.render(mid)) <= budget:
            hi = mid
        else:
            lo = mid + 1
    text = prompt.render(lo)
    return FittedPrompt(text, count_tokens(text), lo)
