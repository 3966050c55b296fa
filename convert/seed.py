"""The TinyStories project's own inference TOML, read as it is, and its model converted on first use.

    model_name = "distilgpt2"              # a hub id or a folder: the base model
    model_folder = "models/finetuned/x"    # the PEFT LoRA, merged when lora_peft = true
    quantized = true                       # Q8_0, else f16
    device = "cpu"                         # "cuda"/"gpu": the GPU where there is one
    starter = "<|startoftext|>"            # with ender, the TinyStories prompt format
    ender = "<|endoftext|>"
    output_file = "output/x.csv"           # one row per sample, batch output's columns
    [hyper-parameters]                     # sampling: bad_words -> banned phrases
      max_new_tokens = 1096

The converted GGUF lives in a cache keyed by the sha256 of every source file and the quantization,
so a changed adapter or base converts again and an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from talesmith.runtime.errors import InputError, SettingsError

SEED_KEYS = {
    "output_file",
    "lora_peft",
    "model_folder",
    "model_name",
    "quantized",
    "device",
    "starter",
    "ender",
    "hyper-parameters",
}
SAMPLING_KEYS = {
    "max_new_tokens": "max_new_tokens",
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "repetition_penalty": "repetition_penalty",
    "bad_words": "banned",
}
"""[hyper-parameters] keys and the sampling settings they set."""
ACCEPTED_WITH_A_NOTE = {
    "length_penalty": "length_penalty is a beam-search setting; talesmith samples, so it has no effect"
}
TINY_MARKERS = ("<|startoftext|>", "<|endoftext|>")


@dataclass(frozen=True)
class SeedModel:
    base: str
    adapter: Path | None
    quant: str
    """"Q8_0" or "f16"."""


@dataclass(frozen=True)
class SeedConfig:
    model: SeedModel
    device: str
    format: str
    sampling: dict[str, Any]
    output_file: Path | None
    notes: tuple[str, ...] = ()


def is_seed_config(data: dict[str, Any]) -> bool:
    """Whether a parsed TOML is the TinyStories project's own inference config."""
    return "model_name" in data or "hyper-parameters" in data


def _text(path: Path, data: dict[str, Any], key: str, default: str | None = None) -> str | None:
    value = data.get(key, default)
    if value is not None and not isinstance(value, str):
        raise InputError(f'config file {path}: {key} = {value!r} must be text, e.g. {key} = "..."')
    return value


