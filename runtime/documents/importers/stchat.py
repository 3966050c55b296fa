"""SillyTavern chat exports (.jsonl): a metadata line (`user_name`, `character_name`, ...), then one message
object per line (`name`, `is_user`, `mes`, `swipes`, `swipe_id`, ...).

A chat keeps every line as read under `extra["sillytavern"]`, so exporting it back writes the same
objects, with unknown fields, for the messages that were not changed; system (narrator) messages are
kept there and put back where they stood.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from talesmith.runtime.documents.cards import Character
from talesmith.runtime.documents.formats import CHARACTER, USER
from talesmith.runtime.documents.stories import ChatDocument, ChatMessage
from talesmith.runtime.errors import InputError

KEY = "sillytavern"


def is_st_chat(lines: list[dict[str, Any]]) -> bool:
    return bool(lines) and "character_name" in lines[0] and all("mes" in m for m in lines[1:])


def _swipes(raw: dict[str, Any]) -> tuple[tuple[str, ...], int]:
    swipes = raw.get("swipes")
    if isinstance(swipes, list) and swipes and all(isinstance(s, str) for s in swipes):
        index = raw.get("swipe_id", 0)
        index = index if isinstance(index, int) and 0 <= index < len(swipes) else 0
        if swipes[index] == raw["mes"]:
            return tuple(swipes), index
    return (raw["mes"],), 0


def chat_from_st(lines: list[dict[str, Any]], where: str, *, character: Character | None = None) -> ChatDocument:
    """A chat from the objects of an ST .jsonl; `character` is the card to chat with (a bare one by default)."""
    if not is_st_chat(lines):
        raise InputError(
            f"{where} is not a SillyTavern chat: the first line needs character_name and every "
            f"other line a message with 'mes'"
        )
    meta = lines[0]
    name = str(meta.get("character_name") or "").strip()
    if not name:
        raise InputError(f"{where}: the chat names no character (character_name is empty)")
    messages = []
    for number, raw in enumerate(lines[1:], 2):
        if not isinstance(raw.get("mes"), str):
            raise InputError(f"{where}: line {number}: 'mes' must be text")
        if raw.get("is_system"):
            continue
        swipes, index = _swipes(raw)
        messages.append(ChatMessage(USER if raw.get("is_user") else CHARACTER, swipes, index))
    character = character or Character(
        name=name, card={"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": name}}
    )
    return ChatDocument(
        character=character,
        messages=tuple(messages),
        name=f"Chat with {name}",
        user_name=str(meta.get("user_name") or ""),
        extra={KEY: copy.deepcopy(lines)},
    )


def _message(doc: ChatDocument, m: ChatMessage, raw: dict[str, Any] | None, now_ms: int) -> dict[str, Any]:
    is_user = m.speaker == USER
    if raw is not None and bool(raw.get("is_user")) == is_user and _swipes(raw) == (m.swipes, m.index):
        return raw
    out = copy.deepcopy(raw) if raw is not None and bool(raw.get("is_user")) == is_user else {}
    out.update(name=(doc.user_name or "You") if is_user else doc.character.name, is_user=is_user, mes=m.text)
    out.setdefault("is_name", True)
    out.setdefault("send_date", now_ms)
    if len(m.swipes) > 1 or "swipes" in out:
        out.update(swipes=list(m.swipes), swipe_id=m.index)
    return out


def chat_to_st(doc: ChatDocument, *, now_ms: int = 0) -> list[dict[str, Any]]:
    """The chat as ST .jsonl objects: what was imported, with the changed and new messages written over it."""
    kept = copy.deepcopy(doc.extra.get(KEY) or [{}])
    meta = kept[0]
    meta.update(user_name=doc.user_name or meta.get("user_name") or "You", character_name=doc.character.name)
    meta.setdefault("create_date", now_ms)
    out, messages = [meta], list(doc.messages)
    for raw in kept[1:]:
        if raw.get("is_system"):
            out.append(raw)
        elif messages:
            out.append(_message(doc, messages.pop(0), raw, now_ms))
    out += [_message(doc, m, None, now_ms) for m in messages]
    return out


def dumps(lines: list[dict[str, Any]]) -> str:
    """JSON lines as SillyTavern writes them (compact, UTF-8)."""
    return "".join(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n" for line in lines)
