"""Making and writing the random sharded checkpoints the conversion benchmarks read (imported by them from bench/)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np


def gptj_layer(i: int, rng: np.random.Generator, n_embd: int, n_inner: int) -> dict[str, np.ndarray]:
    """GPT-J layer i's tensors: random fp16 weights (std 0.02), layer norm at one and zero."""

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

    h = f"transformer.h.{i}"
    return {
        f"{h}.ln_1.weight": np.ones(n_embd, np.float16),
        f"{h}.ln_1.bias": np.zeros(n_embd, np.float16),
        **{f"{h}.attn.{p}.weight": w(n_embd, n_embd) for p in ("q_proj", "k_proj", "v_proj", "out_proj")},
        f"{h}.mlp.fc_in.weight": w(n_inner, n_embd),
        f"{h}.mlp.fc_in.bias": w(n_inner),
        f"{h}.mlp.fc_out.weight": w(n_embd, n_inner),
        f"{h}.mlp.fc_out.bias": w(n_embd),
    }


def gptj_config(
    layers: int, *, n_embd: int, n_inner: int | None, n_head: int, rotary: int, vocab: int, n_positions: int, eos: int
) -> dict[str, Any]:
    """The config.json of a GPT-J checkpoint of these shapes (fp16, untied head; eos also its bos)."""
    return {
        "architectures": ["GPTJForCausalLM"],
        "model_type": "gptj",
        "n_embd": n_embd,
        "n_inner": n_inner,
        "n_head": n_head,
        "n_layer": layers,
        "rotary_dim": rotary,
        "vocab_size": vocab,
        "n_positions": n_positions,
        "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new",
        "bos_token_id": eos,
        "eos_token_id": eos,
        "torch_dtype": "float16",
        "tie_word_embeddings": False,
    }


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
