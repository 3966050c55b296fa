"""The panels a story or chat screen opens over its document: you (f8), sampling (f4), the prompt format
(f10), the lorebooks (ctrl+l) and the prompt as the model sees it (f9); the keys both screens share."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from textual import work
from textual.binding import Binding
from textual.message import Message

from talesmith.runtime.documents.lorebook import Lorebook
from talesmith.runtime.documents.stories import User
from talesmith.runtime.engine.protocol import Backend
from talesmith.runtime.errors import TalesmithError
from talesmith.runtime.settings import SamplingSettings

from . import preferences as prefs
from . import promptview
from .dialogs import PromptScreen
from .docscreen import DocumentCore
from .promptformat import PromptFormatScreen
from .sampling import SamplingScreen
from .session import D, Prompt

if TYPE_CHECKING:
    from .lorebook import LoreEdit


class PromptReady(Message):
    """The prompt view's report, made in a worker (None, with `error`, when it could not be made)."""

    def __init__(self, report: promptview.PromptReport | None, error: str = "") -> None:
        super().__init__()
        self.report, self.error = report, error


class PanelScreen(DocumentCore[D]):
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

    def _sampled(self, result: tuple[str, SamplingSettings] | None) -> None:
        if result is not None:
            name, settings = result
            self.commit(dataclasses.replace(self.doc, preset=name, settings=settings))
            self.notify("Sampling settings saved with this " + self.KIND, timeout=2)

    # --- prompt format -----------------------------------------------------------------------

    def formatted(self, document: Prompt | None) -> Prompt | None:
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

    # --- the prompt view ---------------------------------------------------------------------

    def global_lorebooks(self) -> tuple[Lorebook, ...]:
        """The lorebooks in <data dir>/lorebooks/global/ (none, with a warning, when one cannot be read)."""
        from talesmith.runtime.documents.worldinfo import global_lorebooks

        try:
            return global_lorebooks(self.data_dir)
        except TalesmithError as e:
            self.notify(f"global lorebooks left out: {e}", severity="warning", timeout=10)
            return ()

    def action_lorebooks(self) -> None:
        from .lorebook import LorebookScreen

        def done(edit: LoreEdit | None) -> None:
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
    def _show_prompt(self, backend: Backend, document: Prompt, settings: SamplingSettings) -> None:
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
