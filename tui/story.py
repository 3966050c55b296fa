"""The story screen: header fields, memory and author's note beside a large editor that generation
streams into; retry keeps alternatives to cycle through."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Checkbox, Footer, Input, Label, TextArea

from talesmith.runtime.documents.adventure import with_action
from talesmith.runtime.documents.formats import Story
from talesmith.runtime.documents.stories import StoryDocument
from talesmith.runtime.settings import preset

from .adventure import ActionBar, StoryEditor
from .base import DocumentScreen
from .generation import Job
from .status import StatusLine
from .widgets import Tick

UNTITLED = StoryDocument().name
SYNOPSIS_PREFIXES = ("あらすじ：", "あらすじ:", "あらすじ")
"""What the prompt puts before the synopsis; pasted in front of it, it is taken off again."""


class Fields(VerticalScroll, can_focus=False):
    """The header, memory and note fields; not a tab stop itself, only its fields are."""


HEADER_INPUTS = (
    ("title", "Title"),
    ("author", "Author"),
    ("genre", "Genre"),
    ("tags", "Tags (comma-separated)"),
    ("style", "Style"),
)


class StoryScreen(DocumentScreen):
    KIND = "story"
    NAMED_FILES = True
    BINDINGS = [
        Binding("ctrl+g", "generate", "Generate", priority=True, tooltip="Generate: continue the story"),
        Binding("ctrl+r", "retry", "Retry", priority=True, tooltip="Retry: another continuation at the same point"),
        Binding("ctrl+t", "keep", "Keep", priority=True, tooltip="Keep the alternative shown, forget the others"),
        Binding(
            "alt+left", "cycle(-1)", "Prev alt", priority=True, show=False, tooltip="Show the previous alternative"
        ),
        Binding("alt+right", "cycle(1)", "Next alt", priority=True, show=False, tooltip="Show the next alternative"),
        Binding("ctrl+n", "new", "New story", priority=True, show=False, tooltip="Start a new story"),
        Binding(
            "alt+a", "action_kind", "Do/Say/Story", priority=True, show=False, tooltip="Adventure: Do, Say or Story"
        ),
        Binding(
            "ctrl+b",
            "toggle_fields",
            "Fields",
            priority=True,
            show=False,
            tooltip="Hide or show the header, memory and note fields",
        ),
        *DocumentScreen.COMMON_BINDINGS,
    ]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "keep":
            return self.job is None and self.doc.live_alternatives() is not None
        return super().check_action(action, parameters)

    def blank(self) -> StoryDocument:
        if self.preset is None:
            return StoryDocument()
        return StoryDocument(settings=preset(self.preset), preset=self.preset)

    def empty(self, doc: StoryDocument) -> bool:
        return doc.story == Story()

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

    def on_mount(self) -> None:
        self.show()
        self.query_one("#editor").focus()
        self.refresh_status()

    # --- widgets <-> document ----------------------------------------------------------------

    def show(self) -> None:
        doc: StoryDocument = self.doc
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
            if widget.value != value and not (key == "tags" and _tags(widget.value) == h.tags):
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
        doc: StoryDocument = self.doc
        h = doc.story.header
        if key in ("title", "author", "genre", "style"):
            changed: dict[str, Any] = {key: event.value}
            new = doc.with_story(header=dataclasses.replace(h, **changed))
            if key == "title" and _follows_title(doc.name, h.title):
                new = dataclasses.replace(new, name=event.value.strip() or UNTITLED)
        elif key == "tags":
            new = doc.with_story(header=dataclasses.replace(h, tags=_tags(event.value)))
        elif key == "author_note":
            new = doc.with_story(**{key: event.value})
        elif key == "author_note_depth":
            try:
                depth = int(event.value)
            except ValueError:
                return
            if depth < 1:
                self.notify(
                    f"Author's note depth {depth} must be at least 1 (lines from the end)",
                    severity="warning",
                    timeout=4,
                )
                return
            new = doc.with_story(author_note_depth=depth)
        else:
            return
        self.commit(new, edit=key)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        if event.checkbox.id == "adventure":
            if event.value != self.doc.adventure:
                self.commit(dataclasses.replace(self.doc, adventure=event.value), edit="adventure")
                self.show()
            return
        self.commit(self.doc.with_story(japanese=event.value), edit="japanese")

    def on_action_bar_submitted(self, event: ActionBar.Submitted) -> None:
        """An adventure's action: written into the story as `> You ...`, then the model goes on from there."""
        if self.busy(quiet=False):
            return
        if event.text.strip():
            self.commit(self.doc.with_text(with_action(self.doc.text, event.kind, event.text)))
            self.show()
        self.action_generate()

    def action_action_kind(self) -> None:
        if self.doc.adventure:
            self.query_one("#actionbar", ActionBar).cycle()

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
            if text.lstrip().startswith(SYNOPSIS_PREFIXES):
                event.text_area.load_text(_without_prefix(text))  # changes again, then is committed
                event.text_area.move_cursor(event.text_area.document.end)
                return
            self.commit(self.doc.with_story(synopsis=text), edit="synopsis")

    def prompt_document(self) -> Any:
        return self.doc.prompt_story(global_books=self.global_lorebooks())

    def disposable(self, doc: StoryDocument) -> bool:
        return doc.name == UNTITLED

    def streaming_doc(self, job: Job) -> StoryDocument:
        before, after = _place(job.base)
        return self.doc.continued(before, job.text, after)  # a retry's text so far beside its alternatives

    def autosave(self) -> bool:
        """Save; a story named after its title gets a suffix when another story has that name."""
        doc: StoryDocument = self.doc
        renamed = self.saved_doc is None or doc.name != getattr(self.saved_doc, "name", None)
        if renamed and doc != self.saved_doc and doc.name != UNTITLED and not self.empty(doc):
            taken = {e.name for e in self.library.entries() if e.id != self.doc_id}
            name, n = doc.name, 2
            while name in taken:
                name, n = f"{doc.name} ({n})", n + 1
            if name != doc.name:
                self.session.replace(dataclasses.replace(doc, name=name))
        return super().autosave()

    def status_extra(self) -> str:
        alt = self.doc.live_alternatives()
        if alt is not None and len(alt.options) > 1:
            return f"alt {alt.index + 1}/{len(alt.options)} (alt+←/→)"
        return ""

    # --- actions -----------------------------------------------------------------------------

    def action_generate(self) -> None:
        if self.busy(quiet=False):
            return
        doc: StoryDocument = self.doc
        editor = self.query_one("#editor", TextArea)
        at = text_index(doc.text, editor.cursor_location)
        if doc.text[at:].strip():  # the cursor stands inside the story: write there, the rest kept below
            place = Place(doc.text[:at], doc.text[at:])
            self.start_generation(place, doc.prompt_story_at(at, global_books=self.global_lorebooks()))
            return
        self.start_generation(doc.text, doc.prompt_story(global_books=self.global_lorebooks()))

    def action_retry(self) -> None:
        if self.busy(quiet=False):
            return
        alt = self.doc.live_alternatives()
        if alt is None:
            self.notify(
                "Nothing to retry here: the last generation was edited or there was none; ctrl+g generates", timeout=4
            )
            return
        retried = self.doc.prompt_story_at(len(alt.base), global_books=self.global_lorebooks())
        if self.start_generation(Place(alt.base, alt.after) if alt.after else alt.base, retried):
            editor = self.query_one("#editor", TextArea)
            editor.load_text(alt.base + alt.after)
            editor.move_cursor(text_location(editor.text, len(alt.base)))

    def action_cycle(self, step: int) -> None:
        if self.busy(quiet=False):
            return
        new = self.doc.cycled(step)
        if new is self.doc:
            self.notify("No alternatives here: ctrl+r retries to make some", timeout=3)
            return
        self.commit(new)
        self.show()

    def action_keep(self) -> None:
        if self.busy(quiet=False):
            return
        if self.doc.live_alternatives() is None:
            self.notify("No alternatives to choose between", timeout=3)
            return
        self.commit(self.doc.kept())
        self.notify("Kept this continuation", timeout=2)
        self.refresh_status()

    def action_new(self) -> None:
        if self.busy(quiet=False):
            return
        self.load(None, StoryDocument(settings=self.doc.settings, preset=self.doc.preset))
        self.query_one("#editor").focus()  # a new story starts with its text, not in the field focused before
        self.notify("New story", timeout=2)

    def on_resize(self, event: events.Resize) -> None:
        """A narrower or shorter window wraps the text again: the cursor stays in view."""
        editor = self.query_one("#editor", TextArea)
        editor.call_after_refresh(editor.scroll_cursor_visible)

    def action_toggle_fields(self) -> None:
        fields = self.query_one("#fields")
        fields.display = not fields.display
        editor = self.query_one("#editor", TextArea)  # wider or narrower, the text wraps again: the cursor stays seen
        editor.call_after_refresh(editor.scroll_cursor_visible)

    # --- generation --------------------------------------------------------------------------

    def generating_changed(self, generating: bool) -> None:
        editor = self.query_one("#editor", TextArea)
        editor.read_only = generating

    def streamed(self, job: Job, text: str) -> None:
        editor = self.query_one("#editor", TextArea)
        before, after = _place(job.base)
        if after:  # written at a point inside the story, before the text that stood after it
            at = text_location(editor.text, len(before) + len(job.text) - len(text))
            editor.move_cursor(editor.insert(text, at).end_location)
            return
        editor.insert(text, editor.document.end)
        editor.move_cursor(editor.document.end)

    def finished(self, job: Job, reason: str | None) -> None:
        text = job.text
        if text:
            before, after = _place(job.base)
            self.commit(self.doc.continued(before, text, after))
        elif reason is not None:
            self.notify("The model ended without writing anything; try again or change the text", timeout=4)
        self.show()


@dataclass(frozen=True)
class Place:
    """Where a generation inside the story writes: after `before`, with `after` kept below it."""

    before: str
    after: str


def text_index(text: str, location: tuple[int, int]) -> int:
    """The offset in `text` of a (row, column) location of the editor."""
    row, column = location
    lines = text.split("\n")
    return sum(len(line) + 1 for line in lines[:row]) + column


def text_location(text: str, index: int) -> tuple[int, int]:
    """The editor's (row, column) of an offset in `text`."""
    return text.count("\n", 0, index), index - (text.rfind("\n", 0, index) + 1)


def _place(base: str | Place) -> tuple[str, str]:
    return (base.before, base.after) if isinstance(base, Place) else (base, "")


def _follows_title(name: str, title: str) -> bool:
    """Whether a story's name is still its title (or the title with a collision suffix)."""
    base = re.sub(r" \(\d+\)$", "", name)
    return name == UNTITLED or base == title.strip()


def _without_prefix(value: str) -> str:
    value = value.lstrip()
    for prefix in SYNOPSIS_PREFIXES:
        if value.startswith(prefix):
            return value[len(prefix) :].lstrip()
    return value


def _tags(value: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in value.split(",") if t.strip())
