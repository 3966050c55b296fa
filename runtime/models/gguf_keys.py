"""The `talesmith.*` GGUF metadata keys: written by the converter, read when a model loads."""

from __future__ import annotations

PROMPT_FORMAT = "talesmith.prompt_format"
PRESET = "talesmith.preset"
SOURCE = "talesmith.source"
"""JSON: where the checkpoint came from (path or hub repository, revision)."""
ADAPTERS = "talesmith.adapters"
"""JSON: the LoRA adapters merged into the weights."""
