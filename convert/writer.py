"""Writing a GGUF file tensor by tensor, into a temporary file renamed only when complete (files.atomic_path)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from talesmith.runtime import files
from talesmith.runtime.errors import ConversionError
from talesmith.runtime.models import gguf_keys

from .architectures import Architecture, TensorPlan
from .vocab import Vocab

OUTTYPES = ("f32", "f16", "bf16")


KEEP_F32 = ("position_embd.weight", "token_types.weight")
"""Matrices llama.cpp's converter keeps in f32 whatever the output type."""


def _out_dtype(plan: TensorPlan, outtype: str) -> str:
    """1-D tensors (norms, biases) and position embeddings stay f32, as llama.cpp's converter writes them;
    other matrices take the output type."""
    return "f32" if len(plan.shape) == 1 or outtype == "f32" or plan.name in KEEP_F32 else outtype


def _encode(array: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "f32":
        return np.ascontiguousarray(array, dtype=np.float32)
    if dtype == "f16":
        return np.ascontiguousarray(array, dtype=np.float16)
    from gguf.constants import GGMLQuantizationType
    from gguf.quants import quantize

    return quantize(np.ascontiguousarray(array, dtype=np.float32), GGMLQuantizationType.BF16)


def _nbytes(shape: tuple[int, ...], dtype: str) -> int:
    return int(np.prod(shape)) * (4 if dtype == "f32" else 2)


def _add_metadata(w, arch: Architecture, vocab: Vocab, metadata: dict[str, Any], outtype: str, n_params: int) -> None:
    import gguf

    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(metadata["name"])
    if n_params > 0:
        w.add_size_label(gguf.size_label(n_params, 0, 0, 0))
    w.add_file_type(
        {
            "f32": gguf.LlamaFileType.ALL_F32,
            "f16": gguf.LlamaFileType.MOSTLY_F16,
            "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        }[outtype]
    )
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    arch.add_hparams(w)
    w.add_tokenizer_model(vocab.model)
    w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.types)
    if vocab.scores is not None:
        w.add_token_scores(vocab.scores)
    if vocab.merges:
        w.add_token_merges(vocab.merges)
    for setter, value in (
        (w.add_bos_token_id, vocab.bos),
        (w.add_eos_token_id, vocab.eos),
        (w.add_unk_token_id, vocab.unk),
        (w.add_pad_token_id, vocab.pad),
        (w.add_sep_token_id, vocab.sep),
    ):
        if value is not None:
            setter(value)
    w.add_add_bos_token(vocab.add_bos)
    w.add_add_eos_token(False)
    if vocab.add_space_prefix is not None:
        w.add_add_space_prefix(vocab.add_space_prefix)
    if vocab.chat_template:
        w.add_chat_template(vocab.chat_template)
    for key, value in metadata.get("sampling", {}).items():
        (w.add_uint32 if isinstance(value, int) else w.add_float32)(f"general.sampling.{key}", value)
    for key, name in (("prompt_format", gguf_keys.PROMPT_FORMAT), ("preset", gguf_keys.PRESET)):
        if metadata.get(key):
            w.add_string(name, metadata[key])
    w.add_string(gguf_keys.SOURCE, json.dumps(metadata.get("source", {}), sort_keys=True))
    w.add_string(gguf_keys.ADAPTERS, json.dumps(metadata.get("adapters", []), sort_keys=True))
    if metadata.get("source", {}).get("hub"):
        w.add_string("general.source.huggingface.repository", metadata["source"]["hub"])


def write_gguf(
    path: Path,
    arch: Architecture,
    vocab: Vocab,
    metadata: dict[str, Any],
    *,
    outtype: str = "f16",
    on_tensor: Callable[[TensorPlan, int, int], None] = lambda plan, done, total: None,
) -> int:
    """Write the model to `path` one tensor at a time; returns the number of parameters.

    Only one tensor is in memory at once. The file appears under its name only once complete
    (files.atomic_path); an interrupted write leaves nothing under it.
    """
    import gguf

    if outtype not in OUTTYPES:
        raise ConversionError(f"output type {outtype!r} is unknown; use one of {', '.join(OUTTYPES)}")
    plans = arch.tensors()
    with files.atomic_path(path) as partial:
        writer = gguf.GGUFWriter(str(partial), arch.gguf_arch)
        try:
            _add_metadata(writer, arch, vocab, metadata, outtype, sum(int(np.prod(p.shape)) for p in plans))
            for plan in plans:
                dtype = _out_dtype(plan, outtype)
                if dtype == "bf16":
                    writer.add_tensor_info(
                        plan.name,
                        (*plan.shape[:-1], plan.shape[-1] * 2),
                        np.dtype(np.uint8),
                        _nbytes(plan.shape, dtype),
                        raw_dtype=gguf.GGMLQuantizationType.BF16,
                    )
                else:
                    np_dtype = np.dtype(np.float32 if dtype == "f32" else np.float16)
                    writer.add_tensor_info(plan.name, plan.shape, np_dtype, _nbytes(plan.shape, dtype))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for i, plan in enumerate(plans):
                array = plan.compute()
                if tuple(array.shape) != tuple(plan.shape):
                    raise ConversionError(
                        f"tensor {plan.name} came out {list(array.shape)}, expected {list(plan.shape)}; "
                        f"the checkpoint does not match its config.json"
                    )
                writer.write_tensor_data(_encode(array, _out_dtype(plan, outtype)))
                del array
                on_tensor(plan, i + 1, len(plans))
            writer.flush()
        finally:
            writer.close()
    return sum(int(np.prod(p.shape)) for p in plans)
