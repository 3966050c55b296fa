"""One small class per Hugging Face architecture, registered by its `architectures` name."""

from . import falcon, gpt2, gptj, llama  # noqa: F401  (registration)
from .base import ARCHITECTURES, Architecture, TensorPlan, architecture_for

__all__ = ["ARCHITECTURES", "Architecture", "TensorPlan", "architecture_for"]
