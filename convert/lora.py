"""PEFT LoRA adapters: reading them, and merging them into base weights tensor by tensor.

The merge of one adapter into one weight is  W' = W + s * (alpha / r) * B @ A  (alpha / sqrt(r) with
rsLoRA), transposed for layers stored fan-in first (GPT-2's Conv1D). Several adapters add up,
each with its own scale s. Fused projections (GPT-2 `c_attn`, Falcon `query_key_value`) need no
special case: the adapter's delta has the fused shape.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talesmith.runtime.errors import ConversionError
from talesmith.runtime.models.resolve import sha256 as file_sha256

from .safety import read_object
from .source import first_line, load_pickle, safetensors_shapes

PREFIX = "base_model.model."


def lora_scaling(alpha: float, rank: int, *, rslora: bool) -> float:
    return alpha / math.sqrt(rank) if rslora else alpha / rank


def lora_delta(a, b, *, scaling: float, fan_in_fan_out: bool):
    """The weight change of one LoRA pair: `scaling * B @ A`, transposed for fan-in-first layers.

    Works on numpy arrays and torch tensors alike.
    """
    delta = (b @ a) * scaling
    return delta.T if fan_in_fan_out else delta


@dataclass
class Adapter:
    path: Path
    scale: float
    config: dict[str, Any]
    sha256: str = ""
    """Of the adapter's weights file."""
    pairs: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    """Base weight name -> (A, B) tensors."""
    replacements: dict[str, Any] = field(default_factory=dict)
    """Base tensor name -> full tensor (PEFT `modules_to_save`)."""

    def rank(self, module: str) -> int:
        return _pattern_value(self.config.get("rank_pattern") or {}, module, self.config.get("r", 8))

    def scaling(self, module: str) -> float:
        rank = self.rank(module)
        alpha = _pattern_value(self.config.get("alpha_pattern") or {}, module, self.config.get("lora_alpha", rank))
        return self.scale * lora_scaling(float(alpha), int(rank), rslora=bool(self.config.get("use_rslora")))

    @property
    def fan_in_fan_out(self) -> bool:
        return bool(self.config.get("fan_in_fan_out"))


def _is_number(value: Any, *, whole: bool) -> bool:
    kinds = (int,) if whole else (int, float)
    return isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def check_config(path: Path, config: dict[str, Any]) -> None:
    """Refuse an adapter_config.json whose rank or alpha cannot be merged (zero, a string, a list...)."""
    checks = [("r", config.get("r", 8), True), ("lora_alpha", config.get("lora_alpha", 1), False)]
    for key, whole in (("rank_pattern", True), ("alpha_pattern", False)):
        patterns = config.get(key) or {}
        if not isinstance(patterns, dict):
            raise ConversionError(
                f"{path}/adapter_config.json: {key} is {patterns!r}, not an object of module "
                f"patterns; fix the file or train the adapter again"
            )
        checks += [(f"{key}[{k!r}]", v, whole) for k, v in patterns.items()]
    for key, value, whole in checks:
        if not _is_number(value, whole=whole):
            kind = "a whole number" if whole else "a number"
            raise ConversionError(
                f"{path}/adapter_config.json: {key} is {value!r}; it must be {kind} above 0 "
                f"(fix the file or train the adapter again)"
            )
    for key in ("target_modules", "modules_to_save"):
        if not isinstance(config.get(key) or [], (list, str)):
            raise ConversionError(f"{path}/adapter_config.json: {key} is {config[key]!r}, not a list of names")


def check_pair(path: Path, module: str, a, b, *, rank: int) -> None:
    """A LoRA pair must be A (r x in) and B (out x r) with the rank of adapter_config.json."""
    if a.dim() != 2 or b.dim() != 2:
        raise ConversionError(
            f"{path}: {module} has lora_A {list(a.shape)} and lora_B {list(b.shape)}; LoRA "
            f"weights are matrices (2-D), the adapter is corrupt or not a LoRA adapter"
        )
    if a.shape[0] != b.shape[1]:
        raise ConversionError(
            f"{path}: {module} has lora_A of rank {a.shape[0]} but lora_B of rank {b.shape[1]}; the adapter is corrupt"
        )
    if a.shape[0] != rank:
        raise ConversionError(
            f"{path}: {module} has rank {a.shape[0]} but adapter_config.json says r = {rank}; "
            f"the adapter's files do not belong together"
        )
    if not (a.is_floating_point() and b.is_floating_point()):
        raise ConversionError(f"{path}: {module} holds {a.dtype} weights, not floating-point LoRA weights")


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    for key, value in patterns.items():
        if re.fullmatch(rf"(.*\.)?{key}", module):
            return value
    return default


def parse_spec(spec: str) -> tuple[Path, float]:
    """`PATH` or `PATH:SCALE` as given to --lora."""
    path, _, scale = spec.rpartition(":") if re.search(r":-?[0-9.]+$", spec) else (spec, "", "")
    try:
        value = float(scale) if scale else 1.0
    except ValueError:
        raise ConversionError(f"--lora {spec}: the scale after ':' must be a number, like adapter:0.5") from None
    return Path(path).expanduser(), value


