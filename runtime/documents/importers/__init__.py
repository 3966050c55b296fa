"""Files from other tools, recognised by their content and brought into talesmith's library.

`read_import` reads and checks the whole file first (one InputError naming the file and what is wrong);
only then does `save_import` write the result, in one atomic write, so nothing is ever half-imported:

* a SillyTavern chat (.jsonl) -> a chat (with the character's card if it is in the library);
* a SillyTavern textgen or kobold preset -> a user preset (`<data dir>/presets/NAME.json`);
* a KoboldAI Client story save -> a story (text, memory, author's note, world info as its lorebook);
* a Tavern / SillyTavern card (.png, .json) -> a character (`<data dir>/characters/NAME.json`);
* a lorebook (SillyTavern World Info, a bare character_book) -> `<data dir>/lorebooks/NAME.json`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from talesmith.runtime import files
from talesmith.runtime.documents.cards import PNG_SIGNATURE, Character, character_from_card, load_card, to_card
from talesmith.runtime.documents.importers import kobold, presets, stchat
from talesmith.runtime.documents.lorebook import Lorebook
from talesmith.runtime.documents.stories import ChatDocument, Library, StoryDocument, slug
from talesmith.runtime.documents.worldinfo import carries_lorebook, lorebook_from_json
from talesmith.runtime.documents.worldinfo import dumps as lorebook_dumps
from talesmith.runtime.errors import CardError, InputError
from talesmith.runtime.files import jsonl_objects

MAX_IMPORT = 64 * 1024 * 1024
KINDS = ("chat", "story", "preset", "character", "lorebook")


@dataclass(frozen=True)
class Imported:
    kind: str
    """One of KINDS."""
    name: str
    value: Any
    """A ChatDocument, StoryDocument, UserPreset, Character or Lorebook."""
    notes: tuple[str, ...] = ()
    """What the user should know (settings without an equivalent, a card not found, ...)."""


def _read(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_IMPORT:
            raise InputError(f"{path}: {size} bytes is more than talesmith imports ({MAX_IMPORT})")
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path} does not exist; give the path of the file to import") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder; give the path of the file to import") from None
    except OSError as e:
        raise InputError(f"{path} cannot be read ({e.strerror})") from None


def _known_character(characters: Path | None, name: str) -> Character | None:
    path = characters / f"{slug(name)}.json" if characters else None
    if path is None or not path.is_file():
        return None
    try:
        return load_card(path)
    except CardError:
        return None


def _from_json(data: Any, path: Path, characters: Path | None) -> Imported:
    where, name = str(path), path.stem
    if isinstance(data, dict) and "story_string" in data:
        raise InputError(
            f"{where} is a SillyTavern context template, not a sampler preset; talesmith builds "
            f"each model's own prompt format"
        )
    if presets.is_sampler_preset(data):
        preset = presets.from_sillytavern(data, name, where)
        notes: tuple[str, ...] = ()
        if preset.unmapped:
            effective = preset.effective_unmapped
            notes = tuple(
                line
                for line in (
                    "no equivalent, left out: " + ", ".join(f"{k}={v!r}" for k, v in effective.items())
                    if effective
                    else "",
                    "also left out (off, or settings of the tool itself): "
                    + ", ".join(k for k in preset.unmapped if k not in effective),
                )
                if line and not line.endswith(": ")
            )
        return Imported("preset", name, preset, notes)
    if kobold.is_kobold_story(data):
        doc = kobold.story_from_kobold(data, name, where)
        return Imported("story", name, doc)
    if isinstance(data, dict) and "entries" in data and data.get("spec") not in ("chara_card_v2", "chara_card_v3"):
        book = lorebook_from_json(data, name, where)
        return Imported("lorebook", book.name, book)
    if isinstance(data, dict) and ("spec" in data or "name" in data):  # a card (v1 cards are flat)
        character = character_from_card(data, where)
        return Imported("character", character.name, character)
    raise InputError(
        f"{where} is not a file talesmith can import: expected a SillyTavern chat (.jsonl), preset or "
        f"World Info, a KoboldAI story, or a character card"
    )


def read_import(path: str | os.PathLike[str], *, characters: Path | None = None) -> Imported:
    """Read and check a file to import, recognised by its content; `characters` is the folder of cards
    in which a chat's character is looked up."""
    p = Path(path).expanduser()
    raw = _read(p)
    if raw.startswith(PNG_SIGNATURE):
        character = load_card(p)
        return Imported("character", character.name, character)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{p} is not UTF-8 text nor a PNG card; it cannot be imported") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        lines = jsonl_objects(text, str(p))
        if not stchat.is_st_chat(lines):
            raise InputError(
                f"{p} is neither JSON nor a SillyTavern chat (.jsonl whose first line names the character)"
            ) from None
        name = str(lines[0].get("character_name") or "")
        known = _known_character(characters, name)
        doc = stchat.chat_from_st(lines, str(p), character=known)
        notes = (
            ()
            if known
            else (
                f"no card for {name!r} in the library: the chat has a bare character; "
                f"import the card too, then this chat again",
            )
        )
        return Imported("chat", doc.name, doc, notes)
    except RecursionError:
        raise InputError(f"{p}: the JSON is nested too deeply") from None
    if isinstance(data, dict) and "character_name" in data:  # a one-line chat: just the metadata
        return read_import_lines([data], p, characters)
    return _from_json(data, p, characters)


