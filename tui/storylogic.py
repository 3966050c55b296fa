"""What the story screen decides, without Textual: a header field's edit, a story's free name, where a
generation writes (at the end, or inside the story with the rest kept below), the editor's locations as
text offsets, and the status line's part."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from talesmith.runtime.documents.stories import StoryDocument

UNTITLED = StoryDocument().name
SYNOPSIS_PREFIXES = ("あらすじ：", "あらすじ:", "あらすじ")
"""What the prompt puts before the synopsis; pasted in front of it, it is taken off again."""


@dataclass(frozen=True)
class Place:
    """Where a generation inside the story writes: after `before`, with `after` kept below it."""

    before: str
    after: str


def text_index(text: str, location: tuple[int, int]) -> int:
    """The offset in `text` of a (row, column) location of the editor."""
    row, column = location
    lines = text.split("\n")
    return sum(len(line) + 1 for line in lines[:row]) + column


def text_location(text: str, index: int) -> tuple[int, int]:
    """The editor's (row, column) of an offset in `text`."""
    return text.count("\n", 0, index), index - (text.rfind("\n", 0, index) + 1)


def place_of(base: str | Place) -> tuple[str, str]:
    """The text before a generation and the text kept after it."""
    return (base.before, base.after) if isinstance(base, Place) else (base, "")


def follows_title(name: str, title: str) -> bool:
    """Whether a story's name is still its title (or the title with a collision suffix)."""
    base = re.sub(r" \(\d+\)$", "", name)
    return name == UNTITLED or base == title.strip()


def without_prefix(value: str) -> str:
    """A synopsis without the あらすじ the prompt puts before it."""
    value = value.lstrip()
    for prefix in SYNOPSIS_PREFIXES:
        if value.startswith(prefix):
            return value[len(prefix) :].lstrip()
    return value


def tags(value: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in value.split(",") if t.strip())


def field_edit(doc: StoryDocument, key: str, value: str) -> StoryDocument | str | None:
    """`doc` with header field `key` set to `value` (a story named after its title follows it); why not (a
    str) for a note depth under 1; None when `value` says nothing yet (a depth half typed) or `key` is no field."""
    h = doc.story.header
    if key in ("title", "author", "genre", "style"):
        changed: dict[str, Any] = {key: value}
        new = doc.with_story(header=dataclasses.replace(h, **changed))
        if key == "title" and follows_title(doc.name, h.title):
            new = dataclasses.replace(new, name=value.strip() or UNTITLED)
        return new
    if key == "tags":
        return doc.with_story(header=dataclasses.replace(h, tags=tags(value)))
    if key == "author_note":
        return doc.with_story(author_note=value)
    if key == "author_note_depth":
        try:
            depth = int(value)
        except ValueError:
            return None
        if depth < 1:
            return f"Author's note depth {depth} must be at least 1 (lines from the end)"
        return doc.with_story(author_note_depth=depth)
    return None


def free_name(name: str, taken: Iterable[str]) -> str:
    """`name`, or `name (2)`, `name (3)`... when another story has it."""
    taken = set(taken)
    free, n = name, 2
    while free in taken:
        free, n = f"{name} ({n})", n + 1
    return free


def status_extra(doc: StoryDocument) -> str:
    """The story's part of the status line: the alternative shown."""
    alt = doc.live_alternatives()
    if alt is not None and len(alt.options) > 1:
        return f"alt {alt.index + 1}/{len(alt.options)} (alt+←/→)"
    return ""
