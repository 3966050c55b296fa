"""The ONNX Runtime backend: a model exported by `talesmith convert --to onnx`, in a bare session loop.

One InferenceSession runs the exported graph (inputs bound by name: `input_ids`, `attention_mask`,
`position_ids`, `past_key_values.{i}.key|value`; outputs `logits`, `present.{i}.key|value`).
The KV cache stays in ONNX Runtime's own buffers between steps (I/O binding: each step's
`present` becomes the next step's `past`), and across calls: `prefill` keeps the longest common
prefix and evaluates only the rest. Sampling is talesmith.runtime.engine.samplers's numpy chain, with
llama.cpp's order and semantics. The tokenizer is the model's tokenizer.json, read with `tokenizers`.

Where the folder also holds onnxruntime-genai's build of the model (`genai/`, written by the converter
for int4 Llama models when onnxruntime-genai is installed), the backend's forward engine can instead be
its Generator (append_tokens, get_logits, rewind_to); talesmith still does the tokenizing, cache
bookkeeping and sampling.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from talesmith.runtime.engine.choices import check_device, context_size
from talesmith.runtime.engine.protocol import ModelMetadata, common_prefix
from talesmith.runtime.engine.samplers import SamplerChain, dry_breakers
from talesmith.runtime.errors import ContextOverflowError, ModelError
from talesmith.runtime.settings import SamplingSettings

MODEL_FILE = "model.onnx"
META_FILE = "talesmith.json"
GENAI_DIR = "genai"
"""A subfolder with onnxruntime-genai's own build of the model (int4 Llama), used for the forward passes when
onnxruntime-genai is installed and the model runs on the CPU."""


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


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte as a printable character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=False))


class Vocabulary:
    """A tokenizer.json, with each token's raw bytes (for UTF-8-safe streaming)."""

    def __init__(self, folder: Path):
        from tokenizers import Tokenizer

        path = folder / "tokenizer.json"
        if not path.exists():
            raise ModelError(
                f"{folder} has no tokenizer.json; convert the model again with `talesmith convert --to onnx`"
            )
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
            spec = json.loads(path.read_text(encoding="utf-8"))
        except Exception as e:
            raise ModelError(f"{path} could not be read ({e}); convert the model again") from None
        self._special = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
        text = json.dumps([spec.get("pre_tokenizer"), spec.get("decoder")])
        model = spec.get("model") or {}
        if '"ByteLevel"' in text:
            self._kind = "byte-level"
            self._alphabet = {c: b for b, c in _bytes_to_unicode().items()}
        elif model.get("byte_fallback") or '"ByteFallback"' in text or '"Metaspace"' in text:
            self._kind = "sentencepiece"
        else:
            self._kind = "decode"
        self.size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self._pieces: dict[int, bytes] = {}

    def encode(self, text: str, *, add_special: bool, special: bool = False) -> list[int]:
        """`special`: the text is the prompt format's own; otherwise special tokens in it stay plain text."""
        self.tokenizer.encode_special_tokens = not special
        return self.tokenizer.encode(text, add_special_tokens=add_special).ids

    def token_bytes(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self._piece(token)
        return piece

    def _piece(self, token: int) -> bytes:
        if token in self._special or not 0 <= token < self.size:
            return b""
        text = self.tokenizer.id_to_token(token)
        if text is None:
            return b""
        if self._kind == "byte-level":
            try:
                return bytes(self._alphabet[c] for c in text)
            except KeyError:  # an added token written as plain text
                return text.encode("utf-8")
        if self._kind == "sentencepiece":
            if len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
                return bytes([int(text[3:5], 16)])
            return text.replace("▁", " ").encode("utf-8")
        return self.tokenizer.decode([token], skip_special_tokens=False).encode("utf-8")


def _eos_ids(folder: Path) -> set[int]:
    ids: set[int] = set()
    for name in ("config.json", "generation_config.json"):
        try:
            value = json.loads((folder / name).read_text(encoding="utf-8")).get("eos_token_id")
        except (OSError, ValueError):
            continue
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(v for v in value if isinstance(v, int))
    return ids


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
    """talesmith's numpy sampler chain over the backend's current logits."""

    def __init__(self, backend: OnnxBackend, settings: SamplingSettings, seed: int, history: Sequence[int]):
        self._backend = backend
        self._seed = seed
        self._resets = 0
        breakers = backend.dry_breakers(settings.dry_sequence_breakers) if settings.dry_multiplier > 0 else None
        self._chain = SamplerChain(
            settings, n_vocab=backend.n_vocab, n_ctx=backend.n_ctx, seed=seed, history=history, breakers=breakers
        )

    def sample(self, banned: Collection[int] = ()) -> int:
        return self._chain.sample(self._backend.logits, banned)

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
    """A bare ONNX Runtime session whose KV cache stays in ONNX Runtime's own buffers (I/O binding: each
    step's `present` becomes the next step's `past`)."""

    name = "onnxruntime"

    def __init__(self, folder: Path, *, device: str, threads: int | None):
        import onnxruntime as ort

        self.folder = folder
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        if device == "cuda":
            ort.set_default_logger_severity(4)  # a missing CUDA library is reported below, in one line
        try:
            self.session = ort.InferenceSession(str(folder / MODEL_FILE), options, providers=providers)
        except Exception as e:
            raise ModelError(
                f"ONNX Runtime could not load {folder / MODEL_FILE}: {str(e).splitlines()[0]}; the "
                f"file may be truncated, convert it again"
            ) from None
        finally:
            ort.set_default_logger_severity(2)
        active = self.session.get_providers()
        if device == "cuda" and active[0] != "CUDAExecutionProvider":
            raise ModelError(
                "--device cuda was asked for but ONNX Runtime fell back to the CPU (its CUDA "
                "libraries or the GPU are missing); use --device cpu, or install the CUDA and cuDNN versions "
                "this onnxruntime-gpu was built for"
            )
        self.device = device
        self.providers = tuple(active)
        self._read_io()
        self._past: list[Any] = self._empty_past()

    def _read_io(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        self._input_names = set(inputs)
        self.past_names = sorted(
            (n for n in inputs if n.startswith("past_key_values.")),
            key=lambda n: (int(n.split(".")[1]), n.split(".")[2]),
        )
        if not self.past_names or "input_ids" not in inputs:
            raise ModelError(
                f"{self.folder / MODEL_FILE} has no KV cache inputs; export it with "
                f"`talesmith convert --to onnx` (task text-generation-with-past)"
            )
        self.present_names = [n.replace("past_key_values.", "present.") for n in self.past_names]
        first = inputs[self.past_names[0]]
        self.kv_heads, self.head_dim = int(first.shape[1]), int(first.shape[3])
        self.kv_dtype = np.float16 if "float16" in first.type else np.float32
        logits = next(o for o in self.session.get_outputs() if o.name == "logits")
        self.n_vocab = int(logits.shape[-1])

    def _ortvalue(self, array: np.ndarray):
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)

    def _empty_past(self) -> list[Any]:
        empty = np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=self.kv_dtype)
        return [self._ortvalue(empty) for _ in self.past_names]

    def run(self, tokens: Sequence[int], *, start: int) -> np.ndarray:
        total = start + len(tokens)
        binding = self.session.io_binding()
        feeds = {
            "input_ids": np.asarray([tokens], dtype=np.int64),
            "attention_mask": np.ones((1, total), dtype=np.int64),
            "position_ids": np.arange(start, total, dtype=np.int64)[None, :],
        }
        for name, value in feeds.items():
            if name in self._input_names:
                binding.bind_cpu_input(name, value)
        for name, value in zip(self.past_names, self._past, strict=False):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in self.present_names:
            binding.bind_output(name, self.device)
        self.session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        self._past = list(outputs[1:])
        return outputs[0].numpy()[0, -1].astype(np.float32, copy=False)

    def truncate(self, n: int) -> None:
        if n == 0:
            self.reset()
        else:
            self._past = [self._ortvalue(v.numpy()[:, :, :n]) for v in self._past]

    def reset(self) -> None:
        self._past = self._empty_past()

    def close(self) -> None:
        self._past = []
        self.session = None