def read_import_lines(lines: list[dict[str, Any]], path: Path, characters: Path | None) -> Imported:
    name = str(lines[0].get("character_name") or "")
    doc = stchat.chat_from_st(lines, str(path), character=_known_character(characters, name))
    return Imported("chat", doc.name, doc)


def save_import(imported: Imported, data_dir: str | os.PathLike[str]) -> Path:
    """Write an imported thing into the library under `data_dir` (one atomic write); returns the file."""
    root = Path(data_dir)
    value = imported.value
    if isinstance(value, (ChatDocument, StoryDocument)):
        folder, kind = ("chats", "chat") if isinstance(value, ChatDocument) else ("stories", "story")
        library = Library(root / folder, kind)
        doc_id = library.new_id(value.name)
        library.save(doc_id, value)
        return library.path(doc_id)
    if isinstance(value, presets.UserPreset):
        return presets.save_preset(root, value)
    if isinstance(value, Character):
        path = root / "characters" / f"{slug(value.name)}.json"
        files.write_atomic(path, json.dumps(to_card(value), ensure_ascii=False, indent=1) + "\n", mode=files.PRIVATE)
        return path
    if isinstance(value, Lorebook):
        path = root / "lorebooks" / f"{slug(value.name)}.json"
        files.write_atomic(path, lorebook_dumps(value), mode=files.PRIVATE)
        return path
    raise InputError(f"cannot save an import of kind {imported.kind!r}")


def export_text(source: str | os.PathLike[str], output: str | os.PathLike[str]) -> str:
    """A saved talesmith chat as a SillyTavern chat (.jsonl), a saved story as a KoboldAI Client save
    (.json), or a lorebook as SillyTavern World Info (.json): the text to write to `output`."""
    from talesmith.runtime.documents.stories import from_dict
    from talesmith.runtime.documents.worldinfo import read_json

    src, out = Path(source).expanduser(), Path(output)
    data = read_json(src, "talesmith chat, story or lorebook")
    suffix = out.suffix.lower()
    if isinstance(data, dict) and data.get("kind") in ("chat", "story"):
        doc = from_dict(data, str(src))
        if isinstance(doc, ChatDocument) and suffix == ".jsonl":
            return stchat.dumps(stchat.chat_to_st(doc))
        if isinstance(doc, StoryDocument) and suffix == ".json":
            return json.dumps(kobold.story_to_kobold(doc), ensure_ascii=False) + "\n"
        want = ".jsonl (a SillyTavern chat)" if isinstance(doc, ChatDocument) else ".json (a KoboldAI story)"
        raise InputError(f"{src} is a {data['kind']}; export it to a file ending in {want}")
    if not carries_lorebook(data):
        raise InputError(
            f"{src} is not a saved talesmith chat or story nor a lorebook; `export` writes those back "
            f"(a chat as .jsonl, a story or lorebook as .json)"
        )
    book = lorebook_from_json(data, src.stem, str(src))
    if suffix != ".json":
        raise InputError(f"{src} is a lorebook; export it to a file ending in .json (SillyTavern World Info)")
    return lorebook_dumps(book)
