"""Writing the random sharded checkpoints the conversion benchmarks read (imported by them from bench/)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np


def save_shards(folder: Path, shards: Iterable[dict[str, np.ndarray]], n: int) -> int:
    """The n shards as model-0000i-of-0000n.safetensors, one at a time (a generator keeps one in memory),
    and the index transformers finds them by; the bytes of their tensors."""
    from safetensors.numpy import save_file

    weight_map: dict[str, str] = {}
    total = 0
    for s, shard in enumerate(shards):
        name = f"model-{s + 1:05d}-of-{n:05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
        total += sum(a.nbytes for a in shard.values())
        del shard
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    return total
