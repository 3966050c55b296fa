"""Peak memory of converting a GPT-J-shaped checkpoint with a LoRA adapter: talesmith against the naive route.

Builds a synthetic checkpoint with GPT-J 6B's real widths (n_embd 4096, FFN 16384, 16 heads, rotary 64,
50,400 embedding rows) but only a few layers, in fp16 safetensors (1.6 GB with 2 layers), and a
random LoRA adapter on q_proj/v_proj. Then, each in its own process, measures peak RSS and wall time:

* talesmith: `talesmith convert` to an f16 GGUF, merging the adapter tensor by tensor;
* naive: transformers `from_pretrained` (fp16), peft `merge_and_unload`, `save_pretrained`.

Prints JSON with both and their ratios.

    python bench/convert_memory.py [--layers 2] [--workdir /tmp/talesmith-bench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from checkpoints import gptj_config, gptj_layer, save_shards  # bench/, this script's folder, is on sys.path
from convert_speed import measure

ROOT = Path(__file__).resolve().parent.parent
N_EMBD, N_INNER, N_HEAD, ROTARY, N_VOCAB, N_POS = 4096, 16384, 16, 64, 50400, 2048


def build_checkpoint(folder: Path, layers: int) -> int:
    """Random fp16 GPT-J weights written tensor by tensor; returns the bytes written."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import train_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    train_tokenizer(folder)
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

    shards: list[dict[str, np.ndarray]] = [
        {
            "transformer.wte.weight": w(N_VOCAB, N_EMBD),
            "transformer.ln_f.weight": np.ones(N_EMBD, np.float16),
            "transformer.ln_f.bias": np.zeros(N_EMBD, np.float16),
        },
        {"lm_head.weight": w(N_VOCAB, N_EMBD), "lm_head.bias": w(N_VOCAB)},
    ]
    shards += [gptj_layer(i, rng, N_EMBD, N_INNER) for i in range(layers)]
    total = save_shards(folder, shards, len(shards))
    config = gptj_config(
        layers, n_embd=N_EMBD, n_inner=N_INNER, n_head=N_HEAD, rotary=ROTARY, vocab=N_VOCAB, n_positions=N_POS, eos=0
    )
    (folder / "config.json").write_text(json.dumps(config))
    return total


def build_adapter(folder: Path, layers: int, rank: int = 8) -> None:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    tensors = {}
    for i in range(layers):
        for p in ("q_proj", "v_proj"):
            key = f"base_model.model.transformer.h.{i}.attn.{p}"
            tensors[f"{key}.lora_A.weight"] = rng.standard_normal((rank, N_EMBD), dtype=np.float32) * 0.01
            tensors[f"{key}.lora_B.weight"] = rng.standard_normal((N_EMBD, rank), dtype=np.float32) * 0.01
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "r": rank,
                "lora_alpha": 16,
                "target_modules": ["q_proj", "v_proj"],
                "fan_in_fan_out": False,
                "bias": "none",
                "task_type": "CAUSAL_LM",
                "base_model_name_or_path": "synthetic",
            }
        )
    )


NAIVE = """
import sys, torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float16)
merged = PeftModel.from_pretrained(model, sys.argv[2]).merge_and_unload()
merged.save_pretrained(sys.argv[3])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/talesmith-bench"))
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.workdir
    ckpt, adapter = work / "gptj", work / "lora"
    if args.build_only:
        print(build_checkpoint(ckpt, args.layers))
        build_adapter(adapter, args.layers)
        return
    # Build in a child process: a child forked from a large parent would report the parent's pages as its peak.
    shutil.rmtree(work, ignore_errors=True)
    size = int(
        subprocess.run(
            [sys.executable, __file__, "--build-only", "--layers", str(args.layers), "--workdir", str(work)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    largest = N_VOCAB * N_EMBD * 2
    ours = measure(
        [
            sys.executable,
            "-m",
            "talesmith.cli.main",
            "convert",
            str(ckpt),
            "-o",
            str(work / "gguf"),
            "--lora",
            str(adapter),
            "--quant",
            "",
            "--outtype",
            "f16",
            "--lock",
            str(work / "models.lock"),
        ]
    )
    naive = measure([sys.executable, "-c", NAIVE, str(ckpt), str(adapter), str(work / "merged")])
    print(
        json.dumps(
            {
                "benchmark": "convert_memory",
                "checkpoint_mb": round(size / 2**20, 1),
                "layers": args.layers,
                "largest_tensor_mb": round(largest / 2**20, 1),
                "talesmith": ours,
                "naive": naive,
                "rss_ratio": round(ours["peak_rss_mb"] / naive["peak_rss_mb"], 3),
                "time_ratio": round(ours["seconds"] / naive["seconds"], 3),
                "talesmith_rss_over_largest_tensor": round(ours["peak_rss_mb"] / (largest / 2**20), 2),
            },
            indent=2,
        )
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
