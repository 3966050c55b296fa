"""The lorebook editor's edits, without Textual: over a tuple of lorebooks, entries listed, replaced,
added, toggled, and the document's placement."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from talesmith.runtime.documents.lorebook import ANCHORED, DECLARED, Entry, Lorebook

Books = tuple[Lorebook, ...]


def rows(books: Books) -> list[tuple[int, int]]:
    """(book, entry) index pairs in the order the list shows them."""
    return [(b, e) for b, book in enumerate(books) for e in range(len(book.entries))]


def describe(entry: Entry) -> str:
    where = f"{entry.position} {entry.depth}" if entry.position == "depth" else entry.position
    flags = ("constant" if entry.constant else ", ".join(entry.keys) or "no keys") + ("" if entry.enabled else " · off")
    return f"{entry.title}  [{flags}]  {where} · order {entry.order}"


def replace_entry(books: Books, book: int, index: int, entry: Entry | None) -> Books:
    """The books with one entry replaced (None deletes it); index == len(entries) adds it."""
    entries = list(books[book].entries)
    if entry is None:
        del entries[index]
    elif index == len(entries):
        entries.append(entry)
    else:
        entries[index] = entry
    return books[:book] + (dataclasses.replace(books[book], entries=tuple(entries)),) + books[book + 1 :]


def new_entry(book: Lorebook) -> Entry:
    uid = max((e.uid for e in book.entries), default=-1) + 1
    return Entry(keys=(), content="", uid=uid, book=book.name)


PLACEMENT_NAMES = {
    "": "where the author put them (SillyTavern's placement)",
    DECLARED: "where the author put them (SillyTavern's placement)",
    ANCHORED: "where each fired (cache-friendly; not where the author put them)",
}


@dataclass(frozen=True)
class LoreEdit:
    """What the editor gives back: the lorebooks and the document's placement ("" as the books say)."""

    books: Books
    placement: str = ""


def next_placement(placement: str) -> str:
    return DECLARED if placement == ANCHORED else ANCHORED


def toggled(books: Books, book: int, index: int) -> Books:
    entry = books[book].entries[index]
    return replace_entry(books, book, index, dataclasses.replace(entry, enabled=not entry.enabled))


def keys_from(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in text.split(",") if k.strip())
