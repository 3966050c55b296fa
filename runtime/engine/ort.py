"""The ONNX Runtime backend: a model exported by `talesmith convert --to onnx`, one sequence.

The forward passes run in a RowCache of one row (ort_session.py: one InferenceSession whose KV cache
is a preallocated buffer written in place through I/O binding, logits of the last position only).
The cache is kept across calls: `prefill` keeps the longest common prefix and evaluates only the rest.
Sampling is talesmith.runtime.engine.samplers's numpy chain, with llama.cpp's order and semantics.
The tokenizer is the model's tokenizer.json (ort_vocab.py). Many sequences at once: ort_parallel.py.

Where the folder also holds onnxruntime-genai's build of the model (`genai/`), `engine="genai"` runs the
forward passes through its Generator instead (ort_genai.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from talesmith.runtime.engine.choices import check_device, context_size
from talesmith.runtime.engine.ort_genai import GenaiEngine, genai_available
from talesmith.runtime.engine.ort_session import MODEL_FILE, RowCache
from talesmith.runtime.engine.ort_vocab import Vocabulary, eos_ids
from talesmith.runtime.engine.protocol import ModelMetadata, common_prefix
from talesmith.runtime.engine.samplers import SamplerChain, dry_breakers
from talesmith.runtime.errors import ContextOverflowError, ModelError
from talesmith.runtime.settings import SamplingSettings

META_FILE = "talesmith.json"


def model_folder(path: str | os.PathLike[str]) -> Path:
    """The folder of an ONNX model given as its model.onnx or as the folder holding it."""
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / MODEL_FILE).exists():
            raise ModelError(f"{p} has no {MODEL_FILE}; pass a folder written by `talesmith convert --to onnx`")
        return p
    if p.suffix.lower() == ".onnx" and p.exists():
        return p.parent
    raise ModelError(f"{p} is not an ONNX model (a model.onnx or its folder)")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _trained_context(config: dict[str, Any]) -> int | None:
    return config.get("max_position_embeddings") or config.get("n_positions") or config.get("n_ctx")


def cuda_missing_reason() -> str | None:
    """Why ONNX Runtime cannot use CUDA here, or None when it lists the CUDA provider."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
    return None


class OnnxSampler:
    """talesmith's numpy sampler chain over logits that `logits()` reads (the backend's, or a row of a batch)."""

    def __init__(
        self,
        backend: OnnxBackend,
        settings: SamplingSettings,
        seed: int,
        history: Sequence[int],
        *,
        logits: Callable[[], np.ndarray] | None = None,
        n_ctx: int | None = None,
    ):
        self._logits = logits or (lambda: backend.logits)
        self._seed = seed
        self._resets = 0
        breakers = backend.dry_breakers(settings.dry_sequence_breakers) if settings.dry_multiplier > 0 else None
        self._chain = SamplerChain(
            settings,
            n_vocab=backend.n_vocab,
            n_ctx=n_ctx or backend.n_ctx,
            seed=seed,
            history=history,
            breakers=breakers,
        )

    def sample(self, banned: Collection[int] = ()) -> int:
        return self._chain.sample(self._logits(), banned)

    def reset(self, history: Sequence[int]) -> None:
        self._resets += 1  # as the llama.cpp backend: a rewind continues with the next seed
        self._chain.reset(history, seed=self._seed + self._resets)

    def close(self) -> None:
        pass


class ForwardEngine(Protocol):
    """What runs the model's forward passes for an OnnxBackend: it holds the KV cache, the backend holds
    the tokens in it."""

    name: str
    """The backend's name with this engine, e.g. "onnxruntime"."""
    device: str
    providers: tuple[str, ...]
    n_vocab: int

    def run(self, tokens: Sequence[int], *, start: int) -> np.ndarray:
        """Evaluate `tokens` after the `start` cached ones; the logits of the last position, as float32."""
        ...

    def truncate(self, n: int) -> None:
        """Keep the first `n` cached tokens (fewer than are cached)."""
        ...

    def reset(self) -> None:
        """Empty the cache."""
        ...

    def close(self) -> None: ...


class SessionEngine:
    """talesmith's own session loop: a RowCache of one row."""

    name = "onnxruntime"

    def __init__(self, folder: Path, *, n_ctx: int, device: str, threads: int | None, spin: bool = True):
        self.cache = RowCache(folder, rows=1, positions=n_ctx, device=device, threads=threads, spin=spin)
        self.device = device
        self.providers = self.cache.providers
        self.n_vocab = self.cache.n_vocab

    def run(self, tokens: Sequence[int], *, start: int) -> np.ndarray:
        self.cache.truncate(0, start)
        return self.cache.prefill(0, tokens)

    def truncate(self, n: int) -> None:
        self.cache.truncate(0, n)

    def reset(self) -> None:
        self.cache.truncate(0, 0)

    def close(self) -> None:
        self.cache.close()


ENGINES = ("session", "genai")


