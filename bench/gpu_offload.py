"""GPU paths on a Llama-shaped model (0.7B parameters, random weights): CUDA against CPU, in one run.

1. LoRA merge during `talesmith convert`: --device cuda against --device cpu (wall time of the f16 write).
2. Decoding with llama.cpp: all layers offloaded (--gpu-layers -1) against none, Q4_K_M, same prompt.

Prints JSON with both sides and their ratios. Needs a CUDA build of llama-cpp-python and torch with CUDA.

    python bench/gpu_offload.py [--workdir /tmp/talesmith-gpu]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HIDDEN, INTER, LAYERS, HEADS, KV_HEADS = 2048, 5632, 16, 16, 4


def decode_speed(path: Path, gpu_layers: int, n: int = 128) -> dict:
    from talesmith.runtime.engine.generate import stream
    from talesmith.runtime.engine.llama import LlamaCppBackend
    from talesmith.runtime.settings import preset

    backend = LlamaCppBackend(path, n_ctx=1024, gpu_layers=gpu_layers)
    tokens = backend.tokenize("The storm had raged for three days when the knock came at the lighthouse door.")
    settings = preset("default", seed=1, max_new_tokens=n, min_new_tokens=n)
    for _ in stream(backend, tokens, settings.replace(max_new_tokens=8, min_new_tokens=8)):
        pass  # warm-up
    runs = []
    for _ in range(3):
        backend.reset()
        *_, chunk = stream(backend, tokens, settings)
        runs.append((chunk.timing.tokens_per_second, chunk.timing.first_token_seconds))
    backend.close()
    runs.sort()
    return {"tokens_per_second": round(runs[1][0], 1), "first_token_seconds": round(runs[1][1], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/talesmith-gpu"))
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.workdir
    if args.build_only:
        from gpu_measure import build_llama  # bench/, this script's folder, is on sys.path

        build_llama(work, layers=LAYERS, hidden=HIDDEN, inter=INTER, heads=HEADS, kv_heads=KV_HEADS)  # llama/, lora/
        return
    # torch (building, converting) and llama.cpp's CUDA backend (decoding) each load their own CUDA
    # libraries: building and converting run in child processes, decoding here.
    shutil.rmtree(work, ignore_errors=True)
    subprocess.run([sys.executable, __file__, "--build-only", "--workdir", str(work)], check=True)
    merge = {}
    for device in ("cpu", "cuda"):
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "talesmith.cli.main",
                "convert",
                str(work / "llama"),
                "-o",
                str(work / device),
                "--lora",
                str(work / "lora"),
                "--quant",
                "Q4_K_M" if device == "cuda" else "",
                "--name",
                "bench",
                "--device",
                device,
                "--lock",
                str(work / "models.lock"),
            ],
            check=True,
            capture_output=True,
        )
        merge[device] = round(time.perf_counter() - started, 2)
    q4 = work / "cuda" / "bench-Q4_K_M.gguf"
    cpu, gpu = decode_speed(q4, 0), decode_speed(q4, -1)
    print(
        json.dumps(
            {
                "benchmark": "gpu_offload",
                "params_millions": round((work / "cuda" / "bench-f16.gguf").stat().st_size / 2e6),
                "convert_f16_seconds": merge,
                "merge_ratio_cuda_over_cpu": round(merge["cuda"] / merge["cpu"], 3),
                "decode_q4_k_m": {"cpu": cpu, "gpu_all_layers": gpu},
                "decode_speedup": round(gpu["tokens_per_second"] / cpu["tokens_per_second"], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
