"""A checkpoint's config.json as both converters (GGUF architectures and ONNX readers) read it."""

from __future__ import annotations

from typing import Any

from talesmith.runtime.errors import ConversionError


class HFConfig:
    """Reads hyper-parameters from `config` (a checkpoint's config.json)."""

    config: dict[str, Any]

    def cfg(self, *keys: str, default: Any = None) -> Any:
        """The first of `keys` that config.json sets (checkpoints name some settings differently), else
        `default`; without a default, ConversionError naming the first key."""
        for key in keys:
            if self.config.get(key) is not None:
                return self.config[key]
        if default is None:
            raise ConversionError(f"config.json lacks {keys[0]!r}; is this a complete checkpoint?")
        return default
