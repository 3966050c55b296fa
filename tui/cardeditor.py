"""The character editor (f5, f6): a card's fields, greetings, creator and tags, and its own lorebook."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, Static, TextArea

from talesmith.runtime.documents.cards import Character, card_details, with_book, with_details
from talesmith.runtime.documents.lorebook import Lorebook
from talesmith.runtime.documents.worldinfo import card_lorebook, to_character_book
from talesmith.runtime.errors import TalesmithError

from .dialogs import Form


def merged_book(books: tuple[Lorebook, ...]) -> Lorebook:
    """One lorebook for a card from the editor's books: the first, with the other books' entries added under
    free uids (a card holds one character_book)."""
    first, taken = books[0], {e.uid for e in books[0].entries}
    entries = list(first.entries)
    for book in books[1:]:
        for entry in book.entries:
            uid = entry.uid
            while uid in taken:
                uid += 1
            taken.add(uid)
            entries.append(dataclasses.replace(entry, uid=uid, book=first.name))
    return dataclasses.replace(first, entries=tuple(entries))


GREETING = "<GREETING>"
"""Stands between alternate greetings in the editor, as <START> between example dialogues."""


def join_greetings(greetings: tuple[str, ...]) -> str:
    return f"\n{GREETING}\n".join(greetings)


def split_greetings(text: str) -> tuple[str, ...]:
    return tuple(g.strip("\n") for g in re.split(rf"^\s*{GREETING}\s*$", text, flags=re.MULTILINE) if g.strip())


class CharacterEditor(ModalScreen[Character | None]):
    """Create or edit a character: name, persona, personality, scenario, greeting, example dialogue."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("ctrl+l", "lorebook", "Card's lorebook", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]
    AREAS = (
        ("persona", "Persona (description)"),
        ("personality", "Personality"),
        ("scenario", "Scenario"),
        ("greeting", "Greeting (first message)"),
        ("alternate_greetings", "Alternate greetings (<GREETING> between them; swipes of the first message)"),
        ("examples", "Example dialogue (<START> between blocks)"),
        ("system_prompt", "System prompt (placed first; {{original}} is empty in talesmith)"),
        ("post_history", "Post-history instructions (placed after the conversation)"),
        ("creator_notes", "Creator's notes (for you; never in the prompt)"),
    )

    def __init__(self, character: Character | None = None) -> None:
        super().__init__()
        self.character = character or Character(name="")
        self.book: Lorebook | None = None
        """The card's lorebook as edited here (ctrl+l); None while it is not."""

    def compose(self) -> ComposeResult:
        c = self.character
        yield Footer()
        with Form(id="dialog"):
            yield Label("[b]Character[/]  ctrl+s saves · escape cancels")
            yield Label("Name")
            yield Input(c.name, id="name", compact=True, placeholder="the character's name")
            creator, tags, version = card_details(c)
            for key, label, value in (
                ("creator", "Creator", creator),
                ("tags", "Tags (comma-separated)", ", ".join(tags)),
                ("character_version", "Character version", version),
            ):
                yield Label(label)
                yield Input(value, id=key, compact=True)
            for key, label in self.AREAS:
                yield Label(label)
                text = join_greetings(c.alternate_greetings) if key == "alternate_greetings" else getattr(c, key)
                yield TextArea(text, id=key, soft_wrap=True, compact=True, classes="field-area")
            yield Static(self._book_hint(c.book_entries), id="book-hint", markup=False, classes="hint")

    def _book_hint(self, entries: int) -> str:
        return (
            f"Lorebook: the card's character_book ({entries} entries), kept with the card and used in the "
            f"prompt; ctrl+l edits it here."
        )

    def action_lorebook(self) -> None:
        """Edit the card's own lorebook (its character_book) with the lorebook editor."""
        from .lorebook import LorebookScreen

        try:
            book = self.book or card_lorebook(self.character.card, self.character.name or "card")
        except TalesmithError as e:
            self.notify(str(e), severity="error", timeout=8)
            return

        def done(edit: Any) -> None:
            if edit is None:
                return
            books = edit.books
            self.book = merged_book(books) if books else Lorebook(f"{self.character.name} lore")
            self.query_one("#book-hint", Static).update(self._book_hint(len(self.book.entries)))

        name = (self.query_one("#name", Input).value.strip() or "the character") + "'s"
        self.app.push_screen(LorebookScreen((book,) if book else (), name=name), done)

    def action_save(self) -> None:
        name = self.query_one("#name", Input).value.strip()
        if not name:
            self.notify("A character needs a name; type it in the Name field", severity="error")
            self.query_one("#name", Input).focus()
            return
        values: dict[str, Any] = {key: self.query_one(f"#{key}", TextArea).text for key, _ in self.AREAS}
        values["alternate_greetings"] = split_greetings(values["alternate_greetings"])
        edited = dataclasses.replace(self.character, name=name, **values)
        tags = tuple(t.strip() for t in self.query_one("#tags", Input).value.split(",") if t.strip())
        creator = self.query_one("#creator", Input).value.strip()
        version = self.query_one("#character_version", Input).value.strip()
        if (creator, tags, version) != card_details(self.character):
            edited = with_details(edited, creator=creator, tags=tags, version=version)
        if self.book is not None:
            edited = with_book(edited, to_character_book(self.book) if self.book.entries else None)
        self.dismiss(edited)

    def action_cancel(self) -> None:
        self.dismiss(None)
