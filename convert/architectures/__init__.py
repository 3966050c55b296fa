"""One small class per Hugging Face architecture, registered by its `architectures` name."""

from .base import ARCHITECTURES, Architecture, TensorPlan, architecture_for
from . import falcon, gpt2, gptj, llama  # noqa: F401  (registration)

__all__ = ["ARCHITECTURES", "Architecture", "TensorPlan", "architecture_for"]
