"""Scripted backends for the terminal app's tests, built on tests/fakes.py without changing it."""

from __future__ import annotations

import json
import threading
from typing import Collection, Sequence

from fakes import ScriptedBackend, ScriptedSampler

from talesmith.runtime.errors import ContextOverflowError
from talesmith.runtime.settings import SamplingSettings


class TakesBackend(ScriptedBackend):
    """Writes the next of `scripts` at each generation (cycling), so retries and swipes differ."""

    def __init__(self, scripts: Sequence[str], **kwargs):
        super().__init__(scripts[0], **kwargs)
        self.scripts = [s.encode() for s in scripts]
        self.calls = 0
        self.prompts: list[str] = []

    def sampler(self, settings: SamplingSettings, *, seed: int, history: Sequence[int]) -> ScriptedSampler:
        self.script = self.scripts[self.calls % len(self.scripts)]
        self.calls += 1
        self.prompts.append(bytes(t for t in history if t < 256).decode("utf-8", errors="replace"))
        return super().sampler(settings, seed=seed, history=history)


class SlowSampler(ScriptedSampler):
    def __init__(self, backend: "SlowBackend"):
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
        Path(str(path) + ".meta").write_text(json.dumps({"model_sha256": model_sha256,
                                                          "tokens": list(self.cached_tokens)}))

    def load_state(self, path, tokens: Sequence[int], *, model_sha256: str) -> int:
        return 0
