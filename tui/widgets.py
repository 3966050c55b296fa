"""Small widgets the screens share."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Checkbox


class Tick(Checkbox):
    """A checkbox whose mark says its state, not only its colour: `▐X▌` when on, `▐ ▌` when off."""

    def render(self) -> Content:
        self.BUTTON_INNER = "X" if self.value else " "
        return super().render()
