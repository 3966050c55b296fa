"""Lorebook files: SillyTavern World Info JSON (talesmith's own format too), a card's `character_book`
(v2 / v3) and the World Info of a KoboldAI Client story save.

Each reader keeps the entry and the file as read, so that writing back gives the same JSON for every
entry that was not edited, unknown fields included. A file of the wrong shape raises InputError naming
it; nothing is half-read.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from talesmith.runtime import files
from talesmith.runtime.documents.lorebook import (
    AFTER,
    BEFORE,
    DEFAULT_DEPTH,
    DEPTH,
    LOGICS,
    NOTE_BOTTOM,
    NOTE_TOP,
    Entry,
    Lore,
    Lorebook,
    LoreSettings,
)
from talesmith.runtime.errors import InputError, SettingsError, TalesmithError
from talesmith.runtime.schema import Model, validate

MAX_LOREBOOK_FILE = files.MAX_OWN_FILE
"""Lorebooks (and the documents `export` reads) are read up to the size of anything talesmith saves."""
ST_POSITIONS = {0: BEFORE, 1: AFTER, 2: NOTE_TOP, 3: NOTE_BOTTOM, 4: DEPTH, 5: AFTER, 6: AFTER}
"""SillyTavern's positions; 5 and 6 (around the example messages) go after the character definition,
7 (an outlet, placed only where a prompt names it) is read as a disabled entry."""
OUTLET = 7
TO_ST_POSITION = {BEFORE: 0, AFTER: 1, NOTE_TOP: 2, NOTE_BOTTOM: 3, DEPTH: 4}


def _opt_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


# --- SillyTavern World Info --------------------------------------------------------------------


def _or(default: Any, *empty: Any) -> Any:
    """A before-validator: `default` where the file has null (or one of `empty`), as SillyTavern reads it."""
    return BeforeValidator(lambda v: default if v is None or any(v == e for e in empty) else v)


def _split(value: Any) -> Any:
    """Keys as a list: a comma-separated text split (and each key stripped), null as none."""
    return [k.strip() for k in value.split(",")] if isinstance(value, str) else value or []


Keys = Annotated[
    tuple[str, ...], BeforeValidator(_split), AfterValidator(lambda keys: tuple(k for k in keys if k.strip()))
]
"""An entry's keys, blank ones left out."""
Flag = Annotated[bool, _or(False)]
OptFlag = Annotated[bool | None, _or(None)]
OptInt = Annotated[int | None, _or(None, "")]
Count = Annotated[int, _or(0, "")]
"""A timed effect's length (SillyTavern writes null or 0 for none)."""


class StEntry(Model):
    """One entry of a SillyTavern World Info file, read as SillyTavern reads it: fields missing from older
    files take its defaults, and null where a number or flag goes reads as its default."""

    keys: Keys = Field((), alias="key")
    secondary: Keys = Field((), alias="keysecondary")
    content: Annotated[str, _or("")] = ""
    name: Annotated[str, _or("")] = Field("", alias="comment")
    uid: int | None = None
    logic: Annotated[int, _or(0), Field(ge=0, le=len(LOGICS) - 1)] = Field(0, alias="selectiveLogic")
    selective: Flag = False
    constant: Flag = False
    disable: Flag = False
    order: Annotated[int, _or(0, "")] = 100
    position: Annotated[int, _or(0, "")] = 0
    depth: Annotated[int, _or(DEFAULT_DEPTH)] = DEFAULT_DEPTH
    scan_depth: OptInt = Field(None, alias="scanDepth")
    case_sensitive: OptFlag = Field(None, alias="caseSensitive")
    whole_words: OptFlag = Field(None, alias="matchWholeWords")
    probability: Annotated[int, _or(100)] = 100
    use_probability: Flag = Field(False, alias="useProbability")
    exclude_recursion: Flag = Field(False, alias="excludeRecursion")
    prevent_recursion: Flag = Field(False, alias="preventRecursion")
    delay_until_recursion: Flag = Field(False, alias="delayUntilRecursion")
    sticky: Count = 0
    cooldown: Count = 0
    delay: Count = 0


