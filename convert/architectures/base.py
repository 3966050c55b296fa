"""The shape of an architecture converter: hyper-parameters, written through gguf-py's typed `add_*` calls,
and a plan of output tensors, named from gguf-py's MODEL_TENSOR / TENSOR_NAMES."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import gguf
import numpy as np

from talesmith.runtime.errors import ConversionError

from .. import registry
from ..hfconfig import HFConfig


@dataclass(frozen=True)
class TensorPlan:
    """One GGUF tensor: its name, its shape (numpy order) and how to compute it (float32)."""

    name: str
    shape: tuple[int, ...]
    compute: Callable[[], np.ndarray]


def tensor_name(kind: gguf.MODEL_TENSOR, bid: int | None = None, suffix: str = "weight") -> str:
    """The GGUF name of a tensor: gguf-py's name for `kind` (in block `bid`) and its `suffix`."""
    return f"{gguf.TENSOR_NAMES[kind].format(bid=bid)}.{suffix}"


class Architecture(HFConfig):
    family: ClassVar[str] = ""
    """Its name in the one registry of GGUF and ONNX converters (`talesmith.convert.registry`)."""
    hf_names: ClassVar[tuple[str, ...]] = ()
    gguf_arch: ClassVar[str] = ""
    embeddings: ClassVar[str] = ""
    """The checkpoint's token embedding table (its rows: the vocabulary)."""

    def __init__(self, ckpt, weights):
        self.ckpt = ckpt
        self.weights = weights
        self.config: dict[str, Any] = ckpt.config
        self.check()

    def check(self) -> None:
        """Refuse variants of the architecture that llama.cpp cannot run."""

    def add_hparams(self, w: gguf.GGUFWriter) -> None:
        """Write the hyper-parameters, each through the writer's typed call (which knows the key's type)."""
        raise NotImplementedError

    def tensors(self) -> list[TensorPlan]:
        raise NotImplementedError

    def n_vocab(self) -> int:
        return self.ckpt.shape(self.name(self.embeddings))[0]

    # helpers for subclasses
    def name(self, hf_name: str) -> str:
        """The checkpoint's own name for a tensor (some checkpoints drop the `transformer.` prefix)."""
        for candidate in (hf_name, hf_name.removeprefix("transformer."), "transformer." + hf_name):
            if candidate in self.ckpt:
                return candidate
        raise ConversionError(f"{self.ckpt.folder} has no tensor {hf_name!r}; is it a complete checkpoint?")

    def has(self, hf_name: str) -> bool:
        return any(c in self.ckpt for c in (hf_name, hf_name.removeprefix("transformer."), "transformer." + hf_name))

    def copy(
        self,
        gguf_name: str,
        hf_name: str,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        shape: tuple[int, ...] | None = None,
    ) -> TensorPlan:
        source = self.name(hf_name)
        out_shape = shape or tuple(self.ckpt.shape(source))

        def compute() -> np.ndarray:
            array = self.weights.get(source)
            return transform(array) if transform else array

        return TensorPlan(gguf_name, out_shape, compute)

    def transposed(self, gguf_name: str, hf_name: str) -> TensorPlan:
        source = self.name(hf_name)
        return self.copy(gguf_name, hf_name, lambda a: np.ascontiguousarray(a.T), tuple(self.ckpt.shape(source))[::-1])

    def untied_output(self) -> list[TensorPlan]:
        """The output projection where the checkpoint has its own (else llama.cpp reuses the token embeddings)."""
        return (
            [self.copy(tensor_name(gguf.MODEL_TENSOR.OUTPUT), "lm_head.weight")]
            if "lm_head.weight" in self.ckpt
            else []
        )

    def weight_and_bias(
        self, kind: gguf.MODEL_TENSOR, bid: int | None, hf_prefix: str, *, conv1d: bool = False
    ) -> list[TensorPlan]:
        """A layer's `hf_prefix`.weight and .bias (a Conv1D weight, stored fan-in first, transposed)."""
        weight = (self.transposed if conv1d else self.copy)(tensor_name(kind, bid), hf_prefix + ".weight")
        return [weight, self.copy(tensor_name(kind, bid, "bias"), hf_prefix + ".bias")]


register = registry.register_gguf


def architecture_for(ckpt, weights) -> Architecture:
    cls = registry.gguf_converter(ckpt.architecture)
    if cls is None:
        raise ConversionError(
            f"architecture {ckpt.architecture!r} is not supported; "
            f"talesmith converts {', '.join(registry.gguf_names())}"
        )
    return cls(ckpt, weights)