class GenaiEngine:
    """onnxruntime-genai's Generator over the folder's genai/ build (its fused attention and shared KV
    buffer): append_tokens, get_logits, rewind_to. CPU only."""

    name = "onnxruntime-genai"
    device = "cpu"
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def __init__(self, folder: Path, *, n_ctx: int, threads: int | None):
        import onnxruntime_genai as og

        self.n_ctx = n_ctx
        try:
            og_config = og.Config(str(folder / GENAI_DIR))
            options = {"intra_op_num_threads": threads or os.cpu_count() or 1, "inter_op_num_threads": 1}
            og_config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
            self._model = og.Model(og_config)
        except Exception as e:
            raise ModelError(
                f"onnxruntime-genai could not load {folder / GENAI_DIR}: {str(e).splitlines()[0]}; "
                f"convert the model again"
            ) from None
        self.reset()
        self.n_vocab = int(self.run([0], start=0).shape[-1])  # the build names no vocabulary size: probe it
        self.reset()

    def run(self, tokens: Sequence[int], *, start: int) -> np.ndarray:
        self._generator.append_tokens(np.asarray(tokens, dtype=np.int32))
        return np.asarray(self._generator.get_logits(), dtype=np.float32).reshape(-1)

    def truncate(self, n: int) -> None:
        if n == 0:
            self.reset()
        else:
            self._generator.rewind_to(n)

    def reset(self) -> None:
        import onnxruntime_genai as og

        params = og.GeneratorParams(self._model)
        params.set_search_options(max_length=self.n_ctx, do_sample=False)
        self._generator = og.Generator(self._model, params)

    def close(self) -> None:
        self._generator = None
        self._model = None


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
        engine: str = "session",
    ):
        if engine not in ENGINES:
            raise ModelError(f"ONNX engine {engine!r} is unknown; use auto, session or genai")
        folder = model_folder(model_path)
        self.folder = folder
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
            SessionEngine(folder, device=device, threads=threads)
            if engine == "session"
            else GenaiEngine(folder, n_ctx=self.n_ctx, threads=threads)
        )
        self.name = self.engine.name
        self.device = self.engine.device
        self.providers = self.engine.providers
        self.n_vocab = self.engine.n_vocab
        self.eog_tokens = frozenset(_eos_ids(folder))
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


