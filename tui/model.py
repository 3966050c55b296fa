"""The model the screens generate with, as the app knows it: handed down to every screen, typed.

The app loads the model in a worker and fills this in; screens read it and never reach into the app for it
("attributes down, messages up"). Every use of the backend (a generation, a measurement, the prompt view, a
saved state, closing it) goes through `exclusive()`, one at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from talesmith.runtime.engine.protocol import Backend, ModelMetadata
from talesmith.runtime.errors import TalesmithError

WAIT_SECONDS = 60.0
"""How long a use of the model waits for the one before it (a generation finishing, a state file written)."""


class ModelBusy(TalesmithError):
    """The model stayed in use by something else for longer than WAIT_SECONDS."""


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
    """Held while a worker uses the backend; taken only through `exclusive()`."""

    @property
    def problem(self) -> str:
        """Why nothing can be generated now, in one line for the user."""
        if self.error:
            return f"The model did not load: {self.error}"
        return f"The model {self.name} is still loading; try again in a moment."

    @contextmanager
    def exclusive(self, backend: Backend | None = None, *, wait: float = WAIT_SECONDS) -> Iterator[Backend]:
        """`backend` (by default the loaded one) for this thread alone while the block runs.

        Waits for the use before it up to `wait` seconds, then raises ModelBusy; raises ModelBusy with
        `problem` when no model is loaded.
        """
        backend = backend if backend is not None else self.backend
        if backend is None:
            raise ModelBusy(self.problem)
        if not self.lock.acquire(timeout=wait):
            raise ModelBusy(
                f"the model {self.name} stayed busy for {wait:.0f} seconds (a generation or a saved state); "
                f"try again when it is done"
            )
        try:
            yield backend
        finally:
            self.lock.release()
