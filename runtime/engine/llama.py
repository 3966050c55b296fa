"""The llama.cpp backend, through llama-cpp-python's low-level bindings.

The model is loaded by `llama_cpp.Llama`; evaluation, the KV cache and sampling use the C API
directly: llama.cpp's native sampler chain (penalties, DRY, top-k, typical, top-p, min-p, XTC,
temperature, mirostat) and its memory API to keep the longest common prefix between calls.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import sys
import weakref
from collections.abc import Collection, Sequence
from pathlib import Path

import llama_cpp
import numpy as np

from talesmith.runtime import files
from talesmith.runtime.engine.choices import context_size
from talesmith.runtime.engine.memory import available_memory, context_failed, context_too_big
from talesmith.runtime.engine.protocol import MIN_SHIFT_KEPT, ModelMetadata, common_prefix, shift_plan
from talesmith.runtime.engine.samplers import SamplerChain, Step, narrows_first, plan_chain
from talesmith.runtime.errors import ContextOverflowError, ModelError
from talesmith.runtime.models import gguf_keys
from talesmith.runtime.models.gguf_header import GGUFInfo, check_loadable, read_info
from talesmith.runtime.settings import SamplingSettings

_GGML_LOG_ERROR = 4  # ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5
LEARNED_POSITIONS = frozenset({"gpt2", "starcoder"})
"""Architectures with a table of learned position embeddings: no position past the trained context exists."""


@llama_cpp.llama_log_callback
def _quiet_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    """llama.cpp's log, reduced to its errors (it otherwise writes notes over the streamed story)."""
    if level == _GGML_LOG_ERROR:
        sys.stderr.write(text.decode("utf-8", errors="replace"))


def quiet_logs() -> None:
    """Route llama.cpp's log through `_quiet_log`, which keeps only errors."""
    llama_cpp.llama_log_set(_quiet_log, ctypes.c_void_p(0))


_OPEN: weakref.WeakSet[LlamaCppBackend] = weakref.WeakSet()


@atexit.register
def _before_exit() -> None:
    """Free every model while Python still runs, then take the Python log callback out of llama.cpp.

    Without this, models freed by the garbage collector during shutdown, and the CUDA backend's own
    teardown after it, call `_quiet_log` when the interpreter can no longer run it (a crash at exit
    with no Python frame)."""
    for backend in list(_OPEN):
        backend.close()
    llama_cpp.llama_log_set(llama_cpp.llama_log_callback(), ctypes.c_void_p(0))  # NULL: llama.cpp's own logger


def gpu_offload_supported() -> bool:
    return bool(llama_cpp.llama_supports_gpu_offload())