def genai_available(folder: Path) -> bool:
    """Whether `folder` holds onnxruntime-genai's build of the model and onnxruntime-genai is installed."""
    if not (folder / GENAI_DIR / "genai_config.json").exists():
        return False
    try:
        import onnxruntime_genai  # noqa: F401
    except ImportError:
        return False
    return True


def GenaiBackend(  # noqa: N802 - kept under its old class name
    model_path: str | os.PathLike[str], *, n_ctx: int | None = None, threads: int | None = None
) -> OnnxBackend:
    """The model folder with forward passes through onnxruntime-genai's Generator (an OnnxBackend)."""
    return OnnxBackend(model_path, n_ctx=n_ctx, threads=threads, engine="genai")


def open_onnx(
    path: str | os.PathLike[str],
    *,
    n_ctx: int | None = None,
    device: str = "cpu",
    threads: int | None = None,
    engine: str = "auto",
) -> OnnxBackend:
    """An ONNX model folder in the fastest engine that fits: onnxruntime-genai's Generator where the
    folder has its build and the model runs on the CPU, else a bare ONNX Runtime session.
    `engine` "session" or "genai" forces one."""
    if engine not in ("auto", "session", "genai"):
        raise ModelError(f"ONNX engine {engine!r} is unknown; use auto, session or genai")
    folder = model_folder(path)
    if engine == "genai" or (engine == "auto" and device == "cpu" and genai_available(folder)):
        if not genai_available(folder):
            raise ModelError(
                f"{folder} has no onnxruntime-genai build (genai/) or onnxruntime-genai is not "
                f"installed; convert to int4 with onnxruntime-genai-cuda installed"
            )
        return OnnxBackend(folder, n_ctx=n_ctx, threads=threads, engine="genai")
    return OnnxBackend(folder, n_ctx=n_ctx, device=device, threads=threads)
