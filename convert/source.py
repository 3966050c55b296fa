"""Opening a checkpoint: a local folder or a hub repo at a revision; tensors read one at a time.

safetensors files are memory-mapped and each tensor is read only when asked for; sharded
checkpoints are followed through their index. Pickle (`.bin`) files are read only with
`torch.load(weights_only=True)`: a pickle that needs more than that is refused, since unpickling
can run code. Remote code is never trusted.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talesmith.runtime.errors import ConversionError, HubUnreachable

from .safety import read_object

TOKENIZER_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
]
NEEDED = ["config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json", *TOKENIZER_FILES]
PICKLES = ["pytorch_model.bin", "pytorch_model-*.bin", "pytorch_model.bin.index.json"]


HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")
"""A hub repo id: `owner/name`, or an owner-less legacy id such as `gpt2` or `distilgpt2`."""


def is_hub_id(spec: str) -> bool:
    """Whether `spec`, naming no local folder, reads as a hub repo id (with or without an owner)."""
    return bool(HUB_ID.fullmatch(spec)) and ".." not in spec and not spec.endswith((".", "-"))


def tokenizer_folder(spec: str, revision: str | None = None) -> tuple[Path, dict[str, Any]]:
    """A tokenizer from a local folder or a hub repo (only its tokenizer files are downloaded)."""
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return folder, {"path": str(folder.resolve())}
    if is_hub_id(spec):
        folder, commit = fetch(spec, revision, patterns=TOKENIZER_FILES)
        return folder, {"hub": spec, "revision": revision or "main", "commit": commit}
    raise ConversionError(f"tokenizer {spec} is neither a folder nor a hub repo id (like gpt2 or owner/name)")


def fetch(repo_id: str, revision: str | None, patterns: list[str] | None = None) -> tuple[Path, str]:
    """Download only the files conversion needs from the hub; returns the folder and its commit hash.

    Hub errors are the models manager's one-line HubErrors, noting that the name was taken as a hub id.
    """
    from huggingface_hub import HfApi, snapshot_download

    from talesmith.runtime.models import hub

    if hub.is_offline():
        raise HubUnreachable(
            f"{repo_id} is not a local folder, and HF_HUB_OFFLINE is set so it cannot be fetched "
            f"from the hub; pass a checkpoint folder, or unset HF_HUB_OFFLINE"
        )
    taken = f" (there is no local folder named {repo_id}, so it was taken as a hub repo id)"
    missing = (
        f"{repo_id!r} is neither a local folder nor a hub repository you can access; check the name, or log "
        f"in with `hf auth login` (or set HF_TOKEN) for a gated or private repo"
    )
    with hub.translated_errors(repo_id, revision or "main", retry=taken, missing=missing):
        info = HfApi(endpoint=hub.endpoint()).model_info(repo_id, revision=revision, files_metadata=False)
        names = [s.rfilename for s in info.siblings or []]
        if patterns is None:
            patterns = NEEDED if any(n.endswith(".safetensors") for n in names) else NEEDED + PICKLES
        folder = snapshot_download(repo_id, revision=info.sha, allow_patterns=patterns, endpoint=hub.endpoint())
    return Path(folder), str(info.sha)


@dataclass
class Checkpoint:
    """A Hugging Face causal-LM checkpoint whose tensors are read lazily, one at a time."""

    folder: Path
    config: dict[str, Any]
    _where: dict[str, Path] = field(default_factory=dict, repr=False)
    _shapes: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False)
    _open: dict[Path, Any] = field(default_factory=dict, repr=False)

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or []
        return archs[0] if archs else str(self.config.get("model_type", "unknown"))

    def names(self) -> list[str]:
        return list(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def get(self, name: str):
        """One tensor as a torch tensor (a copy read from the memory-mapped file)."""
        path = self._where.get(name)
        if path is None:
            raise ConversionError(
                f"{self.folder} has no tensor {name!r}; is it a complete {self.architecture} checkpoint?"
            )
        try:
            if path.suffix == ".safetensors":
                # Opened per tensor: a handle kept open would keep every page read so far mapped (and resident).
                with _open_file(path) as handle:
                    return handle.get_tensor(name)
            if path not in self._open:
                self._open[path] = _open_file(path)
            return self._open[path][name]
        except ConversionError:
            raise
        except Exception as e:  # a short read of a truncated file surfaces here
            raise ConversionError(
                f"{path} could not be read ({e}); the file may be truncated, download it again"
            ) from None

    def close(self) -> None:
        self._open.clear()


def _open_file(path: Path):
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        return safe_open(str(path), framework="pt")
    return load_pickle(path)


def load_pickle(path: Path, *, what: str = "weights") -> dict[str, Any]:
    """A `.bin` state dict read with `torch.load(weights_only=True)`: tensors by name, nothing else."""
    import pickle
    import zipfile

    import torch

    try:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            state = torch.load(str(path), map_location="cpu", weights_only=True)  # a legacy, non-zip pickle
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e).lower().replace(" ", "_") and _looks_like_torch(path, zipfile):
            raise ConversionError(
                f"{path} needs full unpickling, which can run arbitrary code; talesmith only reads "
                f"weights-only pickles. Convert it to safetensors with a tool you trust"
            ) from None
        raise ConversionError(f"{path} is not a PyTorch {what} file (or it is corrupt); download it again") from None
    except Exception as e:  # truncated or random bytes: torch raises many kinds
        raise ConversionError(
            f"{path} could not be read as PyTorch {what} ({first_line(e)}); the file may be "
            f"truncated or corrupt, download it again"
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ConversionError(
            f"{path} holds a {type(state).__name__} but not a state dict of named tensors; "
            f"it is not a PyTorch {what} file"
        )
    return state


def _looks_like_torch(path: Path, zipfile) -> bool:
    """A torch zip archive, or a pickle that starts with a protocol header."""
    with path.open("rb") as f:
        head = f.read(2)
    return zipfile.is_zipfile(path) or (len(head) == 2 and head[0] == 0x80 and head[1] in (2, 3, 4, 5))


def first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return (lines[0][:120] if lines else "") or type(error).__name__


def read_json(path: Path, *, missing: str) -> Any:
    """A JSON file a checkpoint or adapter needs; ConversionError with `missing` when it is not there."""
    if not path.exists():
        raise ConversionError(missing)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path} is not valid JSON ({e})") from None


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes from a safetensors header, without reading any tensor data."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ConversionError(f"{path} is truncated (no header); download it again")
        n = int.from_bytes(head, "little")
        if n > size - 8 or n > 100_000_000:
            raise ConversionError(f"{path} is truncated or not a safetensors file; download it again")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConversionError(f"{path} has a corrupt header; download it again") from None
    return _checked_header(path, header, size - 8 - n)


def _checked_header(path: Path, header: Any, data_size: int) -> dict[str, tuple[int, ...]]:
    """Each entry's shape, once the header is known to describe tensors that lie inside the file."""
    if not isinstance(header, dict):
        raise ConversionError(
            f"{path} has a corrupt header (a JSON {type(header).__name__}, not an object); download it again"
        )
    shapes: dict[str, tuple[int, ...]] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]
            and isinstance(shape, list)
            and all(type(d) is int and d >= 0 for d in shape)
            and isinstance(entry.get("dtype"), str)
        ):
            raise ConversionError(
                f"{path} has a corrupt header: tensor {name[:80]!r} lacks a valid dtype, shape "
                f"or data_offsets; download the file again"
            )
        if offsets[1] > data_size:
            raise ConversionError(
                f"{path} is truncated: {name[:80]!r} ends at byte {offsets[1]} of its data but "
                f"the file holds {data_size}; download it again"
            )
        shapes[name] = tuple(shape)
    return shapes


