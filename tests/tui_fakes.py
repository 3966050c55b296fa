"""Scripted backends for the terminal app's tests (built on tests/fakes.py), the app recording its
notifications, and waiting helpers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from fakes import ScriptedBackend, ScriptedSampler
from textual.app import App

from talesmith.runtime.errors import ContextOverflowError
from talesmith.runtime.settings import SamplingSettings
from talesmith.tui.app import TalesmithApp
from talesmith.tui.base import MEASURE_DELAY


class TakesBackend(ScriptedBackend):
    """Writes the next of `scripts` at each generation (cycling), so retries and swipes differ."""

    def __init__(self, scripts: Sequence[str], **kwargs):
        super().__init__(scripts[0], **kwargs)
        self.scripts = [s.encode() for s in scripts]
        self.calls = 0
        self.prompts: list[str] = []
        self.prefilled: list[int] = []
        """Prompt tokens each prefill evaluated (the rest came from the cache)."""
        self.prefill_seconds = 0.0

    def prefill(self, tokens: Sequence[int]) -> int:
        time.sleep(self.prefill_seconds)  # a long prompt takes a while
        evaluated = super().prefill(tokens)
        self.prefilled.append(evaluated)
        return evaluated

    def sampler(self, settings: SamplingSettings, *, seed: int, history: Sequence[int]) -> ScriptedSampler:
        self.script = self.scripts[self.calls % len(self.scripts)]
        self.calls += 1
        self.prompts.append(bytes(t for t in history if t < 256).decode("utf-8", errors="replace"))
        return super().sampler(settings, seed=seed, history=history)


class SlowSampler(ScriptedSampler):
    def __init__(self, backend: SlowBackend):
        super().__init__(backend)
        self.slow = backend

    def sample(self, banned: Collection[int] = ()) -> int:
        self.slow.sampled.set()
        self.slow.gate.wait(self.slow.delay)
        return super().sample(banned)


class SlowBackend(TakesBackend):
    """Takes `delay` seconds per token (or until `gate` is set), to test stopping mid-generation."""

    def __init__(self, scripts: Sequence[str], *, delay: float = 0.05, **kwargs):
        super().__init__(scripts, **kwargs)
        self.delay = delay
        self.gate = threading.Event()
        self.sampled = threading.Event()

    def sampler(self, settings: SamplingSettings, *, seed: int, history: Sequence[int]) -> SlowSampler:
        super().sampler(settings, seed=seed, history=history)
        return SlowSampler(self)


class FailingBackend(TakesBackend):
    """Fails while evaluating the prompt, as a full context does."""

    def prefill(self, tokens: Sequence[int]) -> int:
        raise ContextOverflowError("llama.cpp could not evaluate 12 tokens (code 1); raise --ctx")


class StateBackend(TakesBackend):
    """Saves its "KV state" as `bytes_per_token` bytes per cached token, as llama.cpp's state files grow."""

    def __init__(self, scripts: Sequence[str], *, bytes_per_token: int = 1024, **kwargs):
        super().__init__(scripts, **kwargs)
        self.bytes_per_token = bytes_per_token
        self.model_path = __file__  # hashed like a model file

    def save_state(self, path, *, model_sha256: str) -> None:
        from pathlib import Path

        Path(path).write_bytes(b"k" * self.bytes_per_token * len(self.cached_tokens))
        Path(str(path) + ".meta").write_text(
            json.dumps({"model_sha256": model_sha256, "tokens": list(self.cached_tokens)})
        )

    def load_state(self, path, tokens: Sequence[int], *, model_sha256: str) -> int:
        return 0


class SlowStateBackend(SlowBackend, StateBackend):
    """Writes tokens slowly and takes `save_seconds` to save its state, as a large state file does."""

    def __init__(self, scripts: Sequence[str], *, save_seconds: float = 1.0, **kwargs):
        super().__init__(scripts, **kwargs)
        self.save_seconds = save_seconds

    def save_state(self, path, *, model_sha256: str) -> None:
        time.sleep(self.save_seconds)
        super().save_state(path, model_sha256=model_sha256)


@dataclass(frozen=True)
class Notice:
    message: str
    severity: str
    markup: bool


class _RecordNotifications(App):
    """Records every notification as the app hands it to Textual (after TalesmithApp.notify made it plain)."""

    def __init__(self, *args, **kwargs) -> None:
        self.notified: list[Notice] = []
        super().__init__(*args, **kwargs)

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity="information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        self.notified.append(Notice(message, severity, markup))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)


class RecordingApp(TalesmithApp, _RecordNotifications):
    """The talesmith app, keeping a list of what it notified (notifications on screen expire)."""


async def wait_until(pilot, condition: Callable[[], object], *, timeout: float = 30.0, what: str = "") -> None:
    """Let the app run until `condition()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        await pilot.pause(0.01)


async def workers_done(pilot) -> None:
    """Wait for every worker (model loading, generation, measuring, state files), then for their messages."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def measured(pilot) -> None:
    """Wait for the status line's measurement: its debounce timer, then its worker."""
    await pilot.pause(MEASURE_DELAY + 0.05)
    await workers_done(pilot)
