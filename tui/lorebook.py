"""The lorebook editor: the open story's or chat's lorebooks, their entries listed, added, edited,
enabled or disabled, deleted, lorebooks attached by name or file, and where the entries are placed.
The changes come back (a `LoreEdit`) when the editor closes (ctrl+s); escape leaves the document as it was."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Checkbox, Footer, Input, Label, OptionList, Select, Static, TextArea
from textual.widgets.option_list import Option

from talesmith.runtime.documents.lorebook import LOGICS, POSITIONS, Entry, Lorebook
from talesmith.runtime.documents.worldinfo import find_lorebook, library_lorebooks, load_lorebook
from talesmith.runtime.errors import TalesmithError

from .dialogs import Form, TextPrompt, framed
from .lorelogic import (
    PLACEMENT_NAMES,
    Books,
    LoreEdit,
    describe,
    keys_from,
    new_entry,
    next_placement,
    replace_entry,
    rows,
    toggled,
)
from .widgets import Tick

__all__ = ["EntryEditor", "LoreEdit", "LorebookScreen", "describe", "replace_entry", "rows", "toggled"]

# --- screens ------------------------------------------------------------------------------------------


def _choice(names: tuple[str, ...], value: str, id: str) -> Select[str]:
    """A compact drop-down of one of NAMES, each shown with spaces for its underscores."""
    return Select(
        [(name.replace("_", " "), name) for name in names], value=value, allow_blank=False, id=id, compact=True
    )


class EntryEditor(ModalScreen["Entry | None"]):
    """One entry: keys, secondary keys and their logic, content, position, depth, order, enabled, constant."""

    BINDINGS = [Binding("ctrl+s", "save", "Save", priority=True), Binding("escape", "cancel", "Cancel")]

    def __init__(self, entry: Entry) -> None:
        super().__init__()
        self.entry = entry

    def compose(self) -> ComposeResult:
        e = self.entry
        yield Footer()
        with Form(id="dialog"):
            yield Label("Lorebook entry  ctrl+s saves · escape cancels", markup=False)
            yield Label("Keys (comma-separated; /regex/flags for a pattern)", markup=False)
            yield Input(", ".join(e.keys), id="keys", compact=True)
            yield Label("Secondary keys (comma-separated) and how they must match", markup=False)
            yield Input(", ".join(e.secondary), id="secondary", compact=True)
            yield _choice(LOGICS, e.logic, "logic")
            yield Label("Content", markup=False)
            yield TextArea(e.content, id="content", soft_wrap=True, compact=True, classes="field-area")
            yield Label("Position, depth (for depth: units from the end), order (higher: later)", markup=False)
            yield _choice(POSITIONS, e.position, "position")
            yield Input(str(e.depth), id="depth", compact=True, type="integer")
            yield Input(str(e.order), id="order", compact=True, type="integer")
            yield Tick("Enabled", e.enabled, id="enabled", compact=True)
            yield Tick("Constant (always in the prompt)", e.constant, id="constant", compact=True)

    def action_save(self) -> None:
        q = self.query_one
        try:
            entry = dataclasses.replace(
                self.entry,
                keys=keys_from(q("#keys", Input).value),
                secondary=keys_from(q("#secondary", Input).value),
                selective=bool(keys_from(q("#secondary", Input).value)) or self.entry.selective,
                logic=str(q("#logic", Select).value),
                content=q("#content", TextArea).text,
                position=str(q("#position", Select).value),
                depth=int(q("#depth", Input).value or 0),
                order=int(q("#order", Input).value or 0),
                enabled=q("#enabled", Checkbox).value,
                constant=q("#constant", Checkbox).value,
            )
        except (TalesmithError, ValueError) as e:
            self.notify(str(e), severity="error", timeout=8)
            return
        if not entry.constant and not entry.keys:
            self.notify("An entry needs keys (or tick Constant); type them comma-separated", severity="error")
            return
        self.dismiss(entry)

    def action_cancel(self) -> None:
        self.dismiss(None)


class LorebookScreen(ModalScreen["LoreEdit | None"]):
    """The open document's lorebooks and their entries."""

    BINDINGS = [
        Binding("enter,e", "edit", "Edit", show=False),
        Binding("a", "add", "Add entry"),
        Binding("space", "toggle_entry", "On/off"),
        Binding("d,delete", "delete", "Delete"),
        Binding("o", "attach", "Attach lorebook"),
        Binding("p", "placement", "Placement"),
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(
        self, books: Books, *, name: str = "this document", data_dir: Path | None = None, placement: str = ""
    ) -> None:
        super().__init__()
        self.books: Books = books or (Lorebook(f"{name} lore"),)
        self.original = books
        self.data_dir, self.placement = data_dir, placement

    def compose(self) -> ComposeResult:
        yield from framed(
            Label(Text("Lorebooks of this document", style="bold")),
            Static(self._placement_line(), id="placement"),
            OptionList(id="entries"),
            hint="enter edit · a add · space on/off · d delete · o attach a lorebook by name or file · "
            "p placement · ctrl+s save · escape cancel",
        )

    def _placement_line(self) -> Text:
        return Text.assemble(("Entries go ", "dim"), PLACEMENT_NAMES[self.placement], (" (p)", "dim"))

    def action_placement(self) -> None:
        self.placement = next_placement(self.placement)
        self.query_one("#placement", Static).update(self._placement_line())

    def on_mount(self) -> None:
        self.reload()

    def reload(self, highlight: int = 0) -> None:
        options = self.query_one("#entries", OptionList)
        options.clear_options()
        for b, i in rows(self.books):
            book = self.books[b]
            options.add_option(Option(Text.assemble((f"{book.name}: ", "dim"), describe(book.entries[i]))))
        if not rows(self.books):
            options.add_option(
                Option(Text("No entries yet: a adds one, o attaches a lorebook file", style="dim"), disabled=True)
            )
        count = len(rows(self.books))
        options.highlighted = min(highlight, count - 1) if count else None

    def selected(self) -> tuple[int, int] | None:
        highlighted = self.query_one("#entries", OptionList).highlighted
        all_rows = rows(self.books)
        return all_rows[highlighted] if highlighted is not None and highlighted < len(all_rows) else None

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_edit()

    def _edit(self, book: int, index: int, entry: Entry) -> None:
        def done(result: Entry | None) -> None:
            if result is not None:
                self.books = replace_entry(self.books, book, index, result)
                self.reload(rows(self.books).index((book, index)))

        self.app.push_screen(EntryEditor(entry), done)

    def action_edit(self) -> None:
        at = self.selected()
        if at is not None:
            self._edit(*at, self.books[at[0]].entries[at[1]])

    def action_add(self) -> None:
        at = self.selected()
        book = at[0] if at is not None else len(self.books) - 1
        self._edit(book, len(self.books[book].entries), new_entry(self.books[book]))

    def action_toggle_entry(self) -> None:
        at = self.selected()
        if at is not None:
            self.books = toggled(self.books, *at)
            self.reload(rows(self.books).index(at))

    def action_delete(self) -> None:
        at = self.selected()
        if at is not None:
            self.books = replace_entry(self.books, at[0], at[1], None)
            self.reload(max(0, rows(self.books).index(at) if at in rows(self.books) else len(rows(self.books)) - 1))

    def action_attach(self) -> None:
        def done(path: str | None) -> None:
            if not path or not path.strip():
                return
            try:
                found = find_lorebook(self.data_dir, path) if self.data_dir else Path(path.strip()).expanduser()
                book = load_lorebook(found)
            except TalesmithError as e:
                self.notify(str(e), severity="error", timeout=10)
                return
            self.books = tuple(b for b in self.books if b.entries or b.name != book.name) + (book,)
            self.reload()
            self.notify(f"Attached {book.name} ({len(book.entries)} entries)", timeout=3)

        self.app.push_screen(TextPrompt(self._attach_question()), done)

    def _attach_question(self) -> str:
        """One line even at 80 columns: as many of the library's names as fit."""
        names = [p.stem for p in library_lorebooks(self.data_dir)] if self.data_dir else []
        listed = ", ".join(names)
        if len(listed) > 36:
            listed = listed[:35].rstrip(", ") + "…"
        return f"Lorebook name or file ({listed})" if names else "Lorebook file (World Info .json, a card, a story)"

    def action_save(self) -> None:
        self.dismiss(LoreEdit(tuple(b for b in self.books if b.entries), self.placement))

    def action_cancel(self) -> None:
        self.dismiss(None)
