"""The chat screen: a character, the conversation, a line to write in; replies stream in, regenerated
replies are kept as swipes, any message can be edited or deleted."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, Input, ListItem, ListView, Static

from talesmith.runtime.documents.cards import Character, load_card, to_card
from talesmith.runtime.documents.formats import CHARACTER
from talesmith.runtime.errors import TalesmithError
from talesmith.runtime.settings import preset
from talesmith.runtime.documents.stories import ChatDocument, atomic_write, slug

from .base import DocumentScreen
from .dialogs import CharacterEditor, TextEditor, TextPrompt
from .generation import Job, Measure

NO_CHAT = ChatDocument(Character(name=""), name="")
REGENERATE, REPLY = "regenerate", "reply"


class MessageList(ListView):
    """The conversation; the highlighted message can be edited or deleted."""

    BINDINGS = [
        Binding("e,enter", "edit", "Edit", tooltip="Edit the highlighted message"),
        Binding("d,delete", "delete", "Delete", tooltip="Delete the highlighted message (ctrl+z brings it back)"),
    ]

    class Act(Message):
        def __init__(self, action: str, index: int) -> None:
            super().__init__()
            self.action, self.index = action, index

    def action_edit(self) -> None:
        if self.index is not None:
            self.post_message(self.Act("edit", self.index))

    def action_delete(self) -> None:
        if self.index is not None:
            self.post_message(self.Act("delete", self.index))


class ChatScreen(DocumentScreen):
    KIND = "chat"
    FOLDER = "chats"
    BINDINGS = [
        Binding("ctrl+r", "regenerate", "Regen", priority=True, tooltip="Regenerate the last reply as a new swipe"),
        Binding("alt+left", "swipe(-1)", "Swipe ◀", priority=True, show=False, tooltip="Previous swipe of the last reply"),
        Binding("alt+right", "swipe(1)", "Swipe ▶", priority=True, show=False,
                tooltip="Next swipe of the last reply (past the last: a new one)"),
        Binding("f5", "edit_character", "Character", priority=True, tooltip="Edit the character"),
        Binding("f7", "import_card", "Import", priority=True, tooltip="Import a character card (.png / .json)"),
        Binding("f6", "new_character", "New character", priority=True, show=False,
                tooltip="Create a character and start a chat with them"),
        Binding("ctrl+n", "new_chat", "New chat", priority=True, show=False,
                tooltip="Start a new chat with the same character"),
        *DocumentScreen.COMMON_BINDINGS,
    ]

    def __init__(self, data_dir: Path, *, preset: str | None = None) -> None:
        super().__init__(data_dir, preset=preset)
        self.dropped = 0
        self.streaming_item: Static | None = None

    def blank(self) -> ChatDocument:
        return NO_CHAT

    def empty(self, doc: ChatDocument) -> bool:
        return not doc.character.name

    @property
    def has_chat(self) -> bool:
        return bool(self.doc.character.name)

    def compose(self) -> ComposeResult:
        with Horizontal(id="body"):
            yield Static(id="character")
            with Vertical(id="conversation"):
                yield MessageList(id="messages")
                yield Input(id="composer", placeholder="Write a message, enter sends", compact=True)
        yield Static(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.show()
        self.query_one("#composer").focus()

    # --- document -> widgets -----------------------------------------------------------------

    def show(self) -> None:
        doc: ChatDocument = self.doc
        self.query_one("#character", Static).update(self._character_text())
        items = self.query_one("#messages", MessageList)
        index = items.index
        items.clear()
        self.streaming_item = None
        if not self.has_chat:
            items.append(ListItem(Static(
                "No chat open.\n\n[b]f6[/] new character\n[b]f7[/] import a character card (.png / .json)\n"
                "[b]ctrl+o[/] open a saved chat", classes="message"), disabled=True))
        for i, m in enumerate(doc.messages):
            items.append(ListItem(Static(self._message_text(i), classes="message")))
        if index is not None and doc.messages:
            items.index = min(index, len(doc.messages) - 1)
        items.scroll_end(animate=False)
        self.refresh_status()

    def _character_text(self) -> str:
        c = self.doc.character
        if not c.name:
            return "[dim]no character[/]"
        persona = c.persona.strip()
        persona = persona[:300] + ("…" if len(persona) > 300 else "")
        lines = [f"[b]{escape(c.name)}[/]", "", escape(persona)]
        if c.scenario.strip():
            lines += ["", f"[i]{escape(c.scenario.strip()[:200])}[/]"]
        lines += ["", "[dim]f5 edit[/]"]
        return "\n".join(lines)

    def _message_text(self, i: int, streaming: str | None = None) -> str:
        doc: ChatDocument = self.doc
        m = doc.messages[i] if i < len(doc.messages) else None
        is_char = m is None or m.speaker == CHARACTER
        name = doc.character.name if is_char else doc.user_name
        text = streaming if streaming is not None else m.text
        head = f"[b {'magenta' if is_char else 'cyan'}]{escape(name)}[/]"
        if m is not None and len(m.swipes) > 1 and streaming is None:
            head += f" [dim]‹{m.index + 1}/{len(m.swipes)}›[/]"
        if i < self.dropped:
            head += " [dim i](out of context)[/]"
        return f"{head}\n{escape(text)}"

    def prompt_document(self) -> Any:
        return self.doc.to_chat() if self.has_chat else None

    def measured(self, measure: Measure) -> None:
        self._set_dropped(measure.dropped)

    def prepared(self, job: Job, dropped: int) -> None:
        self._set_dropped(dropped)

    def _set_dropped(self, dropped: int) -> None:
        if dropped != self.dropped:
            grew = dropped > self.dropped
            self.dropped = dropped
            if grew:
                self.notify(f"The {dropped} oldest messages no longer fit the context; the character no longer "
                            f"sees them (persona and examples are kept)", severity="warning", timeout=6)
            if self.job is None:
                self.show()

    def status_extra(self) -> str:
        parts = [f"{self.dropped} msgs out of ctx"] if self.dropped else []
        last = self.doc.messages[-1] if self.doc.last_is_reply else None
        if last is not None and len(last.swipes) > 1:
            parts.append(f"swipe {last.index + 1}/{len(last.swipes)} (alt+←/→)")
        return " · ".join(parts)

    # --- sending and replies -----------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "composer":
            return
        text = event.value.strip()
        if not self._ready():
            return
        if not text:
            if self.doc.messages and not self.doc.last_is_reply:
                self._reply(REPLY)  # ask again for the reply that is missing
            else:
                self.notify("Type a message first", timeout=2)
            return
        event.input.value = ""
        self.commit(self.doc.sent(text))
        self.show()
        self._reply(REPLY)

    def _ready(self) -> bool:
        if self.busy(quiet=False):
            return False
        if not self.has_chat:
            self.notify("No chat open: f6 creates a character, f7 imports a card, ctrl+o opens a chat", timeout=4)
            return False
        return True

    def _reply(self, kind: str) -> None:
        doc: ChatDocument = self.doc
        upto = len(doc.messages) - 1 if kind == REGENERATE else None
        if not self.start_generation(kind, doc.to_chat(upto)):
            return
        items = self.query_one("#messages", MessageList)
        waiting = self._message_text(len(doc.messages) if kind == REPLY else len(doc.messages) - 1, streaming="…")
        if kind == REGENERATE and items.children:
            self.streaming_item = items.children[-1].query_one(Static)
            self.streaming_item.update(waiting)
        else:
            self.streaming_item = Static(waiting, classes="message")
            items.append(ListItem(self.streaming_item))
        items.scroll_end(animate=False)

    def action_regenerate(self) -> None:
        if not self._ready():
            return
        if not self.doc.last_is_reply:
            if self.doc.messages:
                self._reply(REPLY)
            else:
                self.notify("Nothing to regenerate yet: write a message", timeout=3)
            return
        self._reply(REGENERATE)

    def action_swipe(self, step: int) -> None:
        if not self._ready():
            return
        doc: ChatDocument = self.doc
        if not doc.last_is_reply:
            self.notify("Swipes change the character's last reply; there is none after your message", timeout=3)
            return
        last = doc.messages[-1]
        if step > 0 and last.index == len(last.swipes) - 1:
            self._reply(REGENERATE)  # past the last swipe: write a new one
            return
        self.commit(doc.cycled(step))
        self.show()

    def streamed(self, job: Job, text: str) -> None:
        if self.streaming_item is not None:
            index = len(self.doc.messages) if job.base == REPLY else len(self.doc.messages) - 1
            self.streaming_item.update(self._message_text(index, streaming=job.text.lstrip()))
            self.query_one("#messages", MessageList).scroll_end(animate=False)

    def finished(self, job: Job, reason: str | None) -> None:
        text = job.text.strip()
        if text:
            self.commit(self.doc.replied(text) if job.base == REPLY else self.doc.swiped_reply(text))
        elif reason is not None:
            self.notify("The model ended without writing a reply; try ctrl+r", timeout=4)
        self.show()

    # --- editing messages --------------------------------------------------------------------

    def on_message_list_act(self, event: MessageList.Act) -> None:
        if self.busy(quiet=False) or not self.has_chat or event.index >= len(self.doc.messages):
            return
        index = event.index
        if event.action == "delete":
            self.commit(self.doc.deleted(index))
            self.notify("Message deleted (ctrl+z brings it back)", timeout=3)
            self.show()
            return

        def done(text: str | None) -> None:
            if text is not None and text.strip():
                self.commit(self.doc.edited(index, text.strip()))
                self.show()

        self.app.push_screen(TextEditor("Edit message · ctrl+s saves · escape cancels",
                                        self.doc.messages[index].text), done)

    # --- characters and chats ----------------------------------------------------------------

    def save_character(self, character: Character) -> None:
        """Keep a copy of the card in the characters folder (unknown card fields included)."""
        path = self.data_dir / "characters" / f"{slug(character.name)}.json"
        try:
            atomic_write(path, json.dumps(to_card(character), ensure_ascii=False, indent=1) + "\n")
        except OSError as e:
            self.notify(f"Could not save the character card to {path}: {e}", severity="warning")

    def start_chat(self, character: Character) -> None:
        self.save_character(character)
        doc: ChatDocument = self.doc
        if self.has_chat:
            settings = dict(settings=doc.settings, preset=doc.preset)
        elif self.preset is not None:
            settings = dict(settings=preset(self.preset), preset=self.preset)
        else:
            settings = {}
        self.load(None, ChatDocument.start(character, **settings))
        self.autosave()
        self.query_one("#composer").focus()

    def action_new_chat(self) -> None:
        if not self._ready():
            return
        self.start_chat(self.doc.character)
        self.notify(f"New chat with {self.doc.character.name}", timeout=2)

    def action_new_character(self) -> None:
        if self.busy(quiet=False):
            return

        def done(character: Character | None) -> None:
            if character is not None:
                self.start_chat(character)

        self.app.push_screen(CharacterEditor(), done)

    def action_edit_character(self) -> None:
        if not self._ready():
            return

        def done(character: Character | None) -> None:
            if character is not None:
                self.save_character(character)
                self.commit(_with_character(self.doc, character))
                self.show()

        self.app.push_screen(CharacterEditor(self.doc.character), done)

    def action_import_card(self) -> None:
        if self.busy(quiet=False):
            return

        def done(path: str | None) -> None:
            if not path or not path.strip():
                return
            try:
                character = load_card(path.strip())
            except TalesmithError as e:
                self.notify(f"{e}. Nothing was changed.", severity="error", timeout=10)
                return
            self.start_chat(character)
            self.notify(f"Imported {character.name}", timeout=3)

        self.app.push_screen(TextPrompt("Character card to import (.png or .json path)"), done)


def _with_character(doc: ChatDocument, character: Character) -> ChatDocument:
    name = f"Chat with {character.name}" if doc.name == f"Chat with {doc.character.name}" else doc.name
    return dataclasses.replace(doc, character=character, name=name)
