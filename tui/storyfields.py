"""The story screen's fields and editor: the header, memory, author's note, adventure and synopsis fields
beside the story's editor, shown from the document and committed to it as they are edited."""

from __future__ import annotations

import dataclasses

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Checkbox, Footer, Input, Label, TextArea

from talesmith.runtime.documents.stories import StoryDocument

from . import storylogic
from .adventure import ActionBar, StoryEditor
from .base import DocumentScreen
from .status import StatusLine
from .widgets import Tick


class Fields(VerticalScroll, can_focus=False):
    """The header, memory and note fields; not a tab stop itself, only its fields are."""


HEADER_INPUTS = (
    ("title", "Title"),
    ("author", "Author"),
    ("genre", "Genre"),
    ("tags", "Tags (comma-separated)"),
    ("style", "Style"),
)


class FieldScreen(DocumentScreen[StoryDocument]):
    """A story screen's widgets, shown from the document and committed to it."""

    def compose(self) -> ComposeResult:
        with Horizontal(id="body"):
            with Fields(id="fields"):
                for key, label in HEADER_INPUTS:
                    yield Label(label)
                    yield Input(id=key, compact=True)
                yield Label("Memory")
                yield TextArea(id="memory", soft_wrap=True, compact=True, classes="field-area")
                yield Label("Author's note")
                yield Input(id="author_note", compact=True)
                yield Label("Note depth (lines from end)")
                yield Input(id="author_note_depth", compact=True, type="integer")
                yield Tick("Adventure (> actions)", id="adventure", compact=True)
                yield Tick("Japanese (あらすじ)", id="japanese", compact=True)
                yield Label("Synopsis (app adds あらすじ)")
                yield TextArea(id="synopsis", soft_wrap=True, compact=True, classes="field-area")
            with Vertical(id="story-column"):
                yield StoryEditor(id="editor", soft_wrap=True, compact=True)
                yield ActionBar(id="actionbar")
        yield StatusLine(id="status")
        yield Footer()

    # --- widgets <-> document ----------------------------------------------------------------

    def show(self) -> None:
        doc = self.doc
        s, h = doc.story, doc.story.header
        values = dict(
            title=h.title,
            author=h.author,
            genre=h.genre,
            tags=", ".join(h.tags),
            style=h.style,
            author_note=s.author_note,
            author_note_depth=str(s.author_note_depth),
        )
        for key, value in values.items():
            widget = self.query_one(f"#{key}", Input)
            if widget.value != value and not (key == "tags" and storylogic.tags(widget.value) == h.tags):
                widget.value = value
        self.query_one("#japanese", Checkbox).value = s.japanese
        self.query_one("#adventure", Checkbox).value = doc.adventure
        self.query_one("#actionbar", ActionBar).set_class(doc.adventure, "on")
        self.query_one("#editor", StoryEditor).show_actions(doc.adventure)
        for area_id, text in (("memory", s.memory), ("synopsis", s.synopsis), ("editor", s.text)):
            area = self.query_one(f"#{area_id}", TextArea)
            if area.text != text:
                area.load_text(text)
                if area_id == "editor":
                    area.move_cursor(area.document.end)
        self.refresh_status()

    def on_input_changed(self, event: Input.Changed) -> None:
        key = event.input.id or ""
        new = storylogic.field_edit(self.doc, key, event.value)
        if isinstance(new, str):
            self.notify(new, severity="warning", timeout=4)
        elif new is not None:
            self.commit(new, edit=key)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        if event.checkbox.id == "adventure":
            if event.value != self.doc.adventure:
                self.commit(dataclasses.replace(self.doc, adventure=event.value), edit="adventure")
                self.show()
            return
        self.commit(self.doc.with_story(japanese=event.value), edit="japanese")

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        if event.text_area.id == "editor":
            if self.job is not None:
                return  # the generation's own text, committed when it finishes
            doc, alt = self.doc, self.doc.live_alternatives()
            new = doc.with_text(event.text_area.text)
            self.commit(new, edit="text")
            if alt is not None and len(alt.options) > 1 and new.live_alternatives() is None:
                self.notify(
                    f"This edit changed the text before and after the {len(alt.options)} alternatives, so they "
                    f"were let go; ctrl+z brings them back",
                    timeout=5,
                )
        elif event.text_area.id == "memory":
            self.commit(self.doc.with_story(memory=event.text_area.text), edit="memory")
        elif event.text_area.id == "synopsis":
            text = event.text_area.text
            if text.lstrip().startswith(storylogic.SYNOPSIS_PREFIXES):
                event.text_area.load_text(storylogic.without_prefix(text))  # changes again, then is committed
                event.text_area.move_cursor(event.text_area.document.end)
                return
            self.commit(self.doc.with_story(synopsis=text), edit="synopsis")

    def action_toggle_fields(self) -> None:
        fields = self.query_one("#fields")
        fields.display = not fields.display
        editor = self.query_one("#editor", TextArea)  # wider or narrower, the text wraps again: the cursor stays seen
        editor.call_after_refresh(editor.scroll_cursor_visible)
