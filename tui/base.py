"""What the story and chat screens share: the document and its session (docscreen), the panels over it
(panels), and here the model's work for it: the generation worker, measuring the next prompt, the saved
model state, the autosave timer and the status line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from textual import work
from textual.message import Message
from textual.worker import get_current_worker

from talesmith.runtime.engine.protocol import Backend
from talesmith.runtime.settings import PRESETS, SamplingSettings

from . import cache, generation
from .generation import Finished, Job, Measure, Measured, Prepared, Streamed
from .panels import PanelScreen
from .session import D, Prompt
from .status import StatusLine

__all__ = ["MEASURE_DELAY", "SAVE_DELAY", "DocumentScreen", "ModelChanged", "Restored"]


class Restored(Message):
    """A worker resumed `tokens` of the document's saved model state."""

    def __init__(self, tokens: int) -> None:
        super().__init__()
        self.tokens = tokens


SAVE_DELAY = 1.0
"""Seconds after the last edit before the document is written."""
MEASURE_DELAY = 0.3


class ModelChanged(Message):
    """The app loaded the model, or it failed to load: sent down to each screen."""


class DocumentScreen(PanelScreen[D]):
    """A story or chat screen: its document, the panels over it, and the model's work for it."""

    def loaded(self, doc_id: str) -> None:
        document = self.formatted(self.prompt_document())
        if self.model.backend is not None and document is not None:
            self._restore_state(self.model.backend, self.library.path(doc_id), document, self.doc.settings)

    @work(thread=True, group="kvstate", exit_on_error=False)
    def _restore_state(self, backend: Backend, path: Path, document: Prompt, settings: SamplingSettings) -> None:
        """Resume the document's saved KV state, so a long story is not read again."""
        restored = cache.restore(self.model, backend, path, document, settings)
        if restored:
            self.post_message(Restored(restored))

    def on_restored(self, message: Restored) -> None:
        self.notify(f"Resumed {message.tokens} tokens from the saved state", timeout=3)
        self.schedule_measure()

    @work(thread=True, group="kvstate", exit_on_error=False)
    def _save_state(self, backend: Backend, path: Path, cap_mb: int) -> None:
        """Save the KV state beside the document just generated in, for the next time it is opened."""
        cache.keep(self.model, backend, path, self.state_folders(), cap_mb)

    def schedule_save(self) -> None:
        if self._save_timer is not None:
            self._save_timer.stop()
        self._save_timer = self.set_timer(SAVE_DELAY, self.autosave)

    def start_generation(self, base: object, document: Prompt) -> bool:
        if self.model.backend is None:
            self.notify(self.model.problem, severity="error" if self.model.error else "warning")
            return False
        wrapped = self.formatted(document)
        assert wrapped is not None  # only no document wraps as none
        job = self.session.start(base)
        self.generating_changed(True)
        self.refresh_status()
        self._generate(job, self.model.backend, wrapped, self.doc.settings)
        return True

    @work(thread=True, group="generation", exit_on_error=False)
    def _generate(self, job: Job, backend: Backend, document: Prompt, settings: SamplingSettings) -> None:
        generation.run(self, self.model, job, backend, document, settings)

    def action_stop(self) -> None:
        if self.job is None:
            return
        self.stop_generation()

    def stop_generation(self) -> None:
        """End the generation now: its text so far is kept, later chunks are ignored."""
        job = self.job
        if job is None:
            return
        job.stop.set()
        self.finish(job, None)

    def on_prepared(self, message: Prepared) -> None:
        if message.job is self.job:
            self.last_measure = Measure(message.n_tokens, None, message.dropped)  # measured again after it
            self.prepared(message.job, message.dropped)

    def on_streamed(self, message: Streamed) -> None:
        job = message.job
        if self.session.streamed(job, message.text):
            self.streamed(job, message.text)
            self.checkpoint(job)

    def on_finished(self, message: Finished) -> None:
        if message.timing is not None and message.timing.generated_tokens > 1:
            self.tokens_per_second = message.timing.tokens_per_second
        if message.error:
            self.notify(message.error, severity="error", timeout=10)
        if message.job is self.job:
            self.finish(message.job, message.reason)
        self.schedule_measure()

    def finish(self, job: Job, reason: str | None) -> None:
        self.session.end(job)
        self.finished(job, reason)
        if job.text and self.doc.model != self.model.name:  # which model wrote it, saved with the document
            self.session.replace(dataclasses.replace(self.doc, model=self.model.name))
        self.generating_changed(False)
        if self.autosave() and job.text and self.doc_id is not None and self.model.backend is not None:
            cap_mb = self.holder.preferences.state_cap_mb
            self._save_state(self.model.backend, self.library.path(self.doc_id), cap_mb)
        self.refresh_status()
        self.schedule_measure()  # what the next generation re-processes, once the backend is free

    def prepared(self, job: Job, dropped: int) -> None:
        pass

    def streamed(self, job: Job, text: str) -> None:
        raise NotImplementedError

    def finished(self, job: Job, reason: str | None) -> None:
        raise NotImplementedError

    def generating_changed(self, generating: bool) -> None:
        pass

    # --- status line -------------------------------------------------------------------------

    def on_screen_resume(self) -> None:
        self.call_after_refresh(self.refresh_status)
        self.schedule_measure()

    def on_model_changed(self, message: ModelChanged) -> None:
        self.backend_changed()

    def backend_changed(self) -> None:
        """The app loaded the model (or failed to): new documents take the preset the model names."""
        named = self.model.metadata.preset
        if self.preset is None and named in PRESETS:
            self.preset = named
        self.refresh_status()
        self.schedule_measure()

    def schedule_measure(self) -> None:
        if not self.is_mounted:
            return
        if self._measure_timer is not None:
            self._measure_timer.stop()
        self._measure_timer = self.set_timer(MEASURE_DELAY, self.update_measure)

    def update_measure(self) -> None:
        """Measure the next prompt in a worker thread (tokenizing a long story takes a while)."""
        document = self.formatted(self.prompt_document())
        if self.model.backend is None or self.job is not None or document is None:
            self.refresh_status()
            return
        self._measure(self.model.backend, document, self.doc.settings)

    @work(thread=True, group="measure", exclusive=True, exit_on_error=False)
    def _measure(self, backend: Backend, document: Prompt, settings: SamplingSettings) -> None:
        result = generation.measure(self.model, backend, document, settings)
        if result is not None and not get_current_worker().is_cancelled:
            self.post_message(Measured(result))

    def on_measured(self, message: Measured) -> None:
        if self.job is not None:
            return  # measured before this generation began: its own measure follows it
        self.last_measure = message.measure
        self.measured(message.measure)
        self.refresh_status()

    def measured(self, measure: Measure) -> None:
        pass

    def refresh_status(self) -> None:
        if not self.is_mounted:
            return
        line = self.query_one("#status", StatusLine)
        backend, m = self.model.backend, self.last_measure
        line.model_name = self.model.name
        line.backend_name = backend.name if backend is not None else ""
        line.failed = bool(self.model.error)
        line.n_ctx = backend.n_ctx if backend is not None else 0
        line.too_long = bool(m is not None and m.error)
        line.n_tokens = m.n_tokens if m is not None else None
        line.reprocess = m.reprocess if m is not None and self.job is None else None
        line.tokens_per_second = self.tokens_per_second
        line.extra = self.status_extra()
        line.generating = self.job is not None
        line.unsaved = self.unsaved()
        self.refresh_bindings()
