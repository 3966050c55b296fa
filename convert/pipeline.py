"""The whole conversion: checkpoint (+ adapters) -> f16/f32/bf16 GGUF -> quantized GGUFs -> models.lock,
and, with `targets` including "onnx", the same merge exported to ONNX and quantized (convert/onnx.py)."""

from __future__ import annotations

import math
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from talesmith.runtime.errors import ConversionError
from talesmith.runtime.settings import PRESETS, WHOLE_CONTEXT
from talesmith.runtime.settings import preset as make_preset

from .architectures import TensorPlan, architecture_for
from .lora import MergedWeights, read_adapter
from .quantize import QUANT_TYPES, quantize
from .safety import check_folder
from .source import open_checkpoint, tokenizer_folder
from .vocab import read_vocab
from .writer import OUTTYPES, write_gguf

if TYPE_CHECKING:
    from .quality import Quality

# What a known model is for: its prompt format and sampling preset, matched on its name.
KNOWN = (
    ("lit-6b", "story", "lit-6b"),
    ("genji", "japanese-story", "genji-jp"),
    ("pygmalion", "chat", "pygmalion"),
    ("tinystories", "tinystories", "tinystories"),
    ("falcon", "genre", "genre-story"),
    ("llama-2", "genre", "genre-story"),
)


@dataclass(frozen=True)
class ConvertRequest:
    source: str
    outdir: Path
    revision: str | None = None
    loras: tuple[tuple[Path, float], ...] = ()
    quants: tuple[str, ...] = ("Q8_0", "Q4_K_M")
    outtype: str = "f16"
    name: str | None = None
    device: str = "cpu"
    prompt_format: str | None = None
    preset: str | None = None
    tokenizer: str | None = None
    """A folder or hub repo whose tokenizer to use (Genji-JP ships none: it uses GPT-J 6B's)."""
    targets: tuple[str, ...] = ("gguf",)
    """Output formats: "gguf", "onnx" or both (from one merge)."""
    onnx_quants: tuple[str, ...] = ("fp32", "int8", "int4")
    quality: bool | None = None
    """Measure each GGUF quantization against the unquantized file (KL divergence, top-1, perplexity) on a
    sample of the evaluation text; None: only when the unquantized file is at most quality.AUTO_LIMIT."""
    eval_text: Path | None = None
    """The text the quality is measured on (default: the bundled English and Japanese prose)."""


TARGETS = ("gguf", "onnx")


@dataclass(frozen=True)
class Output:
    path: Path
    kind: str
    size: int
    bits_per_weight: float
    seconds: float
    sha256: str
    format: str = "gguf"
    detail: str = ""
    """What a quantization changed (ONNX: how many nodes were quantized), so that a no-op shows."""
    quality: Quality | None = None
    """A GGUF quantization's quality against the unquantized file."""


@dataclass
class Progress:
    """Callbacks a front end may set to follow the conversion."""

    on_tensor: Callable[[TensorPlan, int, int], None] = lambda plan, done, total: None
    on_file_start: Callable[[str, Path], None] = lambda kind, path: None
    on_file_done: Callable[[Output], None] = lambda output: None
    on_note: Callable[[str], None] | None = None
    """Called with each note (an ignored auto_map, an adapter made for another base...) as it arises."""
    on_quality: Callable[[Output], None] = lambda output: None
    """Called when a quantized file's quality has been measured."""
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)
        if self.on_note:
            self.on_note(text)


