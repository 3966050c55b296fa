"""What the chat screen decides, without Textual: where a generation's text goes, the prompt it continues,
which reply a key acts on, the character cards kept in characters/ and a free name for an imported one."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from talesmith.runtime.documents.cards import Character, to_card
from talesmith.runtime.documents.formats import CHARACTER, USER, Chat
from talesmith.runtime.documents.lorebook import Lorebook
from talesmith.runtime.documents.stories import ChatDocument, ChatMessage, User, atomic_write, slug
from talesmith.runtime.settings import preset

NO_CHAT = ChatDocument(Character(name=""), name="")
REPLY, SWIPE, CONTINUE, IMPERSONATE = "reply", "swipe", "continue", "impersonate"


@dataclass(frozen=True)
class Target:
    """Where a generation's text goes: a new reply, a new swipe of message `index`, the end of message `index`
    (a reply continued), or the composer (your next line, written by the model)."""

    kind: str
    index: int = -1


def placed(doc: ChatDocument, target: Target, text: str) -> ChatDocument:
    """`doc` with a generation's `text` where `target` says (the composer's text is not the document's)."""
    if target.kind == REPLY:
        return doc.replied(text.strip())
    if target.kind in (SWIPE, CONTINUE):
        m = doc.messages[target.index]
        m = m.with_swipe(text.strip()) if target.kind == SWIPE else m.edited(m.text.rstrip() + text.rstrip())
        return with_message(doc, target.index, m)
    return doc


def prompt_for(doc: ChatDocument, target: Target, user: User, global_books: tuple[Lorebook, ...]) -> Chat:
    """The prompt a generation for `target` continues: the chat up to the message it rewrites or continues."""
    upto = target.index if target.kind in (SWIPE, CONTINUE) else None
    prompt = doc.to_chat(upto, user=user, global_books=global_books)
    if target.kind == CONTINUE:
        return dataclasses.replace(prompt, started=doc.messages[target.index].text)
    if target.kind == IMPERSONATE:
        return dataclasses.replace(prompt, writer=USER)
    return prompt


def last_reply_target(doc: ChatDocument, step: int) -> Target | str | ChatDocument:
    """What alt+←/→ does to the last reply: a new swipe to write (a Target), the chat with another swipe shown,
    or why nothing happens (a str)."""
    if not doc.last_is_reply:
        return "Swipes change the character's last reply; there is none after your message"
    last = doc.messages[-1]
    if step > 0 and last.index == len(last.swipes) - 1:
        if len(doc.messages) == 1:  # the greetings: the card's own, not the model's
            return "That is the last greeting; ctrl+r writes a new one with the model"
        return Target(SWIPE, len(doc.messages) - 1)  # past the last swipe: write a new one
    return doc.cycled(step)


def act_on_reply(doc: ChatDocument, action: str, index: int, step: int) -> Target | str | ChatDocument | None:
    """Regenerate, swipe or continue any of the character's messages (those after it stay as they are): a
    Target to write, the chat with another swipe shown, why not (a str), or None (one swipe only)."""
    m = doc.messages[index]
    if m.speaker != CHARACTER:
        return "That is your message: r, ←/→ and c act on the character's replies; e edits yours"
    if action == "continue":
        return Target(CONTINUE, index)
    if action == "regenerate" or (step > 0 and m.index == len(m.swipes) - 1 and index > 0):
        return Target(SWIPE, index)  # past the last swipe: a new one (the greetings stop at the last)
    if len(m.swipes) > 1:
        return with_message(doc, index, dataclasses.replace(m, index=(m.index + step) % len(m.swipes)))
    return None


def status_extra(doc: ChatDocument, dropped: int) -> str:
    """The chat's part of the status line: messages out of the context, the last reply's swipe."""
    parts = [f"{dropped} msgs out of ctx"] if dropped else []
    last = doc.messages[-1] if doc.last_is_reply else None
    if last is not None and len(last.swipes) > 1:
        parts.append(f"swipe {last.index + 1}/{len(last.swipes)} (alt+←/→)")
    return " · ".join(parts)


def new_chat(current: ChatDocument, character: Character, user: User, model_preset: str | None) -> ChatDocument:
    """A new chat with `character`: the sampling of the chat open, else the model's own preset."""
    settings: dict[str, Any] = {}
    if current.character.name:
        settings = dict(settings=current.settings, preset=current.preset)
    elif model_preset is not None:
        settings = dict(settings=preset(model_preset), preset=model_preset)
    return ChatDocument.start(character, user=user, **settings)


def with_message(doc: ChatDocument, index: int, message: ChatMessage) -> ChatDocument:
    return dataclasses.replace(doc, messages=doc.messages[:index] + (message,) + doc.messages[index + 1 :])


def with_character(doc: ChatDocument, character: Character) -> ChatDocument:
    """`doc` with an edited character; a chat named after its character follows a new name."""
    name = f"Chat with {character.name}" if doc.name == f"Chat with {doc.character.name}" else doc.name
    return dataclasses.replace(doc, character=character, name=name)


# --- character cards kept in <data dir>/characters/ -------------------------------------------------


def card_path(data_dir: Path, character: Character) -> Path:
    """Where a character's card is kept: characters/<slug of the name>.json."""
    return data_dir / "characters" / f"{slug(character.name)}.json"


def write_card(path: Path, character: Character) -> int:
    """Keep the card at `path` (unknown card fields included); how many characters UTF-8 could not hold.
    Raises OSError."""
    return atomic_write(path, json.dumps(to_card(character), ensure_ascii=False, indent=1) + "\n")


def free_path(path: Path) -> Path:
    """`path`, or `NAME-2.json`, `NAME-3.json`... when it is taken."""
    candidate, n = path, 2
    while candidate.exists():
        candidate, n = path.with_name(f"{path.stem}-{n}{path.suffix}"), n + 1
    return candidate


def import_target(path: Path, answer: str) -> Path:
    """Where an imported card goes: over the one kept at `path` ("replace"), or beside it (anything else)."""
    return path if answer == "replace" else free_path(path)
