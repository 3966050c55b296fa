"""ONNX export and quantization: a (merged) checkpoint -> model.onnx with its KV cache -> fp16/int8/int4.

Export goes through optimum (task text-generation-with-past): one `model.onnx` that takes
`input_ids`, `attention_mask`, `position_ids` and `past_key_values.{i}.key|value` and returns
`logits` and `present.{i}.key|value`. Quantization uses ONNX Runtime's own tools: int8 is dynamic
(MatMulInteger), int4 is weight-only (MatMulNBits, blocks of 32). GPT-2 stores its projections as
Conv1D, which export as Gemm, a node both quantizers skip; `gemm_to_matmul` rewrites each one as
MatMul + Add (exact) so that quantization really applies. Models over 2 GB keep their weights in
an external data file beside model.onnx.

Each output is a folder holding the model, its config, its tokenizer (with tokenizer.json, which
the ONNX backend reads) and talesmith.json (prompt format, preset, where it came from).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from talesmith.runtime.errors import ConversionError

ONNX_QUANTS = ("fp32", "fp16", "int8", "int4")
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx_data"
META_FILE = "talesmith.json"
GENAI_DIR = "genai"
GENAI_ARCHS = {"llama"}
"""Architectures whose int4 output also gets onnxruntime-genai's own build (when it is installed)."""
TWO_GB = 2**31 - 1
SUPPORTED = {"gpt2", "gptj", "llama", "falcon"}


def parse_onnx_quants(text: str) -> tuple[str, ...]:
    """`--quant` for ONNX: a comma-separated subset of fp32, fp16, int8, int4."""
    quants = tuple(q.strip().lower() for q in text.split(",") if q.strip())
    bad = [q for q in quants if q not in ONNX_QUANTS]
    if bad:
        raise ConversionError(f"unknown ONNX quantization {bad[0]!r}; choose from {', '.join(ONNX_QUANTS)}")
    return quants


@dataclass(frozen=True)
class QuantStats:
    """What a quantization changed: so that a no-op shows in the summary."""

    matmul_nbits: int = 0
    matmul_integer: int = 0
    gemm_rewritten: int = 0
    genai: bool = False
    """Whether onnxruntime-genai's own int4 build was added (genai/)."""
    fp16_from_fp32: bool = False
    """Whether fp16 weights came from the fp32 graph (inputs and outputs stay float32) rather than an fp16 export."""

    def describe(self) -> str:
        parts = []
        if self.gemm_rewritten:
            parts.append(f"{self.gemm_rewritten} Gemm -> MatMul")
        if self.matmul_nbits:
            parts.append(f"{self.matmul_nbits} MatMulNBits")
        if self.matmul_integer:
            parts.append(f"{self.matmul_integer} MatMulInteger")
        if self.genai:
            parts.append("+ onnxruntime-genai build")
        if self.fp16_from_fp32:
            parts.append("fp16 weights from the fp32 graph")
        return ", ".join(parts)


# --- export -----------------------------------------------------------------------------------

def _falcon_config(config: Any, dtype: str):
    """optimum's Falcon export config, with the KV cache of the newer layout (40B/180B style).

    With `new_decoder_architecture`, transformers repeats K and V to every attention head before
    caching them, but optimum's dummy cache uses `num_kv_heads` heads, and the trace fails with
    "Sizes of tensors must match". The cache really has `num_attention_heads` heads: say so.
    """
    from optimum.exporters.onnx.model_configs import FalconOnnxConfig
    from optimum.utils.input_generators import FalconDummyPastKeyValuesGenerator

    class BroadcastKVGenerator(FalconDummyPastKeyValuesGenerator):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.num_kv_heads = self.num_attention_heads

    class NewFalconOnnxConfig(FalconOnnxConfig):
        DUMMY_INPUT_GENERATOR_CLASSES = (FalconOnnxConfig.DUMMY_INPUT_GENERATOR_CLASSES[0], BroadcastKVGenerator)
        DUMMY_PKV_GENERATOR_CLASS = BroadcastKVGenerator

    return NewFalconOnnxConfig(config, task="text-generation", use_past=True, use_past_in_inputs=True,
                               float_dtype=dtype)


