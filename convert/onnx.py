"""ONNX conversion: a checkpoint (adapters merged) -> model.onnx with its KV cache, in fp32, fp16, int8 or int4.

The graph is built directly from the checkpoint, layer by layer (convert/onnx_decoder.py), and each weight
is converted or quantized as it is written into the external data file (convert/onnx_graph.py): nothing
loads the whole model, so a 6-7B checkpoint converts in about as much memory as its largest tensor needs.
int8 and int4 are weight-only MatMulNBits (blocks of 32 along the input dimension, symmetric, one float32
scale per block; ONNX Runtime quantizes the activations inside the kernel). The int4 output keeps the
embedding table in the same 4-bit blocks (GatherBlockQuantized); int8 keeps it fp16. Every output keeps its weights in `model.onnx_data` beside `model.onnx`.

Each output is a folder holding the model, its config, its tokenizer (with tokenizer.json, which
the ONNX backend reads) and talesmith.json (prompt format, preset, where it came from).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from talesmith.runtime import files
from talesmith.runtime.errors import ConversionError

ONNX_QUANTS = ("fp32", "fp16", "int8", "int4", "int4-b64", "int4-b128")
"""int4 quantizes blocks of 32 weights; int4-b64 and int4-b128 blocks of 64 and 128 (faster with several
sequences at once, less exact)."""
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx_data"
META_FILE = "talesmith.json"
GENAI_DIR = "genai"
GENAI_ARCHS = {"llama"}
"""Architectures whose int4 output also gets onnxruntime-genai's own build (when it is installed)."""


def parse_onnx_quants(text: str) -> tuple[str, ...]:
    """`--quant` for ONNX: a comma-separated subset of ONNX_QUANTS."""
    quants = tuple(q.strip().lower() for q in text.split(",") if q.strip())
    bad = [q for q in quants if q not in ONNX_QUANTS]
    if bad:
        raise ConversionError(f"unknown ONNX quantization {bad[0]!r}; choose from {', '.join(ONNX_QUANTS)}")
    return quants


@dataclass(frozen=True)
class QuantStats:
    """What a quantization changed: so that a no-op shows in the summary."""

    matmul_nbits: int = 0
    bits: int = 0
    block: int = 0
    """Weights per scale."""
    genai: bool = False
    """Whether onnxruntime-genai's own int4 build was added (genai/)."""

    def describe(self) -> str:
        parts = []
        if self.matmul_nbits:
            parts.append(f"{self.matmul_nbits} MatMulNBits ({self.bits}-bit, blocks of {self.block})")
        if self.genai:
            parts.append("+ onnxruntime-genai build")
        return ", ".join(parts)


def write_model(weights, folder: Path, *, quant: str, on_layer=lambda done, total: None) -> QuantStats:
    """`folder/model.onnx` (+ model.onnx_data) for a checkpoint's merged weights, built layer by layer."""
    import onnx

    from .onnx_archs import reader_for
    from .onnx_decoder import build_decoder
    from .onnx_graph import DataFile, Graph, nbits_format

    reader = reader_for(weights)
    data = DataFile(folder / DATA_FILE)
    try:
        graph = Graph(data)
        build_decoder(graph, reader, quant=quant, on_layer=on_layer)
    except OSError as e:
        raise ConversionError(
            f"writing {folder / DATA_FILE} failed ({e.strerror or e}); free some disk space and convert again"
        ) from None
    finally:
        data.close()
    try:
        onnx.save_model(graph.model(), str(folder / MODEL_FILE))
    except OSError as e:
        raise ConversionError(
            f"writing {folder / MODEL_FILE} failed ({e.strerror or e}); free some disk space and convert again"
        ) from None
    bits, block = nbits_format(quant) or (0, 0)
    return QuantStats(matmul_nbits=graph.counts.get("MatMulNBits", 0), bits=bits, block=block)


# --- onnxruntime-genai ---------------------------------------------------------------------


def build_genai(checkpoint: Path, tokenizer_dir: Path, out: Path, *, device: str = "cpu") -> bool:
    """onnxruntime-genai's own int4 build of a checkpoint in `out` (for its faster Generator), when
    onnxruntime-genai is installed; False when it is not."""
    import subprocess
    import sys

    try:
        import onnxruntime_genai  # noqa: F401
    except ImportError:
        return False
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".genai-") as tmp:
        source = Path(tmp) / "source"  # the builder wants the tokenizer beside the weights
        source.mkdir()
        for p in checkpoint.iterdir():
            if p.is_file():
                os.symlink(p.resolve(), source / p.name)
        for p in tokenizer_dir.iterdir():
            if p.is_file() and p.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "added")):
                if not (source / p.name).exists():
                    os.symlink(p.resolve(), source / p.name)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "onnxruntime_genai.models.builder",
                "-i",
                str(source),
                "-o",
                str(out),
                "-p",
                "int4",
                "-e",
                "cuda" if device == "cuda" else "cpu",
                "-c",
                str(Path(tmp) / "cache"),
            ],
            capture_output=True,
            text=True,
        )
    if result.returncode != 0 or not (out / "genai_config.json").exists():
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ConversionError(f"onnxruntime-genai's builder failed on {checkpoint}: {tail[0]}")
    return True


