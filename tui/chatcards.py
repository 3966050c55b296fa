"""The chat screen's characters: the card editor (f5, f6), the character library (alt+c), importing a card
or anything `talesmith import` reads (f7), a new chat with the same character (ctrl+n). The cards' files
are chatlogic's work; this shows the dialogs and what came of them."""

from __future__ import annotations

from pathlib import Path

from textual.binding import Binding

from talesmith.runtime.documents.cards import Character
from talesmith.runtime.documents.characters import keep_avatar
from talesmith.runtime.documents.importers import read_import, save_import
from talesmith.runtime.documents.stories import ChatDocument, User
from talesmith.runtime.errors import TalesmithError

from . import chatlogic
from .base import DocumentScreen
from .cardeditor import CharacterEditor
from .dialogs import Choice, TextPrompt

CARD_BINDINGS = [
    Binding("f5", "edit_character", "Character", priority=True, tooltip="Edit the character"),
    Binding(
        "alt+c",
        "characters",
        "Characters",
        priority=True,
        show=False,
        tooltip="Your characters: search, start a chat, see their chats, delete",
    ),
    Binding(
        "f7",
        "import_card",
        "Import",
        priority=True,
        tooltip="Import a card, a SillyTavern chat, preset or World Info, or a KoboldAI story",
    ),
    Binding(
        "f6",
        "new_character",
        "New character",
        priority=True,
        show=False,
        tooltip="Create a character and start a chat with them",
    ),
    Binding(
        "ctrl+n",
        "new_chat",
        "New chat",
        priority=True,
        show=False,
        tooltip="Start a new chat with the same character",
    ),
]


class CardScreen(DocumentScreen[ChatDocument]):
    """A document screen whose document is a chat with a character kept in characters/."""

    @property
    def default_user(self) -> User:
        return self.holder.preferences.user

    @property
    def has_chat(self) -> bool:
        return bool(self.doc.character.name)

    def ready(self) -> bool:
        """Whether a chat is open and the model free; tells the user why not."""
        if self.busy(quiet=False):
            return False
        if not self.has_chat:
            self.notify("No chat open: f6 creates a character, f7 imports a card, ctrl+o opens a chat", timeout=4)
            return False
        return True

    def save_character(self, character: Character, path: Path | None = None) -> None:
        """Keep a copy of the card in the characters folder (unknown card fields included)."""
        path = path or chatlogic.card_path(self.data_dir, character)
        try:
            replaced = chatlogic.write_card(path, character)
        except OSError as e:
            self.notify(f"Could not save the character card to {path}: {e}", severity="warning")
            return
        if replaced:
            self.notify(
                f"{replaced} characters of the card cannot be stored as UTF-8; they were saved as \ufffd",
                severity="warning",
                timeout=8,
            )

    def start_chat(self, character: Character, path: Path | None = None) -> None:
        self.save_character(character, path)
        self.load(None, chatlogic.new_chat(self.doc, character, self.default_user, self.preset))
        self.autosave()
        self.query_one("#composer").focus()

    def action_new_chat(self) -> None:
        if not self.ready():
            return
        self.start_chat(self.doc.character)
        self.notify(f"New chat with {self.doc.character.name}", timeout=2)

    def action_characters(self) -> None:
        from .characters import CharacterLibrary, Picked

        if self.busy(quiet=False):
            return

        def done(picked: Picked | None) -> None:
            if picked is None:
                return
            if picked.new:
                self.action_new_character()
            elif picked.chat_id:
                self._opened(picked.chat_id)
            elif picked.character is not None:
                self.start_chat(picked.character, picked.path)
                self.notify(f"New chat with {picked.character.name}", timeout=2)

        self.app.push_screen(CharacterLibrary(self.data_dir), done)

    def action_new_character(self) -> None:
        if self.busy(quiet=False):
            return

        def done(character: Character | None) -> None:
            if character is not None:
                self.start_chat(character)

        self.app.push_screen(CharacterEditor(), done)

    def action_edit_character(self) -> None:
        if not self.ready():
            return

        def done(character: Character | None) -> None:
            if character is not None:
                self.save_character(character)
                self.commit(chatlogic.with_character(self.doc, character))
                self.show()

        self.app.push_screen(CharacterEditor(self.doc.character), done)

    def action_import_card(self) -> None:
        if self.busy(quiet=False):
            return

        def done(path: str | None) -> None:
            if not path or not path.strip():
                return
            try:  # a card, or anything `talesmith import` reads (recognised by content)
                imported = read_import(path.strip(), characters=self.data_dir / "characters")
                saved = None if imported.kind == "character" else save_import(imported, self.data_dir)
            except TalesmithError as e:
                self.notify(f"{e}. Nothing was changed.", severity="error", timeout=10)
                return
            for note in imported.notes:
                self.notify(note, severity="warning", timeout=10)
            if imported.kind == "character":
                self._import(imported.value, source=Path(path.strip()).expanduser())
            elif imported.kind == "chat" and saved is not None:
                self.autosave()
                self._opened(saved.stem)
            else:
                self.notify(f"Imported {imported.kind} {imported.name!r} to {saved}", timeout=8)

        self.app.push_screen(
            TextPrompt(
                "File to import: a card (.png / .json), a SillyTavern chat, preset or World Info, a KoboldAI story"
            ),
            done,
        )

    def _import(self, character: Character, source: Path | None = None) -> None:
        """Start a chat with an imported character; a card of the same name already kept is replaced or kept.
        The picture of a PNG card (`source`) is kept beside it."""
        path = chatlogic.card_path(self.data_dir, character)

        def chosen(answer: str | None) -> None:
            if answer is None:
                self.notify("Import cancelled; nothing was changed", timeout=3)
                return
            target = chatlogic.import_target(path, answer)
            self.start_chat(character, target)
            if source is not None:
                try:
                    keep_avatar(source, target)
                except TalesmithError as e:
                    self.notify(str(e), severity="warning", timeout=8)
            self.notify(f"Imported {character.name} as {target.name}", timeout=4)
            if character.replaced:
                self.notify(
                    f"{character.replaced} characters of the card cannot be stored as UTF-8 (broken "
                    f"surrogates); they were read as \ufffd",
                    severity="warning",
                    timeout=8,
                )

        if not path.exists():
            chosen("replace")
            return
        self.app.push_screen(
            Choice(
                f"A character card {path.name} is already kept in {path.parent}.",
                [("r", "replace", "replace it"), ("k", "keep", "keep both")],
            ),
            chosen,
        )