ENTRY_FIELDS = ("keys", "secondary", "content", "constant", "selective")
"""Entry fields that every lorebook format with secondary keys holds, read under the same name from its model."""
ST_FIELDS = (*ENTRY_FIELDS, "name", "order", "case_sensitive", "whole_words")
"""The entry fields a World Info entry holds under the same name (besides the shared ones)."""
CARD_FIELDS = (*ENTRY_FIELDS, "order")
"""The entry fields a card's character_book entry holds under the same name (besides its extensions')."""
SHARED_FIELDS = (
    "depth",
    "scan_depth",
    "probability",
    "use_probability",
    "exclude_recursion",
    "prevent_recursion",
    "delay_until_recursion",
    "sticky",
    "cooldown",
    "delay",
)
"""Entry fields read under the same name from a World Info entry and from a card entry's extensions."""


def _read(fields: Model, names: Sequence[str]) -> dict[str, Any]:
    """Entry fields read under the same name from a file's model."""
    return {name: getattr(fields, name) for name in names}


def _written(entry: Entry, model: type[Model], names: Sequence[str]) -> dict[str, Any]:
    """Entry fields as JSON under the names `model` reads them by (its aliases), keys as lists."""
    out = {}
    for name in names:
        value = getattr(entry, name)
        out[model.model_fields[name].alias or name] = list(value) if isinstance(value, tuple) else value
    return out


def entry_from_st(raw: dict[str, Any], uid: int = 0) -> Entry:
    """One entry of a SillyTavern World Info file (`uid` when it has none); ValueError naming the field and
    its value when it has the wrong shape."""
    e = validate(StEntry, raw, f"entry {uid}", error=ValueError)
    return Entry(
        uid=uid if e.uid is None else e.uid,
        logic=LOGICS[e.logic],
        enabled=not e.disable and e.position != OUTLET,
        position=ST_POSITIONS.get(e.position, BEFORE),
        **_read(e, ST_FIELDS + SHARED_FIELDS),
    )


def entry_to_st(entry: Entry, raw: dict[str, Any] | None = None) -> dict[str, Any]:
    """The entry as SillyTavern World Info JSON: the entry as read when unchanged, else updated over it."""
    raw = copy.deepcopy(raw or {})
    if raw and _same(entry_from_st(raw, entry.uid), entry):
        return raw
    raw.update(
        uid=entry.uid,
        **_written(entry, StEntry, ST_FIELDS + SHARED_FIELDS),
        selectiveLogic=LOGICS.index(entry.logic),
        position=TO_ST_POSITION[entry.position],
        disable=not entry.enabled,
    )
    return raw


def _same(a: Entry, b: Entry) -> bool:
    return dataclasses.replace(a, book=b.book) == b


def _raw_entries(data: dict[str, Any]) -> list[dict[str, Any]]:
    entries = data.get("entries")
    if isinstance(entries, dict):
        entries = list(entries.values())
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError("'entries' must be an object or list of entry objects")
    return entries


def unique_uids(uids: Sequence[int]) -> list[int]:
    """`uids` with each repeat given the next number no entry has, so that every entry is kept (files with
    the same uid on several entries exist: written by hand, or merged)."""
    taken, out = set(uids), []
    seen: set[int] = set()
    free = max(taken, default=-1) + 1
    for uid in uids:
        if uid in seen:
            while free in taken:
                free += 1
            uid = free
            taken.add(uid)
        seen.add(uid)
        out.append(uid)
    return out