# --- tokenizer ---------------------------------------------------------------------------------


def save_tokenizer(tokenizer_dir: Path, folder: Path) -> None:
    """The model's tokenizer beside it, always with a tokenizer.json (the ONNX backend reads that)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(tokenizer_dir, use_fast=True)
    except Exception as e:
        raise ConversionError(
            f"the tokenizer in {tokenizer_dir} could not be loaded ({e}); pass --tokenizer "
            f"with a folder or hub repo that has one"
        ) from None
    if not getattr(tok, "is_fast", False):
        raise ConversionError(
            f"the tokenizer in {tokenizer_dir} has no fast (tokenizer.json) form; pass --tokenizer with one that does"
        )
    tok.model_input_names = ["input_ids", "attention_mask"]  # no token_type_ids: GPT-2 would add them in
    tok.save_pretrained(folder)


# --- one output folder --------------------------------------------------------------------------


@dataclass(frozen=True)
class OnnxBuild:
    folder: Path
    quant: str
    seconds: float
    stats: QuantStats


def build(
    weights,
    tokenizer_dir: Path,
    outdir: Path,
    name: str,
    quants: Iterable[str],
    *,
    meta: dict[str, Any],
    device: str = "cpu",
    genai: bool = True,
    on_start=lambda quant, folder: None,
) -> list[OnnxBuild]:
    """One finished folder `outdir/NAME-onnx-QUANT` per quantization, each built from `weights`
    (talesmith.convert.lora.MergedWeights) in a temporary folder first and moved into place.
    With `genai`, an int4 Llama without adapters also gets onnxruntime-genai's own build (if it is
    installed and its builder, which loads the whole model, fits in memory)."""
    from .onnx_archs import reader_for

    reader_for(weights)  # an unsupported model or config fails here, before anything is written
    quants = list(dict.fromkeys(quants))
    outdir.mkdir(parents=True, exist_ok=True)
    ckpt = weights.ckpt
    results: list[OnnxBuild] = []
    for quant in quants:
        final = outdir / f"{name}-onnx-{quant}"
        on_start(quant, final)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=outdir, prefix=".onnx-") as tmp:
            staged = Path(tmp) / quant
            staged.mkdir()
            stats = write_model(weights, staged, quant=quant)
            _finish_folder(staged, tokenizer_dir, ckpt, {**meta, "quantization": quant})
            if quant == "int4" and genai and _genai_fits(weights):
                if build_genai(ckpt.folder, tokenizer_dir, staged / GENAI_DIR, device=device):
                    stats = replace(stats, genai=True)
            files.replace_folder(staged, final)  # every file synced, then the folder swapped in
        results.append(OnnxBuild(final, quant, time.perf_counter() - started, stats))
    return results


def _genai_fits(weights) -> bool:
    import math

    from .onnx_memory import available_memory

    ckpt = weights.ckpt
    if str(ckpt.config.get("model_type")) not in GENAI_ARCHS or weights.adapters:
        return False
    room = available_memory()
    n_params = sum(math.prod(ckpt.shape(n)) for n in ckpt.names())
    return room is None or n_params * 4 * 1.5 < room


def _finish_folder(folder: Path, tokenizer_dir: Path, ckpt, meta: dict[str, Any]) -> None:
    config = dict(ckpt.config)
    config.pop("torch_dtype", None)
    config.pop("dtype", None)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if (ckpt.folder / "generation_config.json").exists():
        shutil.copy2(ckpt.folder / "generation_config.json", folder / "generation_config.json")
    save_tokenizer(tokenizer_dir, folder)
    _write_meta(folder, meta)


def _write_meta(folder: Path, meta: dict[str, Any]) -> None:
    (folder / META_FILE).write_text(
        json.dumps({k: v for k, v in meta.items() if v is not None}, indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )


def folder_files(folder: Path) -> list[Path]:
    """Every file of an output folder, its genai/ subfolder included."""
    return sorted(p for p in folder.rglob("*") if p.is_file())


def model_size(folder: Path) -> int:
    """Bytes of the model itself (model.onnx and its external data)."""
    return sum(p.stat().st_size for p in folder.glob(MODEL_FILE + "*"))
