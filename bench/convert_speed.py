"""Conversion speed and memory: talesmith against llama.cpp's own convert_hf_to_gguf.py, same checkpoints, same run.

Builds two random-weight fp16 checkpoints: a ~200M-parameter Llama (SentencePiece tokenizer trained
here) and a GPT-2 of the original 124M shape (the real GPT-2 tokenizer from ../shared/real when it is
there). Converts each to f16 and to Q8_0 with both tools, each run in its own process, and reports
wall time and peak RSS (wait4) with the ratios talesmith / llama.cpp, and whether the f16 tensors are
bit-identical. llama.cpp's converter comes from the llama-cpp-python 0.3.36 sdist
(bench/reference_convert.py --fetch downloads it once).

    python bench/convert_speed.py [--workdir /tmp/talesmith-speed] [--llama-layers 16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REAL_GPT2 = ROOT.parent / "shared" / "real" / "base-gpt2-noweights"
sys.path.insert(0, str(ROOT / "bench"))
import reference_convert  # noqa: E402


def _save(folder: Path, tensors: dict[str, np.ndarray], config: dict) -> int:
    from safetensors.numpy import save_file

    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config))
    return sum(a.size for a in tensors.values())


def _w(rng, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)


def build_llama(folder: Path, layers: int) -> int:
    """A Llama of hidden 1024 and FFN 2816 (16 layers: ~200M parameters) with a SentencePiece tokenizer."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import make_spm_llama

    make_spm_llama(folder)  # the tokenizer files; its tiny weights are replaced below
    (folder / "model.safetensors").unlink()
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    hidden, ffn, rng = 1024, 2816, np.random.default_rng(0)
    tensors = {
        "model.embed_tokens.weight": _w(rng, vocab, hidden),
        "model.norm.weight": np.ones(hidden, np.float16),
        "lm_head.weight": _w(rng, vocab, hidden),
    }
    for i in range(layers):
        h = f"model.layers.{i}"
        tensors.update(
            {
                f"{h}.input_layernorm.weight": np.ones(hidden, np.float16),
                f"{h}.post_attention_layernorm.weight": np.ones(hidden, np.float16),
                **{
                    f"{h}.self_attn.{p}.weight": _w(rng, hidden, hidden)
                    for p in ("q_proj", "k_proj", "v_proj", "o_proj")
                },
                f"{h}.mlp.gate_proj.weight": _w(rng, ffn, hidden),
                f"{h}.mlp.up_proj.weight": _w(rng, ffn, hidden),
                f"{h}.mlp.down_proj.weight": _w(rng, hidden, ffn),
            }
        )
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "vocab_size": vocab,
        "rope_theta": 10000.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float16",
        "tie_word_embeddings": False,
    }
    return _save(folder, tensors, config)


def build_gpt2(folder: Path) -> tuple[int, str]:
    """GPT-2 124M's shape; its real tokenizer when ../shared/real has it (else one trained here)."""
    folder.mkdir(parents=True, exist_ok=True)
    if REAL_GPT2.exists():
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
            shutil.copy(REAL_GPT2 / name, folder / name)
        vocab, tokenizer = 50257, "gpt2 (real)"
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_models import train_tokenizer

        vocab, tokenizer = train_tokenizer(folder, vocab_size=2000), "trained here"
    n, layers, ctx, rng = 768, 12, 1024, np.random.default_rng(1)
    tensors = {
        "transformer.wte.weight": _w(rng, vocab, n),
        "transformer.wpe.weight": _w(rng, ctx, n),
        "transformer.ln_f.weight": np.ones(n, np.float16),
        "transformer.ln_f.bias": np.zeros(n, np.float16),
    }
    for i in range(layers):
        h = f"transformer.h.{i}"
        tensors.update(
            {
                f"{h}.ln_1.weight": np.ones(n, np.float16),
                f"{h}.ln_1.bias": np.zeros(n, np.float16),
                f"{h}.ln_2.weight": np.ones(n, np.float16),
                f"{h}.ln_2.bias": np.zeros(n, np.float16),
                f"{h}.attn.c_attn.weight": _w(rng, n, 3 * n),
                f"{h}.attn.c_attn.bias": _w(rng, 3 * n),
                f"{h}.attn.c_proj.weight": _w(rng, n, n),
                f"{h}.attn.c_proj.bias": _w(rng, n),
                f"{h}.mlp.c_fc.weight": _w(rng, n, 4 * n),
                f"{h}.mlp.c_fc.bias": _w(rng, 4 * n),
                f"{h}.mlp.c_proj.weight": _w(rng, 4 * n, n),
                f"{h}.mlp.c_proj.bias": _w(rng, n),
            }
        )
    config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_embd": n,
        "n_layer": layers,
        "n_head": 12,
        "n_positions": ctx,
        "n_ctx": ctx,
        "vocab_size": vocab,
        "layer_norm_epsilon": 1e-5,
        "bos_token_id": vocab - 1,
        "eos_token_id": vocab - 1,
        "torch_dtype": "float16",
    }
    return _save(folder, tensors, config), tokenizer