def _st_items(data: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """(uid, entry) pairs of World Info: the entry's uid, else its numeric key, else its place; a uid that
    repeats is given a free one (see `unique_uids`)."""
    entries = data.get("entries")
    pairs = list(entries.items()) if isinstance(entries, dict) else list(enumerate(entries or []))
    uids, raws = [], []
    for i, (key, raw) in enumerate(pairs):
        if not isinstance(raw, dict):
            raise ValueError("'entries' must hold entry objects")
        uid = raw.get("uid")
        uids.append(int(uid) if uid is not None else int(key) if str(key).isdigit() else i)
        raws.append(raw)
    return list(zip(unique_uids(uids), raws, strict=True))


def from_st(data: Any, name: str) -> Lorebook:
    """A SillyTavern World Info file (`{"entries": {"0": {...}, ...}}`, book settings optional)."""
    if not isinstance(data, dict):
        raise ValueError("a World Info file is a JSON object")
    _raw_entries(data)  # the shape checked
    entries = tuple(dataclasses.replace(entry_from_st(raw, uid), uid=uid) for uid, raw in _st_items(data))
    return _book(data, name, entries)


def _book(data: dict[str, Any], name: str, entries: tuple[Entry, ...]) -> Lorebook:
    """A lorebook of `entries` with the book's settings, which World Info and a card's character_book name
    alike; the file as read is kept."""
    return Lorebook(
        name=str(data.get("name") or name),
        entries=entries,
        scan_depth=_opt_int(data.get("scan_depth")),
        token_budget=_opt_int(data.get("token_budget")),
        recursive=_opt_bool(data.get("recursive_scanning")),
        raw=copy.deepcopy(data),
    )


def to_st(book: Lorebook) -> dict[str, Any]:
    """The lorebook as SillyTavern World Info JSON, the file as read written back under any edits."""
    out = copy.deepcopy(book.raw)  # what was read, unknown fields (or a KoboldAI list) included
    old = dict(_st_items(out)) if isinstance(out.get("entries"), dict) else {}  # a character_book's list: new entries
    out["entries"] = {str(e.uid): entry_to_st(e, old.get(e.uid)) for e in book.entries}
    return out


# --- character_book (card spec v2 / v3) --------------------------------------------------------


Zero = Annotated[int, _or(0, "")]
"""A number that null (or empty, or 0) makes 0, as SillyTavern's card reader has it."""


class CardEntryExtensions(Model):
    """SillyTavern's own fields of a character_book entry, under its `extensions`."""

    position: Annotated[int | None, _or(None)] = None
    logic: Annotated[int, _or(0), Field(ge=0, le=len(LOGICS) - 1)] = Field(0, alias="selectiveLogic")
    depth: Zero = DEFAULT_DEPTH
    scan_depth: OptInt = None
    case_sensitive: OptFlag = None
    match_whole_words: OptFlag = None
    probability: Zero = 100
    use_probability: Flag = Field(False, alias="useProbability")
    exclude_recursion: Flag = False
    prevent_recursion: Flag = False
    delay_until_recursion: Flag = False
    sticky: Count = 0
    cooldown: Count = 0
    delay: Count = 0


class CardEntry(Model):
    """One entry of a card's `character_book` (spec v2 / v3), as SillyTavern reads it."""

    keys: Keys = ()
    secondary: Keys = Field((), alias="secondary_keys")
    content: Annotated[str, _or("")] = ""
    comment: Annotated[str, _or("")] = ""
    name: Annotated[str, _or("")] = ""
    uid: Zero = Field(0, alias="id")
    selective: Flag = False
    constant: Flag = False
    enabled: Flag = True
    order: Zero = Field(100, alias="insertion_order")
    position: Any = None
    """"before_char" or "after_char"; SillyTavern's own position under `extensions` wins."""
    case_sensitive: OptFlag = None
    extensions: Annotated[CardEntryExtensions, _or({}, {})] = CardEntryExtensions.model_validate({})


def entry_from_card(raw: dict[str, Any], index: int) -> Entry:
    """Entry `index` of a card's character_book; ValueError naming the field and its value when it has the
    wrong shape."""
    e = validate(CardEntry, raw, f"entry {index}", error=ValueError)
    ext = e.extensions
    position = ext.position if ext.position is not None else 1 if e.position == "after_char" else 0
    return Entry(
        uid=e.uid or index,
        logic=LOGICS[ext.logic],
        enabled=e.enabled and position != OUTLET,
        position=ST_POSITIONS.get(position, BEFORE),
        case_sensitive=e.case_sensitive if "case_sensitive" in e.model_fields_set else ext.case_sensitive,
        whole_words=ext.match_whole_words,
        name=e.comment or e.name,
        **_read(e, CARD_FIELDS),
        **_read(ext, SHARED_FIELDS),
    )


def from_character_book(book: Any, name: str) -> Lorebook:
    """A card's `character_book` (its `entries` a list, SillyTavern's extras under each `extensions`)."""
    if not isinstance(book, dict):
        raise ValueError("'character_book' must be an object")
    read = [entry_from_card(e, i) for i, e in enumerate(_raw_entries(book))]
    uids = unique_uids([e.uid for e in read])
    entries = tuple(e if e.uid == uid else dataclasses.replace(e, uid=uid) for e, uid in zip(read, uids, strict=True))
    return _book(book, name, entries)


def entry_to_card(entry: Entry, raw: dict[str, Any] | None = None) -> dict[str, Any]:
    """The entry as a card's character_book entry: the entry as read when unchanged, else updated over it."""
    raw = copy.deepcopy(raw or {})
    if raw and _same(entry_from_card(raw, entry.uid), entry):
        return raw
    ext = dict(raw.get("extensions") or {})
    ext.update(
        position=TO_ST_POSITION[entry.position],
        selectiveLogic=LOGICS.index(entry.logic),
        match_whole_words=entry.whole_words,
        **_written(entry, CardEntryExtensions, SHARED_FIELDS),
    )
    raw.update(
        **_written(entry, CardEntry, ("uid", *CARD_FIELDS, "case_sensitive")),
        comment=entry.name,
        enabled=entry.enabled,
        position="after_char" if entry.position == AFTER else "before_char",
        extensions=ext,
    )
    return raw


def to_character_book(book: Lorebook) -> dict[str, Any]:
    """The lorebook as a card's `character_book`, the book as read written back under the edits (entries
    matched by id; unknown fields kept)."""
    out = copy.deepcopy(book.raw) if isinstance(book.raw, dict) else {}
    by_id: dict[int, dict[str, Any]] = {}
    for i, raw in enumerate(_raw_entries(out) if out.get("entries") else []):
        ident = raw.get("id")
        by_id.setdefault(ident if isinstance(ident, int) else i, raw)
    out["entries"] = [entry_to_card(e, by_id.get(e.uid)) for e in book.entries]
    out.setdefault("name", book.name)
    return out


def card_lorebook(card: dict[str, Any], where: str = "card") -> Lorebook | None:
    """The `character_book` of parsed card JSON (as `Character.card` keeps it), or None."""
    inner = card.get("data")
    data: dict[str, Any] = inner if isinstance(inner, dict) else card
    book = data.get("character_book")
    if not book:
        return None
    try:
        return from_character_book(book, f"{data.get('name') or 'character'}'s lorebook")
    except SettingsError as e:
        raise InputError(f"{where}: its character_book: {e}") from None
    except TalesmithError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise InputError(f"{where}: its character_book cannot be read ({e})") from None


# --- KoboldAI Client story World Info ----------------------------------------------------------


class KoboldEntry(Model):
    """One row of a KoboldAI Client story's `worldinfo`."""

    keys: Keys = Field((), alias="key")
    secondary: Keys = Field((), alias="keysecondary")
    content: Annotated[str, _or("")] = ""
    name: Annotated[str, _or("")] = Field("", alias="comment")
    uid: Zero = 0
    selective: Flag = False
    constant: Flag = False
    init: Flag = True
    """False on the empty row the Kobold editor keeps at the end."""


def from_kobold(items: Any, name: str) -> Lorebook:
    """The `worldinfo` list of a KoboldAI Client story: comma-separated keys, `selective` meaning the
    secondary keys must match too, `constant`; inserted after the memory."""
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ValueError("'worldinfo' must be a list of entry objects")
    entries: list[Entry] = []
    for i, raw in enumerate(items):
        e = validate(KoboldEntry, raw, f"entry {i}", error=ValueError)
        if not e.init and not e.content.strip():
            continue  # the empty placeholder row the Kobold editor keeps at the end
        entries.append(Entry(uid=e.uid or i, order=100, position=BEFORE, **_read(e, (*ENTRY_FIELDS, "name"))))
    uids = unique_uids([e.uid for e in entries])
    entries = [e if e.uid == uid else dataclasses.replace(e, uid=uid) for e, uid in zip(entries, uids, strict=True)]
    return Lorebook(name=name, entries=tuple(entries), raw={"worldinfo": copy.deepcopy(items)})


# --- NovelAI lorebooks (.lorebook, and a .scenario's `lorebook`) -------------------------------------


def is_novelai_lorebook(data: Any) -> bool:
    return isinstance(data, dict) and "lorebookVersion" in data and isinstance(data.get("entries"), list)


class NovelAIContext(Model):
    """Where a NovelAI entry goes: `insertionPosition` counted back from the end, `budgetPriority` its order."""

    insertion: Zero = Field(-1, alias="insertionPosition")
    priority: Zero = Field(400, alias="budgetPriority")


class NovelAIEntry(Model):
    keys: Keys = ()
    text: Annotated[str, _or("")] = ""
    name: Annotated[str, _or("")] = Field("", alias="displayName")
    enabled: Flag = True
    constant: Flag = Field(False, alias="forceActivation")
    config: Annotated[NovelAIContext, _or({}, {})] = Field(NovelAIContext.model_validate({}), alias="contextConfig")


def entry_from_novelai(raw: dict[str, Any], index: int) -> Entry:
    """A NovelAI lorebook entry: `keys` (plain or /regex/), `text`, `displayName`, `enabled`,
    `forceActivation` (constant); its contextConfig's `budgetPriority` becomes the order, and an
    `insertionPosition` counted back from the end, with a priority below the story's (0), a depth."""
    e = validate(NovelAIEntry, raw, f"entry {index}", error=ValueError)
    where, priority = e.config.insertion, e.config.priority
    in_story = where < 0 and priority < 0
    return Entry(
        keys=e.keys,
        content=e.text,
        uid=index,
        selective=False,
        constant=e.constant,
        enabled=e.enabled,
        order=priority,
        position=DEPTH if in_story else BEFORE,
        depth=-where - 1 if in_story else DEFAULT_DEPTH,
        use_probability=False,
        name=e.name,
    )


def from_novelai(book: Any, name: str) -> Lorebook:
    """A NovelAI lorebook (`{"lorebookVersion", "entries": [...], "settings", "categories"}`); the file as
    read is kept, so its own fields come back when it is written as World Info."""
    if not isinstance(book, dict) or not isinstance(book.get("entries"), list):
        raise ValueError("a NovelAI lorebook needs an 'entries' list")
    if not all(isinstance(e, dict) for e in book["entries"]):
        raise ValueError("'entries' must hold entry objects")
    entries = tuple(entry_from_novelai(e, i) for i, e in enumerate(book["entries"]))
    return Lorebook(name=str(book.get("name") or name), entries=entries, raw=copy.deepcopy(book))


def to_kobold(book: Lorebook) -> list[dict[str, Any]]:
    """The entries as KoboldAI Client world info; the list as read when nothing was changed."""
    old = book.raw.get("worldinfo")
    if isinstance(old, list) and from_kobold(old, book.name).entries == book.entries:
        return copy.deepcopy(old)
    return [
        {
            "key": ", ".join(e.keys),
            "keysecondary": ", ".join(e.secondary),
            "content": e.content,
            "comment": e.name,
            "folder": None,
            "num": i,
            "init": True,
            "selective": e.selective,
            "constant": e.constant,
            "uid": e.uid,
        }
        for i, e in enumerate(book.entries)
    ]


# --- files -------------------------------------------------------------------------------------


def carries_lorebook(data: Any) -> bool:
    """Whether `data` has the shape of something `lorebook_from_json` reads (its entries not yet checked)."""
    if not isinstance(data, dict):
        return False
    return (
        data.get("spec") in ("chara_card_v2", "chara_card_v3")
        or "character_book" in data
        or (isinstance(data.get("worldinfo"), list) and "actions" in data)
        or isinstance(data.get("entries"), (list, dict))
        or isinstance(data.get("lorebook"), dict)  # a NovelAI scenario
    )


def lorebook_from_json(data: Any, name: str, where: str) -> Lorebook:
    """A lorebook from any JSON that carries one: World Info, a card with a character_book, a bare
    character_book, or a KoboldAI story."""
    try:
        if (
            isinstance(data, dict)
            and data.get("spec") in ("chara_card_v2", "chara_card_v3")
            or (isinstance(data, dict) and "character_book" in data)
        ):
            book = card_lorebook(data, where)
            if book is None:
                raise InputError(f"{where}: the card carries no lorebook (character_book)")
            return book
        if isinstance(data, dict) and isinstance(data.get("worldinfo"), list) and "actions" in data:
            return from_kobold(data["worldinfo"], name)
        if isinstance(data, dict) and "scenarioVersion" in data and isinstance(data.get("lorebook"), dict):
            return from_novelai(data["lorebook"], f"{data.get('title') or name} lorebook")
        if is_novelai_lorebook(data):
            return from_novelai(data, name)
        if isinstance(data, dict) and isinstance(data.get("entries"), list):
            return from_character_book(data, name)
        if isinstance(data, dict) and isinstance(data.get("entries"), dict):
            return from_st(data, name)
    except TalesmithError:
        raise
    except SettingsError as e:
        raise InputError(f"{where}: {e}") from None
    except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as e:
        raise InputError(f"{where}: a lorebook entry has the wrong shape ({e})") from None
    raise InputError(
        f"{where} is not a lorebook: expected SillyTavern World Info JSON (an 'entries' object), "
        f"a card with a character_book, a NovelAI lorebook or scenario, or a KoboldAI story"
    )


def read_json(path: str | os.PathLike[str], what: str, limit: int = MAX_LOREBOOK_FILE) -> Any:
    """A JSON file (a regular file, read with a bound), every failure one InputError naming the file."""
    p = Path(path).expanduser()
    return files.parse_json(
        files.read_bounded(p, limit=limit, what=f"a {what}"), str(p), depth=files.MAX_OWN_JSON_DEPTH
    )


def load_lorebook(path: str | os.PathLike[str]) -> Lorebook:
    """A lorebook from a .json file (World Info, card, character_book, KoboldAI story) or a PNG card."""
    p = Path(path).expanduser()
    if p.suffix.lower() == ".png":
        from talesmith.runtime.documents.cards import load_card

        book = card_lorebook(load_card(p).card, str(p))
        if book is None:
            raise InputError(f"{p}: the card carries no lorebook (character_book)")
        return book
    data = read_json(p, "lorebook")
    own_settings(data, str(p))
    return lorebook_from_json(data, p.stem, str(p))


def dumps(book: Lorebook, *, compact: bool = False) -> str:
    """The lorebook as World Info JSON: indented as SillyTavern writes it, or `compact` (as the library
    keeps it: no larger than the file it came from, so it reads back under the same limits)."""
    if compact:
        return json.dumps(to_st(book), ensure_ascii=False, separators=(",", ":")) + "\n"
    return json.dumps(to_st(book), ensure_ascii=False, indent=4) + "\n"


SETTINGS_KEY = "talesmith"
"""A lorebook file may hold talesmith's activation settings under this key, e.g.
`"talesmith": {"placement": "declared", "scan_depth": 4, "budget_percent": 10}`."""


def own_settings(raw: Any, where: str) -> dict[str, Any]:
    """The activation settings a lorebook file sets under SETTINGS_KEY, checked."""
    table = raw.get(SETTINGS_KEY) if isinstance(raw, dict) else None
    if table is None:
        return {}
    names = {f.name for f in dataclasses.fields(LoreSettings)}
    if not isinstance(table, dict) or set(table) - names:
        raise InputError(
            f"{where}: {SETTINGS_KEY!r} must be an object of lorebook settings ({', '.join(sorted(names))})"
        )
    try:
        LoreSettings(**table)
    except (SettingsError, TypeError) as e:
        raise InputError(f"{where}: {e}") from None
    return dict(table)


def book_settings(books: Sequence[Lorebook], base: LoreSettings = LoreSettings()) -> LoreSettings:
    """The settings with the scan depth, token budget and recursion that a lorebook file sets, and the
    settings under its SETTINGS_KEY (the first book that sets one wins; a card's character_book usually does)."""
    changes: dict[str, Any] = {}
    for book in books:
        for name, value in own_settings(book.raw, book.name).items():
            changes.setdefault(name, value)
        if book.scan_depth is not None:
            changes.setdefault("scan_depth", book.scan_depth)
        if book.token_budget is not None:
            changes.setdefault("budget_tokens", book.token_budget)
        if book.recursive is not None:
            changes.setdefault("recursive", book.recursive)
    return dataclasses.replace(base, **changes)


def load_lore(paths: Sequence[str | os.PathLike[str]], base: LoreSettings = LoreSettings()) -> Lore | None:
    """The lorebooks in these files, or None without any."""
    books = tuple(load_lorebook(p) for p in paths)
    return Lore(books, book_settings(books, base)) if books else None


LIBRARY_FOLDER = Path("lorebooks")
"""Where `talesmith import` keeps lorebooks, each named after the book (see `find_lorebook`)."""
GLOBAL_FOLDER = Path("lorebooks") / "global"
"""Lorebooks in this folder of the data directory apply to every story and chat in the app."""


def _plain(name: str) -> str:
    return "".join(c for c in name.casefold() if c.isalnum())


def library_lorebooks(data_dir: str | os.PathLike[str]) -> list[Path]:
    """The lorebook files of the library (imported ones, then the global ones), by name."""
    folder = Path(data_dir)
    found = [
        p
        for sub in (LIBRARY_FOLDER, GLOBAL_FOLDER)
        for p in sorted((folder / sub).glob("*.json"), key=lambda p: p.stem)
    ]
    return [p for p in found if p.is_file()]


def find_lorebook(data_dir: str | os.PathLike[str], text: str) -> Path:
    """A lorebook file named by `text`: a path, else a lorebook of the library whose name is `text` (case,
    spaces and punctuation aside) or, failing that, the one name that contains it."""
    text = text.strip()
    path = Path(text).expanduser()
    if path.is_file():
        return path
    wanted = _plain(text)
    books = library_lorebooks(data_dir)
    names = {p: _plain(p.stem) for p in books}
    exact = [p for p, n in names.items() if n and (n == wanted or (len(n) >= 40 and wanted.startswith(n)))]
    if exact:
        return exact[0]
    partial = [p for p, n in names.items() if wanted and wanted in n]
    if len(partial) == 1:
        return partial[0]
    if partial:
        listed = ", ".join(p.stem for p in partial[:8]) + (", ..." if len(partial) > 8 else "")
        raise InputError(f"{text!r} names {len(partial)} lorebooks ({listed}); type more of the name")
    where = Path(data_dir) / LIBRARY_FOLDER
    raise InputError(f"no lorebook named {text!r} in {where}, and no such file; import it or give its path")


def global_lorebooks(data_dir: str | os.PathLike[str]) -> tuple[Lorebook, ...]:
    folder = Path(data_dir) / GLOBAL_FOLDER
    return tuple(load_lorebook(p) for p in sorted(folder.glob("*.json"))) if folder.is_dir() else ()


def document_lore(
    document: Any, *, global_books: Sequence[Lorebook] = (), base: LoreSettings = LoreSettings()
) -> Lore | None:
    """The lore of a story or chat document: its own lorebooks, its character's character_book and the
    global ones, sorted together by insertion order (SillyTavern's "sorted evenly")."""
    books = list(getattr(document, "lorebooks", ()))
    character = getattr(document, "character", None)
    if character is not None:
        own = card_lorebook(character.card, character.name)
        books += [own] if own is not None else []
    books += list(global_books)
    if not books:
        return None
    settings = book_settings(books, base)
    placement = getattr(document, "lore_placement", "")  # the document's own choice wins over the books'
    return Lore(tuple(books), dataclasses.replace(settings, placement=placement) if placement else settings)
