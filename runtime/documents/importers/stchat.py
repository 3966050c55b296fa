"""SillyTavern chat exports (.jsonl): a metadata line (`user_name`, `character_name`, ...), then one message
object per line (`name`, `is_user`, `mes`, `swipes`, `swipe_id`, ...).

A chat keeps every line as read under `extra["sillytavern"]`, so exporting it back writes the same
objects, with unknown fields, for the messages that were not changed; system (narrator) messages are
kept there and put back where they stood.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from talesmith.runtime.documents.cards import Character
from talesmith.runtime.documents.formats import CHARACTER, USER
from talesmith.runtime.documents.stories import DEFAULT_USER, ChatDocument, ChatMessage
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


MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def send_date(now: datetime) -> str:
    """A message's time as SillyTavern writes it (its getMessageTimeStamp): "June 19, 2023 2:20pm"."""
    hour = now.hour % 12 or 12
    return f"{MONTHS[now.month - 1]} {now.day}, {now.year} {hour}:{now.minute:02d}{'pm' if now.hour >= 12 else 'am'}"


def create_date(now: datetime) -> str:
    """A chat's creation time as SillyTavern writes it (its humanizedDateTime): "2023-6-19 @14h 20m 30s 123ms"."""
    return (
        f"{now.year}-{now.month}-{now.day} @{now.hour:02d}h {now.minute:02d}m {now.second:02d}s "
        f"{now.microsecond // 1000:03d}ms"
    )


@dataclass(frozen=True)
class _Writer:
    doc: ChatDocument
    user_name: str
    now: str
    """The send_date of what talesmith wrote."""

    @property
    def new_extra(self) -> dict[str, Any]:
        """The `extra` of text talesmith generated: its model, never one of the imported file's."""
        return {"api": "talesmith", "model": self.doc.model} if self.doc.model else {"api": "talesmith"}

    def message(self, m: ChatMessage, raw: dict[str, Any] | None) -> dict[str, Any]:
        is_user = m.speaker == USER
        if raw is not None and bool(raw.get("is_user")) == is_user and _swipes(raw) == (m.swipes, m.index):
            return raw
        if raw is None or bool(raw.get("is_user")) != is_user:  # a new message
            out: dict[str, Any] = {
                "name": self.user_name if is_user else self.doc.character.name,
                "is_user": is_user,
                "is_name": True,
                "send_date": self.now,
                "mes": m.text,
                "extra": {} if is_user else self.new_extra,
            }
            old: tuple[str, ...] = ()
        else:  # the imported message, edited or swiped: its speaker's name as it was
            out = copy.deepcopy(raw)
            out["mes"] = m.text
            old = _swipes(raw)[0]
        if len(m.swipes) > max(len(old), 1) or "swipe_info" in out:
            self._swipes(out, m, old, raw)
        elif len(m.swipes) > 1 or "swipes" in out:  # an edit: the swipes as they were, one text changed
            out.update(swipes=list(m.swipes), swipe_id=m.index)
        return out

    def _swipes(self, out: dict[str, Any], m: ChatMessage, old: tuple[str, ...], raw: dict[str, Any] | None) -> None:
        """Swipes, their index and `swipe_info` (one per swipe: when it was written, with its extra); the
        message's send_date and extra are those of the swipe shown, as SillyTavern keeps them."""
        info = out.get("swipe_info")
        info = list(info) if isinstance(info, list) else []
        own = {k: copy.deepcopy(raw[k]) for k in ("send_date", "gen_started", "gen_finished") if raw and k in raw}
        for i in range(len(info), len(m.swipes)):
            if i < len(old):  # a swipe of the file without its info (SillyTavern makes it from the message)
                info.append({**own, "extra": copy.deepcopy((raw or {}).get("extra") or {})})
            else:  # written by talesmith
                info.append({"send_date": self.now, "gen_started": None, "gen_finished": None, "extra": self.new_extra})
        info = info[: len(m.swipes)]
        out.update(swipes=list(m.swipes), swipe_id=m.index, swipe_info=info)
        shown = info[m.index] if isinstance(info[m.index], dict) else {}
        if m.index >= len(old) or raw is None:  # new text shown: its own date and extra, not the file's
            out["send_date"] = shown.get("send_date", self.now)
            out["extra"] = copy.deepcopy(shown.get("extra", self.new_extra))
            for key in ("gen_started", "gen_finished"):
                out.pop(key, None)


def chat_to_st(doc: ChatDocument, *, user_name: str | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
    """The chat as ST .jsonl objects: what was imported, with the changed and new messages written over it.

    `user_name` is who writes the user's messages when the chat sets no name of its own (the app's F8 name);
    `now` the time written on new messages (now by default)."""
    when = now or datetime.now()
    name = doc.user_name.strip() or (user_name or "").strip() or DEFAULT_USER
    writer = _Writer(doc, name, send_date(when))
    kept = copy.deepcopy(doc.extra.get(KEY) or [{}])
    meta = kept[0]
    meta.update(user_name=doc.user_name or meta.get("user_name") or name, character_name=doc.character.name)
    if not doc.extra.get(KEY):  # a chat begun in talesmith; an imported one keeps its metadata as it was
        meta.setdefault("create_date", create_date(when))
    out, messages = [meta], list(doc.messages)
    for raw in kept[1:]:
        if raw.get("is_system"):
            out.append(raw)
        elif messages:
            out.append(writer.message(messages.pop(0), raw))
    out += [writer.message(m, None) for m in messages]
    return out


def dumps(lines: list[dict[str, Any]]) -> str:
    """JSON lines as SillyTavern writes them (compact, UTF-8)."""
    return "".join(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n" for line in lines)
