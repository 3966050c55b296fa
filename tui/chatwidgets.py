"""The chat screen's widgets: the message list, the composer, and how a character and a message are shown."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import ListView, TextArea

from talesmith.runtime.documents.formats import CHARACTER
from talesmith.runtime.documents.stories import ChatDocument, User


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


NO_CHAT_HELP = Text.assemble(
    "No chat open.\n\n",
    ("alt+c", "bold"),
    " your characters\n",
    ("f6", "bold"),
    " new character\n",
    ("f7", "bold"),
    " import a character card (.png / .json)\n",
    ("ctrl+o", "bold"),
    " open a saved chat",
)


def character_text(doc: ChatDocument, default_user: User) -> Text:
    """The character panel: name, persona and scenario (cut short), the card's lorebook, who you are."""
    c = doc.character
    if not c.name:
        return Text("no character", style="dim")
    persona = doc.fill(c.persona.strip(), default_user)
    persona = persona[:300] + ("…" if len(persona) > 300 else "")
    text = Text.assemble((c.name, "bold"), "\n\n", persona)
    if c.scenario.strip():
        text.append("\n\n" + doc.fill(c.scenario.strip()[:200], default_user), "italic")
    if c.book_entries:
        text.append(f"\n\nLorebook: {c.book_entries} entries from the card (ctrl+l)", "dim")
    text.append(f"\n\nyou: {doc.user(default_user).name} (f8)\nf5 edit", "dim")
    return text


def message_text(
    doc: ChatDocument, i: int, default_user: User, *, dropped: int = 0, streaming: str | None = None
) -> Text:
    """Message `i` (or the reply being written after the last, with `streaming` its text so far)."""
    m = doc.messages[i] if i < len(doc.messages) else None
    is_char = m is None or m.speaker == CHARACTER
    name = doc.character.name if is_char else doc.user(default_user).name
    text = streaming if streaming is not None else doc.fill(m.text if m else "", default_user)
    head = Text(name, style=f"bold {'magenta' if is_char else 'cyan'}")
    if m is not None and len(m.swipes) > 1 and streaming is None:
        head.append(f" ‹{m.index + 1}/{len(m.swipes)}›", "dim")
    if i < dropped:
        head.append(" (out of context)", "dim italic")
    return Text.assemble(head, "\n", text)
