"""Character cards as they circulate: Tavern / SillyTavern `chara_card_v2` and `_v3` JSON, older flat
(v1) JSON, and PNG images carrying the card base64-encoded in a `chara` or `ccv3` tEXt chunk.

A card that is malformed or hostile (bad base64, a huge chunk, JSON of the wrong shape) raises
CardError naming the file and what is wrong; nothing is half-read. The original card is kept whole,
so fields talesmith does not know survive when the card is written again.
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import json
import os
import re
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, field_validator

from talesmith.runtime.errors import CardError, InputError
from talesmith.runtime.files import read_bounded, too_deep
from talesmith.runtime.schema import Model, validate

MAX_CARD_FILE = 32 * 1024 * 1024
"""Largest card file read (PNG images with a card can be several MB)."""
MAX_CARD_TEXT = 4 * 1024 * 1024
"""Largest card payload (JSON text or base64 chunk)."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
V2 = "chara_card_v2"
V3 = "chara_card_v3"


@dataclass(frozen=True)
class Character:
    name: str
    persona: str = ""
    """The card's description."""
    personality: str = ""
    scenario: str = ""
    greeting: str = ""
    """The character's first message."""
    alternate_greetings: tuple[str, ...] = ()
    examples: str = ""
    """Example dialogue, blocks separated by `<START>` lines; `{{char}}` and `{{user}}` are the names."""
    system_prompt: str = ""
    """The card's own system prompt; `{{original}}` stands for the app's (talesmith has none: empty)."""
    post_history: str = ""
    """The card's post_history_instructions, placed after the conversation."""
    creator_notes: str = ""
    """Notes for the user, never part of the prompt."""
    card: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The whole card as read, unknown fields included; written back under the edited fields."""
    replaced: int = field(default=0, compare=False, repr=False)
    """Characters of the card file that UTF-8 cannot hold (lone surrogates), read as U+FFFD."""
    card_key: str = field(default="", repr=False)
    """The card as it would be written, worked out on creation whatever is passed (compared, so that an edit
    of the card alone, its tags or its lorebook, is a change; the same card read back compares equal)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "card_key", json.dumps(to_card(self), sort_keys=True, ensure_ascii=False))

    def example_blocks(self) -> tuple[str, ...]:
        blocks = [b.strip("\n") for b in self.examples.replace("\r\n", "\n").split("<START>")]
        return tuple(b for b in blocks if b.strip())

    def full_persona(self) -> str:
        """Description and personality, as Pygmalion's persona line carries them."""
        parts = [self.persona.strip(), f"Personality: {self.personality.strip()}" if self.personality.strip() else ""]
        return "\n".join(p for p in parts if p)

    @property
    def book_entries(self) -> int:
        """How many entries the card's character_book (lorebook) holds; 0 when it has none."""
        data = self.card.get("data") if isinstance(self.card.get("data"), dict) else self.card
        book = data.get("character_book") if isinstance(data, dict) else None
        entries = book.get("entries") if isinstance(book, dict) else None
        return len(entries) if isinstance(entries, list) else 0


_MACRO = re.compile(r"\{\{\s*(\w+)\s*\}\}|<(USER|BOT)>", re.IGNORECASE)
_ALIASES = {"bot": "char"}


def fill_macros(
    text: str,
    macros: Mapping[str, str] | None = None,
    *,
    char: str | None = None,
    user: str | None = None,
    original: str = "",
) -> str:
    """`text` with its macros filled: `{{char}}`, `{{user}}` (any case, spaces inside the braces allowed; also
    `<BOT>`, `<USER>`), `{{original}}` (the app's system prompt: talesmith has none, so empty by default) and
    any other `{{name}}` that `macros` gives. A macro without a value is left as it is.

    The one place where talesmith fills macros: cards, greetings, chat prompts, lorebook entries and what the
    app shows.
    """
    values = {"original": original, **{k.lower(): v for k, v in (macros or {}).items()}}
    values.update({k: v for k, v in (("char", char), ("user", user)) if v is not None})

    def value(m: re.Match[str]) -> str:
        name = (m.group(1) or m.group(2)).lower()
        return values.get(_ALIASES.get(name, name), m.group(0))

    return _MACRO.sub(value, text)


def clean_text(text: str) -> tuple[str, int]:
    """`text` with characters that cannot be written as UTF-8 (lone surrogates) replaced by U+FFFD;
    surrogate pairs become the character they stand for. Returns the text and how many were replaced."""
    try:
        text.encode("utf-8")
        return text, 0
    except UnicodeEncodeError:
        pass
    fixed = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return fixed, fixed.count("\ufffd") - text.count("\ufffd")


