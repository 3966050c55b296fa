"""The prompt format of the app's generations: the model's own chat template, an instruct preset (built-in or
imported), or the classic formats (the Pygmalion chat, the annotated story). F10 chooses it.

`FormatChoice` is plain logic (no Textual): the choices a model offers, and the runtime document a story or a
chat becomes under the choice. A model with a chat template starts on it; a model without one on the classic
formats. A template that cannot render (broken or hostile) is reported once and the family's preset offered.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, Select, Static

from talesmith.runtime.documents.formats import Chat, Story
from talesmith.runtime.documents.instruct import InstructChat, InstructStory
from talesmith.runtime.errors import TalesmithError
from talesmith.runtime.templates import ChatTemplate, split_reasoning
from talesmith.runtime.templates.choose import choose_template, fallback_preset, user_presets
from talesmith.runtime.templates.presets import BUILTIN, guess_family

MODEL = "model"
CLASSIC = "classic"


@dataclass
class FormatChoice:
    """Which prompt format the app uses for the model it has loaded (per app run)."""

    data_dir: Path
    chosen: str | None = None
    """MODEL, CLASSIC, or a preset's name; None: the default for the model."""
    problem: str = ""
    """Why the model's own template cannot be used (said once, in the app and the prompt view)."""
    _model_path: str = ""
    _own: ChatTemplate | None = None
    _cache: dict[str, ChatTemplate | None] = field(default_factory=dict)

    def model_template(self, model_path: str) -> ChatTemplate | None:
        """The loaded model's own template (None: it has none, or it cannot be used: see `problem`)."""
        if model_path != self._model_path:
            self._model_path, self._own, self.problem = model_path, None, ""
            try:
                self._own = choose_template(None, model=model_path) if Path(model_path).exists() else None
            except TalesmithError as e:
                self.problem = str(e)
        return self._own

    def options(self, model_path: str) -> list[tuple[str, str]]:
        """(label, value) for each choice, the model's template first when it has one."""
        own = self.model_template(model_path)
        found: list[tuple[str, str]] = []
        if own is not None:
            family = guess_family(own.text)
            found.append((f"the model's chat template ({family[0] if family else 'its own'})", MODEL))
        found += [(f"preset {name}", name) for name in BUILTIN]
        found += [(f"imported {name}", name) for name in user_presets(self.data_dir)]
        found.append(("classic (Pygmalion chat, annotated story)", CLASSIC))
        return found

    def current(self, model_path: str) -> str:
        if self.chosen is not None:
            return self.chosen
        if self.model_template(model_path) is not None:
            return MODEL
        if self.problem:  # a template that breaks: its family's preset, when there is one
            broken = self._broken_family(model_path)
            return broken or CLASSIC
        return CLASSIC

    def _broken_family(self, model_path: str) -> str | None:
        try:
            from talesmith.runtime.templates.gguf import read_templates

            text = read_templates(model_path).templates.get("default", "") if model_path.endswith(".gguf") else ""
        except TalesmithError:
            return None
        guess = guess_family(text) if text else None
        return guess[1] if guess else None

    def template(self, model_path: str) -> ChatTemplate | None:
        choice = self.current(model_path)
        if choice == CLASSIC:
            return None
        if choice == MODEL:
            return self.model_template(model_path)
        if choice not in self._cache:
            self._cache[choice] = choose_template(choice, model=model_path, data_dir=self.data_dir)
        return self._cache[choice]

    def wrap(self, document: Any, model_path: str | None) -> Any:
        """The runtime document of a story or chat under the chosen format."""
        template = self.template(model_path) if model_path else None
        if template is None or document is None:
            return document
        if isinstance(document, Chat):
            return InstructChat(document, template, dt.date.today())
        if isinstance(document, Story) and not document.japanese:
            return InstructStory(document, template, dt.date.today())
        return document

    def fallback(self, template: ChatTemplate) -> ChatTemplate | None:
        return fallback_preset(template)


def reply_parts(text: str) -> tuple[str, str]:
    """(thinking, reply) of a chat reply: the thinking is shown folded and never kept."""
    return split_reasoning(text)


def folded(thinking: str) -> str:
    """One line standing for a reply's thinking."""
    words = len(thinking.split())
    return f"▸ thinking ({words} word{'s' if words != 1 else ''}, not kept)"


class PromptFormatScreen(ModalScreen[str | None]):
    """Choose the prompt format; dismissed with the choice's value, or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, options: list[tuple[str, str]], current: str, problem: str = "") -> None:
        super().__init__()
        self.options, self.current, self.problem = options, current, problem

    def compose(self) -> ComposeResult:
        yield Footer()
        yield Label("[b]Prompt format[/]  choose one · escape cancels", id="format-title")
        if self.problem:
            yield Static(f"The model's template cannot be used: {self.problem}", classes="hint", markup=False)
        yield Select(self.options, value=self.current, id="format", allow_blank=False)

    def on_mount(self) -> None:
        self.query_one("#format", Select).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.value is not Select.NULL and event.value != self.current:
            self.dismiss(str(event.value))

    def action_cancel(self) -> None:
        self.dismiss(None)