def _flag(path: Path, data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise InputError(f"config file {path}: {key} = {value!r} must be true or false")
    return value


def read_seed_config(path: Path, data: dict[str, Any]) -> SeedConfig:
    """The seed's TOML as talesmith settings; one line naming the key for anything it cannot use."""
    unknown = sorted(set(data) - SEED_KEYS)
    if unknown:
        raise InputError(
            f"config file {path}: unknown key {unknown[0]!r} in a TinyStories-style config; known "
            f"keys: {', '.join(sorted(SEED_KEYS))}"
        )
    base = _text(path, data, "model_name")
    if not base:
        raise InputError(
            f'config file {path}: model_name is missing; name the base model, e.g. model_name = "distilgpt2"'
        )
    folder = path.parent
    base_path = folder / Path(base).expanduser()
    base = str(base_path) if base_path.is_dir() else base
    adapter_text = _text(path, data, "model_folder")
    adapter = None
    if _flag(path, data, "lora_peft"):
        if not adapter_text:
            raise InputError(f'config file {path}: lora_peft = true needs model_folder = "the adapter\'s folder"')
        adapter = folder / Path(adapter_text).expanduser()
    markers = (_text(path, data, "starter", TINY_MARKERS[0]), _text(path, data, "ender", TINY_MARKERS[1]))
    if markers != TINY_MARKERS:
        raise SettingsError(
            f"config file {path}: starter/ender {markers[0]!r}/{markers[1]!r} are not the "
            f"TinyStories markers {TINY_MARKERS[0]!r}/{TINY_MARKERS[1]!r}, the only ones talesmith's "
            f"tinystories format writes"
        )
    device = (_text(path, data, "device", "cpu") or "cpu").lower()
    if device not in ("cpu", "cuda", "gpu", "auto") and not device.startswith("cuda:"):
        raise SettingsError(f"config file {path}: device = {device!r} is unknown; use cpu, cuda or auto")
    sampling, notes = _sampling(path, data.get("hyper-parameters", {}))
    output = _text(path, data, "output_file")
    return SeedConfig(
        SeedModel(base, adapter, "Q8_0" if _flag(path, data, "quantized") else "f16"),
        "cpu" if device == "cpu" else "cuda",
        "tinystories",
        sampling,
        folder / Path(output).expanduser() if output else None,
        tuple(notes),
    )


def _sampling(path: Path, table: Any) -> tuple[dict[str, Any], list[str]]:
    if not isinstance(table, dict):
        raise InputError(
            f"config file {path}: hyper-parameters = {table!r} must be a table, e.g. "
            f"[hyper-parameters] with temperature = 1.0"
        )
    sampling, notes = {}, []
    for key, value in table.items():
        if key in ACCEPTED_WITH_A_NOTE:
            notes.append(ACCEPTED_WITH_A_NOTE[key])
        elif key in SAMPLING_KEYS:
            if key == "bad_words" and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise InputError(
                    f"config file {path}: hyper-parameters.bad_words = {value!r} must be a list of "
                    f'texts, e.g. bad_words = ["Damn"]'
                )
            sampling[SAMPLING_KEYS[key]] = tuple(value) if key == "bad_words" else value
        else:
            raise SettingsError(
                f"config file {path}: unknown hyper-parameter {key!r}; known: "
                f"{', '.join(sorted([*SAMPLING_KEYS, *ACCEPTED_WITH_A_NOTE]))}"
            )
    return sampling, notes


def cache_root() -> Path:
    """Where converted seed models are kept: $TALESMITH_CACHE, else the XDG cache folder."""
    explicit = os.environ.get("TALESMITH_CACHE")
    if explicit:
        return Path(explicit).expanduser() / "converted"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "talesmith" / "converted"


def _folder_hashes(folder: Path) -> dict[str, str]:
    from talesmith.runtime.files import sha256_file

    return {
        p.name: sha256_file(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.suffix not in (".md", ".py", ".txt")
    }


def cache_key(base_folder: Path, adapter: Path | None, quant: str) -> str:
    """The sha256 of every source file's sha256 and the quantization: what the converted file depends on."""
    sources = {
        "base": _folder_hashes(base_folder),
        "adapter": _folder_hashes(adapter) if adapter else None,
        "quant": quant,
        "layout": 1,
    }
    return hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()


def converted_model(model: SeedModel, *, device: str = "cpu", progress=None, cache: Path | None = None) -> Path:
    """The seed's model as a GGUF file, converted on first use and reused while its sources are unchanged."""
    from .pipeline import ConvertRequest, convert
    from .source import fetch

    base_folder = Path(model.base)
    if not base_folder.is_dir():
        base_folder, _ = fetch(model.base, "main")
    if model.adapter is not None and not model.adapter.is_dir():
        raise InputError(f"model_folder {model.adapter} does not exist; point it at the LoRA adapter's folder")
    key = cache_key(base_folder, model.adapter, model.quant)
    target = (cache or cache_root()) / key[:24]
    name = "tinystories"
    found = target / f"{name}-{model.quant}.gguf"
    if found.exists():
        return found
    request = ConvertRequest(
        str(base_folder),
        target,
        loras=((model.adapter, 1.0),) if model.adapter else (),
        quants=(model.quant,) if model.quant != "f16" else (),
        outtype="f16",
        name=name,
        device="cuda" if device == "cuda" and _cuda() else "cpu",
        prompt_format="tinystories",
        preset="tinystories",
    )
    convert(request, progress, lock=target / "models.lock")
    if model.quant != "f16":
        (target / f"{name}-f16.gguf").unlink(missing_ok=True)  # only the file asked for is kept
    return found


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()
