"""Running one generation off the UI thread, and measuring what the next one will cost.

The worker walks the runtime's one path (prepare -> stream) and posts one message per chunk to the
screen that asked; the screen never waits for it. Stopping closes the stream, which ends generation
at the next token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message
from textual.message_pump import MessagePump

from talesmith.runtime.documents.lorebook import skipped_notes
from talesmith.runtime.engine import kvstate
from talesmith.runtime.engine.generate import Timing, prepare, stream
from talesmith.runtime.errors import TalesmithError
from talesmith.runtime.settings import SamplingSettings

from .model import ModelBusy, ModelSession
from .session import Job


class Prepared(Message):
    def __init__(self, job: Job, n_tokens: int, dropped: int) -> None:
        super().__init__()
        self.job, self.n_tokens, self.dropped = job, n_tokens, dropped


class Streamed(Message):
    def __init__(self, job: Job, text: str) -> None:
        super().__init__()
        self.job, self.text = job, text


class Finished(Message):
    def __init__(self, job: Job, reason: str | None, timing: Timing | None, error: str | None) -> None:
        super().__init__()
        self.job, self.reason, self.timing, self.error = job, reason, timing, error


def run(
    target: MessagePump, model: ModelSession, job: Job, backend: Any, document: Any, settings: SamplingSettings
) -> None:
    """The body of a generation worker thread. Posts Prepared, then Streamed per chunk, then Finished."""
    reason = timing = error = None
    try:
        with model.exclusive(backend):  # one generation at a time on a backend, even from two screens
            if job.stop.is_set():  # stopped while it waited for the backend
                target.post_message(Finished(job, "stopped", None, None))
                return
            prepared = prepare(backend, document, settings)
            target.post_message(Prepared(job, len(prepared.tokens), prepared.fitted.dropped))
            for note in skipped_notes(prepared.lore):  # a message to the app: it shows them as plain text
                target.app.notify(note, severity="warning", markup=False)
            chunks = stream(backend, prepared.tokens, settings, stops=prepared.stops)
            try:
                for chunk in chunks:
                    if job.stop.is_set():
                        reason = "stopped"
                        break
                    timing, reason = chunk.timing, chunk.finish_reason
                    if chunk.text:
                        target.post_message(Streamed(job, chunk.text))
            finally:
                chunks.close()
    except TalesmithError as e:
        error = str(e)
    except Exception as e:  # a backend failure must reach the user as a notification, not kill the app
        error = f"generation failed: {type(e).__name__}: {e}"
    target.post_message(Finished(job, reason, timing, error))


@dataclass(frozen=True)
class Measure:
    n_tokens: int
    """Tokens of the prompt the next generation would use."""
    reprocess: int | None
    """Of those, how many are not in the cache and must be evaluated again (None: not measured yet)."""
    dropped: int
    """History units (story lines, chat messages) left out to fit the context."""
    error: str = ""


class Measured(Message):
    def __init__(self, measure: Measure) -> None:
        super().__init__()
        self.measure = measure


def measure(model: ModelSession, backend: Any, document: Any, settings: SamplingSettings) -> Measure | None:
    """What the next generation of `document` costs, measured against the cache once the backend is free
    (after a generation stops, its state file is written first); None when it stayed busy."""
    try:
        with model.exclusive(backend):
            prepared = prepare(backend, document, settings)
            reprocess = kvstate.reprocess_count(backend, prepared.tokens)
    except ModelBusy:
        return None
    except TalesmithError as e:
        return Measure(0, 0, 0, str(e))
    return Measure(len(prepared.tokens), reprocess, prepared.fitted.dropped)
