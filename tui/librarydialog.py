"""The list of saved stories or chats (ctrl+o): open, rename, delete, export; the saved model state's size."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList, Static
from textual.widgets.option_list import Option

from talesmith.runtime.documents.stories import Entry, Library, User, slug
from talesmith.runtime.engine import kvstate
from talesmith.runtime.errors import TalesmithError
from talesmith.runtime.files import free_path

from .dialogs import Confirm, TextPrompt, framed


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
        yield from framed(
            Label(Text.assemble((f"Your {self.library.folder.name}", "bold"), f"  ({self.library.folder})")),
            OptionList(id="entries"),
            Static(id="state-size", classes="hint"),
            hint="enter open · r rename · d delete · t/m export · escape close",
        )

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

    def selected(self) -> Entry | None:
        """The highlighted entry of the list (None when it is empty)."""
        options = self.query_one("#entries", OptionList)
        if options.highlighted is None or not self.entries:
            return None
        return self.entries[options.highlighted]

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        entry = self.selected()
        if entry is None:
            return
        if entry.error:
            self.notify(entry.error, severity="error", timeout=10)
            return
        self.dismiss(entry.id)

    def action_rename(self) -> None:
        entry = self.selected()
        if entry is None:
            return

        def done(name: str | None) -> None:
            if name is not None:
                self._change(entry, "rename", lambda: self.library.rename(entry.id, name))
                self._reload()

        self.app.push_screen(TextPrompt(f"New name for {entry.name!r}", entry.name), done)

    def action_delete(self) -> None:
        entry = self.selected()
        if entry is None:
            return

        def done(yes: bool | None) -> None:
            if yes and self._change(entry, "delete", lambda: self.library.delete(entry.id)):
                self.notify(f"Deleted {entry.name!r}", timeout=3)
                self._reload()

        self.app.push_screen(Confirm(f"Delete {entry.name!r} for good?"), done)

    def _change(self, entry: Entry, verb: str, change: Callable[[], object]) -> bool:
        """Rename or delete `entry` by `change`; whether it worked (a failure is shown, naming the entry)."""
        try:
            change()
        except (OSError, TalesmithError) as e:
            self.notify(f"Could not {verb} {entry.name!r}: {e}", severity="error", timeout=8)
            return False
        return True

    def _reload(self) -> None:
        """The list read again, the highlight kept where it was."""
        self.reload(self.query_one("#entries", OptionList).highlighted or 0)

    def action_export(self, suffix: str) -> None:
        from talesmith.runtime.documents.stories import export

        entry = self.selected()
        if entry is None:
            return
        try:
            doc = self.library.load(entry.id)
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
