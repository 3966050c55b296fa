"""The talesmith terminal app: a story screen and a chat screen over one model backend.

The backend is made by a factory given to the app (the real llama.cpp loader, or a scripted fake in
tests) and loaded in a worker thread, so the app opens at once and stays responsive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.message import Message

from talesmith.runtime.engine.loading import OpenedModel
from talesmith.runtime.engine.protocol import Backend
from talesmith.runtime.errors import TalesmithError

from . import preferences as prefs
from . import reopen
from .base import DocumentScreen, ModelChanged
from .chat import ChatScreen, MessageList
from .dialogs import Choice, HelpScreen, TextPrompt
from .librarydialog import LibraryScreen
from .model import ModelSession
from .story import StoryScreen
from .styles import CSS


@dataclass(frozen=True)
class AppConfig:
    data_dir: Path
    """Holds the stories/, chats/, characters/ and exports/ folders."""
    model_name: str = "gemma3-270m"
    mode: str = "story"
    """The screen shown first: story or chat; "" the one shown last (with `reopen`), else story."""
    reopen: bool = False
    """Open the last story and the last chat again (and remember them as they are opened and saved)."""
    preset: str | None = None
    """The model's sampling preset (from models.lock) for new stories and chats."""


class BackendLoaded(Message):
    def __init__(self, opened: OpenedModel | Backend) -> None:
        super().__init__()
        self.opened = opened


class BackendFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class TalesmithApp(App):
    TITLE = "talesmith"
    ENABLE_COMMAND_PALETTE = False
    CSS = CSS
    BINDINGS = [
        Binding("f1", "help", "Help", priority=True),
        Binding("f2", "mode('story')", "Story", priority=True, tooltip="The story screen"),
        Binding("f3", "mode('chat')", "Chat", priority=True, tooltip="The chat screen"),
        Binding("ctrl+q", "quit", "Quit", priority=True, show=False, tooltip="Save everything and quit"),
        # Taken before the focused field sees the key, on every screen and dialog: a key typed right after tab
        # goes to the next field, however fast.
        Binding("tab", "focus_next", "Next field", priority=True, show=False),
        Binding("shift+tab", "focus_previous", "Previous field", priority=True, show=False),
    ]

    def __init__(self, backend_factory: Callable[[], OpenedModel | Backend], config: AppConfig) -> None:
        """`backend_factory` opens the model (launch.py: talesmith.runtime.engine.loading.open_model); it runs in a
        worker thread and may return the bare backend."""
        super().__init__()
        self.backend_factory = backend_factory
        self.config = config
        self.model = ModelSession(config.model_name)
        """The model, handed down to the screens."""
        self.store = prefs.Store(config.data_dir)
        """The user's preferences, handed down to the screens."""

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: Any = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every notification is plain text: names, file paths and model output may hold brackets."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    @property
    def preferences(self) -> prefs.Preferences:
        return self.store.preferences

    def set_preferences(self, preferences: prefs.Preferences) -> None:
        error = self.store.set_preferences(preferences)
        if error:
            self.notify(error, severity="error")

    @property
    def backend(self) -> Backend | None:
        """The loaded model's backend (None while it loads, or when it failed: `model.error` says why)."""
        return self.model.backend

    def on_mount(self) -> None:
        last = reopen.load(self.config.data_dir) if self.config.reopen else reopen.Last()
        for screen in (StoryScreen, ChatScreen):
            installed = screen(
                self.config.data_dir,
                model=self.model,
                preferences=self.store,
                preset=self.config.preset,
                reopen=self.config.reopen,
            )
            self.install_screen(installed, screen.KIND)
            self.reopen_last(installed, last.ids.get(screen.KIND))
        mode = self.config.mode or last.kind
        self.push_screen(mode if mode in ("story", "chat") else "story")
        self.load_backend()
        if self.store.error:
            self.notify(self.store.error, severity="error", timeout=15)

    def reopen_last(self, screen: DocumentScreen, doc_id: str | None) -> None:
        """Show the document `doc_id` on `screen` when it opens; one gone or damaged is told, not opened."""
        if doc_id is None or not screen.library.path(doc_id).is_file():
            return
        try:
            screen.session.load(doc_id, screen.library.load(doc_id))
        except TalesmithError as e:
            self.notify(f"Could not open the last {screen.KIND} again: {e}", severity="warning", timeout=10)

    @work(thread=True, group="model", exit_on_error=False)
    def load_backend(self) -> None:
        try:
            backend = self.backend_factory()
        except TalesmithError as e:
            self.post_message(BackendFailed(str(e)))
        except Exception as e:  # any loader failure becomes a notification
            self.post_message(BackendFailed(f"{type(e).__name__}: {e}"))
        else:
            self.post_message(BackendLoaded(backend))

    def on_backend_loaded(self, message: BackendLoaded) -> None:
        opened = message.opened
        backend = opened.backend if isinstance(opened, OpenedModel) else opened
        notes = opened.notes if isinstance(opened, OpenedModel) else tuple(backend.warnings)
        self.model.metadata = backend.metadata()
        self.model.backend = backend
        for note in notes:
            self.notify(note, severity="warning", timeout=15)
        for screen in self.document_screens():
            screen.post_message(ModelChanged())

    def on_backend_failed(self, message: BackendFailed) -> None:
        self.model.error = message.error
        self.notify(self.model.problem, severity="error", timeout=15)
        for screen in self.document_screens():
            screen.post_message(ModelChanged())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "mode" and self.screen_stack and self.screen.is_modal:
            return False  # a dialog's footer shows the dialog's keys
        if action == "mode" and parameters and self.screen_stack:
            try:
                return self.screen is not self.get_screen(str(parameters[0]))
            except KeyError:
                return True
        return True

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(
                HelpScreen(
                    [
                        ("Everywhere", [*self.BINDINGS, *DocumentScreen.COMMON_BINDINGS]),
                        ("Story", StoryScreen.BINDINGS),
                        ("Chat", ChatScreen.BINDINGS),
                        ("Chat messages (tab to the list)", MessageList.BINDINGS),
                        ("Stories / chats list (ctrl+o)", LibraryScreen.BINDINGS),
                    ]
                )
            )

    def action_mode(self, name: str) -> None:
        if self.screen.is_modal:
            return
        current = self.screen
        if current is not self.get_screen(name):
            if isinstance(current, DocumentScreen):
                current.autosave()
            self.switch_screen(name)
            target = self.get_screen(name)
            if isinstance(target, DocumentScreen):
                target.call_after_refresh(target.remember_open)  # the one shown last is opened first next time

    async def action_quit(self) -> None:
        failed = self.save_all()
        if not failed:
            self.exit()
            return
        if self.screen.is_modal:
            return
        screen = failed[0]
        self.switch_screen(screen.KIND)
        question = (
            f"{screen.doc.name!r} could not be saved (see the message), so talesmith stays open. "
            f"Free some space and press ctrl+q again, or export the text elsewhere."
        )
        self.push_screen(
            Choice(question, [("e", "export", "export elsewhere"), ("s", "stay", "stay")]),
            lambda answer: self._rescue(screen) if answer == "export" else None,
        )

    def _rescue(self, screen: DocumentScreen) -> None:
        default = Path.home() / f"{screen.doc.name[:40] or 'talesmith'}.json".replace("/", "-")

        def done(path: str | None) -> None:
            if path and path.strip() and screen.export_to(Path(path.strip()).expanduser()):
                self.action_quit_after_rescue()

        self.push_screen(TextPrompt("Export to (.json keeps everything; .txt or .md the text)", str(default)), done)

    def action_quit_after_rescue(self) -> None:
        if not self.save_all():
            self.exit()

    def document_screens(self) -> list[DocumentScreen]:
        """The story and chat screens."""
        return [cast(DocumentScreen, self.get_screen(name)) for name in ("story", "chat")]

    def save_all(self) -> list[DocumentScreen]:
        """Stop generations and save every document; the screens whose changes could not be saved."""
        failed = []
        for screen in self.document_screens():
            screen.stop_generation()
            if not screen.autosave():
                failed.append(screen)
        return failed

    def on_unmount(self) -> None:
        backend, self.model.backend = self.model.backend, None
        if backend is not None:
            try:
                with self.model.exclusive(backend):  # after the generation or state file in progress
                    backend.close()
            except TalesmithError:
                pass  # still busy: the process ends anyway
