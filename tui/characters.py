"""The character library (alt+c on the chat screen): every card kept in the data folder with its initials,
name, creator and tags; type to search, enter starts a chat, c lists the card's chats, d deletes the card."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from talesmith.runtime.documents.cards import Character
from talesmith.runtime.documents.characters import (
    CardEntry,
    chats_of,
    delete_card,
    export_card,
    list_cards,
    search,
)
from talesmith.runtime.errors import TalesmithError

from .dialogs import Confirm, framed


@dataclass(frozen=True)
class Picked:
    """What the library gives back: a chat to start with `character` (kept at `path`), or a chat to open."""

    character: Character | None = None
    path: Path | None = None
    chat_id: str = ""
    new: bool = False


def row(entry: CardEntry) -> Text:
    """` SE  Seraphina · by Creator · tag, tag` (a card that cannot be read says why)."""
    if entry.error:
        return Text.assemble((" !! ", "bold red"), (entry.path.name, "bold"), (f" · {entry.error}", "dim"))
    text = Text.assemble((f" {entry.initials:<2} ", "bold reverse"), " ", (entry.name, "bold"))
    if entry.creator:
        text.append(f" · by {entry.creator}", "dim")
    if entry.tags:
        text.append(" · " + ", ".join(entry.tags[:6]), "italic dim")
    return text


class CharacterLibrary(ModalScreen["Picked | None"]):
    DEFAULT_CSS = """
    CharacterLibrary #cards {
        height: 1fr;
    }
    """
    BINDINGS = [
        Binding("enter", "chat", "Chat", priority=True),
        Binding("alt+o", "chats", "Their chats", priority=True),
        Binding("ctrl+d", "delete", "Delete card", priority=True),
        Binding("ctrl+e", "export", "Export PNG+JSON", priority=True),
        Binding("ctrl+n", "new", "New character", priority=True),
        Binding("escape", "cancel", "Close"),
    ]

    def __init__(self, data_dir: Path) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.cards: list[CardEntry] = []
        self.shown: list[CardEntry] = []
        self.chats: list[tuple[str, str]] | None = None
        """The chats listed instead of the cards (alt+o), or None."""

    def compose(self) -> ComposeResult:
        yield from framed(
            Label(Text("Characters", style="bold"), id="title"),
            Input(placeholder="search names, creators, tags", id="search", compact=True),
            OptionList(id="cards"),
            hint="type to search · enter chat · alt+o their chats · ctrl+e export · ctrl+d delete · ctrl+n new · "
            "escape close",
        )

    def on_mount(self) -> None:
        self.cards = list_cards(self.data_dir)
        self.show_cards()
        self.query_one("#search", Input).focus()

    def show_cards(self) -> None:
        self.chats = None
        self.shown = search(self.cards, self.query_one("#search", Input).value)
        options = self.query_one("#cards", OptionList)
        options.clear_options()
        for entry in self.shown:
            options.add_option(Option(row(entry)))
        if not self.shown:
            hint = "No cards match" if self.cards else "No characters yet: f7 imports a card, ctrl+n creates one"
            options.add_option(Option(Text(hint, style="dim"), disabled=True))
        options.highlighted = 0 if self.shown else None
        self.query_one("#title", Label).update(Text(f"Characters ({len(self.cards)})", style="bold"))

    def selected(self) -> CardEntry | None:
        at = self.query_one("#cards", OptionList).highlighted
        return self.shown[at] if self.chats is None and at is not None and at < len(self.shown) else None

    def on_input_changed(self, event: Input.Changed) -> None:
        self.show_cards()

    def on_key(self, event: events.Key) -> None:
        """The arrows move through the list while the search keeps the keyboard."""
        options = self.query_one("#cards", OptionList)
        moves = {
            "up": options.action_cursor_up,
            "down": options.action_cursor_down,
            "pageup": options.action_page_up,
            "pagedown": options.action_page_down,
        }
        if event.key in moves:
            moves[event.key]()
            event.stop()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_chat()

    def action_chat(self) -> None:
        if self.chats is not None:
            at = self.query_one("#cards", OptionList).highlighted
            if at is not None and at < len(self.chats):
                self.dismiss(Picked(chat_id=self.chats[at][0]))
            return
        entry = self.selected()
        if entry is None:
            return
        if entry.character is None:
            self.notify(f"{entry.path.name} cannot be read: {entry.error}", severity="error", timeout=8)
            return
        self.dismiss(Picked(entry.character, entry.path))

    def action_chats(self) -> None:
        entry = self.selected()
        if entry is None:
            if self.chats is not None:
                self.show_cards()
            return
        self.chats = chats_of(self.data_dir, entry)
        options = self.query_one("#cards", OptionList)
        options.clear_options()
        for _, name in self.chats:
            options.add_option(Option(Text(name)))
        if not self.chats:
            options.add_option(Option(Text(f"No chats with {entry.name} yet: enter on the card starts one")))
        options.highlighted = 0
        title = f"Chats with {entry.name} ({len(self.chats)}) · alt+o back to the cards"
        self.query_one("#title", Label).update(Text(title, style="bold"))

    def action_delete(self) -> None:
        entry = self.selected()
        if entry is None:
            return

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                delete_card(entry)
            except TalesmithError as e:
                self.notify(str(e), severity="error", timeout=8)
                return
            self.cards = [c for c in self.cards if c.path != entry.path]
            self.show_cards()
            self.notify(f"Deleted the card {entry.path.name}; its chats keep their own copy", timeout=4)

        self.app.push_screen(Confirm(f"Delete the card {entry.name} ({entry.path.name})?"), answered)

    def action_export(self) -> None:
        """The card as a PNG carrying its own picture (V2 and V3) and as JSON, into the exports folder."""
        entry = self.selected()
        if entry is None:
            return
        try:
            png, card = export_card(entry, self.data_dir / "exports")
        except TalesmithError as e:
            self.notify(str(e), severity="error", timeout=8)
            return
        self.notify(f"Exported {entry.name} to {png} and {card.name}", timeout=6)

    def action_new(self) -> None:
        self.dismiss(Picked(new=True))

    def action_cancel(self) -> None:
        self.dismiss(None)
