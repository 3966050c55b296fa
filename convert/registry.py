"""One registry of the architectures talesmith converts, for GGUF and ONNX alike.

An architecture is a family (`gpt2`, `gptj`, `llama`, `falcon`): its GGUF converter
(`architectures.Architecture`, found by the Hugging Face `architectures` names it lists) and its ONNX reader
(`onnx_archs.Reader`, found by the `model_type` values it lists) register under the family's name, so a
family that gains a converter for one format is listed once, beside the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

C = TypeVar("C", bound=type[Any])


@dataclass
class Family:
    name: str
    gguf: type[Any] | None = None
    """The GGUF converter (an `architectures.Architecture`); its `hf_names` find it."""
    onnx: type[Any] | None = None
    """The ONNX reader (an `onnx_archs.Reader`); its `model_types` find it."""


FAMILIES: dict[str, Family] = {}


def _register(fmt: str) -> Callable[[C], C]:
    def register(cls: C) -> C:
        family = FAMILIES.setdefault(cls.family, Family(cls.family))
        setattr(family, fmt, cls)
        return cls

    return register


register_gguf = _register("gguf")
"""Class decorator: the family's GGUF converter."""
register_onnx = _register("onnx")
"""Class decorator: the family's ONNX reader."""


def gguf_converter(hf_name: str) -> type[Any] | None:
    """The GGUF converter for a checkpoint whose config.json names `hf_name` in `architectures`."""
    return next((f.gguf for f in FAMILIES.values() if f.gguf and hf_name in f.gguf.hf_names), None)


def onnx_reader(model_type: str) -> type[Any] | None:
    """The ONNX reader for a checkpoint of `model_type`."""
    return next((f.onnx for f in FAMILIES.values() if f.onnx and model_type in f.onnx.model_types), None)


def gguf_names() -> list[str]:
    """Every Hugging Face architecture name that converts to GGUF, sorted."""
    return sorted(n for f in FAMILIES.values() if f.gguf for n in f.gguf.hf_names)
