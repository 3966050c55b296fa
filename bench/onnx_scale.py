"""ONNX at real size: a GPT-J-6B-shaped checkpoint converted to ONNX int4 and to GGUF Q4_K_M in one run.

Writes a random checkpoint with GPT-J 6B's real shapes (28 layers, n_embd 4096, FFN 16384, 16 heads,
rotary 64, 50,400 embedding rows; fp16, 8 safetensors shards, about 12.1 GB) and the GPT-2 tokenizer
GPT-J uses (from ../shared/real/base-gpt2-noweights when it is there, else one trained here). Then, each
in its own process under a watchdog that kills it past --rss-limit-gb, it runs

* `talesmith convert --to onnx --quant int4` and `talesmith convert --to gguf --quant Q4_K_M`
  (seconds, peak RSS, output size), and
* greedy decoding of --tokens tokens from each output with 2 threads, --rounds times, alternating
  (median tokens/s, peak RSS while loaded).

Prints JSON with both routes, the ratio of each route's peak RSS to its output's size, and the ONNX int4
decode speed against the GGUF's. Needs about 30 GB of disk; the work folder is removed unless --keep.

    python bench/onnx_scale.py [--layers 28] [--tokens 32] [--rounds 3] [--workdir /tmp/talesmith-onnx-scale]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REAL_TOKENIZER = ROOT.parent / "shared" / "real" / "base-gpt2-noweights"
N_EMBD, N_INNER, N_HEAD, ROTARY, N_VOCAB, N_POS, N_LAYER = 4096, 16384, 16, 64, 50400, 2048, 28
SHARDS = 8
THREADS = 2
PROMPT = "The storm had raged for three days when the knock came at the lighthouse door."


def _tokenizer(folder: Path) -> str:
    if REAL_TOKENIZER.is_dir():
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
            shutil.copy2(REAL_TOKENIZER / name, folder / name)
        return "gpt2 (real)"
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import train_tokenizer

    train_tokenizer(folder)
    return "trained here (no ../shared/real)"


def build_checkpoint(folder: Path, layers: int) -> dict:
    """Random fp16 GPT-J weights in up to SHARDS safetensors files, one file in memory at a time."""
    from checkpoints import gptj_config, gptj_layer, save_shards  # bench/, this script's folder, is on sys.path

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(folder)
    rng = np.random.default_rng(0)
    groups = [list(part) for part in np.array_split(np.arange(layers), min(SHARDS, layers)) if len(part)]
    n = len(groups)

    def shards() -> Iterator[dict[str, np.ndarray]]:
        for s, group in enumerate(groups):
            shard: dict[str, np.ndarray] = {}
            if s == 0:
                shard["transformer.wte.weight"] = (rng.standard_normal((N_VOCAB, N_EMBD), np.float32) * 0.02).astype(
                    np.float16
                )
            for i in group:
                shard.update(gptj_layer(int(i), rng, N_EMBD, N_INNER))
            if s == n - 1:
                shard.update(
                    {
                        "transformer.ln_f.weight": np.ones(N_EMBD, np.float16),
                        "transformer.ln_f.bias": np.zeros(N_EMBD, np.float16),
                        "lm_head.weight": (rng.standard_normal((N_VOCAB, N_EMBD), np.float32) * 0.02).astype(
                            np.float16
                        ),
                        "lm_head.bias": np.zeros(N_VOCAB, np.float16),
                    }
                )
            yield shard
            del shard  # before the next one is made

    total = save_shards(folder, shards(), n)
    config = gptj_config(
        layers, n_embd=N_EMBD, n_inner=None, n_head=N_HEAD, rotary=ROTARY, vocab=N_VOCAB, n_positions=N_POS, eos=50256
    )
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return {"layers": layers, "bytes": total, "shards": n, "tokenizer": tokenizer}


def _rss(pid: int) -> int:
    """Resident bytes of a process and its children."""
    total = 0
    try:
        import psutil

        proc = psutil.Process(pid)
        for p in [proc, *proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
    except Exception:
        pass
    return total


def watched(argv: list[str], *, limit: int) -> dict:
    """Run a command in its own process group; kill it if its RSS passes `limit`. Peak RSS and wall time."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, cwd=ROOT)
    polled = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        polled = max(polled, _rss(proc.pid))
        if polled > limit:
            os.killpg(proc.pid, signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            raise SystemExit(f"{' '.join(argv[:4])} passed {limit / 2**30:.1f} GiB RSS and was killed")
        time.sleep(0.2)
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(map(str, argv[:5]))} failed: {err[-3000:]}")
    peak = max(usage.ru_maxrss * 1024, polled)
    return {"seconds": round(time.perf_counter() - started, 1), "peak_rss_mb": round(peak / 2**20), "stdout": out}


