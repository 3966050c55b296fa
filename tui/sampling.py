"""The sampling panel: every field of SamplingSettings, a preset picker, validation on save."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, Select, Static

from talesmith.runtime.errors import SettingsError
from talesmith.runtime.settings import LIST_FIELDS, PRESETS, SamplingSettings, parse_value, preset

from .dialogs import Form

FIELDS = dataclasses.fields(SamplingSettings)


def show_value(name: str, value: Any) -> str:
    if name in LIST_FIELDS:
        return json.dumps(list(value), ensure_ascii=False) if value else ""
    return "" if value is None else str(value)


def read_settings(raw: dict[str, str]) -> SamplingSettings:
    """Settings from the panel's texts; raises SettingsError naming the first bad field."""
    values: dict[str, Any] = {}
    for name, text in raw.items():
        if name in LIST_FIELDS and not text.strip():
            values[name] = ()
        else:
            values[name] = parse_value(name, text)
    return SamplingSettings(**values)


class SamplingScreen(ModalScreen[tuple[str, SamplingSettings] | None]):
    BINDINGS = [Binding("ctrl+s", "save", "Save", priority=True), Binding("escape", "cancel", "Cancel")]

    def __init__(
        self, preset_name: str, settings: SamplingSettings, user_presets: Mapping[str, SamplingSettings] = {}
    ) -> None:
        """`user_presets`: the presets imported with `talesmith import` (or F7), listed after the built-in ones."""
        super().__init__()
        self.preset_name, self.settings = preset_name, settings
        self.choices = {name: preset(name) for name in PRESETS}
        self.choices.update({k: v for k, v in user_presets.items() if k not in self.choices})

    def compose(self) -> ComposeResult:
        yield Footer()
        with Form(id="dialog", classes="sampling"):
            yield Label("[b]Sampling[/]  ctrl+s saves with this document · escape cancels")
            yield Static(
                "tab moves between settings; each one explains itself here",
                id="field-help",
                classes="hint",
                markup=False,
            )
            with Horizontal(classes="row"):
                yield Label("preset", classes="name")
                options = [(name, name) for name in self.choices]
                yield Select(
                    options,
                    value=self.preset_name if self.preset_name in self.choices else Select.NULL,
                    id="preset",
                    compact=True,
                    allow_blank=True,
                    prompt="custom",
                )
            for f in FIELDS:
                with Horizontal(classes="row"):
                    yield Label(f.name, classes="name")
                    yield Input(
                        show_value(f.name, getattr(self.settings, f.name)),
                        id=f"s-{f.name}",
                        compact=True,
                        tooltip=f.metadata["help"],
                    )

    def on_mount(self) -> None:
        self.query_one("#preset", Select).focus()

    def on_descendant_focus(self, event: Any) -> None:
        widget = event.widget
        if isinstance(widget, Input) and widget.id and widget.id.startswith("s-"):
            name = widget.id[2:]
            help_text = next(f.metadata["help"] for f in FIELDS if f.name == name)
            self.query_one("#field-help", Static).update(f"{name}: {help_text}")

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.value is Select.NULL or event.value not in self.choices:
            return
        values = self.choices[str(event.value)]
        for f in FIELDS:
            self.query_one(f"#s-{f.name}", Input).value = show_value(f.name, getattr(values, f.name))

    def raw(self) -> dict[str, str]:
        return {f.name: self.query_one(f"#s-{f.name}", Input).value for f in FIELDS}

    def action_save(self) -> None:
        try:
            settings = read_settings(self.raw())
        except SettingsError as e:
            self.notify(f"{e}", severity="error", timeout=8)
            return
        name = self.query_one("#preset", Select).value
        name = str(name) if name in self.choices and settings == self.choices[str(name)] else "custom"
        self.dismiss((name, settings))

    def action_cancel(self) -> None:
        self.dismiss(None)