class OnnxBackend:
    """An exported ONNX model: talesmith's tokenizer, prefix-reusing cache bookkeeping and sampling over a
    ForwardEngine ("session": a bare ONNX Runtime session; "genai": onnxruntime-genai's Generator)."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        n_ctx: int | None = None,
        device: str = "cpu",
        threads: int | None = None,
        spin: bool = True,
        engine: str = "session",
    ):
        if engine not in ENGINES:
            raise ModelError(f"ONNX engine {engine!r} is unknown; use session or genai")
        folder = model_folder(model_path)
        self.folder = folder
        self.threads = threads
        self.spin = spin
        """Whether idle ONNX Runtime threads spin between steps (ort_session.session_options)."""
        self.model_path = str(folder)
        self.warnings: list[str] = []
        self.talesmith_json = _read_json(folder / META_FILE)
        config = _read_json(folder / "config.json")
        check_device(device)
        if engine == "session" and device == "cuda" and (reason := cuda_missing_reason()):
            raise ModelError(f"--device cuda was asked for but {reason}; use --device cpu")
        self.n_ctx = context_size(n_ctx, trained=_trained_context(config), name="this model", warnings=self.warnings)
        self.vocab = Vocabulary(folder)
        self.engine: ForwardEngine = (
            SessionEngine(folder, n_ctx=self.n_ctx, device=device, threads=threads, spin=spin)
            if engine == "session"
            else GenaiEngine(folder, n_ctx=self.n_ctx, threads=threads)
        )
        self.name = self.engine.name
        self.device = self.engine.device
        self.providers = self.engine.providers
        self.n_vocab = self.engine.n_vocab
        self.eog_tokens = frozenset(eos_ids(folder))
        self._tokens: list[int] = []
        self.logits = np.zeros(self.n_vocab, dtype=np.float32)
        self._breakers: dict[tuple[str, ...], Any] = {}

    # --- vocabulary -------------------------------------------------------------------------

    def metadata(self) -> ModelMetadata:
        """The prompt format and preset a model folder converted by talesmith names (talesmith.json)."""
        return ModelMetadata(
            prompt_format=self.talesmith_json.get("prompt_format"), preset=self.talesmith_json.get("preset")
        )

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = False) -> list[int]:
        return self.vocab.encode(text, add_special=add_bos, special=special)

    def token_bytes(self, token: int) -> bytes:
        return self.vocab.token_bytes(token)

    def is_eog(self, token: int) -> bool:
        return token in self.eog_tokens

    def dry_breakers(self, strings: Sequence[str]):
        key = tuple(strings)
        if key not in self._breakers:
            pieces = [self.token_bytes(t) for t in range(self.n_vocab)]
            self._breakers[key] = dry_breakers(strings, pieces, lambda s: self.tokenize(s, add_bos=False))
        return self._breakers[key]

    # --- evaluation -------------------------------------------------------------------------

    @property
    def cached_tokens(self) -> Sequence[int]:
        return tuple(self._tokens)

    def _run(self, tokens: Sequence[int]) -> None:
        total = len(self._tokens) + len(tokens)
        if total > self.n_ctx:
            raise ContextOverflowError(
                f"{total} tokens do not fit the context of {self.n_ctx}; raise --ctx or shorten the prompt"
            )
        self.logits = self.engine.run(tokens, start=len(self._tokens))
        self._tokens.extend(int(t) for t in tokens)

    def _truncate(self, n: int) -> None:
        if n >= len(self._tokens):
            return
        self.engine.truncate(n)
        del self._tokens[n:]

    def prefill(self, tokens: Sequence[int]) -> int:
        tokens = [int(t) for t in tokens]
        if not tokens:
            raise ContextOverflowError("the prompt is empty and the model adds no start token; write a prompt")
        common = min(
            common_prefix(self._tokens, tokens), len(tokens) - 1
        )  # the last token is evaluated again for fresh logits
        self._truncate(common)
        rest = tokens[common:]
        self._run(rest)
        return len(rest)

    def append(self, token: int) -> None:
        if len(self._tokens) >= self.n_ctx:
            raise ContextOverflowError(f"the context of {self.n_ctx} tokens is full; raise --ctx")
        self._run([token])

    def reset(self) -> None:
        """Empty the cache: the next prefill evaluates its whole prompt."""
        self._tokens = []
        self.engine.reset()

    def sampler(self, settings: SamplingSettings, *, seed: int, history: Sequence[int]) -> OnnxSampler:
        return OnnxSampler(self, settings, seed, history)

    def close(self) -> None:
        self.engine.close()


def open_onnx(
    path: str | os.PathLike[str],
    *,
    n_ctx: int | None = None,
    device: str = "cpu",
    threads: int | None = None,
    spin: bool = True,
    engine: str = "session",
) -> OnnxBackend:
    """An ONNX model folder: talesmith's own session loop, or with `engine="genai"` onnxruntime-genai's
    Generator over the folder's genai/ build (the same speed on the CPU, one sequence, kept for comparison)."""
    if engine not in ENGINES:
        raise ModelError(f"ONNX engine {engine!r} is unknown; use session or genai")
    folder = model_folder(path)
    if engine == "genai":
        if not genai_available(folder):
            raise ModelError(
                f"{folder} has no onnxruntime-genai build (genai/) or onnxruntime-genai is not "
                f"installed; convert to int4 with onnxruntime-genai-cuda installed"
            )
        return OnnxBackend(folder, n_ctx=n_ctx, threads=threads, engine="genai")
    return OnnxBackend(folder, n_ctx=n_ctx, device=device, threads=threads, spin=spin)