def _weight_files(folder: Path) -> list[Path]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
                if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
                    raise TypeError("weight_map is not an object of file names")
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
                raise ConversionError(f"{index} is not a valid shard index ({e}); download it again") from None
            outside = [f for f in weight_map.values() if Path(f).name != f or f in ("", ".", "..")]
            if outside:
                raise ConversionError(
                    f"{index} names shard {outside[0][:80]!r} outside the checkpoint folder; "
                    f"download the checkpoint again"
                )
            files = sorted({folder / f for f in weight_map.values()})
            missing = [f.name for f in files if not f.exists()]
            if missing:
                raise ConversionError(f"{folder} is missing shard {missing[0]} named in {index_name}; download it")
            return files
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise ConversionError(f"{folder} has no weights (*.safetensors or pytorch_model.bin)")
    return files


def open_checkpoint(source: str | os.PathLike[str], revision: str | None = None) -> tuple[Checkpoint, dict[str, Any]]:
    """A checkpoint from a local folder or a hub repo id, and a description of where it came from."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        origin: dict[str, Any] = {"path": str(folder.resolve())}
    elif folder.exists():
        raise ConversionError(f"{source} is a file; pass the checkpoint's folder (the one with config.json)")
    elif is_hub_id(str(source)):
        folder, commit = fetch(str(source), revision)
        origin = {"hub": str(source), "revision": revision or "main", "commit": commit}
    else:
        raise ConversionError(
            f"{source} does not exist; pass a checkpoint folder or a hub repo id (like gpt2 or owner/name)"
        )
    config = read_object(folder / "config.json", what="checkpoint config")
    if config is None:
        raise ConversionError(f"{folder} has no config.json; pass the folder of a Hugging Face checkpoint")
    ckpt = Checkpoint(folder, config)
    for path in _weight_files(folder):
        if path.suffix == ".safetensors":
            shapes = safetensors_shapes(path)
        else:
            state = load_pickle(path)
            shapes = {k: tuple(v.shape) for k, v in state.items()}
            ckpt._open[path] = state
        for name, shape in shapes.items():
            ckpt._where[name] = path
            ckpt._shapes[name] = shape
    return ckpt, origin
