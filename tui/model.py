"""The model the screens generate with, as the app knows it: handed down to every screen, typed.

The app loads the model in a worker and fills this in; screens read it and never reach into the app for it
("attributes down, messages up").
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from talesmith.runtime.engine.protocol import Backend, ModelMetadata


@dataclass(eq=False)
class ModelSession:
    name: str
    """The model's name as resolved (a models.lock name or the file's stem)."""
    backend: Backend | None = None
    """None while the model loads, or when it failed (then `error` says why)."""
    error: str = ""
    metadata: ModelMetadata = field(default_factory=ModelMetadata)
    """What the model says about itself (prompt format, preset), once loaded."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held while a worker uses the backend: one generation, measurement or state file at a time."""

    @property
    def problem(self) -> str:
        """Why nothing can be generated now, in one line for the user."""
        if self.error:
            return f"The model did not load: {self.error}"
        return f"The model {self.name} is still loading; try again in a moment."
