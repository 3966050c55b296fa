"""Adventure mode in the story screen: the story editor that shows actions (`> You ...`) styled, and the
action bar under it (Do / Say / Story, then enter)."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Label, TextArea

from talesmith.runtime.documents.adventure import DO, KINDS, SAY, STORY, segments

ACTION_STYLE = "talesmith.action"
"""The name the editor's highlights give action lines."""
KIND_NAMES = {DO: "Do", SAY: "Say", STORY: "Story"}
KIND_HINTS = {
    DO: "what you do, e.g. open the door",
    SAY: "what you say, e.g. Who goes there?",
    STORY: "text added to the story as it is",
}


def next_kind(kind: str) -> str:
    return KINDS[(KINDS.index(kind) + 1) % len(KINDS)]


def action_rows(text: str) -> list[tuple[int, int]]:
    """(line, length in UTF-8 bytes) of each action line of `text` (the editor highlights by bytes)."""
    rows = []
    for seg in segments(text):
        if seg.action:
            rows.append((text.count("\n", 0, seg.start), len(text[seg.start : seg.end].encode("utf-8"))))
    return rows


class StoryEditor(TextArea):
    """The story's text; with `actions` on, each action line stands out (bold, in the accent colour)."""

    actions = False

    def show_actions(self, on: bool) -> None:
        if on != self.actions:
            self.actions = on
            self._build_highlight_map()
            self.refresh()

    def _set_theme(self, theme: str) -> None:
        super()._set_theme(theme)  # a copy of the theme, given the style of action lines
        self._theme.syntax_styles = {**self._theme.syntax_styles, ACTION_STYLE: Style(bold=True, color="cyan")}

    def _build_highlight_map(self) -> None:
        super()._build_highlight_map()
        if self.actions:
            for row, length in action_rows(self.text):
                self._highlights[row].append((0, length, ACTION_STYLE))


class ActionBar(Horizontal):
    """`Do ▸ [what you do]`: enter writes the action into the story and generates; alt+a (or a click on
    the kind) switches Do / Say / Story."""

    DEFAULT_CSS = """
    ActionBar {
        height: 1;
        display: none;
    }
    ActionBar.on {
        display: block;
    }
    ActionBar #action-kind {
        width: 9;
        color: $accent;
        text-style: bold;
    }
    ActionBar #action {
        width: 1fr;
    }
    """

    class Submitted(Message):
        def __init__(self, kind: str, text: str) -> None:
            super().__init__()
            self.kind, self.text = kind, text

    kind = DO

    def compose(self) -> ComposeResult:
        yield Label(self._kind_text(), id="action-kind")
        yield Input(placeholder=self._placeholder(), id="action", compact=True)

    def _kind_text(self) -> Text:
        return Text(f"{KIND_NAMES[self.kind]} ▸")

    def _placeholder(self) -> str:
        return f"{KIND_HINTS[self.kind]} · enter plays it · alt+a: Do/Say/Story"

    def cycle(self) -> None:
        self.kind = next_kind(self.kind)
        self.query_one("#action-kind", Label).update(self._kind_text())
        self.query_one("#action", Input).placeholder = self._placeholder()

    def on_click(self, event: events.Click) -> None:
        if getattr(event.widget, "id", None) == "action-kind":
            self.cycle()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Submitted(self.kind, event.value))
        event.input.value = ""