def clean_tree(value: Any) -> tuple[Any, int]:
    """Parsed JSON with every text passed through `clean_text`; returns it and the count replaced."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        pairs = [clean_tree(v) for v in value]
        return [v for v, _ in pairs], sum(n for _, n in pairs)
    if isinstance(value, dict):
        out, count = {}, 0
        for k, v in value.items():
            (k, a), (v, b) = clean_text(str(k)), clean_tree(v)
            out[k] = v
            count += a + b
        return out, count
    return value, 0


class _CardData(Model):
    """The fields of a card that talesmith reads (v1 at the top level, v2 / v3 under `data`); texts must be
    text (null is empty), the rest of the card is kept as it is."""

    model_config = ConfigDict(strict=True)
    MESSAGES = {"alternate_greetings*": "{field} = {value}: alternate_greetings must be a list of texts"}

    name: str | None = None
    description: str | None = None
    personality: str | None = None
    scenario: str | None = None
    first_mes: str | None = None
    alternate_greetings: list[str] | None = None
    mes_example: str | None = None
    system_prompt: str | None = None
    post_history_instructions: str | None = None
    creator_notes: str | None = None

    @field_validator("alternate_greetings", mode="before")
    @classmethod
    def _none_when_empty(cls, value: Any) -> Any:
        return value or None  # "", 0 or {} written for "none" by some editors


def character_from_card(card: Any, where: str = "card") -> Character:
    """A Character from parsed card JSON (v1 flat, v2 or v3); texts UTF-8 cannot hold are read as U+FFFD."""
    if not isinstance(card, dict):
        raise CardError(f"{where}: a card must be a JSON object, got {type(card).__name__}")
    try:
        card, replaced = clean_tree(card)
    except RecursionError:
        raise CardError(f"{where}: the card's JSON is nested too deeply") from None
    return dataclasses.replace(_character(card, where), replaced=replaced)


def _character(card: dict[str, Any], where: str) -> Character:
    spec = card.get("spec")
    if spec in (V2, V3):
        data = card.get("data")
        if not isinstance(data, dict):
            raise CardError(f"{where}: a {spec} card needs a 'data' object")
    elif spec is None and "name" in card:
        data = card  # v1: the fields at the top level
    else:
        raise CardError(f"{where}: not a character card (spec {spec!r}); expected {V2} or {V3} JSON")
    fields = validate(_CardData, data, where, error=CardError)
    name = (fields.name or "").strip()
    if not name:
        raise CardError(f"{where}: the card has no character name")
    return Character(
        name=name,
        persona=fields.description or "",
        personality=fields.personality or "",
        scenario=fields.scenario or "",
        greeting=fields.first_mes or "",
        alternate_greetings=tuple(fields.alternate_greetings or ()),
        examples=fields.mes_example or "",
        system_prompt=fields.system_prompt or "",
        post_history=fields.post_history_instructions or "",
        creator_notes=fields.creator_notes or "",
        card=copy.deepcopy(card),
    )


def parse_json_card(raw: bytes | str, where: str = "card") -> Character:
    if len(raw) > MAX_CARD_TEXT:
        raise CardError(f"{where}: the card is {len(raw)} bytes, more than the {MAX_CARD_TEXT} allowed")
    try:
        card = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CardError(f"{where}: the card is not valid JSON ({e})") from None
    except RecursionError:
        raise CardError(f"{where}: the card's JSON is nested too deeply") from None
    if too_deep(card):  # as deep as any imported file may be, so that a chat holding it reads back
        raise CardError(f"{where}: the card's JSON is nested too deeply")
    return character_from_card(card, where)


CARD_KEYS = (b"chara", b"ccv3")
"""The keywords of the chunks that carry a card; only their size is limited."""


def png_text_chunks(data: bytes, where: str = "card") -> dict[str, bytes]:
    """The card-carrying tEXt chunks of a PNG (keyword -> text), with every length checked before it is trusted.

    Other chunks are skipped whatever their size; a card in a compressed zTXt or an iTXt chunk is
    named as unsupported.
    """
    if not data.startswith(PNG_SIGNATURE):
        raise CardError(f"{where}: not a PNG file")
    chunks: dict[str, bytes] = {}
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise CardError(f"{where}: PNG chunk {kind!r} claims {length} bytes but the file ends first")
        keyword = data[pos + 8 : pos + 8 + min(length, 80)].partition(b"\0")[0]
        if kind in (b"zTXt", b"iTXt") and keyword in CARD_KEYS:
            raise CardError(
                f"{where}: the card is in a {kind.decode()} PNG chunk, which talesmith does not read; "
                f"re-export the card from its editor as a plain PNG card (tEXt chunk) or as JSON"
            )
        if kind == b"tEXt" and keyword in CARD_KEYS:
            if length > MAX_CARD_TEXT:
                raise CardError(
                    f"{where}: the card's {keyword.decode()!r} chunk of {length} bytes is larger than "
                    f"the {MAX_CARD_TEXT} allowed"
                )
            chunks.setdefault(keyword.decode("latin-1"), data[pos + 8 + len(keyword) + 1 : pos + 8 + length])
        if kind == b"IEND":
            break
        pos = end
    return chunks


def parse_png_card(data: bytes, where: str = "card") -> Character:
    chunks = png_text_chunks(data, where)
    key = "ccv3" if "ccv3" in chunks else "chara" if "chara" in chunks else None
    if key is None:
        raise CardError(f"{where}: the PNG carries no character card (no 'chara' or 'ccv3' text chunk)")
    try:
        raw = base64.b64decode(chunks[key], validate=True)
    except (binascii.Error, ValueError):
        raise CardError(f"{where}: the PNG's {key!r} chunk is not valid base64") from None
    return parse_json_card(raw, where)


def load_card(path: str | os.PathLike[str]) -> Character:
    """Read a card from a .json or .png file."""
    p = Path(path).expanduser()
    try:
        data = read_bounded(p, limit=MAX_CARD_FILE, what="a .png or .json character card")
    except InputError as e:
        raise CardError(str(e)) from None
    if data.startswith(PNG_SIGNATURE):
        return parse_png_card(data, str(p))
    if data[:8] and PNG_SIGNATURE.startswith(data[:8]) or data.startswith(PNG_SIGNATURE[:4]):
        raise CardError(f"{p}: a PNG file cut short ({len(data)} bytes); download or export the card again")
    return parse_json_card(data, str(p))


def to_card(character: Character) -> dict[str, Any]:
    """The character as card JSON: the original card with the edited fields written over it."""
    card = copy.deepcopy(character.card)
    if card.get("spec") not in (V2, V3):
        old = {k: v for k, v in card.items() if k not in ("spec", "spec_version", "data")}
        card = {"spec": V2, "spec_version": "2.0", "data": old}
    data = card.setdefault("data", {})
    data.update(
        name=character.name,
        description=character.persona,
        personality=character.personality,
        scenario=character.scenario,
        first_mes=character.greeting,
        mes_example=character.examples,
        alternate_greetings=list(character.alternate_greetings),
        system_prompt=character.system_prompt,
        post_history_instructions=character.post_history,
        creator_notes=character.creator_notes,
    )
    return card


def card_v3(character: Character) -> dict[str, Any]:
    """The character as a V3 card (`chara_card_v3`): the V2 data with the fields V3 requires."""
    card = to_card(character)
    data = dict(card["data"])
    data.setdefault("group_only_greetings", [])
    return {**{k: v for k, v in card.items() if k != "data"}, "spec": V3, "spec_version": "3.0", "data": data}


def card_details(character: Character) -> tuple[str, tuple[str, ...], str]:
    """(creator, tags, character version) as the card holds them."""
    raw = character.card.get("data")
    data: dict[str, Any] = raw if isinstance(raw, dict) else character.card
    tags = data.get("tags")
    tag_list = tuple(str(t) for t in tags if str(t).strip()) if isinstance(tags, list) else ()
    return str(data.get("creator") or ""), tag_list, str(data.get("character_version") or "")


def with_details(character: Character, *, creator: str, tags: tuple[str, ...], version: str) -> Character:
    """The character with its card's creator, tags and character version set (the rest of the card kept)."""
    card = to_card(character)
    card["data"].update(creator=creator, tags=list(tags), character_version=version)
    return dataclasses.replace(character, card=card)


