"""Modal screens: help, a one-line prompt, a yes/no question, a message editor, the character editor
and the list of saved stories or chats."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, OptionList, Static, TextArea
from textual.widgets.option_list import Option

from talesmith.runtime.documents.cards import Character, card_details, with_book, with_details
from talesmith.runtime.documents.lorebook import Lorebook
from talesmith.runtime.documents.stories import Library, User, slug
from talesmith.runtime.documents.worldinfo import card_lorebook, to_character_book
from talesmith.runtime.engine import kvstate
from talesmith.runtime.errors import TalesmithError
from talesmith.runtime.files import free_path

from . import promptview


def _keys_table(title: str, bindings: Iterable[BindingType]) -> str:
    rows = [f"[b]{title}[/]"]
    for b in bindings:
        if isinstance(b, Binding) and b.description:  # the first of a binding's keys names it
            key = b.key.split(",")[0]
            rows.append(f"  [b]{key:<11}[/] {escape(b.tooltip or b.description)}")
    return "\n".join(rows)


class Form(VerticalScroll, can_focus=False):
    """A dialog's fields, scrolled to the one focused; not a tab stop itself."""


class HelpScreen(ModalScreen[None]):
    """Every key, in sections given by the app: (title, bindings) pairs."""

    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]

    def __init__(self, sections: Sequence[tuple[str, Sequence[BindingType]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        tables = [_keys_table(title, bindings) for title, bindings in self.sections]
        text = "\n\n".join(
            [
                *tables,
                _keys_table("Stories / chats list (ctrl+o)", LibraryScreen.BINDINGS),
                "[b]Dialogs[/]\n  [b]ctrl+s[/]      save   [b]escape[/] cancel   [b]tab[/] next field",
            ]
        )
        yield Footer()
        with VerticalScroll(id="dialog", classes="help"):
            yield Static("[b]talesmith keys[/]   (escape closes)", classes="dialog-title")
            yield Static(text)


class TextPrompt(ModalScreen[str | None]):
    """Ask for one line of text."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, value: str = "") -> None:
        super().__init__()
        self.question, self.value = question, value

    def compose(self) -> ComposeResult:
        yield Footer()
        with Vertical(id="dialog", classes="small"):
            yield Label(self.question, markup=False)
            yield Input(self.value, id="answer")
            yield Static("enter accepts · escape cancels", classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class Confirm(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        yield Footer()
        with Vertical(id="dialog", classes="small"):
            yield Label(self.question, markup=False)
            yield Static("y: yes · n: no", classes="hint")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class TextEditor(ModalScreen[str | None]):
    """Edit a longer text (a chat message)."""

    BINDINGS = [Binding("ctrl+s", "save", "Save", priority=True), Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text, self.text = title, text

    def compose(self) -> ComposeResult:
        yield Footer()
        with Vertical(id="dialog"):
            yield Label(self.title_text, markup=False)
            yield TextArea(self.text, id="text", soft_wrap=True, compact=True)
            yield Static("ctrl+s saves · escape cancels", classes="hint")

    def action_save(self) -> None:
        self.dismiss(self.query_one("#text", TextArea).text)

    def action_cancel(self) -> None:
        self.dismiss(None)


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


class LibraryScreen(ModalScreen[str | None]):
    """The saved stories (or chats): open, rename, delete, export."""

    BINDINGS = [
        Binding("enter", "open", "Open", show=False),
        Binding("r", "rename", "Rename"),
        Binding("d,delete", "delete", "Delete"),
        Binding("t", "export('.txt')", "Export .txt"),
        Binding("m", "export('.md')", "Export .md"),
        Binding("escape", "cancel", "Close"),
    ]

    def __init__(
        self,
        library: Library,
        exports: Path,
        *,
        states: list[Path] | None = None,
        cap_mb: int = 0,
        user: User | None = None,
    ) -> None:
        super().__init__()
        self.library, self.exports = library, exports
        self.states, self.cap_mb, self.user = states or [], cap_mb, user

    def compose(self) -> ComposeResult:
        yield Footer()
        with Vertical(id="dialog"):
            yield Label(Text.assemble((f"Your {self.library.folder.name}", "bold"), f"  ({self.library.folder})"))
            yield OptionList(id="entries")
            yield Static(id="state-size", classes="hint")
            yield Static("enter open · r rename · d delete · t/m export · escape close", classes="hint")

    def on_mount(self) -> None:
        self.reload()

    def reload(self, highlight: int = 0) -> None:
        entries = self.library.entries()
        options = self.query_one("#entries", OptionList)
        options.clear_options()
        for e in entries:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.modified)) if e.modified else "unreadable"
            label = (
                Text.assemble(e.name, (f"  {when}", "dim"))
                if not e.error
                else Text(f"{e.id} (unreadable)", style="red")
            )
            options.add_option(Option(label, id=e.id))
        if not entries:
            empty = {"story": "No stories yet", "chat": "No chats yet"}.get(self.library.kind, "Nothing here yet")
            options.add_option(Option(Text(empty, style="dim"), id="", disabled=True))
        size = kvstate.total_size(self.states) / (1024 * 1024)
        self.query_one("#state-size", Static).update(
            f"Saved model state (all stories and chats): {size:.1f} MB of at most {self.cap_mb} MB "
            f"(oldest removed first; f8 sets the cap)"
        )
        options.highlighted = min(highlight, max(len(entries) - 1, 0)) if entries else None
        self.entries = entries

    def selected(self) -> str | None:
        options = self.query_one("#entries", OptionList)
        if options.highlighted is None or not self.entries:
            return None
        return self.entries[options.highlighted].id

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        doc_id = self.selected()
        if doc_id is None:
            return
        entry = next(e for e in self.entries if e.id == doc_id)
        if entry.error:
            self.notify(entry.error, severity="error", timeout=10)
            return
        self.dismiss(doc_id)

    def action_rename(self) -> None:
        doc_id = self.selected()
        if doc_id is None:
            return
        entry = next(e for e in self.entries if e.id == doc_id)

        def done(name: str | None) -> None:
            if name is None:
                return
            try:
                self.library.rename(doc_id, name)
            except (OSError, TalesmithError) as e:
                self.notify(f"Could not rename {entry.name!r}: {e}", severity="error", timeout=8)
            self.reload(self.query_one("#entries", OptionList).highlighted or 0)

        self.app.push_screen(TextPrompt(f"New name for {entry.name!r}", entry.name), done)

    def action_delete(self) -> None:
        doc_id = self.selected()
        if doc_id is None:
            return
        entry = next(e for e in self.entries if e.id == doc_id)

        def done(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.library.delete(doc_id)
            except OSError as e:
                self.notify(f"Could not delete {entry.name!r}: {e}", severity="error", timeout=8)
            else:
                self.notify(f"Deleted {entry.name!r}", timeout=3)
                self.reload(self.query_one("#entries", OptionList).highlighted or 0)

        self.app.push_screen(Confirm(f"Delete {entry.name!r} for good?"), done)

    def action_export(self, suffix: str) -> None:
        from talesmith.runtime.documents.stories import export

        doc_id = self.selected()
        if doc_id is None:
            return
        try:
            doc = self.library.load(doc_id)
        except TalesmithError as e:
            self.notify(str(e), severity="error")
            return
        default = free_path(self.exports / f"{slug(doc.name)}{suffix}")  # never an export already there

        def done(path: str | None) -> None:
            if not path:
                return
            try:
                written = export(doc, Path(path).expanduser(), user=self.user)
            except (OSError, TalesmithError) as e:
                self.notify(f"Could not export: {e}", severity="error", timeout=10)
            else:
                self.notify(f"Exported to {written}", timeout=5)

        self.app.push_screen(TextPrompt("Export to (.txt or .md)", str(default)), done)

    def action_cancel(self) -> None:
        self.dismiss(None)


class Choice(ModalScreen[str | None]):
    """A question with a few answers, each on its own key: (key, answer, label) triples."""

    def __init__(self, question: str, answers: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.question, self.answers = question, answers

    def compose(self) -> ComposeResult:
        yield Footer()
        with Vertical(id="dialog", classes="small"):
            yield Label(self.question, markup=False)
            yield Static(
                " · ".join(f"{key}: {label}" for key, _, label in self.answers) + " · escape: cancel",
                markup=False,
                classes="hint",
            )

    def on_key(self, event) -> None:
        for key, answer, _ in self.answers:
            if event.key == key:
                event.stop()
                self.dismiss(answer)
                return
        if event.key == "escape":
            event.stop()
            self.dismiss(None)


class PromptScreen(ModalScreen[None]):
    """The prompt view: the parts with token counts, what was dropped, what is evaluated again, the text."""

    BINDINGS = [Binding("escape,f9,q", "dismiss", "Close")]

    def __init__(self, report: promptview.PromptReport) -> None:
        super().__init__()
        self.report = report

    def compose(self) -> ComposeResult:
        r = self.report
        lines = Text()
        lines.append(f"{r.n_tokens} tokens of {r.n_ctx} (the reply may take {r.max_new_tokens} more)\n\n", "bold")
        for part in r.parts:
            lines.append(f"{part.tokens:>7}  {part.name}\n")
        if r.dropped_units:
            lines.append(
                f"{r.dropped.tokens:>7}  dropped to fit: the {r.dropped_units} oldest of "
                f"{r.total_units} history units\n",
                "yellow",
            )
        else:
            lines.append("         nothing dropped: everything fits\n", "dim")
        lines.append(f"{r.reprocess:>7}  evaluated again by the next generation (not in the cache)\n", "bold")
        for note in r.notes:
            lines.append(f"   note  {note}\n", "yellow")
        if r.dropped_units:
            lines.append("\nDropped to fit (the model does not see it):\n", "bold")
            lines.append(r.dropped.text, "yellow")
        lines.append("\nThe part evaluated again:\n", "bold")
        lines.append(r.reprocess_text or "(nothing)", "cyan")
        lines.append("\n\nThe exact prompt:\n", "bold")
        lines.append(r.text)
        yield Footer()
        with VerticalScroll(id="dialog"):
            yield Static("What the model sees   (escape closes)", classes="dialog-title", markup=False)
            yield Static(lines, id="prompt-text")


class UserScreen(ModalScreen["tuple[User, int, User] | None"]):
    """Who you are: a name and persona for every chat, this chat's own (empty: the global ones), the state cap."""

    BINDINGS = [Binding("ctrl+s", "save", "Save", priority=True), Binding("escape", "cancel", "Cancel")]

    def __init__(self, default: User, cap_mb: int, own: User | None) -> None:
        super().__init__()
        self.default, self.cap_mb, self.own = default, cap_mb, own

    def compose(self) -> ComposeResult:
        yield Footer()
        with Form(id="dialog"):
            yield Label("You  ctrl+s saves · escape cancels", markup=False)
            yield Label("Your name in every chat ({{user}})", markup=False)
            yield Input(self.default.name, id="name", compact=True)
            yield Label("Your persona in every chat (what characters know about you)")
            yield TextArea(self.default.persona, id="persona", soft_wrap=True, compact=True, classes="field-area")
            if self.own is not None:
                yield Label("Your name in this chat only (empty: the one above)")
                yield Input(self.own.name, id="own-name", compact=True)
                yield Label("Your persona in this chat only (empty: the one above)")
                yield TextArea(self.own.persona, id="own-persona", soft_wrap=True, compact=True, classes="field-area")
            yield Label("Cap on saved model state, in MB (oldest removed first)")
            yield Input(str(self.cap_mb), id="cap", compact=True, type="integer")

    def action_save(self) -> None:
        name = self.query_one("#name", Input).value.strip()
        if not name:
            self.notify("Type a name (for example You)", severity="error")
            return
        try:
            cap = int(self.query_one("#cap", Input).value)
        except ValueError:
            self.notify("The state cap must be a whole number of MB (0 keeps none)", severity="error")
            return
        default = User(name, self.query_one("#persona", TextArea).text)
        own = User("", "")
        if self.own is not None:
            own = User(self.query_one("#own-name", Input).value.strip(), self.query_one("#own-persona", TextArea).text)
        self.dismiss((default, max(cap, 0), own))

    def action_cancel(self) -> None:
        self.dismiss(None)
