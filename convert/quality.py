"""How much a quantization changes the model: KL divergence and top-1 agreement against the unquantized
file, and perplexity, on an evaluation text (llama.cpp's `llama-perplexity --kl-divergence` measures the same).

The text is cut into windows of the model's context (at most `window` tokens); in each window every
position but the first predicts the next token. The unquantized model's log-probabilities are kept
(float32) and each quantized file is compared with them window by window.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from talesmith.runtime.errors import ConversionError, ModelError

SAMPLE_TOKENS = 128
"""Tokens a conversion scores by default: one window at the start of the evaluation text, so that the
report costs little beside the conversion itself; `talesmith models quality` scores up to FULL_TOKENS."""
FULL_TOKENS = 1024
AUTO_LIMIT = 2 * 1024**3
"""Above this size of the unquantized file (about 1B parameters in f16), a conversion measures quality only
when asked (--quality): llama.cpp reads the whole unquantized file to evaluate it."""


def wanted(asked: bool | None, reference_size: int) -> bool:
    """Whether a conversion measures quality: as asked, else when the unquantized file is at most AUTO_LIMIT."""
    return asked if asked is not None else reference_size <= AUTO_LIMIT


@dataclass(frozen=True)
class Quality:
    kl_divergence: float
    """Mean KL(unquantized || quantized) per token, in nats."""
    top1_agreement: float
    """Share of positions where both pick the same most likely token."""
    perplexity: float
    reference_perplexity: float
    tokens: int
    """Positions scored."""

    def record(self, *, reference: str, eval_text: str) -> dict:
        rounded = {k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in asdict(self).items()}
        return {**rounded, "reference": reference, "eval_text": eval_text}


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@dataclass
class Tally:
    """Running sums over scored positions."""

    kl: float = 0.0
    agree: int = 0
    nll: float = 0.0
    nll_ref: float = 0.0
    n: int = 0

    def add(self, ref_logp: np.ndarray, logp: np.ndarray, targets: np.ndarray) -> None:
        """Positions whose next tokens are `targets`: reference and quantized log-probabilities (rows)."""
        ref = ref_logp.astype(np.float64)
        rows = np.arange(len(targets))
        self.kl += float((np.exp(ref) * (ref - logp)).sum())
        self.agree += int((ref.argmax(-1) == logp.argmax(-1)).sum())
        self.nll -= float(logp[rows, targets].sum())
        self.nll_ref -= float(ref[rows, targets].sum())
        self.n += len(targets)

    def result(self) -> Quality:
        if not self.n:
            raise ConversionError("the evaluation text is too short to score; pass a longer --eval-text")
        return Quality(
            self.kl / self.n, self.agree / self.n, math.exp(self.nll / self.n), math.exp(self.nll_ref / self.n), self.n
        )


def windows(tokens: list[int], size: int, *, bos: int | None = None) -> list[list[int]]:
    """Consecutive windows of at most `size` tokens (each needs two to score anything), each opened by the
    begin-of-text token when the model expects one (as llama.cpp's perplexity tool does)."""
    step = size - (bos is not None)
    head = [bos] if bos is not None else []
    return [head + w for w in (tokens[i : i + step] for i in range(0, len(tokens), step)) if len(head + w) >= 2]


def _context_length(path: Path) -> int:
    from talesmith.runtime.models.gguf_header import read_loadable

    info = read_loadable(path)
    value = info.metadata.get(f"{info.architecture}.context_length")
    return int(value) if isinstance(value, int) and value > 1 else 512


def _open(path: Path, n_ctx: int):
    """llama.cpp on `path`, once its header has passed the checks every model goes through."""
    import llama_cpp

    from talesmith.runtime.engine.llama import quiet_logs
    from talesmith.runtime.models.gguf_header import read_loadable

    read_loadable(path)
    quiet_logs()
    try:
        return llama_cpp.Llama(str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True, verbose=False)
    except (ValueError, RuntimeError, OSError) as e:
        raise ModelError(f"llama.cpp could not load {path}: {e}; download or convert it again") from None


def _window_logits(llm, window: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(window)
    return np.array(llm.scores[: len(window) - 1], dtype=np.float32)


def measure(
    reference: Path,
    quantized: list[Path],
    *,
    text: str,
    window: int = 256,
    max_tokens: int = FULL_TOKENS,
    on_done: Callable[[Path, Quality], None] = lambda path, quality: None,
) -> dict[Path, Quality]:
    """Quality of each quantized file against `reference` (the unquantized GGUF) on `text`."""
    from talesmith.runtime.models.gguf_header import read_loadable

    size = min(window, _context_length(reference))
    for path in quantized:  # every file's header is checked before the first one is evaluated
        read_loadable(path)
    llm = _open(reference, size)
    try:
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)[:max_tokens]
        wants_bos = str(llm.metadata.get("tokenizer.ggml.add_bos_token", "false")).lower() == "true"
        parts = windows(tokens, size, bos=llm.token_bos() if wants_bos else None)
        if not parts:
            raise ConversionError("the evaluation text is too short to score; pass a longer --eval-text")
        ref = [log_softmax(_window_logits(llm, w)).astype(np.float32) for w in parts]
    finally:
        llm.close()
    results = {}
    for path in quantized:
        tally = Tally()
        llm = _open(path, size)
        try:
            for w, ref_logp in zip(parts, ref, strict=False):
                tally.add(ref_logp, log_softmax(_window_logits(llm, w)), np.array(w[1:]))
        finally:
            llm.close()
        results[path] = tally.result()
        on_done(path, results[path])
    return results


def _find_reference(name: str, entry: dict, models: dict[str, dict]) -> str:
    """The unquantized GGUF converted from the same source and adapters as `entry`."""
    for other, e in models.items():
        if (
            other != name
            and e.get("format") == "gguf"
            and str(e.get("quantization", "")).upper() in ("F16", "F32", "BF16")
            and e.get("source") == entry.get("source")
            and e.get("adapters", []) == entry.get("adapters", [])
        ):
            return other
    raise ConversionError(
        f"no unquantized GGUF of {name}'s source in models.lock to measure it against; convert "
        f"it again with `talesmith convert` (which keeps the f16 file)"
    )


def rerun(name: str, *, lock: Path | None = None, eval_path: Path | None = None) -> tuple[Quality, str]:
    """Measure model `name` of the lock again against its unquantized file; recorded in the lock."""
    from talesmith.runtime.models.resolve import entry_of, read_lock, record_model, resolve

    from .evaltext import eval_text

    lp, entry = entry_of(name, lock)
    if entry.get("format") != "gguf":
        raise ConversionError(
            f"{name} is a {entry.get('format')} model; the quality report measures GGUF quantizations"
        )
    reference = (entry.get("quality") or {}).get("reference") or _find_reference(name, entry, read_lock(lp))
    if reference == name:
        raise ConversionError(f"{name} is the unquantized file itself; measure one of its quantizations")
    text, label = eval_text(eval_path)
    path, ref_path = resolve(name, lock=lp).path, resolve(reference, lock=lp).path
    quality = measure(ref_path, [path], text=text)[path]
    record_model(name, {**entry, "quality": quality.record(reference=reference, eval_text=label)}, lock=lp)
    return quality, reference