def export(checkpoint: Path, out: Path, *, dtype: str = "fp32", device: str = "cpu") -> Path:
    """Export a Hugging Face checkpoint folder to `out/model.onnx` with its KV cache; returns the file."""
    import logging

    import transformers
    from optimum.exporters.onnx import main_export

    config = transformers.AutoConfig.from_pretrained(checkpoint)
    if config.model_type not in SUPPORTED:
        raise ConversionError(f"{checkpoint}: ONNX export supports GPT-2, GPT-J, Llama and Falcon, not "
                              f"{config.model_type!r}")
    custom = None
    if config.model_type == "falcon" and getattr(config, "new_decoder_architecture", False):
        custom = {"model": _falcon_config(config, dtype)}
    logging.getLogger("optimum").setLevel(logging.ERROR)
    transformers.logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():  # the tracer's notes on Python control flow, harmless here
            warnings.simplefilter("ignore")
            main_export(
                str(checkpoint), output=str(out), task="text-generation-with-past", device=device,
                dtype=None if dtype == "fp32" else dtype, do_validation=False, custom_onnx_configs=custom,
                library_name="transformers")
    except ConversionError:
        raise
    except Exception as e:  # the exporter's own errors are long traces: name the model and the cause
        raise ConversionError(f"ONNX export of {checkpoint} ({config.model_type}, {dtype}) failed: "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    path = out / MODEL_FILE
    if not path.exists():
        raise ConversionError(f"ONNX export of {checkpoint} wrote no {MODEL_FILE}")
    return path


# --- graph rewrites and quantization ------------------------------------------------------------

def gemm_to_matmul(model) -> int:
    """Rewrite every Gemm with a constant weight (transB 0 or 1, alpha = beta = 1) as MatMul + Add.

    Exact: Y = A @ B (+ C). Returns how many were rewritten. The 4-bit quantizer only handles MatMul.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes = []
    count = 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB", 0):
            w = numpy_helper.to_array(inits[weight]).T
            new = numpy_helper.from_array(np.ascontiguousarray(w), weight + "_t")
            graph.initializer.append(new)
            weight = new.name
        out = node.output[0]
        if len(node.input) > 2 and node.input[2]:
            mid = out + "_matmul"
            nodes.append(helper.make_node("MatMul", [node.input[0], weight], [mid], name=node.name + "_MatMul"))
            nodes.append(helper.make_node("Add", [mid, node.input[2]], [out], name=node.name + "_Add"))
        else:
            nodes.append(helper.make_node("MatMul", [node.input[0], weight], [out], name=node.name + "_MatMul"))
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
        used = {i for n in graph.node for i in n.input}
        keep = [i for i in graph.initializer if i.name in used]
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return count


def count_ops(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _save(model, path: Path) -> None:
    import onnx

    if sum(len(t.raw_data) for t in model.graph.initializer) > TWO_GB - 2**26:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=DATA_FILE, size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def _load(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=True)


def _is_big(path: Path) -> bool:
    return sum(p.stat().st_size for p in path.parent.glob(MODEL_FILE + "*")) > TWO_GB


def to_fp16(src: Path, dst: Path) -> None:
    """The fp32 graph with float16 weights and arithmetic; its inputs and outputs stay float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    _save(convert_float_to_float16(_load(src), keep_io_types=True), dst)


def quantize_int8(src: Path, dst: Path) -> QuantStats:
    """Dynamic int8 quantization of every MatMul (MatMulInteger), after rewriting Gemm as MatMul."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = _load(src)
    rewritten = gemm_to_matmul(model)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        staged = Path(tmp) / MODEL_FILE
        _save(model, staged)
        del model
        quantize_dynamic(str(staged), str(dst), weight_type=QuantType.QInt8, per_channel=False,
                         use_external_data_format=_is_big(staged), op_types_to_quantize=["MatMul"])
    ops = count_ops(_load(dst))
    return QuantStats(matmul_integer=ops.get("MatMulInteger", 0), gemm_rewritten=rewritten)


def quantize_int4(src: Path, dst: Path, *, block_size: int = 32) -> QuantStats:
    """Weight-only 4-bit quantization of every MatMul with a constant weight (MatMulNBits)."""
    try:
        import onnx_ir  # noqa: F401  (the 4-bit quantizer needs it; onnxruntime does not declare it)
    except ImportError:
        raise ConversionError("int4 needs the package onnx-ir; install talesmith's onnx extra "
                              "(pip install -e '.[onnx]')") from None
    from onnxruntime.quantization.matmul_nbits_quantizer import (DefaultWeightOnlyQuantConfig,
                                                                 MatMulNBitsQuantizer)

    import logging

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    model = _load(src)
    rewritten = gemm_to_matmul(model)
    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, accuracy_level=4)
    quantizer = MatMulNBitsQuantizer(model, algo_config=config)
    quantizer.process()
    quantized = quantizer.model.model
    stats = QuantStats(matmul_nbits=count_ops(quantized).get("MatMulNBits", 0), gemm_rewritten=rewritten)
    _save(quantized, dst)
    return stats


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
        result = subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source),
                                 "-o", str(out), "-p", "int4", "-e", "cuda" if device == "cuda" else "cpu",
                                 "-c", str(Path(tmp) / "cache")], capture_output=True, text=True)
    if result.returncode != 0 or not (out / "genai_config.json").exists():
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ConversionError(f"onnxruntime-genai's builder failed on {checkpoint}: {tail[0]}")
    return True


# --- the merged checkpoint ----------------------------------------------------------------------

CONFIG_FILES = ("config.json", "generation_config.json")


def save_merged(weights, folder: Path, *, shard_bytes: int = 2 * 2**30) -> Path:
    """Write a checkpoint's tensors with adapters merged (talesmith.convert.lora.MergedWeights)
    as a Hugging Face folder: safetensors shards, an index when there are several, and its configs."""
    from safetensors.numpy import save_file

    ckpt = weights.ckpt
    folder.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    size = 0
    for name in ckpt.names():
        array = weights.get(name)
        if size and size + array.nbytes > shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[name] = array
        size += array.nbytes
    shards.append(current)
    if len(shards) == 1:
        save_file(shards[0], str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(folder / file), metadata={"format": "pt"})
            weight_map.update({k: file for k in shard})
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = dict(ckpt.config)
    config.pop("torch_dtype", None)  # merged tensors are float32; let the exporter choose
    config.pop("dtype", None)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if (ckpt.folder / "generation_config.json").exists():
        shutil.copy2(ckpt.folder / "generation_config.json", folder / "generation_config.json")
    return folder


def save_tokenizer(tokenizer_dir: Path, folder: Path) -> None:
    """The model's tokenizer beside it, always with a tokenizer.json (the ONNX backend reads that)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(tokenizer_dir, use_fast=True)
    except Exception as e:
        raise ConversionError(f"the tokenizer in {tokenizer_dir} could not be loaded ({e}); pass --tokenizer "
                              f"with a folder or hub repo that has one") from None
    if not getattr(tok, "is_fast", False):
        raise ConversionError(f"the tokenizer in {tokenizer_dir} has no fast (tokenizer.json) form; pass "
                              f"--tokenizer with one that does")
    tok.model_input_names = ["input_ids", "attention_mask"]  # no token_type_ids: GPT-2 would add them in
    tok.save_pretrained(folder)


# --- one output folder --------------------------------------------------------------------------

@dataclass(frozen=True)
class OnnxBuild:
    folder: Path
    quant: str
    seconds: float
    stats: QuantStats


def _replace_dir(staged: Path, final: Path) -> None:
    """Move a finished folder into place; an older one of the same name goes only once the new one is there."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(staged, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build(merged: Path, tokenizer_dir: Path, outdir: Path, name: str, quants: Iterable[str], *,
          meta: dict[str, Any], device: str = "cpu", genai: bool = True,
          on_start=lambda quant, folder: None) -> list[OnnxBuild]:
    """Export `merged` (a checkpoint folder) once in fp32 (and once in fp16 if asked) and quantize it,
    one finished folder `outdir/NAME-onnx-QUANT` per quantization, each written in a temporary folder first.
    With `genai`, an int4 Llama also gets onnxruntime-genai's own build (if it is installed)."""
    quants = list(dict.fromkeys(quants))
    outdir.mkdir(parents=True, exist_ok=True)
    results: list[OnnxBuild] = []
    with tempfile.TemporaryDirectory(dir=outdir, prefix=".onnx-") as tmp:
        fp32_dir = Path(tmp) / "fp32"
        needs_fp32 = any(q in ("fp32", "int8", "int4") for q in quants)
        fp32_seconds = 0.0
        if needs_fp32:
            started = time.perf_counter()
            if "fp32" in quants:
                on_start("fp32", outdir / f"{name}-onnx-fp32")
            export(merged, fp32_dir, dtype="fp32", device=device)
            _finish_folder(fp32_dir, tokenizer_dir, {**meta, "quantization": "fp32"})
            fp32_seconds = time.perf_counter() - started
        for quant in quants:
            final = outdir / f"{name}-onnx-{quant}"
            started = time.perf_counter()
            if quant != "fp32":
                on_start(quant, final)
            staged = Path(tmp) / quant
            stats = QuantStats()
            if quant == "fp16":
                try:
                    export(merged, staged, dtype="fp16", device=device)
                except ConversionError:
                    # GPT-2 traced in fp16 on the CPU mixes float and float16 inputs of LayerNormalization,
                    # a graph ONNX Runtime refuses: convert the fp32 graph's weights instead.
                    shutil.rmtree(staged, ignore_errors=True)
                    if not (fp32_dir / MODEL_FILE).exists():
                        export(merged, fp32_dir, dtype="fp32", device=device)
                        _finish_folder(fp32_dir, tokenizer_dir, {**meta, "quantization": "fp32"})
                    staged.mkdir()
                    to_fp16(fp32_dir / MODEL_FILE, staged / MODEL_FILE)
                    _copy_beside(fp32_dir, staged)
                    stats = QuantStats(fp16_from_fp32=True)
                _finish_folder(staged, tokenizer_dir, {**meta, "quantization": "fp16"})
            elif quant in ("int8", "int4"):
                staged.mkdir()
                quantize = quantize_int8 if quant == "int8" else quantize_int4
                stats = quantize(fp32_dir / MODEL_FILE, staged / MODEL_FILE)
                _copy_beside(fp32_dir, staged)
                if quant == "int4" and genai and _model_type(merged) in GENAI_ARCHS:
                    if build_genai(merged, tokenizer_dir, staged / GENAI_DIR, device=device):
                        stats = replace(stats, genai=True)
                _write_meta(staged, {**meta, "quantization": quant})
            seconds = time.perf_counter() - started + (fp32_seconds if quant == "fp32" else 0.0)
            if quant == "fp32":
                staged = Path(tmp) / "fp32-final"
                shutil.copytree(fp32_dir, staged)
            _replace_dir(staged, final)
            results.append(OnnxBuild(final, quant, seconds, stats))
    return results


def _model_type(checkpoint: Path) -> str:
    try:
        return str(json.loads((checkpoint / "config.json").read_text(encoding="utf-8")).get("model_type"))
    except (OSError, ValueError):
        return ""


def _finish_folder(folder: Path, tokenizer_dir: Path, meta: dict[str, Any]) -> None:
    for p in folder.iterdir():  # the exporter's own tokenizer copy is replaced by ours
        if p.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "added_tokens")):
            p.unlink()
    save_tokenizer(tokenizer_dir, folder)
    _write_meta(folder, meta)


def _copy_beside(src: Path, dst: Path) -> None:
    """Everything but the model (config, tokenizer) from an export folder into a quantized one."""
    for p in src.iterdir():
        if not p.name.startswith(MODEL_FILE) and p.name != META_FILE:
            shutil.copy2(p, dst / p.name)


def _write_meta(folder: Path, meta: dict[str, Any]) -> None:
    (folder / META_FILE).write_text(json.dumps({k: v for k, v in meta.items() if v is not None}, indent=2,
                                               ensure_ascii=False) + "\n", encoding="utf-8")


def folder_files(folder: Path) -> list[Path]:
    """Every file of an output folder, its genai/ subfolder included."""
    return sorted(p for p in folder.rglob("*") if p.is_file())


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder_files(folder))


def model_size(folder: Path) -> int:
    """Bytes of the model itself (model.onnx and its external data)."""
    return sum(p.stat().st_size for p in folder.glob(MODEL_FILE + "*"))