def with_book(character: Character, book: dict[str, Any] | None) -> Character:
    """The character with its card's `character_book` (World Info in card form, see
    `worldinfo.to_character_book`) replaced; None removes it."""
    card = to_card(character)
    if book is None:
        card["data"].pop("character_book", None)
    else:
        card["data"]["character_book"] = book
    return dataclasses.replace(character, card=card)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def blank_png() -> bytes:
    """A one-pixel grey picture, for a card that came without one."""
    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)  # 1x1, 8-bit greyscale
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0\x80")) + _chunk(b"IEND", b"")


def png_with_card(image: bytes, character: Character) -> bytes:
    """A PNG image with the character written into it as SillyTavern writes cards: a V2 card in the `chara`
    tEXt chunk and a V3 card in `ccv3` (replacing any card there); the picture itself is kept as it is."""
    if not image.startswith(PNG_SIGNATURE):
        raise CardError("the image is not a PNG")
    chunks = b"".join(
        _chunk(b"tEXt", key + b"\0" + base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8")))
        for key, card in ((b"chara", to_card(character)), (b"ccv3", card_v3(character)))
    )
    out, pos = [PNG_SIGNATURE], len(PNG_SIGNATURE)
    while pos + 8 <= len(image):
        length, kind = struct.unpack(">I4s", image[pos : pos + 8])
        whole = image[pos : pos + 12 + length]
        if kind == b"IEND":
            out.append(chunks)
        if not (kind == b"tEXt" and whole[8:].split(b"\0", 1)[0] in (b"chara", b"ccv3")):
            out.append(whole)
        pos += 12 + length
    return b"".join(out)
