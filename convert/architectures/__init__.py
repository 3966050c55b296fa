"""One small class per architecture family, found by its Hugging Face `architectures` names
(registered in talesmith.convert.registry beside the family's ONNX reader)."""

from . import falcon, gpt2, gptj, llama  # noqa: F401  (registration)
from .base import Architecture, TensorPlan, architecture_for

__all__ = ["Architecture", "TensorPlan", "architecture_for"]