def read_adapter(path: Path, scale: float = 1.0) -> Adapter:
    """A PEFT adapter folder (adapter_config.json and adapter_model.safetensors or .bin)."""
    config = read_object(path / "adapter_config.json", what="PEFT adapter config")
    if config is None:
        raise ConversionError(f"{path} is not a PEFT adapter (no adapter_config.json); pass the adapter's folder")
    kind = config.get("peft_type", "LORA")
    if kind != "LORA":
        raise ConversionError(f"{path} is a {kind} adapter; talesmith merges LoRA adapters only")
    if config.get("use_dora"):
        raise ConversionError(f"{path} is a DoRA adapter; talesmith merges plain LoRA adapters only")
    check_config(path, config)
    tensors, weights_file = _adapter_tensors(path)
    adapter = Adapter(path, scale, config, sha256=file_sha256(weights_file))
    a_parts: dict[str, Any] = {}
    b_parts: dict[str, Any] = {}
    for key, tensor in tensors.items():
        name = key[len(PREFIX) :] if key.startswith(PREFIX) else key
        m = re.fullmatch(r"(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", name)
        if m:
            (a_parts if m.group(2) == "A" else b_parts)[m.group(1)] = tensor
        elif ".lora_" in name:
            raise ConversionError(f"{path}: unsupported adapter tensor {key!r} (LoRA embeddings or biases)")
        else:
            adapter.replacements[re.sub(r"\.modules_to_save\.[^.]+", "", name)] = tensor
    for module, a in a_parts.items():
        if module not in b_parts:
            raise ConversionError(f"{path}: {module} has lora_A but no lora_B; the adapter is incomplete")
        check_pair(path, module, a, b_parts[module], rank=adapter.rank(module))
        adapter.pairs[module + ".weight"] = (a, b_parts[module])
    unpaired = sorted(set(b_parts) - set(a_parts))
    if unpaired:
        raise ConversionError(f"{path}: {unpaired[0]} has lora_B but no lora_A; the adapter is incomplete")
    if not adapter.pairs and not adapter.replacements:
        raise ConversionError(f"{path} holds no LoRA weights")
    return adapter


def _adapter_tensors(path: Path) -> tuple[dict[str, Any], Path]:
    st = path / "adapter_model.safetensors"
    if st.exists():
        from safetensors.torch import load_file

        safetensors_shapes(st)  # a corrupt or hostile header is refused before the library parses it
        try:
            return load_file(str(st)), st
        except Exception as e:
            raise ConversionError(f"{st} could not be read ({first_line(e)}); the file may be truncated") from None
    binary = path / "adapter_model.bin"
    if binary.exists():
        return load_pickle(binary, what="adapter"), binary
    raise ConversionError(f"{path} has no adapter_model.safetensors or adapter_model.bin")


class MergedWeights:
    """A checkpoint's tensors with adapters merged in, as numpy arrays, one at a time.

    Merged tensors come out float32; untouched ones keep their stored precision (bf16 becomes float32).
    """

    def __init__(self, ckpt, adapters: list[Adapter], *, device: str = "cpu"):
        self.ckpt = ckpt
        self.adapters = adapters
        self.device = device
        self._check()

    def _base_name(self, name: str) -> str | None:
        """The checkpoint's name for an adapter's module path (checkpoints differ in their prefixes)."""
        for candidate in (name, "transformer." + name, name.removeprefix("transformer.")):
            if candidate in self.ckpt:
                return candidate
        return None

    def _check(self) -> None:
        self._deltas: dict[str, list[tuple[Adapter, str]]] = {}
        self._replaced: dict[str, tuple[Adapter, str]] = {}
        for adapter in self.adapters:
            for module, (a, b) in adapter.pairs.items():
                base = self._base_name(module)
                if base is None:
                    raise ConversionError(
                        f"adapter {adapter.path} changes {module}, which this checkpoint does not "
                        f"have; is the adapter made for another base model?"
                    )
                out_in = (b.shape[0], a.shape[1])
                shape = tuple(self.ckpt.shape(base))
                expected = out_in[::-1] if adapter.fan_in_fan_out else out_in
                if shape != expected:
                    raise ConversionError(
                        f"adapter {adapter.path} does not fit this checkpoint: {base} is "
                        f"{list(shape)} but the adapter makes {list(expected)}; is it made for "
                        f"another base model?"
                    )
                self._deltas.setdefault(base, []).append((adapter, module))
            for name, tensor in adapter.replacements.items():
                base = self._base_name(name)
                if base is None or tuple(self.ckpt.shape(base)) != tuple(tensor.shape):
                    raise ConversionError(
                        f"adapter {adapter.path} replaces {name}, which does not match this "
                        f"checkpoint; is it made for another base model?"
                    )
                self._replaced[base] = (adapter, name)

    @property
    def merged_names(self) -> set[str]:
        return set(self._deltas) | set(self._replaced)

    def get(self, name: str) -> np.ndarray:
        import torch

        if name in self._replaced:
            adapter, key = self._replaced[name]
            tensor = adapter.replacements[key]
        else:
            tensor = self.ckpt.get(name)
        deltas = self._deltas.get(name)
        if not deltas:
            # Kept in its own precision (numpy has no bf16): the writer casts once, without a float32 detour.
            return (tensor.to(torch.float32) if tensor.dtype == torch.bfloat16 else tensor).numpy()
        w = tensor.to(self.device, torch.float32)
        for adapter, module in deltas:
            a, b = adapter.pairs[module]
            w += lora_delta(
                a.to(self.device, torch.float32),
                b.to(self.device, torch.float32),
                scaling=adapter.scaling(module.removesuffix(".weight")),
                fan_in_fan_out=adapter.fan_in_fan_out,
            )
        return w.cpu().numpy()