DECODE = """
import json, sys, time
from talesmith.runtime.engine.generate import collect, stream
from talesmith.runtime.settings import SamplingSettings
kind, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
started = time.perf_counter()
if kind == "onnx":
    from talesmith.runtime.engine.ort import OnnxBackend
    backend = OnnxBackend(path, n_ctx=256, threads=%d)
else:
    from talesmith.runtime.engine.llama import LlamaCppBackend
    backend = LlamaCppBackend(path, n_ctx=256, threads=%d)
loaded = time.perf_counter() - started
ids = backend.tokenize(%r)
settings = SamplingSettings(temperature=0, max_new_tokens=n, min_new_tokens=n)
timing = collect(stream(backend, ids, settings)).timing
print(json.dumps({"load_seconds": round(loaded, 1), "tokens": timing.generated_tokens,
                  "tokens_per_second": round(timing.tokens_per_second, 2)}))
""" % (THREADS, THREADS, PROMPT)  # noqa: UP031  (the script's own braces would need escaping for .format)


def decode(kind: str, path: Path, tokens: int, *, limit: int) -> dict:
    result = watched([sys.executable, "-c", DECODE, kind, str(path), str(tokens)], limit=limit)
    return {**json.loads(result["stdout"].strip().splitlines()[-1]), "peak_rss_mb": result["peak_rss_mb"]}


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=N_LAYER)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="decoding runs of each output, alternating")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/talesmith-onnx-scale"))
    parser.add_argument("--rss-limit-gb", type=float, default=8.0)
    parser.add_argument("--keep", action="store_true", help="keep the checkpoint and the outputs")
    parser.add_argument("--build-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_only:  # in its own process: a child forked from a big parent inherits its peak RSS
        print(json.dumps(build_checkpoint(args.build_only, args.layers)))
        return
    limit = int(args.rss_limit_gb * 2**30)
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    try:
        ckpt = work / "gptj-6b-random"
        built = watched(
            [sys.executable, __file__, "--layers", str(args.layers), "--build-only", str(ckpt)], limit=limit
        )
        report: dict = {
            "checkpoint": {
                **json.loads(built["stdout"]),
                "seconds": built["seconds"],
                "peak_rss_mb": built["peak_rss_mb"],
            }
        }
        cli = [
            sys.executable,
            "-m",
            "talesmith.cli.main",
            "convert",
            str(ckpt),
            "-o",
            str(work / "out"),
            "--name",
            "gptj6b",
            "--lock",
            str(work / "models.lock"),
        ]
        routes = {
            "onnx_int4": (["--to", "onnx", "--quant", "int4"], work / "out" / "gptj6b-onnx-int4", "onnx"),
            "gguf_q4_k_m": (["--to", "gguf", "--quant", "Q4_K_M"], work / "out" / "gptj6b-Q4_K_M.gguf", "gguf"),
        }
        for key, (extra, output, _kind) in routes.items():
            run = watched(cli + extra, limit=limit)
            size = _size(output)
            report[key] = {
                "seconds": run["seconds"],
                "peak_rss_mb": run["peak_rss_mb"],
                "output_mb": round(size / 2**20),
                "peak_rss_over_output": round(run["peak_rss_mb"] * 2**20 / size, 2),
            }
        runs: dict[str, list[dict]] = {key: [] for key in routes}
        for _ in range(args.rounds):  # alternating, so that the machine's load hits both alike
            for key, (_, output, kind) in routes.items():
                runs[key].append(decode(kind, output, args.tokens, limit=limit))
        for key, done in runs.items():
            speeds = [d["tokens_per_second"] for d in done]
            report[key]["decode"] = {
                "tokens": args.tokens,
                "tokens_per_second": round(statistics.median(speeds), 2),
                "runs": speeds,
                "load_seconds": max(d["load_seconds"] for d in done),
                "peak_rss_mb": max(d["peak_rss_mb"] for d in done),
            }
        onnx_speed = report["onnx_int4"]["decode"]["tokens_per_second"]
        gguf_speed = report["gguf_q4_k_m"]["decode"]["tokens_per_second"]
        report["onnx_int4_vs_gguf_q4_k_m"] = {
            "decode_speed": round(onnx_speed / gguf_speed, 3) if gguf_speed else None,
            "convert_seconds": round(report["onnx_int4"]["seconds"] / report["gguf_q4_k_m"]["seconds"], 3),
            "peak_rss": round(report["onnx_int4"]["peak_rss_mb"] / report["gguf_q4_k_m"]["peak_rss_mb"], 3),
            "output_size": round(report["onnx_int4"]["output_mb"] / report["gguf_q4_k_m"]["output_mb"], 3),
        }
        print(json.dumps(report, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
