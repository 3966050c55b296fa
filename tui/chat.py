"""The chat screen: a character, the conversation, a line to write in; replies stream in, regenerated
replies are kept as swipes, any message can be edited or deleted."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, ListItem, ListView, Static, TextArea

from talesmith.runtime.documents.cards import Character, to_card
from talesmith.runtime.documents.characters import keep_avatar
from talesmith.runtime.documents.formats import CHARACTER, USER
from talesmith.runtime.documents.importers import read_import, save_import
from talesmith.runtime.documents.stories import ChatDocument, ChatMessage, User, atomic_write, slug
from talesmith.runtime.errors import TalesmithError
from talesmith.runtime.settings import preset

from .base import DocumentScreen
from .dialogs import CharacterEditor, Choice, TextEditor, TextPrompt
from .generation import Job, Measure
from .promptformat import folded, reply_parts
from .status import StatusLine

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
        return _with_message(doc, target.index, m)
    return doc


class MessageList(ListView):
    """The conversation; the highlighted message can be edited or deleted."""

    BINDINGS = [
        Binding("e,enter", "edit", "Edit", tooltip="Edit the highlighted message"),
        Binding("d,delete", "delete", "Delete", tooltip="Delete the highlighted message (ctrl+z brings it back)"),
        Binding("r", "act('regenerate')", "Regen", tooltip="Write another swipe of the highlighted reply"),
        Binding("left", "act('swipe', -1)", "Swipe ◀", show=False, tooltip="Previous swipe of the highlighted reply"),
        Binding("right", "act('swipe', 1)", "Swipe ▶", show=False, tooltip="Next swipe of the highlighted reply"),
        Binding("c", "act('continue')", "Continue", tooltip="Continue the highlighted reply where it stops"),
    ]

    class Act(Message):
        def __init__(self, action: str, index: int, step: int = 0) -> None:
            super().__init__()
            self.action, self.index, self.step = action, index, step

    def action_act(self, action: str, step: int = 0) -> None:
        if self.index is not None:
            self.post_message(self.Act(action, self.index, step))

    def on_focus(self) -> None:
        """Focused with nothing highlighted: the last message is, so the keys act on something seen."""
        if self.index is None and self.children:
            self.index = len(self.children) - 1

    def action_edit(self) -> None:
        if self.index is not None:
            self.post_message(self.Act("edit", self.index))

    def action_delete(self) -> None:
        if self.index is not None:
            self.post_message(self.Act("delete", self.index))


class Composer(TextArea):
    """Where the user writes: enter sends, shift+enter or ctrl+j starts a new line; long pastes are kept."""

    class Submitted(Message):
        def __init__(self, composer: Composer, value: str) -> None:
            super().__init__()
            self.composer, self.value = composer, value

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.post_message(self.Submitted(self, self.text))
            return
        if event.key in ("shift+enter", "ctrl+j"):
            event.stop()
            event.prevent_default()
            self.insert("\n")
            return
        await super()._on_key(event)


class ChatScreen(DocumentScreen):
    KIND = "chat"
    FOLDER = "chats"
    BINDINGS = [
        Binding("ctrl+r", "regenerate", "Regen", priority=True, tooltip="Regenerate the last reply as a new swipe"),
        Binding(
            "ctrl+g",
            "continue",
            "Continue",
            priority=True,
            show=False,
            tooltip="Continue the last reply where it stops",
        ),
        Binding(
            "alt+i",
            "impersonate",
            "Write my line",
            priority=True,
            show=False,
            tooltip="Impersonate: the model writes your next line into the box, for you to change and send",
        ),
        Binding(
            "alt+left", "swipe(-1)", "Swipe ◀", priority=True, show=False, tooltip="Previous swipe of the last reply"
        ),
        Binding(
            "alt+right",
            "swipe(1)",
            "Swipe ▶",
            priority=True,
            show=False,
            tooltip="Next swipe of the last reply (past the last: a new one; greetings stop at the last)",
        ),
        Binding("f5", "edit_character", "Character", priority=True, tooltip="Edit the character"),
        Binding(
            "alt+c",
            "characters",
            "Characters",
            priority=True,
            show=False,
            tooltip="Your characters: search, start a chat, see their chats, delete",
        ),
        Binding(
            "f7",
            "import_card",
            "Import",
            priority=True,
            tooltip="Import a card, a SillyTavern chat, preset or World Info, or a KoboldAI story",
        ),
        Binding(
            "f6",
            "new_character",
            "New character",
            priority=True,
            show=False,
            tooltip="Create a character and start a chat with them",
        ),
        Binding(
            "ctrl+n",
            "new_chat",
            "New chat",
            priority=True,
            show=False,
            tooltip="Start a new chat with the same character",
        ),
        *DocumentScreen.COMMON_BINDINGS,
    ]

    def __init__(self, data_dir: Path, **kwargs: Any) -> None:
        super().__init__(data_dir, **kwargs)
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
                yield Composer(
                    id="composer",
                    soft_wrap=True,
                    compact=True,
                    placeholder="enter sends · shift+enter or ctrl+j: new line",
                )
        yield StatusLine(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.show()
        self.query_one("#composer").focus()

    # --- document -> widgets -----------------------------------------------------------------

    @property
    def default_user(self) -> User:
        return self.holder.preferences.user

    def show(self) -> None:
        doc: ChatDocument = self.doc
        self.query_one("#character", Static).update(self._character_text())
        items = self.query_one("#messages", MessageList)
        index, focused = items.index, items.has_focus
        items.clear()
        self.streaming_item = None
        if not self.has_chat:
            items.append(
                ListItem(
                    Static(
                        Text.assemble(
                            "No chat open.\n\n",
                            ("alt+c", "bold"),
                            " your characters\n",
                            ("f6", "bold"),
                            " new character\n",
                            ("f7", "bold"),
                            " import a character card (.png / .json)\n",
                            ("ctrl+o", "bold"),
                            " open a saved chat",
                        ),
                        classes="message",
                    ),
                    disabled=True,
                )
            )
        for i, _m in enumerate(doc.messages):
            items.append(ListItem(Static(self._message_text(i), classes="message")))
        if focused and doc.messages:  # the message acted on (or the one after it) stays highlighted, in view
            items.index = min(len(doc.messages) - 1 if index is None else index, len(doc.messages) - 1)
        else:  # the conversation's end in view, whatever the window's size
            items.call_after_refresh(items.scroll_end, animate=False)
        self.refresh_status()

    def _character_text(self) -> Text:
        c = self.doc.character
        if not c.name:
            return Text("no character", style="dim")
        persona = self.doc.fill(c.persona.strip(), self.default_user)
        persona = persona[:300] + ("…" if len(persona) > 300 else "")
        text = Text.assemble((c.name, "bold"), "\n\n", persona)
        if c.scenario.strip():
            text.append("\n\n" + self.doc.fill(c.scenario.strip()[:200], self.default_user), "italic")
        if c.book_entries:
            text.append(f"\n\nLorebook: {c.book_entries} entries from the card (ctrl+l)", "dim")
        text.append(f"\n\nyou: {self.doc.user(self.default_user).name} (f8)\nf5 edit", "dim")
        return text

    def _message_text(self, i: int, streaming: str | None = None) -> Text:
        doc: ChatDocument = self.doc
        m = doc.messages[i] if i < len(doc.messages) else None
        is_char = m is None or m.speaker == CHARACTER
        name = doc.character.name if is_char else doc.user(self.default_user).name
        text = streaming if streaming is not None else doc.fill(m.text if m else "", self.default_user)
        head = Text(name, style=f"bold {'magenta' if is_char else 'cyan'}")
        if m is not None and len(m.swipes) > 1 and streaming is None:
            head.append(f" ‹{m.index + 1}/{len(m.swipes)}›", "dim")
        if i < self.dropped:
            head.append(" (out of context)", "dim italic")
        return Text.assemble(head, "\n", text)

    def prompt_document(self) -> Any:
        return self.doc.to_chat(user=self.default_user, global_books=self.global_lorebooks()) if self.has_chat else None

    def own_user(self) -> User | None:
        return User(self.doc.user_name, self.doc.user_persona) if self.has_chat else None

    def set_own_user(self, user: User) -> None:
        self.commit(dataclasses.replace(self.doc, user_name=user.name, user_persona=user.persona))

    def streaming_doc(self, job: Job) -> ChatDocument:
        text = reply_parts(job.text)[1]  # a thinking model's thinking is never kept
        return placed(self.doc, job.base, text) if text.strip() else self.doc

    def on_resize(self, event: events.Resize) -> None:
        items = self.query_one("#messages", MessageList)
        if not items.has_focus:
            items.call_after_refresh(items.scroll_end, animate=False)

    def measured(self, measure: Measure) -> None:
        self._set_dropped(measure.dropped)

    def prepared(self, job: Job, dropped: int) -> None:
        self._set_dropped(dropped)

    def _set_dropped(self, dropped: int) -> None:
        if dropped != self.dropped:
            grew = dropped > self.dropped
            self.dropped = dropped
            if grew:
                self.notify(
                    f"The {dropped} oldest messages no longer fit the context; the character no longer "
                    f"sees them (persona and examples are kept)",
                    severity="warning",
                    timeout=6,
                )
            if self.job is None:
                self.show()

    def status_extra(self) -> str:
        parts = [f"{self.dropped} msgs out of ctx"] if self.dropped else []
        last = self.doc.messages[-1] if self.doc.last_is_reply else None
        if last is not None and len(last.swipes) > 1:
            parts.append(f"swipe {last.index + 1}/{len(last.swipes)} (alt+←/→)")
        return " · ".join(parts)

    # --- sending and replies -----------------------------------------------------------------

    def on_composer_submitted(self, event: Composer.Submitted) -> None:
        text = event.value.strip()
        if not self._ready():
            return
        if not text:
            if self.doc.messages and not self.doc.last_is_reply:
                self._reply(Target(REPLY))  # ask again for the reply that is missing
            else:
                self.notify("Type a message first", timeout=2)
            return
        event.composer.load_text("")
        self.commit(self.doc.sent(text))
        self.autosave()  # the message is on disk before the reply starts
        self.show()
        self._reply(Target(REPLY))

    def _ready(self) -> bool:
        if self.busy(quiet=False):
            return False
        if not self.has_chat:
            self.notify("No chat open: f6 creates a character, f7 imports a card, ctrl+o opens a chat", timeout=4)
            return False
        return True

    def _reply(self, target: Target) -> None:
        doc: ChatDocument = self.doc
        upto = target.index if target.kind in (SWIPE, CONTINUE) else None
        prompt = doc.to_chat(upto, user=self.default_user, global_books=self.global_lorebooks())
        if target.kind == CONTINUE:
            prompt = dataclasses.replace(prompt, started=doc.messages[target.index].text)
        elif target.kind == IMPERSONATE:
            prompt = dataclasses.replace(prompt, writer=USER)
        if not self.start_generation(target, prompt):
            return
        items = self.query_one("#messages", MessageList)
        self.streaming_item = None
        if target.kind == REPLY:
            self.streaming_item = Static(self._message_text(len(doc.messages), streaming="…"), classes="message")
            items.append(ListItem(self.streaming_item))
            items.scroll_end(animate=False)
        elif target.kind in (SWIPE, CONTINUE) and target.index < len(items.children):
            self.streaming_item = items.children[target.index].query_one(Static)
            self.streaming_item.update(self._streaming_text(target, ""))

    def _streaming_text(self, target: Target, text: str) -> Text:
        if target.kind == CONTINUE:
            m = self.doc.messages[target.index]
            return self._message_text(target.index, streaming=self.doc.fill(m.text.rstrip(), self.default_user) + text)
        return self._message_text(
            target.index if target.kind == SWIPE else len(self.doc.messages), streaming=text or "…"
        )

    def action_regenerate(self) -> None:
        if not self._ready():
            return
        if not self.doc.last_is_reply:
            if self.doc.messages:
                self._reply(Target(REPLY))
            else:
                self.notify("Nothing to regenerate yet: write a message", timeout=3)
            return
        self._reply(Target(SWIPE, len(self.doc.messages) - 1))

    def action_continue(self) -> None:
        if not self._ready():
            return
        if not self.doc.last_is_reply:
            self.notify("Nothing to continue: the last message is yours; enter asks for a reply", timeout=3)
            return
        self._reply(Target(CONTINUE, len(self.doc.messages) - 1))

    def action_impersonate(self) -> None:
        if self._ready():
            self._reply(Target(IMPERSONATE))

    def action_swipe(self, step: int) -> None:
        if not self._ready():
            return
        doc: ChatDocument = self.doc
        if not doc.last_is_reply:
            self.notify("Swipes change the character's last reply; there is none after your message", timeout=3)
            return
        last = doc.messages[-1]
        if step > 0 and last.index == len(last.swipes) - 1:
            if len(doc.messages) == 1:  # the greetings: the card's own, not the model's
                self.notify("That is the last greeting; ctrl+r writes a new one with the model", timeout=3)
                return
            self._reply(Target(SWIPE, len(doc.messages) - 1))  # past the last swipe: write a new one
            return
        self.commit(doc.cycled(step))
        self.show()

    def streamed(self, job: Job, text: str) -> None:
        target: Target = job.base
        thinking, reply = reply_parts(job.text)
        if target.kind == IMPERSONATE:
            self.query_one("#composer", Composer).load_text(reply.strip())
            return
        if self.streaming_item is not None:
            reply = reply if target.kind == CONTINUE else reply.lstrip()
            self.streaming_item.update(
                self._streaming_text(target, f"{folded(thinking)}\n{reply}" if thinking else reply)
            )
            if target.kind == REPLY or target.index == len(self.doc.messages) - 1:
                self.query_one("#messages", MessageList).scroll_end(animate=False)

    def finished(self, job: Job, reason: str | None) -> None:
        target: Target = job.base
        text = reply_parts(job.text)[1]
        if target.kind == IMPERSONATE:
            composer = self.query_one("#composer", Composer)
            composer.load_text(text.strip())  # yours to change, then enter sends it
            composer.move_cursor(composer.document.end)
            composer.focus()
        elif text.strip():
            self.commit(placed(self.doc, target, text))
        if not text.strip() and reason is not None:
            self.notify("The model ended without writing anything; try again (ctrl+r)", timeout=4)
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
        if event.action in ("regenerate", "swipe", "continue"):
            self._act_on_reply(event.action, index, event.step)
            return

        def done(text: str | None) -> None:
            if text is not None and text.strip():
                self.commit(self.doc.edited(index, text.strip()))
                self.show()

        self.app.push_screen(
            TextEditor("Edit message · ctrl+s saves · escape cancels", self.doc.messages[index].text), done
        )

    def _act_on_reply(self, action: str, index: int, step: int) -> None:
        """Regenerate, swipe or continue any of the character's messages; those after it stay as they are."""
        m = self.doc.messages[index]
        if m.speaker != CHARACTER:
            self.notify("That is your message: r, ←/→ and c act on the character's replies; e edits yours", timeout=3)
        elif action == "continue":
            self._reply(Target(CONTINUE, index))
        elif action == "regenerate" or (step > 0 and m.index == len(m.swipes) - 1 and index > 0):
            self._reply(Target(SWIPE, index))  # past the last swipe: a new one (the greetings stop at the last)
        elif len(m.swipes) > 1:
            swiped = dataclasses.replace(m, index=(m.index + step) % len(m.swipes))
            self.commit(_with_message(self.doc, index, swiped))
            self.show()

    # --- characters and chats ----------------------------------------------------------------

    def character_path(self, character: Character) -> Path:
        return self.data_dir / "characters" / f"{slug(character.name)}.json"

    def save_character(self, character: Character, path: Path | None = None) -> None:
        """Keep a copy of the card in the characters folder (unknown card fields included)."""
        path = path or self.character_path(character)
        try:
            replaced = atomic_write(path, json.dumps(to_card(character), ensure_ascii=False, indent=1) + "\n")
        except OSError as e:
            self.notify(f"Could not save the character card to {path}: {e}", severity="warning")
            return
        if replaced:
            self.notify(
                f"{replaced} characters of the card cannot be stored as UTF-8; they were saved as \ufffd",
                severity="warning",
                timeout=8,
            )

    def start_chat(self, character: Character, path: Path | None = None) -> None:
        self.save_character(character, path)
        doc: ChatDocument = self.doc
        if self.has_chat:
            settings = dict(settings=doc.settings, preset=doc.preset)
        elif self.preset is not None:
            settings = dict(settings=preset(self.preset), preset=self.preset)
        else:
            settings = {}
        self.load(None, ChatDocument.start(character, user=self.default_user, **settings))
        self.autosave()
        self.query_one("#composer").focus()

    def action_new_chat(self) -> None:
        if not self._ready():
            return
        self.start_chat(self.doc.character)
        self.notify(f"New chat with {self.doc.character.name}", timeout=2)

    def action_characters(self) -> None:
        from .characters import CharacterLibrary, Picked

        if self.busy(quiet=False):
            return

        def done(picked: Picked | None) -> None:
            if picked is None:
                return
            if picked.new:
                self.action_new_character()
            elif picked.chat_id:
                self._opened(picked.chat_id)
            elif picked.character is not None:
                self.start_chat(picked.character, picked.path)
                self.notify(f"New chat with {picked.character.name}", timeout=2)

        self.app.push_screen(CharacterLibrary(self.data_dir), done)

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
            try:  # a card, or anything `talesmith import` reads (recognised by content)
                imported = read_import(path.strip(), characters=self.data_dir / "characters")
                saved = None if imported.kind == "character" else save_import(imported, self.data_dir)
            except TalesmithError as e:
                self.notify(f"{e}. Nothing was changed.", severity="error", timeout=10)
                return
            for note in imported.notes:
                self.notify(note, severity="warning", timeout=10)
            if imported.kind == "character":
                self._import(imported.value, source=Path(path.strip()).expanduser())
            elif imported.kind == "chat" and saved is not None:
                self.autosave()
                self._opened(saved.stem)
            else:
                self.notify(f"Imported {imported.kind} {imported.name!r} to {saved}", timeout=8)

        self.app.push_screen(
            TextPrompt(
                "File to import: a card (.png / .json), a SillyTavern chat, preset or World Info, a KoboldAI story"
            ),
            done,
        )

    def _import(self, character: Character, source: Path | None = None) -> None:
        """Start a chat with an imported character; a card of the same name already kept is replaced or kept.
        The picture of a PNG card (`source`) is kept beside it."""
        path = self.character_path(character)

        def chosen(answer: str | None) -> None:
            if answer is None:
                self.notify("Import cancelled; nothing was changed", timeout=3)
                return
            target = path if answer == "replace" else _free_path(path)
            self.start_chat(character, target)
            if source is not None:
                try:
                    keep_avatar(source, target)
                except TalesmithError as e:
                    self.notify(str(e), severity="warning", timeout=8)
            self.notify(f"Imported {character.name} as {target.name}", timeout=4)
            if character.replaced:
                self.notify(
                    f"{character.replaced} characters of the card cannot be stored as UTF-8 (broken "
                    f"surrogates); they were read as \ufffd",
                    severity="warning",
                    timeout=8,
                )

        if not path.exists():
            chosen("replace")
            return
        self.app.push_screen(
            Choice(
                f"A character card {path.name} is already kept in {path.parent}.",
                [("r", "replace", "replace it"), ("k", "keep", "keep both")],
            ),
            chosen,
        )


def _free_path(path: Path) -> Path:
    """`path`, or `NAME-2.json`, `NAME-3.json`... when it is taken."""
    candidate, n = path, 2
    while candidate.exists():
        candidate, n = path.with_name(f"{path.stem}-{n}{path.suffix}"), n + 1
    return candidate


def _with_message(doc: ChatDocument, index: int, message: ChatMessage) -> ChatDocument:
    return dataclasses.replace(doc, messages=doc.messages[:index] + (message,) + doc.messages[index + 1 :])


def _with_character(doc: ChatDocument, character: Character) -> ChatDocument:
    name = f"Chat with {character.name}" if doc.name == f"Chat with {doc.character.name}" else doc.name
    return dataclasses.replace(doc, character=character, name=name)
