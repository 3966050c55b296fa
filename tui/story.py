"""The story screen: header fields, memory and author's note beside a large editor that generation
streams into; retry keeps alternatives to cycle through."""

from __future__ import annotations

import dataclasses

from textual import events
from textual.binding import Binding
from textual.widgets import TextArea

from talesmith.runtime.documents.adventure import with_action
from talesmith.runtime.documents.formats import Story
from talesmith.runtime.documents.stories import StoryDocument
from talesmith.runtime.settings import preset

from . import storylogic
from .adventure import ActionBar
from .base import DocumentScreen
from .generation import Job
from .session import Prompt
from .storyfields import FieldScreen
from .storylogic import UNTITLED, Place, place_of, text_index, text_location


class StoryScreen(FieldScreen):
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

    def on_mount(self) -> None:
        self.show()
        self.query_one("#editor").focus()
        self.refresh_status()

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

    def prompt_document(self) -> Prompt:
        return self.doc.prompt_story(global_books=self.global_lorebooks())

    def disposable(self, doc: StoryDocument) -> bool:
        return doc.name == UNTITLED

    def streaming_doc(self, job: Job) -> StoryDocument:
        before, after = place_of(job.base)
        return self.doc.continued(before, job.text, after)  # a retry's text so far beside its alternatives

    def autosave(self) -> bool:
        """Save; a story named after its title gets a suffix when another story has that name."""
        doc = self.doc
        renamed = self.saved_doc is None or doc.name != self.saved_doc.name
        if renamed and doc != self.saved_doc and doc.name != UNTITLED and not self.empty(doc):
            name = storylogic.free_name(doc.name, (e.name for e in self.library.entries() if e.id != self.doc_id))
            if name != doc.name:
                self.session.replace(dataclasses.replace(doc, name=name))
        return super().autosave()

    def status_extra(self) -> str:
        return storylogic.status_extra(self.doc)

    # --- actions -----------------------------------------------------------------------------

    def action_generate(self) -> None:
        if self.busy(quiet=False):
            return
        doc = self.doc
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

    # --- generation --------------------------------------------------------------------------

    def generating_changed(self, generating: bool) -> None:
        editor = self.query_one("#editor", TextArea)
        editor.read_only = generating

    def streamed(self, job: Job, text: str) -> None:
        editor = self.query_one("#editor", TextArea)
        before, after = place_of(job.base)
        if after:  # written at a point inside the story, before the text that stood after it
            at = text_location(editor.text, len(before) + len(job.text) - len(text))
            editor.move_cursor(editor.insert(text, at).end_location)
            return
        editor.insert(text, editor.document.end)
        editor.move_cursor(editor.document.end)

    def finished(self, job: Job, reason: str | None) -> None:
        text = job.text
        if text:
            before, after = place_of(job.base)
            self.commit(self.doc.continued(before, text, after))
        elif reason is not None:
            self.notify("The model ended without writing anything; try again or change the text", timeout=4)
        self.show()
