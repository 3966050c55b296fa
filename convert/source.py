"""Opening a checkpoint: a local folder or a hub repo at a revision; tensors read one at a time.

safetensors files are memory-mapped and each tensor is read only when asked for; sharded
checkpoints are followed through their index. Pickle (`.bin`) files are read only with
`torch.load(weights_only=True)`: a pickle that needs more than that is refused, since unpickling
can run code. Remote code is never trusted.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talesmith.runtime.errors import ConversionError

NEEDED = ["config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer.json",
          "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "vocab.json", "merges.txt",
          "added_tokens.json"]
PICKLES = ["pytorch_model.bin", "pytorch_model-*.bin", "pytorch_model.bin.index.json"]


TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "added_tokens.json"]


def tokenizer_folder(spec: str, revision: str | None = None) -> tuple[Path, dict[str, Any]]:
    """A tokenizer from a local folder or a hub repo (only its tokenizer files are downloaded)."""
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return folder, {"path": str(folder.resolve())}
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        folder, commit = fetch(spec, revision, patterns=TOKENIZER_FILES)
        return folder, {"hub": spec, "revision": revision or "main", "commit": commit}
    raise ConversionError(f"tokenizer {spec} is neither a folder nor a hub repo id like owner/name")


def fetch(repo_id: str, revision: str | None, patterns: list[str] | None = None) -> tuple[Path, str]:
    """Download only the files conversion needs from the hub; returns the folder and its commit hash."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=False)
        names = [s.rfilename for s in info.siblings or []]
        if patterns is None:
            patterns = NEEDED if any(n.endswith(".safetensors") for n in names) else NEEDED + PICKLES
        folder = snapshot_download(repo_id, revision=info.sha, allow_patterns=patterns)
        return Path(folder), str(info.sha)
    except RepositoryNotFoundError:
        raise ConversionError(f"{repo_id!r} is neither a local folder nor a hub repository you can access; check the "
                              f"name, or log in with `huggingface-cli login` for a gated repo") from None
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as e:
        raise ConversionError(f"could not download {repo_id}@{revision or 'main'} ({e}); check the network or "
                              f"pass a local folder") from None


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
            raise ConversionError(f"{self.folder} has no tensor {name!r}; is it a complete {self.architecture} checkpoint?")
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
            raise ConversionError(f"{path} could not be read ({e}); the file may be truncated, download it again") from None

    def close(self) -> None:
        self._open.clear()


def _open_file(path: Path):
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        return safe_open(str(path), framework="pt")
    import pickle

    import torch

    try:
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            return torch.load(str(path), map_location="cpu", weights_only=True)  # a legacy, non-zip pickle
    except pickle.UnpicklingError:
        raise ConversionError(f"{path} needs full unpickling, which can run arbitrary code; talesmith only reads "
                              f"weights-only pickles. Convert it to safetensors with a tool you trust") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise ConversionError(f"{path} could not be read ({e}); the file may be truncated") from None


def read_json(path: Path, *, missing: str) -> Any:
    """A JSON file a checkpoint or adapter needs; ConversionError with `missing` when it is not there."""
    if not path.exists():
        raise ConversionError(missing)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path} is not valid JSON ({e})") from None


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
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
    end = 8 + n + max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if end > size:
        raise ConversionError(f"{path} is truncated: {size} bytes on disk, its tensors need {end}; download it again")
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def _weight_files(folder: Path) -> list[Path]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise ConversionError(f"{index} is not a valid shard index ({e})") from None
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
    elif str(source).count("/") == 1 and not str(source).startswith((".", "/", "~")):
        folder, commit = fetch(str(source), revision)
        origin = {"hub": str(source), "revision": revision or "main", "commit": commit}
    else:
        raise ConversionError(f"{source} does not exist; pass a checkpoint folder or a hub repo id like owner/name")
    config = read_json(folder / "config.json",
                       missing=f"{folder} has no config.json; pass the folder of a Hugging Face checkpoint")
    ckpt = Checkpoint(folder, config)
    for path in _weight_files(folder):
        if path.suffix == ".safetensors":
            shapes = _safetensors_shapes(path)
        else:
            state = _open_file(path)
            shapes = {k: tuple(v.shape) for k, v in state.items()}
            ckpt._open[path] = state
        for name, shape in shapes.items():
            ckpt._where[name] = path
            ckpt._shapes[name] = shape
    return ckpt, origin
