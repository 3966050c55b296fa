"""NovelAI scenarios (`.scenario`: the prompt, memory and author's note with their context settings, a
lorebook and sampler settings) as talesmith stories.

The scenario as read is kept under `extra["novelai"]`, its context settings included, so nothing in the
file is lost even where talesmith has no equivalent (token budgets, trim settings, placeholders).
"""

from __future__ import annotations

import copy
from typing import Any

from talesmith.runtime.documents.formats import Story, StoryHeader
from talesmith.runtime.documents.importers import presets
from talesmith.runtime.documents.lorebook import Lorebook
from talesmith.runtime.documents.stories import StoryDocument
from talesmith.runtime.documents.worldinfo import from_novelai
from talesmith.runtime.errors import InputError

KEY = "novelai"
NOTE_DEPTH = 3
"""NovelAI's author's note goes 4 newlines from the end (insertionPosition -4): 3 lines back."""


def is_scenario(data: Any) -> bool:
    return isinstance(data, dict) and "scenarioVersion" in data and "prompt" in data


def _text(data: dict[str, Any], key: str, where: str) -> str:
    value = data.get(key) or ""
    if not isinstance(value, str):
        raise InputError(f"{where}: {key!r} must be text, got {type(value).__name__}")
    return value


def _context(data: dict[str, Any], where: str) -> tuple[str, str, int]:
    """Memory, author's note and the note's depth in lines, from the scenario's `context` entries (the
    first is the memory, the second the author's note, as NovelAI writes them)."""
    entries = data.get("context") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InputError(f"{where}: 'context' must be a list of entries (memory, author's note)")
    texts = [_text(e, "text", where) for e in entries]
    memory = texts[0] if texts else ""
    note = texts[1] if len(texts) > 1 else ""
    depth = NOTE_DEPTH
    if len(entries) > 1:
        config = entries[1].get("contextConfig") or {}
        position = config.get("insertionPosition") if isinstance(config, dict) else None
        if isinstance(position, int) and not isinstance(position, bool) and position < 0:
            depth = -position - 1
    return memory, note, depth


def story_from_scenario(data: dict[str, Any], name: str, where: str) -> tuple[StoryDocument, tuple[str, ...]]:
    """The scenario as a story (prompt as the text; title, tags, memory, author's note and its depth; the
    lorebook; the sampler settings as the story's), with notes on what has no equivalent."""
    memory, note, depth = _context(data, where)
    tags = data.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InputError(f"{where}: 'tags' must be a list of texts")
    title = _text(data, "title", where).strip()
    header = StoryHeader(title=title, tags=tuple(tags))
    story = Story(
        text=_text(data, "prompt", where), header=header, memory=memory, author_note=note, author_note_depth=depth
    )
    books: tuple[Lorebook, ...] = ()
    if data.get("lorebook"):
        try:
            book = from_novelai(data["lorebook"], f"{title or name} lorebook")
        except (ValueError, TypeError, AttributeError, OverflowError) as e:
            raise InputError(f"{where}: its lorebook cannot be read ({e})") from None
        books = (book,) if book.entries else ()
    notes: list[str] = []
    settings = data.get("settings") or {}
    parameters = settings.get("parameters") if isinstance(settings, dict) else None
    changes: dict[str, Any] = {}
    if isinstance(parameters, dict) and parameters:
        preset = presets.from_novelai(parameters, name, f"{where} settings.parameters")
        changes = {"settings": preset.settings, "preset": f"{title or name} (NovelAI)"}
        effective = preset.effective_unmapped
        if effective:
            notes.append(
                "sampler settings without an equivalent, left out: "
                + ", ".join(f"{k}={v!r}" for k, v in effective.items())
            )
    notes.append(
        "NovelAI's context settings (token budgets, trimming, insertion types) are kept with the story "
        "but not used: talesmith places memory, author's note and lorebook entries itself"
    )
    doc = StoryDocument(story=story, name=title or name, lorebooks=books, extra={KEY: copy.deepcopy(data)}, **changes)
    return doc, tuple(notes)
