"""Modal screens: help, a one-line prompt, a yes/no question, a choice, a message editor, the prompt view
and you (f8). The character editor is cardeditor's, the list of saved documents librarydialog's."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Footer, Input, Label, Static, TextArea

from talesmith.runtime.documents.stories import User

from . import promptview


def _keys_table(title: str, bindings: Iterable[BindingType]) -> str:
    rows = [f"[b]{title}[/]"]
    for b in bindings:
        if isinstance(b, Binding) and b.description:  # the first of a binding's keys names it
            key = b.key.split(",")[0]
            rows.append(f"  [b]{key:<11}[/] {escape(b.tooltip or b.description)}")
    return "\n".join(rows)


def framed(*widgets: Widget, hint: str, classes: str | None = None) -> ComposeResult:
    """A dialog as the dialogs show themselves: the footer, then in #dialog the widgets over a line of keys."""
    yield Footer()
    yield Vertical(*widgets, Static(hint, classes="hint", markup=False), id="dialog", classes=classes)


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
        yield from framed(
            Label(self.question, markup=False),
            Input(self.value, id="answer"),
            hint="enter accepts · escape cancels",
            classes="small",
        )

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
        yield from framed(Label(self.question, markup=False), hint="y: yes · n: no", classes="small")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class TextEditor(ModalScreen[str | None]):
    """Edit a longer text (a chat message)."""

    BINDINGS = [Binding("ctrl+s", "save", "Save", priority=True), Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text, self.text = title, text

    def compose(self) -> ComposeResult:
        yield from framed(
            Label(self.title_text, markup=False),
            TextArea(self.text, id="text", soft_wrap=True, compact=True),
            hint="ctrl+s saves · escape cancels",
        )

    def action_save(self) -> None:
        self.dismiss(self.query_one("#text", TextArea).text)

    def action_cancel(self) -> None:
        self.dismiss(None)


class Choice(ModalScreen[str | None]):
    """A question with a few answers, each on its own key: (key, answer, label) triples."""

    def __init__(self, question: str, answers: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.question, self.answers = question, answers

    def compose(self) -> ComposeResult:
        keys = " · ".join(f"{key}: {label}" for key, _, label in self.answers)
        yield from framed(Label(self.question, markup=False), hint=f"{keys} · escape: cancel", classes="small")

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
