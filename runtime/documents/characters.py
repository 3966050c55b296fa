"""The character library: the cards kept in `<data dir>/characters/`, their names, creators and tags, and the
chats held with each. Reading and deleting files; the matching is pure."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from talesmith.runtime.documents.cards import Character, load_card
from talesmith.runtime.documents.stories import ChatDocument, Library
from talesmith.runtime.errors import InputError, TalesmithError

FOLDER = "characters"
CHATS = "chats"


@dataclass(frozen=True)
class CardEntry:
    path: Path
    name: str
    creator: str = ""
    tags: tuple[str, ...] = ()
    character: Character | None = None
    error: str = ""
    """Why the card could not be read (it is listed all the same, so the user sees it and can delete it)."""

    @property
    def initials(self) -> str:
        return initials(self.name)


def initials(name: str) -> str:
    """Up to two letters standing for a name: `Seraphina` SE, `Hatsune Miku` HM, `小鳥遊ホシノ` 小鳥."""
    words = [w for w in name.replace("_", " ").replace("-", " ").split() if w[:1].isalnum()]
    if len(words) >= 2:
        return (words[0][0] + words[1][0]).upper()
    word = words[0] if words else "?"
    return word[:2].upper() if word.isascii() else word[:2]


def _data(card: dict[str, Any]) -> dict[str, Any]:
    data = card.get("data")
    return data if isinstance(data, dict) else card


def card_entry(path: Path) -> CardEntry:
    try:
        character = load_card(path)
    except TalesmithError as e:
        return CardEntry(path, path.stem, error=str(e))
    data = _data(character.card)
    tags = data.get("tags")
    return CardEntry(
        path,
        character.name,
        creator=str(data.get("creator") or ""),
        tags=tuple(str(t) for t in tags if str(t).strip()) if isinstance(tags, list) else (),
        character=character,
    )


def list_cards(data_dir: str | os.PathLike[str]) -> list[CardEntry]:
    """Every card in the library, by name (a card that cannot be read is listed with why)."""
    folder = Path(data_dir) / FOLDER
    paths = [p for p in folder.glob("*.json") if p.is_file()]  # the app keeps cards as JSON
    return sorted((card_entry(p) for p in paths), key=lambda e: (e.name.casefold(), e.path.name))


def matches(entry: CardEntry, query: str) -> bool:
    """Whether the card's name, creator, tags or file name hold every word of `query` (case aside)."""
    haystack = " ".join((entry.name, entry.creator, *entry.tags, entry.path.stem)).casefold()
    return all(word in haystack for word in query.casefold().split())


def search(entries: list[CardEntry], query: str) -> list[CardEntry]:
    return [e for e in entries if matches(e, query)]


def chats_of(data_dir: str | os.PathLike[str], entry: CardEntry) -> list[tuple[str, str]]:
    """(id, name) of the saved chats with this card's character (by the character's name), newest first."""
    library = Library(Path(data_dir) / CHATS, "chat")
    out = []
    for e in sorted(library.entries(), key=lambda e: -e.modified):
        if e.error:
            continue
        try:
            doc = library.load(e.id)
        except TalesmithError:
            continue
        if isinstance(doc, ChatDocument) and doc.character.name == entry.name:
            out.append((e.id, e.name))
    return out


def delete_card(entry: CardEntry) -> None:
    """Delete the card's file; its chats keep their own copy of the card."""
    try:
        entry.path.unlink()
    except FileNotFoundError:
        return
    except OSError as e:
        raise InputError(f"cannot delete {entry.path} ({e.strerror or e})") from None