def usable_name(raw: str) -> str:
    """A model name models.lock accepts, from any folder or repo name ('My model (v2)' -> 'My-model-v2')."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", raw.strip())
    name = re.sub(r"-{2,}", "-", name).lstrip("._-").rstrip("-")
    return name or "model"


def _base_names(origin: dict[str, Any], config: dict[str, Any], folder: Path) -> set[str]:
    names = {origin.get("hub", ""), folder.name, str(config.get("_name_or_path") or "")}
    return {n.rstrip("/").split("/")[-1].lower() for n in names if n}


def adapter_notes(adapters, origin: dict[str, Any], config: dict[str, Any], folder: Path) -> list[str]:
    """A note for each adapter whose recorded base model is not the checkpoint it is merged into."""
    ours = _base_names(origin, config, folder)
    notes = []
    for a in adapters:
        base = a.config.get("base_model_name_or_path")
        if isinstance(base, str) and base and base.rstrip("/").split("/")[-1].lower() not in ours:
            into = origin.get("hub") or str(folder)
            notes.append(
                f"adapter {a.path.name} was trained on {base!r} but is merged into {into!r}; its shapes "
                f"fit, but the result may be poor: check that this is the adapter's base model"
            )
    return notes


def torch_device(device: str) -> str:
    """`device` (checked as every --device is) when torch can use it for the merge."""
    from talesmith.runtime.engine.choices import check_device

    check_device(device)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConversionError(
                "--device cuda was asked for but torch sees no CUDA GPU; use --device cpu "
                "(or install a CUDA build of torch)"
            )
    return device


def _sampling_metadata(name: str | None) -> dict[str, Any]:
    """The preset's settings under llama.cpp's `general.sampling.*` keys."""
    if not name:
        return {}
    s = make_preset(name)
    out: dict[str, Any] = {
        "temp": s.temperature,
        "top_p": s.top_p,
        "min_p": s.min_p,
        "penalty_repeat": s.repetition_penalty,
        "mirostat": s.mirostat,
        "mirostat_tau": s.mirostat_tau,
        "mirostat_eta": s.mirostat_eta,
        "xtc_probability": s.xtc_probability,
        "xtc_threshold": s.xtc_threshold,
    }
    if s.top_k:
        out["top_k"] = s.top_k
    if s.repetition_window != WHOLE_CONTEXT:
        out["penalty_last_n"] = s.repetition_window
    return out


def _guess(name: str) -> tuple[str | None, str | None]:
    lowered = name.lower()
    for key, fmt, preset_name in KNOWN:
        if key in lowered:
            return fmt, preset_name
    return None, None


@dataclass(frozen=True)
class _Run:
    """What every output of one conversion is recorded with, and where its progress and lock entries go."""

    name: str
    origin: dict[str, Any]
    adapters: list[dict[str, Any]]
    prompt_format: str | None
    preset: str | None
    hf_architecture: str
    lock: Path | None
    progress: Progress


def convert(req: ConvertRequest, progress: Progress | None = None, *, lock: Path | None = None) -> list[Output]:
    """Convert a checkpoint to GGUF files and/or ONNX folders in `req.outdir` and record each in models.lock."""
    progress = progress or Progress()
    if req.outtype not in OUTTYPES:
        raise ConversionError(f"--outtype {req.outtype} is unknown; use one of {', '.join(OUTTYPES)}")
    bad = [q for q in req.quants if q not in QUANT_TYPES]
    if bad:
        raise ConversionError(f"unknown quantization type {bad[0]!r}; choose from {', '.join(QUANT_TYPES)}")
    if req.preset and req.preset not in PRESETS:
        raise ConversionError(f"unknown preset {req.preset!r}; choose one of: {', '.join(PRESETS)}")
    bad_targets = [t for t in req.targets if t not in TARGETS]
    if bad_targets or not req.targets:
        shown = ",".join(req.targets) or "(nothing)"
        raise ConversionError(f"--to {shown} is unknown; use gguf, onnx or gguf,onnx")
    if "onnx" in req.targets:
        from .onnx import ONNX_QUANTS

        bad = [q for q in req.onnx_quants if q not in ONNX_QUANTS]
        if bad:
            raise ConversionError(f"unknown ONNX quantization {bad[0]!r}; choose from {', '.join(ONNX_QUANTS)}")
        if not req.onnx_quants:
            raise ConversionError("--quant is empty; name at least one of fp32, fp16, int8, int4 for ONNX")
    device = torch_device(req.device)
    if req.name:
        from talesmith.runtime.models.lockfile import check_name

        check_name(req.name)
    ckpt, origin = open_checkpoint(req.source, req.revision)
    tokenizer_dir, tokenizer_origin = ckpt.folder, None
    if req.tokenizer:
        tokenizer_dir, tokenizer_origin = tokenizer_folder(req.tokenizer)
    for text in check_folder(ckpt.folder, ckpt.config, targets=req.targets, tokenizer_dir=tokenizer_dir):
        progress.note(text)
    adapters = [read_adapter(path, scale) for path, scale in req.loras]
    weights = MergedWeights(ckpt, adapters, device=device)
    if "onnx" in req.targets:
        from .onnx_memory import check_fits

        check_fits(weights)  # one line before anything is written when the machine is too small
    for text in adapter_notes(adapters, origin, ckpt.config, ckpt.folder):
        progress.note(text)
    arch = architecture_for(ckpt, weights)

    name = req.name or usable_name(origin.get("hub", "").split("/")[-1] or ckpt.folder.name)
    guessed_format, guessed_preset = _guess(" ".join([name, str(req.source)] + [str(p) for p, _ in req.loras]))
    prompt_format = req.prompt_format or guessed_format
    preset_name = req.preset or guessed_preset
    adapter_records = [
        {
            "path": str(a.path.resolve()),
            "scale": a.scale,
            "sha256": a.sha256,
            "base_model": a.config.get("base_model_name_or_path"),
        }
        for a in adapters
    ]
    if tokenizer_origin:
        origin = {**origin, "tokenizer": tokenizer_origin}
    metadata = {
        "name": name,
        "source": origin,
        "adapters": adapter_records,
        "prompt_format": prompt_format,
        "preset": preset_name,
        "sampling": _sampling_metadata(preset_name),
    }

    req.outdir.mkdir(parents=True, exist_ok=True)
    outputs: list[Output] = []
    n_params = sum(math.prod(ckpt.shape(n)) for n in ckpt.names())
    with tempfile.TemporaryDirectory(dir=req.outdir, prefix=".merge-"):
        record = _Run(
            name=name,
            origin=origin,
            adapters=adapter_records,
            prompt_format=prompt_format,
            preset=preset_name,
            hf_architecture=ckpt.architecture,
            lock=lock,
            progress=progress,
        )
        try:
            if "gguf" in req.targets:
                vocab = read_vocab(tokenizer_dir, ckpt.config)
                vocab.pad_to(arch.n_vocab())
                outputs += _gguf(req, arch, vocab, metadata, record, ckpt)
            if "onnx" in req.targets:
                outputs += _onnx(req, weights, tokenizer_dir, n_params, device, record)  # merged tensor by tensor
        finally:
            ckpt.close()
    return outputs


def _entry(
    record: _Run, fmt: str, architecture: str, quantization: str, path: Path, files: list[Path]
) -> dict[str, Any]:
    from talesmith.runtime.models.resolve import file_entry

    folder = path if path.is_dir() else path.parent
    listed = [{**file_entry(f), "name": f.relative_to(folder).as_posix()} for f in files]
    entry = {
        "format": fmt,
        "architecture": architecture,
        "hf_architecture": record.hf_architecture,
        "quantization": quantization,
        "path": str(path.resolve()),
        "files": listed,
        "source": record.origin,
        "adapters": record.adapters,
    }
    entry.update({k: v for k, v in (("prompt_format", record.prompt_format), ("preset", record.preset)) if v})
    return entry


def _gguf(req: ConvertRequest, arch, vocab, metadata: dict[str, Any], record: _Run, ckpt) -> list[Output]:
    from talesmith.runtime.models.resolve import record_model, sha256

    progress, name, outputs = record.progress, record.name, []

    def finish(path: Path, kind: str, started: float, n_params: int) -> None:
        size = path.stat().st_size
        output = Output(path, kind, size, size * 8 / n_params, time.perf_counter() - started, sha256(path))
        outputs.append(output)
        record_model(
            f"{name}-{kind}".lower(), _entry(record, "gguf", arch.gguf_arch, kind, path, [path]), lock=record.lock
        )
        progress.on_file_done(output)

    base = req.outdir / f"{name}-{req.outtype}.gguf"
    progress.on_file_start(req.outtype.upper(), base)
    started = time.perf_counter()
    n_params = write_gguf(base, arch, vocab, metadata, outtype=req.outtype, on_tensor=progress.on_tensor)
    finish(base, req.outtype.upper(), started, n_params)
    for qtype in req.quants:
        if qtype == req.outtype.upper():
            continue
        target = req.outdir / f"{name}-{qtype}.gguf"
        progress.on_file_start(qtype, target)
        started = time.perf_counter()
        quantize(base, target, qtype)
        finish(target, qtype, started, n_params)
    from .quality import wanted

    if len(outputs) > 1 and wanted(req.quality, outputs[0].size):
        outputs[1:] = _quality(req, outputs[0], outputs[1:], record, arch.gguf_arch)
    return outputs


def _quality(
    req: ConvertRequest, base: Output, quantized: list[Output], record: _Run, architecture: str
) -> list[Output]:
    from dataclasses import replace

    from talesmith.runtime.models.resolve import record_model

    from .evaltext import eval_text
    from .quality import SAMPLE_TOKENS, measure

    text, label = eval_text(req.eval_text)
    progress, name = record.progress, record.name
    progress.on_file_start("QUALITY", base.path)
    done = {}

    def on_done(path: Path, quality: Quality) -> None:
        output = next(o for o in quantized if o.path == path)
        done[path] = replace(output, quality=quality)
        entry = _entry(record, "gguf", architecture, output.kind, path, [path])
        entry["quality"] = quality.record(reference=f"{name}-{base.kind}".lower(), eval_text=label)
        record_model(f"{name}-{output.kind}".lower(), entry, lock=record.lock)
        progress.on_quality(done[path])

    paths = [o.path for o in quantized]  # one window of a sample: `models quality` measures on more
    measure(base.path, paths, text=text, on_done=on_done, window=SAMPLE_TOKENS, max_tokens=SAMPLE_TOKENS)
    return [done[o.path] for o in quantized]


def _onnx(
    req: ConvertRequest, weights: MergedWeights, tokenizer_dir: Path, n_params: int, device: str, record: _Run
) -> list[Output]:
    from talesmith.runtime.models.resolve import record_model, sha256

    from . import onnx

    progress, name, outputs = record.progress, record.name, []
    meta = {
        "name": name,
        "source": record.origin,
        "adapters": record.adapters,
        "prompt_format": record.prompt_format,
        "preset": record.preset,
        "hf_architecture": record.hf_architecture,
    }
    builds = onnx.build(
        weights,
        tokenizer_dir,
        req.outdir,
        name,
        req.onnx_quants,
        meta=meta,
        device=device,
        on_start=lambda quant, folder: progress.on_file_start(f"ONNX-{quant.upper()}", folder),
    )
    for b in builds:
        kind = f"ONNX-{b.quant.upper()}"
        size = onnx.model_size(b.folder)
        output = Output(
            b.folder,
            kind,
            size,
            size * 8 / n_params,
            b.seconds,
            sha256(b.folder / onnx.MODEL_FILE),
            format="onnx",
            detail=b.stats.describe(),
        )
        outputs.append(output)
        entry = _entry(record, "onnx", str(record.hf_architecture), b.quant, b.folder, onnx.folder_files(b.folder))
        record_model(f"{name}-onnx-{b.quant}".lower(), entry, lock=record.lock)
        progress.on_file_done(output)
    return outputs
