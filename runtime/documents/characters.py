"""The character library: the cards kept in `<data dir>/characters/`, their names, creators and tags, and the
chats held with each. Reading and deleting files; the matching is pure."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from talesmith.runtime import files
from talesmith.runtime.documents.cards import Character, blank_png, card_v3, load_card, png_with_card, to_card
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


def avatar(entry: CardEntry) -> Path | None:
    """The card's picture kept beside it (`NAME.png` next to `NAME.json`), if any."""
    picture = entry.path.with_suffix(".png")
    return picture if picture.is_file() else None


def export_card(entry: CardEntry, folder: Path, *, v3: bool = False) -> tuple[Path, Path]:
    """The card written into `folder` as a PNG (its own picture, else a blank one, carrying the card as V2
    `chara` and V3 `ccv3`) and as JSON (V2, or V3 with `v3`); names already taken get `-2`, `-3`, ...:
    nothing is written over."""
    if entry.character is None:
        raise InputError(f"{entry.path} cannot be read ({entry.error}); nothing to export")
    picture = avatar(entry)
    try:
        image = picture.read_bytes() if picture is not None else blank_png()
        png = png_with_card(image, entry.character)
    except (OSError, TalesmithError):
        png = png_with_card(blank_png(), entry.character)  # a picture that is no PNG: the card all the same
    card = card_v3(entry.character) if v3 else to_card(entry.character)
    files.ensure_folder(folder, "exports")
    written = []
    for suffix, data in ((".png", png), (".json", json.dumps(card, ensure_ascii=False, indent=1) + "\n")):
        while True:
            target = files.free_path(folder / f"{entry.path.stem}{suffix}")
            try:
                files.write_atomic(target, data, mode=files.PRIVATE, replace=False)
                break
            except files.TargetExistsError:
                continue  # taken in the meantime: the next free name
            except OSError as e:
                raise InputError(f"cannot write {target} ({files.reason(e)})") from None
        written.append(target)
    return written[0], written[1]


def keep_avatar(source: str | os.PathLike[str], card: Path) -> Path | None:
    """Keep the picture of a card imported from a PNG beside the card's JSON (`NAME.png`), so that an export
    carries it again; None when the source is no PNG."""
    from talesmith.runtime.documents.cards import PNG_SIGNATURE

    try:
        data = Path(source).expanduser().read_bytes()
    except OSError as e:
        raise InputError(f"cannot read the picture of {source} ({files.reason(e)})") from None
    if not data.startswith(PNG_SIGNATURE):
        return None
    target = card.with_suffix(".png")
    try:
        files.write_atomic(target, data, mode=files.PRIVATE)
    except OSError as e:
        raise InputError(f"cannot keep the card's picture as {target} ({files.reason(e)})") from None
    return target
