"""What the story and chat screens share: the document and its undo history, autosave, the library,
the sampling panel, the generation worker and the status line."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from textual import work
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.worker import get_current_worker

from talesmith.runtime.documents.stories import Library, User, atomic_write, dumps, export
from talesmith.runtime.engine import kvstate
from talesmith.runtime.engine.generate import prepare
from talesmith.runtime.engine.protocol import Backend
from talesmith.runtime.errors import TalesmithError
from talesmith.runtime.settings import PRESETS

from . import generation, promptview, reopen
from . import preferences as prefs
from .dialogs import LibraryScreen, PromptScreen
from .generation import Finished, Job, Measure, Measured, Prepared, Streamed
from .model import ModelSession
from .promptformat import FormatChoice, PromptFormatScreen
from .sampling import SamplingScreen
from .session import DocumentSession, Saved
from .status import StatusLine


class Restored(Message):
    """A worker resumed `tokens` of the document's saved model state."""

    def __init__(self, tokens: int) -> None:
        super().__init__()
        self.tokens = tokens


class PromptReady(Message):
    """The prompt view's report, made in a worker (None, with `error`, when it could not be made)."""

    def __init__(self, report: promptview.PromptReport | None, error: str = "") -> None:
        super().__init__()
        self.report, self.error = report, error


SAVE_DELAY = 1.0
"""Seconds after the last edit before the document is written."""
MEASURE_DELAY = 0.3


class ModelChanged(Message):
    """The app loaded the model, or it failed to load: sent down to each screen."""


