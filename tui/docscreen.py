"""A story or chat screen's document: its session (undo, saving, the library it lives in) shown by the
screen above it, and the hooks each screen provides. Deciding is the session's; this tells the user."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Generic

from textual.screen import Screen
from textual.timer import Timer

from talesmith.runtime.documents.stories import Library
from talesmith.runtime.errors import TalesmithError
from talesmith.runtime.settings import PRESETS

from . import preferences as prefs
from . import reopen
from .generation import Job, Measure
from .librarydialog import LibraryScreen
from .model import ModelSession
from .promptformat import FormatChoice
from .session import D, DocumentSession, Prompt, Saved


class DocumentCore(Screen[None], Generic[D]):
    KIND = "story"
    FOLDER = "stories"
    NAMED_FILES = False
    """Whether the document's file is renamed when its name changes (stories, named after their title)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        model: ModelSession,
        preferences: prefs.Store,
        preset: str | None = None,
        reopen: bool = False,
    ) -> None:
        super().__init__()
        self.reopen = reopen
        """Whether the document shown last is opened again on start (remembered as it is opened or saved)."""
        self.model = model
        """The model, as the app loads it (read here, never changed)."""
        self.holder = preferences
        """The user's preferences, shared with the app and the other screen."""
        self.data_dir = Path(data_dir)
        self.preset = preset if preset in PRESETS else None
        """The model's own sampling preset (from models.lock), used for new documents."""
        self.library = Library(self.data_dir / self.FOLDER, self.KIND)
        self.session: DocumentSession[D] = DocumentSession(
            self.library, self.blank(), empty=self.empty, disposable=self.disposable, named_files=self.NAMED_FILES
        )
        self.formats = FormatChoice(self.data_dir)
        """The prompt format of this screen's generations (F10)."""
        self.tokens_per_second: float | None = None
        self.last_measure: Measure | None = None
        self._save_timer: Timer | None = None
        self._measure_timer: Timer | None = None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keys that do nothing right now are left out of the footer."""
        if action == "stop":
            return self.job is not None
        return True

    # --- to be provided by each screen -------------------------------------------------------

    def blank(self) -> D:
        raise NotImplementedError

    def empty(self, doc: D) -> bool:
        """Whether a document holds nothing worth a file."""
        raise NotImplementedError

    def prompt_document(self) -> Prompt | None:
        """The runtime document the next generation would continue (None when there is none)."""
        raise NotImplementedError

    def show(self) -> None:
        """Make the widgets show the present document."""
        raise NotImplementedError

    def status_extra(self) -> str:
        return ""

    def disposable(self, doc: D) -> bool:
        """Whether a saved document that holds nothing again may lose its file (an untitled one)."""
        return False

    def streaming_doc(self, job: Job) -> D:
        """The document as it would be with the generation's text so far (for checkpoints)."""
        raise NotImplementedError

    # --- the document ------------------------------------------------------------------------

    @property
    def doc(self) -> D:
        return self.session.doc

    @property
    def doc_id(self) -> str | None:
        return self.session.doc_id

    @property
    def saved_doc(self) -> D | None:
        return self.session.saved_doc

    @property
    def job(self) -> Job | None:
        return self.session.job

    def commit(self, doc: D, *, edit: str = "") -> None:
        """Make `doc` the present; edits of one field in quick succession are one undo step."""
        if self.session.commit(doc, edit=edit):
            self.schedule_save()
            self.schedule_measure()

    def load(self, doc_id: str | None, doc: D) -> None:
        self.autosave()
        self.session.load(doc_id, doc)
        self.remember_open()
        self.show()
        self.schedule_measure()
        if doc_id is not None:
            self.loaded(doc_id)

    def action_undo(self) -> None:
        self._travel(self.session.undo, "Nothing to undo")

    def action_redo(self) -> None:
        self._travel(self.session.redo, "Nothing to redo")

    def _travel(self, step: Callable[[], bool], nothing: str) -> None:
        if self.busy(quiet=False):
            return
        if not step():
            self.notify(nothing, timeout=2)
            return
        self.show()
        self.schedule_save()
        self.schedule_measure()

    # --- saving ------------------------------------------------------------------------------

    def autosave(self) -> bool:
        """Write the document if it changed; a new document with nothing in it is not written."""
        if not self.session.unsaved():
            return True
        if not self._said(self.session.save()):
            return False
        self.remember_open()
        self.refresh_status()
        return True

    def remember_open(self) -> None:
        """Keep this document as the one to open again on start (when the app does that, and it is shown)."""
        if self.doc_id is not None and self.reopen and self.app.screen is self:
            reopen.remember(self.data_dir, self.KIND, self.doc_id)

    def _said(self, saved: Saved) -> bool:
        """Tell the user what a save could not do; whether it wrote."""
        notice = saved.notice(self.doc.name, self.library.folder)
        if notice is not None:
            text, severity = notice
            self.notify(text, severity="error" if severity == "error" else "warning", timeout=10 if saved.error else 8)
        return saved.ok

    def unsaved(self) -> bool:
        """Whether the document holds changes that are not on disk."""
        return self.session.unsaved()

    def checkpoint(self, job: Job) -> None:
        """Write the text streamed so far, so a crash loses at most a second or so of it."""
        if self.session.checkpoint_due():
            self._said(self.session.write(self.streaming_doc(job)))

    def export_to(self, path: Path) -> bool:
        """Write the document somewhere else (.json whole, .txt/.md as text) after saving failed."""
        error = self.session.export(path, self.holder.preferences.user)
        if error:
            self.notify(f"Could not export to {path}: {error}", severity="error", timeout=10)
            return False
        self.notify(f"Exported {self.doc.name!r} to {path}", timeout=5)
        return True

    def action_save(self) -> None:
        if self.autosave():
            empty = self.doc_id is None and self.empty(self.doc)
            self.notify(
                f"Nothing to save: this {self.KIND} is empty" if empty else f"Saved {self.doc.name!r}", timeout=2
            )

    # --- library -----------------------------------------------------------------------------

    def action_open(self) -> None:
        if self.busy(quiet=False):
            return
        self.autosave()
        self.app.push_screen(
            LibraryScreen(
                self.library,
                self.data_dir / "exports",
                states=self.state_folders(),
                cap_mb=self.holder.preferences.state_cap_mb,
                user=self.holder.preferences.user,
            ),
            self._opened,
        )

    def state_folders(self) -> list[Path]:
        return [self.data_dir / "stories", self.data_dir / "chats"]

    def _opened(self, doc_id: str | None) -> None:
        if doc_id is not None:
            try:
                self.load(doc_id, self.session.read(doc_id))
            except TalesmithError as e:
                self.notify(str(e), severity="error", timeout=10)
            return
        changed = self.session.reread()  # the open document may have been renamed or deleted
        if changed == "deleted":
            self.load(None, self.blank())
        elif changed == "renamed":
            self.show()

    # --- generation --------------------------------------------------------------------------

    def busy(self, *, quiet: bool = True) -> bool:
        if self.job is not None and not quiet:
            self.notify("Still generating; press escape to stop first", timeout=3)
        return self.job is not None

    # --- provided by DocumentScreen (timers, the model) ----------------------------------------

    def loaded(self, doc_id: str) -> None:
        """A saved document was opened: its saved model state may be resumed."""

    def schedule_save(self) -> None:
        raise NotImplementedError

    def schedule_measure(self) -> None:
        raise NotImplementedError

    def refresh_status(self) -> None:
        raise NotImplementedError