class LlamaSampler:
    """The sampler chain of one SamplingSettings (its ChainPlan) over llama.cpp's logits.

    Where the plan narrows the vocabulary to a few candidates first (top-k or greedy, no DRY or mirostat),
    the numpy chain (samplers.SamplerChain, which picks the tokens llama.cpp's chain picks) runs on the
    logits in place: it bounds the top k without handing every token of a large vocabulary to a sampler
    (llama.cpp's chain copies them all and its penalties look each one up), which costs most of a step
    on a 262,144-token vocabulary. Otherwise, or with `native=True`, llama.cpp's own chain samples."""

    index = -1
    """Which row of the last batch's logits to sample from (parallel sequences set their own)."""

    def __init__(
        self,
        backend: LlamaCppBackend,
        settings: SamplingSettings,
        seed: int,
        history: Sequence[int],
        *,
        native: bool | None = None,
    ):
        self._backend = backend
        self._plan = plan_chain(settings, n_ctx=backend.n_ctx)
        self._seed = seed
        self._resets = 0
        self._chain = None
        self._numpy: SamplerChain | None = None
        if native is False or (native is None and narrows_first(self._plan)):
            self._numpy = SamplerChain(
                settings, n_vocab=backend.n_vocab, n_ctx=backend.n_ctx, seed=seed, history=history
            )
            return
        self._build()
        self._prime(history)

    def _init(self, step: Step, seed: int) -> ctypes.c_void_p:
        """llama.cpp's sampler for one step of the plan."""
        b, a = self._backend, step.args
        match step.name:
            case "penalties":
                return llama_cpp.llama_sampler_init_penalties(b.n_vocab, *a)
            case "dry":
                breakers = [x.encode("utf-8") for x in self._plan.breakers]
                self._breakers = (ctypes.c_char_p * max(len(breakers), 1))(*breakers)
                return llama_cpp.llama_sampler_init_dry(b.vocab, *a, self._breakers, len(breakers))
            case "mirostat":
                return llama_cpp.llama_sampler_init_mirostat(b.n_vocab, seed, *a)
            case "mirostat_v2" | "dist":
                return getattr(llama_cpp, f"llama_sampler_init_{step.name}")(seed, *a)
            case "xtc":
                return llama_cpp.llama_sampler_init_xtc(*a, seed)
        return getattr(llama_cpp, f"llama_sampler_init_{step.name}")(*a)

    def _build(self) -> None:
        seed = (self._seed + self._resets) % 2**32
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        for step in self._plan.steps:
            llama_cpp.llama_sampler_chain_add(chain, self._init(step, seed))
        self._chain = chain

    def _prime(self, history: Sequence[int]) -> None:
        if not self._plan.history:
            return
        for token in history[-self._plan.history :]:
            llama_cpp.llama_sampler_accept(self._chain, token)

    def sample(self, banned: Collection[int] = ()) -> int:
        ctx = self._backend.ctx
        if self._numpy is not None:
            row = llama_cpp.llama_get_logits_ith(ctx, self.index)
            return self._numpy.sample(np.ctypeslib.as_array(row, shape=(self._backend.n_vocab,)), banned)
        if banned:
            logits = llama_cpp.llama_get_logits_ith(ctx, self.index)
            for token in banned:
                logits[token] = float("-inf")
        return llama_cpp.llama_sampler_sample(self._chain, ctx, self.index)

    def reset(self, history: Sequence[int]) -> None:
        """Start over after a rewind, with the next seed."""
        self._resets += 1
        if self._numpy is not None:
            self._numpy.reset(history, seed=self._seed + self._resets)
            return
        self.close()
        self._build()
        self._prime(history)

    def close(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None


class LlamaCppBackend:
    """A GGUF model in llama.cpp with a prefix-reusing KV cache."""

    name = "llama.cpp"

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        n_ctx: int | None = None,
        gpu_layers: int = 0,
        threads: int | None = None,
        n_batch: int = 512,
    ):
        info = read_info(model_path)
        check_loadable(info)  # values llama.cpp would abort on, refused before it sees the file
        self.info = info
        self.model_path = str(info.path)
        self.warnings: list[str] = []
        n_ctx = self._context_size(info, n_ctx, gpu_layers)
        if gpu_layers and not gpu_offload_supported():
            self.warnings.append(
                f"--gpu-layers {gpu_layers} ignored: this llama-cpp-python was built without GPU "
                f'support; reinstall it with CMAKE_ARGS="-DGGML_CUDA=on"'
            )
        threads = threads or os.cpu_count() or 1
        quiet_logs()
        try:
            self._llm = llama_cpp.Llama(
                model_path=self.model_path,
                n_ctx=n_ctx,
                n_batch=min(n_batch, n_ctx),
                n_gpu_layers=gpu_layers,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as e:
            if "llama_context" in str(e):
                raise ModelError(context_failed(info, n_ctx, available=available_memory())) from None
            raise ModelError(
                f"llama.cpp could not load {self.model_path} ({info.architecture}): {e}; the file may be "
                f"corrupt or its architecture unsupported by this llama.cpp"
            ) from None
        _OPEN.add(self)
        self.ctx = self._llm.ctx
        self.vocab = llama_cpp.llama_model_get_vocab(self._llm.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_ctx = llama_cpp.llama_n_ctx(self.ctx)
        if info.architecture in LEARNED_POSITIONS and info.context_length:
            # llama.cpp rounds the context up (to 256); a position past the model's table would abort it
            self.n_ctx = min(self.n_ctx, info.context_length)
        self.n_batch = llama_cpp.llama_n_batch(self.ctx)  # what the context accepts per decode call
        self._memory = llama_cpp.llama_get_memory(self.ctx)
        self._can_shift = bool(llama_cpp.llama_memory_can_shift(self._memory))
        self.last_shift = 0
        """Cached tokens dropped by context shifting in the last prefill."""
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self._tokens: list[int] = []
        self._pieces: dict[int, bytes] = {}
        self._eog: frozenset[int] | None = None
        self._one = (llama_cpp.llama_token * 1)()

    def _context_size(self, info: GGUFInfo, n_ctx: int | None, gpu_layers: int) -> int:
        """The context to ask llama.cpp for: the model's (at most DEFAULT_CTX), or `n_ctx` once checked."""
        trained = info.context_length
        if info.architecture in LEARNED_POSITIONS and trained and n_ctx is not None and n_ctx > trained:
            raise ModelError(
                f"--ctx {n_ctx} is beyond the {trained} positions {info.name} has (it learned one embedding per "
                f"position); use --ctx {trained} or less"
            )
        chosen = context_size(n_ctx, trained=info.context_length, name=info.name, warnings=self.warnings)
        if n_ctx is not None and not gpu_layers:  # offloaded layers keep their cache in GPU memory, not counted here
            too_big = context_too_big(info, n_ctx, available=available_memory())
            if too_big:
                raise ModelError(too_big)
        return chosen

    def metadata(self) -> ModelMetadata:
        """The prompt format and preset a GGUF converted by talesmith names (talesmith.* keys)."""
        meta = self.info.metadata
        return ModelMetadata(prompt_format=meta.get(gguf_keys.PROMPT_FORMAT), preset=meta.get(gguf_keys.PRESET))

    # --- vocabulary -------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = False) -> list[int]:
        """`special`: the text is the prompt format's own (markers become control tokens); never user text."""
        data = text.encode("utf-8")
        size = len(data) + 8
        buf = (llama_cpp.llama_token * size)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, size, add_bos and self._add_bos, special)
        if n < 0:
            size = -n
            buf = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, size, add_bos and self._add_bos, special)
        return list(buf[:n])

    def token_bytes(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
            piece = self._pieces[token] = buf.raw[:n]
        return piece

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    @property
    def eog_tokens(self) -> frozenset[int]:
        if self._eog is None:
            self._eog = frozenset(t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self.vocab, t))
        return self._eog

    # --- evaluation -------------------------------------------------------------------------

    @property
    def cached_tokens(self) -> Sequence[int]:
        return tuple(self._tokens)

    def _decode(self, tokens: Sequence[int]) -> None:
        for i in range(0, len(tokens), self.n_batch):
            part = tokens[i : i + self.n_batch]
            if len(self._tokens) + len(part) > self.n_ctx:
                raise ContextOverflowError(
                    f"{len(self._tokens) + len(part)} tokens do not fit the context of "
                    f"{self.n_ctx}; raise --ctx or shorten the prompt"
                )
            arr = (llama_cpp.llama_token * len(part))(*part)
            rc = llama_cpp.llama_decode(self.ctx, llama_cpp.llama_batch_get_one(arr, len(part)))
            if rc != 0:
                raise ContextOverflowError(
                    f"llama.cpp could not evaluate {len(part)} tokens (code {rc}); "
                    f"the context of {self.n_ctx} tokens is full, raise --ctx"
                )
            self._tokens.extend(part)

    def _truncate(self, n: int) -> None:
        if n < len(self._tokens):
            if not llama_cpp.llama_memory_seq_rm(self._memory, -1, n, -1):
                llama_cpp.llama_memory_clear(self._memory, True)
                n = 0
            del self._tokens[n:]

    def _common_prefix(self, tokens: Sequence[int]) -> int:
        return min(
            common_prefix(self._tokens, tokens), len(tokens) - 1
        )  # the last token is evaluated again for fresh logits

    def _shift_plan(self, tokens: Sequence[int], common: int) -> tuple[int, int] | None:
        """(gap, kept): `tokens` continue the cache after `gap` cached tokens at `common` were dropped."""
        return shift_plan(self._tokens, tokens, common) if self._can_shift else None

    def pending(self, tokens: Sequence[int]) -> int:
        """How many of `tokens` a prefill would evaluate now (after reusing and shifting the cache)."""
        tokens = list(tokens)
        if not tokens:
            return 0
        common = self._common_prefix(tokens)
        plan = self._shift_plan(tokens, common)
        return len(tokens) - common - (plan[1] if plan else 0)

    def prefill(self, tokens: Sequence[int]) -> int:
        tokens = list(tokens)
        if not tokens:
            raise ContextOverflowError("the prompt is empty and the model adds no start token; write a prompt")
        common = self._common_prefix(tokens)
        plan = self._shift_plan(tokens, common)
        self.last_shift = 0
        if plan:
            gap, kept = plan
            # Drop the cached range the prompt left out and slide what follows back into place,
            # instead of evaluating it again (context shifting).
            self._truncate(common + gap + kept)
            llama_cpp.llama_memory_seq_rm(self._memory, 0, common, common + gap)
            llama_cpp.llama_memory_seq_add(self._memory, 0, common + gap, -1, -gap)
            del self._tokens[common : common + gap]
            self.last_shift = gap
        else:
            self._truncate(common)
        rest = tokens[len(self._tokens) :]
        self._decode(rest)
        return len(rest)

    # --- saved state ------------------------------------------------------------------------

    def save_state(self, path: str | os.PathLike[str], *, model_sha256: str) -> None:
        """Save the cache (with its tokens) to `path`, and a description beside it, atomically."""
        target = Path(path)
        arr = (llama_cpp.llama_token * len(self._tokens))(*self._tokens)
        with files.atomic_path(target, mode=files.PRIVATE) as partial:  # what the user wrote: theirs only
            if not llama_cpp.llama_state_seq_save_file(self.ctx, str(partial).encode(), 0, arr, len(self._tokens)):
                raise ModelError(f"llama.cpp could not save its state to {target}; check the folder is writable")
        meta = {"model_sha256": model_sha256, "n_ctx": self.n_ctx, "tokens": self._tokens}
        files.write_atomic(files.state_meta_path(target), json.dumps(meta), mode=files.PRIVATE)

    def load_state(self, path: str | os.PathLike[str], tokens: Sequence[int], *, model_sha256: str) -> int:
        """Restore a saved cache made by this model for `tokens`; returns how many of them it holds (the shared
        prefix, and what the next prefill shifts into place after it).

        A state file of another model, another context size or another prompt is ignored (returns 0),
        and so is one that is missing or unreadable: the cost is only re-evaluation.
        """
        target = Path(path)
        try:
            meta = json.loads(files.state_meta_path(target).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return 0
        saved = meta.get("tokens") or []
        common = common_prefix(saved, tokens)
        # The saved cache may run past the prompt (it holds the last reply too): what is shared is kept.
        if (
            meta.get("model_sha256") != model_sha256
            or meta.get("n_ctx") != self.n_ctx
            or not target.exists()
            or common < min(len(saved), MIN_SHIFT_KEPT)
        ):
            return 0
        self.reset()
        out = (llama_cpp.llama_token * max(len(saved), 1))()
        count = ctypes.c_size_t(0)
        ok = llama_cpp.llama_state_seq_load_file(
            self.ctx, str(target).encode(), 0, out, len(saved), ctypes.byref(count)
        )
        if not ok or list(out[: count.value]) != saved:
            llama_cpp.llama_memory_clear(self._memory, True)
            return 0
        self._tokens = list(saved)
        # What follows the shared part stays cached: where the prompt moved it (an author's note a few lines
        # further down), the next prefill shifts it into place as it does in a live session.
        plan = self._shift_plan(tokens, min(common, len(tokens) - 1))
        if plan is None:
            self._truncate(common)
        return common + (plan[1] if plan else 0)

    def append(self, token: int) -> None:
        if len(self._tokens) >= self.n_ctx:
            raise ContextOverflowError(f"the context of {self.n_ctx} tokens is full; raise --ctx")
        self._one[0] = token
        rc = llama_cpp.llama_decode(self.ctx, llama_cpp.llama_batch_get_one(self._one, 1))
        if rc != 0:
            raise ContextOverflowError(f"llama.cpp could not evaluate a token (code {rc}); raise --ctx")
        self._tokens.append(token)

    def reset(self) -> None:
        """Empty the cache: the next prefill evaluates its whole prompt."""
        self._truncate(0)

    def sampler(self, settings: SamplingSettings, *, seed: int, history: Sequence[int]) -> LlamaSampler:
        return LlamaSampler(self, settings, seed, history)

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.close()