class DocumentScreen(Screen):
    KIND = "story"
    FOLDER = "stories"
    NAMED_FILES = False
    """Whether the document's file is renamed when its name changes (stories, named after their title)."""
    COMMON_BINDINGS = [
        Binding("escape", "stop", "Stop", priority=True, tooltip="Stop the generation now (its text is kept)"),
        Binding("ctrl+z", "undo", "Undo", priority=True, show=False, tooltip="Undo (edits and generations)"),
        Binding("ctrl+y", "redo", "Redo", priority=True, show=False),
        Binding("ctrl+s", "save", "Save", priority=True, show=False, tooltip="Save now (saving is automatic)"),
        Binding("ctrl+o", "open", "Open", priority=True, tooltip="Saved documents: open, rename, delete, export"),
        Binding("f4", "sampling", "Sampling", priority=True, tooltip="Sampling settings, presets and stop strings"),
        Binding(
            "f8",
            "user",
            "You",
            priority=True,
            show=False,
            tooltip="Your name and persona (every chat, or this one), the cap on saved model state",
        ),
        Binding(
            "f10",
            "prompt_format",
            "Format",
            priority=True,
            show=False,
            tooltip="The prompt format: the model's chat template, an instruct preset, or the classic formats",
        ),
        Binding(
            "f9",
            "prompt",
            "Prompt",
            priority=True,
            show=False,
            tooltip="What the model sees: the exact prompt, its parts and token counts",
        ),
        Binding(
            "ctrl+l",
            "lorebooks",
            "Lore",
            priority=True,
            show=False,
            tooltip="Lorebooks of this story or chat: entries, keys, positions; attach a lorebook file",
        ),
    ]

    def __init__(
        self, data_dir: Path, *, model: ModelSession, preferences: prefs.Store, preset: str | None = None
    ) -> None:
        super().__init__()
        self.model = model
        """The model, as the app loads it (read here, never changed)."""
        self.holder = preferences
        """The user's preferences, shared with the app and the other screen."""
        self.data_dir = Path(data_dir)
        self.preset = preset if preset in PRESETS else None
        """The model's own sampling preset (from models.lock), used for new documents."""
        self.library = Library(self.data_dir / self.FOLDER, self.KIND)
        self.session: DocumentSession[Any] = DocumentSession(
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

    def blank(self) -> Any:
        raise NotImplementedError

    def empty(self, doc: Any) -> bool:
        """Whether a document holds nothing worth a file."""
        raise NotImplementedError

    def prompt_document(self) -> Any:
        """The runtime document the next generation would continue (None when there is none)."""
        raise NotImplementedError

    def show(self) -> None:
        """Make the widgets show the present document."""
        raise NotImplementedError

    def status_extra(self) -> str:
        return ""

    def disposable(self, doc: Any) -> bool:
        """Whether a saved document that holds nothing again may lose its file (an untitled one)."""
        return False

    def streaming_doc(self, job: Job) -> Any:
        """The document as it would be with the generation's text so far (for checkpoints)."""
        raise NotImplementedError

    # --- the document ------------------------------------------------------------------------

    @property
    def doc(self) -> Any:
        return self.session.doc

    @property
    def doc_id(self) -> str | None:
        return self.session.doc_id

    @property
    def saved_doc(self) -> Any:
        return self.session.saved_doc

    @property
    def job(self) -> Job | None:
        return self.session.job

    def commit(self, doc: Any, *, edit: str = "") -> None:
        """Make `doc` the present; edits of one field in quick succession are one undo step."""
        if self.session.commit(doc, edit=edit):
            self.schedule_save()
            self.schedule_measure()

    def load(self, doc_id: str | None, doc: Any) -> None:
        self.autosave()
        self.session.load(doc_id, doc)
        self.remember_open()
        self.show()
        self.schedule_measure()
        document = self.formatted(self.prompt_document())
        if doc_id is not None and self.model.backend is not None and document is not None:
            self._restore_state(self.model.backend, self.library.path(doc_id), document, self.doc.settings)

    @work(thread=True, group="kvstate", exit_on_error=False)
    def _restore_state(self, backend: Backend, path: Path, document: Any, settings: Any) -> None:
        """Resume the document's saved KV state, so a long story is not read again."""
        try:
            with self.model.exclusive(backend):
                restored = kvstate.restore(backend, path, prepare(backend, document, settings).tokens)
        except (TalesmithError, OSError):
            restored = 0
        if restored:
            self.post_message(Restored(restored))

    def on_restored(self, message: Restored) -> None:
        self.notify(f"Resumed {message.tokens} tokens from the saved state", timeout=3)
        self.schedule_measure()

    @work(thread=True, group="kvstate", exit_on_error=False)
    def _save_state(self, backend: Backend, path: Path, cap_mb: int) -> None:
        """Save the KV state beside the document just generated in, for the next time it is opened."""
        try:
            with self.model.exclusive(backend):
                kvstate.save(backend, path)
                kvstate.enforce_cap(self.state_folders(), cap_mb * 1024 * 1024)
        except (TalesmithError, OSError):
            pass  # only a cache: without it the document is read again next time

    def action_undo(self) -> None:
        self._travel(self.session.undo, "Nothing to undo")

    def action_redo(self) -> None:
        self._travel(self.session.redo, "Nothing to redo")

    def _travel(self, step: Any, nothing: str) -> None:
        if self.busy(quiet=False):
            return
        if not step():
            self.notify(nothing, timeout=2)
            return
        self.show()
        self.schedule_save()
        self.schedule_measure()

    # --- saving ------------------------------------------------------------------------------

    def schedule_save(self) -> None:
        if self._save_timer is not None:
            self._save_timer.stop()
        self._save_timer = self.set_timer(SAVE_DELAY, self.autosave)

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
        reopens = getattr(getattr(self.app, "config", None), "reopen", False)
        if self.doc_id is not None and reopens and self.app.screen is self:
            reopen.remember(self.data_dir, self.KIND, self.doc_id)

    def _said(self, saved: Saved) -> bool:
        """Tell the user what a save could not do; whether it wrote."""
        name = self.doc.name
        if saved.error:
            self.notify(
                f"Could not save {name!r} to {self.library.folder}: {saved.error}. Your text is still here; "
                f"free some space or fix the folder, then press ctrl+s.",
                severity="error",
                timeout=10,
            )
        elif saved.replaced:
            self.notify(
                f"{saved.replaced} characters of {name!r} cannot be stored as UTF-8 (broken surrogates, "
                f"often from a card); they were saved as \ufffd",
                severity="warning",
                timeout=8,
            )
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
        try:
            if path.suffix.lower() == ".json":
                atomic_write(path, dumps(self.doc))
            else:
                export(self.doc, path, user=self.holder.preferences.user)
        except (OSError, TalesmithError) as e:
            self.notify(f"Could not export to {path}: {e}", severity="error", timeout=10)
            return False
        self.session.mark_saved()  # its changes are safe elsewhere
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
                self.load(doc_id, self.library.load(doc_id))
            except TalesmithError as e:
                self.notify(str(e), severity="error", timeout=10)
            return
        if self.doc_id is not None:  # the open document may have been renamed or deleted
            if not self.library.path(self.doc_id).exists():
                self.session.mark_saved()  # deleted on purpose: not to be written again
                self.load(None, self.blank())
                return
            try:
                name = self.library.load(self.doc_id).name
            except TalesmithError:
                return
            if name != self.doc.name:
                self.session.replace(dataclasses.replace(self.doc, name=name))
                self.session.mark_saved()
                self.show()

    # --- you ---------------------------------------------------------------------------------

    def own_user(self) -> User | None:
        """This document's own user name and persona (None: the document has none)."""
        return None

    def set_own_user(self, user: User) -> None:
        pass

    def action_user(self) -> None:
        from .dialogs import UserScreen

        p = self.holder.preferences

        def done(result: tuple[User, int, User] | None) -> None:
            if result is not None:
                default, cap, own = result
                error = self.holder.set_preferences(prefs.Preferences(default, cap))
                if error:
                    self.notify(error, severity="error")
                if self.own_user() is not None:
                    self.set_own_user(own)
                self.show()

        self.app.push_screen(UserScreen(p.user, p.state_cap_mb, self.own_user()), done)

    # --- sampling ----------------------------------------------------------------------------

    def action_sampling(self) -> None:
        from talesmith.runtime.documents.importers.presets import user_presets

        imported = {p.name: p.settings for p in user_presets(self.data_dir)}
        self.app.push_screen(SamplingScreen(self.doc.preset, self.doc.settings, imported), self._sampled)

    def _sampled(self, result: tuple[str, Any] | None) -> None:
        if result is not None:
            name, settings = result
            self.commit(dataclasses.replace(self.doc, preset=name, settings=settings))
            self.notify("Sampling settings saved with this " + self.KIND, timeout=2)

    # --- prompt format -----------------------------------------------------------------------

    def formatted(self, document: Any) -> Any:
        """The runtime document under the chosen prompt format (the model's chat template, a preset, classic)."""
        backend = self.model.backend
        try:
            return self.formats.wrap(document, backend.model_path if backend is not None else None)
        except TalesmithError as e:
            self.notify(f"{e}; f10 chooses another prompt format", severity="error", timeout=10)
            self.formats.chosen = "classic"
            return document

    def action_prompt_format(self) -> None:
        backend = self.model.backend
        if backend is None:
            self.notify(self.model.problem, severity="warning")
            return
        path = backend.model_path
        screen = PromptFormatScreen(self.formats.options(path), self.formats.current(path), self.formats.problem)

        def chosen(value: str | None) -> None:
            if value is not None:
                self.formats.chosen = value
                self.notify(f"Prompt format: {value}", timeout=2)
                self.schedule_measure()

        self.app.push_screen(screen, chosen)

    # --- generation --------------------------------------------------------------------------

    def busy(self, *, quiet: bool = True) -> bool:
        if self.job is not None and not quiet:
            self.notify("Still generating; press escape to stop first", timeout=3)
        return self.job is not None

    def start_generation(self, base: Any, document: Any) -> bool:
        if self.model.backend is None:
            self.notify(self.model.problem, severity="error" if self.model.error else "warning")
            return False
        document = self.formatted(document)
        job = self.session.start(base)
        self.generating_changed(True)
        self.refresh_status()
        self._generate(job, self.model.backend, document, self.doc.settings)
        return True

    @work(thread=True, group="generation", exit_on_error=False)
    def _generate(self, job: Job, backend: Backend, document: Any, settings: Any) -> None:
        generation.run(self, self.model, job, backend, document, settings)

    def action_stop(self) -> None:
        if self.job is None:
            return
        self.stop_generation()

    def stop_generation(self) -> None:
        """End the generation now: its text so far is kept, later chunks are ignored."""
        job = self.job
        if job is None:
            return
        job.stop.set()
        self.finish(job, None)

    def on_prepared(self, message: Prepared) -> None:
        if message.job is self.job:
            self.last_measure = Measure(message.n_tokens, None, message.dropped)  # measured again after it
            self.prepared(message.job, message.dropped)

    def on_streamed(self, message: Streamed) -> None:
        job = message.job
        if self.session.streamed(job, message.text):
            self.streamed(job, message.text)
            self.checkpoint(job)

    def on_finished(self, message: Finished) -> None:
        if message.timing is not None and message.timing.generated_tokens > 1:
            self.tokens_per_second = message.timing.tokens_per_second
        if message.error:
            self.notify(message.error, severity="error", timeout=10)
        if message.job is self.job:
            self.finish(message.job, message.reason)
        self.schedule_measure()

    def finish(self, job: Job, reason: str | None) -> None:
        self.session.end(job)
        self.finished(job, reason)
        if job.text and self.doc.model != self.model.name:  # which model wrote it, saved with the document
            self.session.replace(dataclasses.replace(self.doc, model=self.model.name))
        self.generating_changed(False)
        if self.autosave() and job.text and self.doc_id is not None and self.model.backend is not None:
            cap_mb = self.holder.preferences.state_cap_mb
            self._save_state(self.model.backend, self.library.path(self.doc_id), cap_mb)
        self.refresh_status()
        self.schedule_measure()  # what the next generation re-processes, once the backend is free

    def prepared(self, job: Job, dropped: int) -> None:
        pass

    def streamed(self, job: Job, text: str) -> None:
        raise NotImplementedError

    def finished(self, job: Job, reason: str | None) -> None:
        raise NotImplementedError

    def generating_changed(self, generating: bool) -> None:
        pass

    # --- status line -------------------------------------------------------------------------

    def on_screen_resume(self) -> None:
        self.call_after_refresh(self.refresh_status)
        self.schedule_measure()

    def on_model_changed(self, message: ModelChanged) -> None:
        self.backend_changed()

    def backend_changed(self) -> None:
        """The app loaded the model (or failed to): new documents take the preset the model names."""
        named = self.model.metadata.preset
        if self.preset is None and named in PRESETS:
            self.preset = named
        self.refresh_status()
        self.schedule_measure()

    def schedule_measure(self) -> None:
        if not self.is_mounted:
            return
        if self._measure_timer is not None:
            self._measure_timer.stop()
        self._measure_timer = self.set_timer(MEASURE_DELAY, self.update_measure)

    def update_measure(self) -> None:
        """Measure the next prompt in a worker thread (tokenizing a long story takes a while)."""
        document = self.formatted(self.prompt_document())
        if self.model.backend is None or self.job is not None or document is None:
            self.refresh_status()
            return
        self._measure(self.model.backend, document, self.doc.settings)

    @work(thread=True, group="measure", exclusive=True, exit_on_error=False)
    def _measure(self, backend: Backend, document: Any, settings: Any) -> None:
        result = generation.measure(self.model, backend, document, settings)
        if result is not None and not get_current_worker().is_cancelled:
            self.post_message(Measured(result))

    def on_measured(self, message: Measured) -> None:
        if self.job is not None:
            return  # measured before this generation began: its own measure follows it
        self.last_measure = message.measure
        self.measured(message.measure)
        self.refresh_status()

    def measured(self, measure: Measure) -> None:
        pass

    def refresh_status(self) -> None:
        if not self.is_mounted:
            return
        line = self.query_one("#status", StatusLine)
        backend, m = self.model.backend, self.last_measure
        line.model_name = self.model.name
        line.backend_name = backend.name if backend is not None else ""
        line.failed = bool(self.model.error)
        line.n_ctx = backend.n_ctx if backend is not None else 0
        line.too_long = bool(m is not None and m.error)
        line.n_tokens = m.n_tokens if m is not None else None
        line.reprocess = m.reprocess if m is not None and self.job is None else None
        line.tokens_per_second = self.tokens_per_second
        line.extra = self.status_extra()
        line.generating = self.job is not None
        line.unsaved = self.unsaved()
        self.refresh_bindings()

    # --- the prompt view ---------------------------------------------------------------------

    def global_lorebooks(self) -> tuple[Any, ...]:
        """The lorebooks in <data dir>/lorebooks/global/ (none, with a warning, when one cannot be read)."""
        from talesmith.runtime.documents.worldinfo import global_lorebooks

        try:
            return global_lorebooks(self.data_dir)
        except TalesmithError as e:
            self.notify(f"global lorebooks left out: {e}", severity="warning", timeout=10)
            return ()

    def action_lorebooks(self) -> None:
        from .lorebook import LorebookScreen

        def done(edit: Any) -> None:
            if edit is not None:
                self.commit(dataclasses.replace(self.doc, lorebooks=edit.books, lore_placement=edit.placement))

        screen = LorebookScreen(
            self.doc.lorebooks,
            name=self.doc.name or "this document",
            data_dir=self.data_dir,
            placement=self.doc.lore_placement,
        )
        self.app.push_screen(screen, done)

    def action_prompt(self) -> None:
        document = self.formatted(self.prompt_document())
        if document is None:
            self.notify("Nothing to show yet: there is no prompt without a story or chat", timeout=3)
            return
        if self.model.backend is None:
            self.notify(self.model.problem, severity="warning")
            return
        if not self.busy(quiet=False):
            self._show_prompt(self.model.backend, document, self.doc.settings)

    @work(thread=True, group="prompt", exclusive=True, exit_on_error=False)
    def _show_prompt(self, backend: Backend, document: Any, settings: Any) -> None:
        """Tokenize the prompt's parts in a worker (a long story takes a while), then show them."""
        try:
            with self.model.exclusive(backend):
                self.post_message(PromptReady(promptview.report(backend, document, settings)))
        except TalesmithError as e:
            self.post_message(PromptReady(None, str(e)))

    def on_prompt_ready(self, message: PromptReady) -> None:
        if message.report is None:
            self.notify(message.error, severity="error", timeout=10)
        else:
            self.app.push_screen(PromptScreen(message.report))