def measure(argv: list[str]) -> dict:
    """Run a command in its own process; its peak RSS (from wait4) and wall time."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{argv[:4]} failed: {proc.stderr.read().decode()[-2000:]}")
    return {"seconds": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


IDENTICAL = """
import sys
import numpy as np
import gguf
ra, rb = gguf.GGUFReader(sys.argv[1]), gguf.GGUFReader(sys.argv[2])
ta, tb = {t.name: t for t in ra.tensors}, {t.name: t for t in rb.tensors}
same = set(ta) == set(tb) and all(ta[n].tensor_type == tb[n].tensor_type and np.array_equal(ta[n].data, tb[n].data)
                                  for n in ta)
print("yes" if same else "no")
"""


def identical(a: Path, b: Path) -> bool:
    """Compared in a child process: mapping both files here would raise this process's RSS, which every later
    child would inherit as its starting peak."""
    done = subprocess.run([sys.executable, "-c", IDENTICAL, str(a), str(b)], capture_output=True, text=True, check=True)
    return done.stdout.strip() == "yes"


def best(runs: list[dict]) -> dict:
    """The fastest of the repeated runs (the machine is shared: the others lost time to other work)."""
    return min(runs, key=lambda r: r["seconds"])


def run_pair(name: str, src: Path, pre: str, outtype: str, work: Path, repeats: int) -> dict:
    out = work / f"{name}-{outtype}"
    quant = "Q8_0" if outtype == "q8_0" else ""
    ref_file = work / f"{name}-{outtype}-llamacpp.gguf"
    ours_runs, ref_runs = [], []
    for _ in range(repeats):  # interleaved, so that a busy spell slows both alike
        ours_runs.append(
            measure(
                [
                    sys.executable,
                    "-m",
                    "talesmith.cli.main",
                    "convert",
                    str(src),
                    "-o",
                    str(out),
                    "--quant",
                    quant,
                    "--outtype",
                    "f16",
                    "--name",
                    name,
                    "--lock",
                    str(out / "models.lock"),
                    "--no-quality",
                ]
            )
        )
        ref_runs.append(measure(reference_convert.command(pre, src, ref_file, outtype)))
    ours, ref = best(ours_runs), best(ref_runs)
    row = {
        "model": name,
        "type": outtype.upper(),
        "talesmith": ours,
        "llama.cpp": ref,
        "time_ratio": round(ours["seconds"] / ref["seconds"], 3),
        "rss_ratio": round(ours["peak_rss_mb"] / ref["peak_rss_mb"], 3),
    }
    if outtype == "f16":
        row["tensors_bit_identical"] = identical(out / f"{name}-f16.gguf", ref_file)
    shutil.rmtree(out, ignore_errors=True)
    ref_file.unlink(missing_ok=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/talesmith-speed"))
    parser.add_argument("--llama-layers", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="Runs of each tool per case; the fastest counts.")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.workdir
    if args.build_only:
        sizes = {"llama": build_llama(work / "llama-200m", args.llama_layers)}
        sizes["gpt2"], tokenizer = build_gpt2(work / "gpt2-124m")
        print(json.dumps({"params": sizes, "gpt2_tokenizer": tokenizer}))
        return
    if reference_convert.vendor_dir() is None:
        reference_convert.fetch()
    shutil.rmtree(work, ignore_errors=True)
    built = json.loads(
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--build-only",
                "--workdir",
                str(work),
                "--llama-layers",
                str(args.llama_layers),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    rows = []
    for name, folder, pre in (("llama-200m", work / "llama-200m", "-"), ("gpt2-124m", work / "gpt2-124m", "gpt-2")):
        for outtype in ("f16", "q8_0"):
            rows.append(run_pair(name, folder, pre, outtype, work, args.repeats))
    print(
        json.dumps(
            {
                "benchmark": "convert_speed",
                "reference": f"llama.cpp convert_hf_to_gguf.py (llama-cpp-python {reference_convert.VERSION} sdist)",
                "parameters": built["params"],
                "gpt2_tokenizer": built["gpt2_tokenizer"],
                "runs": rows,
            },
            indent=2,
        )
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
