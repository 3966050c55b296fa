"""Batch throughput with parallel sequences: aggregate tokens/s for --parallel 1, 4, 8, 16 in one run.

Every level runs the same rows through talesmith's batch path (`run_batch` with the sequential executor
for 1, the parallel one for the others), writing a real output file; every record has the same length
(end-of-text is held off until `--tokens`). Aggregate tokens/s = generated tokens / wall time.
The levels run in turn, `--runs` rounds over all of them, so that load from elsewhere on the machine
falls on every level alike; each level's median is reported, and tokens per CPU second of this
process (a measure that other work on a shared machine does not skew). Prints JSON: the sequential
baseline, the rate at the top level, their ratio, the CPU-time ratio and the curve.

`--backend llama` (the default) decodes the bundled model (target: 2.0 at 16 on 2 CPU cores).
`--backend onnx` makes onnx_decode.py's random Llama (8 layers, hidden 1024), converts it to ONNX int4
and to GGUF Q4_K_M, and runs the ONNX levels and llama.cpp at 1 and 8 sequences on the same model shape
in the same rounds (targets: ONNX 8 vs 1 >= 2.5x, 16 vs 1 >= 3x; ONNX vs llama.cpp at 8 is reported).
Ratios are medians of the ratios within each round. With --backend onnx, `onnx_cpu_costs` holds the CPU time
of the model's runs against one decode step of one row: a decode step of each level's rows, and one prompt
token (the bench's prompt length, random tokens), in prompts evaluated alone and in one run of all rows;
and the CPU-time ratio of each level to 1 that these costs allow for the bench's prompt and generated tokens.

    python bench/batch_parallel.py [--backend llama|onnx] [--rows 32] [--tokens 32] [--levels 1,4,8,16]
        [--ctx 512] [--runs 3] [--quant int4|int4-b128] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from talesmith.runtime.batch import RecordSpec, plan_batch, read_rows, run_batch
from talesmith.runtime.batch_output import OutputFile
from talesmith.runtime.batch_parallel import local_executor
from talesmith.runtime.engine.llama import LlamaCppBackend
from talesmith.runtime.models.resolve import bundled_model_path
from talesmith.runtime.settings import preset

THREADS = 2
PAUSE = 0.2
"""Seconds before each level (not timed): the last level's spinning threads go to sleep first."""


def level(backend: Any, rows_path: Path, folder: Path, n_seq: int, tokens: int) -> dict[str, float]:
    settings = preset("default").replace(max_new_tokens=tokens, min_new_tokens=tokens, seed=1)
    output = folder / f"out-{backend.name}-{n_seq}.jsonl"
    output.unlink(missing_ok=True)
    with OutputFile(output) as out:
        plan = plan_batch(read_rows(rows_path, "raw"), 1, out, RecordSpec("raw", {}, settings, "bench", "bench", n_seq))
        counted = {"tokens": 0, "prompt_tokens": 0}

        def count(record: dict, timing: object) -> None:
            counted["tokens"] += int(record["completion_tokens"])
            counted["prompt_tokens"] += int(record["prompt_tokens"])

        time.sleep(PAUSE)
        started, cpu_started = time.perf_counter(), time.process_time()
        run_batch(plan, out, local_executor(backend, n_seq), on_record=count)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        generated = counted["tokens"]
    return {
        "parallel": n_seq,
        "records": out.count,
        "tokens": generated,
        "prompt_tokens": counted["prompt_tokens"],
        "tokens_per_second": round(generated / seconds, 2),
        "tokens_per_cpu_second": round(generated / cpu_seconds, 2),
    }


def onnx_contenders(
    workdir: Path, levels: list[int], ctx: int, quant: str = "int4"
) -> tuple[list[tuple[str, Any, int]], str]:
    """The ONNX levels and llama.cpp at 1 and 8 sequences, on one random Llama converted to both; and the
    lowest and highest ONNX level again with threads that sleep between steps (`--no-spin`)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from onnx_decode import SHAPE, convert_model, make_checkpoint

    from talesmith.runtime.engine.ort import OnnxBackend

    checkpoint = make_checkpoint(workdir / "llama")
    folders = convert_model(checkpoint, workdir / "batch", targets=("gguf", "onnx"), quants=(quant,), gguf=("Q4_K_M",))
    onnx = OnnxBackend(folders[quant], n_ctx=ctx, threads=THREADS)
    sleeping = OnnxBackend(folders[quant], n_ctx=ctx, threads=THREADS, spin=False)
    llama = LlamaCppBackend(folders["q4_k_m"], n_ctx=ctx, threads=THREADS)
    contenders = [(f"onnx_{n}", onnx, n) for n in levels] + [(f"llama_{n}", llama, n) for n in (1, 8)]
    contenders += [(f"onnx_{n}_no_spin", sleeping, n) for n in sorted({min(levels), max(levels)})]
    return contenders, f"random Llama {SHAPE}: ONNX {quant} and GGUF Q4_K_M"


def onnx_costs(backend: Any, levels: list[int], prompt: int, rounds: int) -> dict[str, Any]:
    """CPU time of the ONNX model's runs, against one decode step of one row (medians over `rounds`): a decode
    step of n rows (rows holding `prompt` tokens), and one prompt token, in prompts evaluated alone and as
    the rows of one run. CPU time, so that other work on a shared machine does not skew the ratios."""
    import numpy as np

    from talesmith.runtime.engine.ort_session import RowCache

    top = max(levels)
    # threads that sleep between runs: a spinning thread's wait would count as CPU time
    cache = RowCache(backend.folder, rows=top, positions=prompt + 16, device="cpu", threads=THREADS, spin=False)
    prompts = np.random.default_rng(0).integers(3, backend.n_vocab, size=(top, prompt)).tolist()

    def cpu(run: Any) -> float:
        started = time.process_time()
        run()
        return time.process_time() - started

    def fill(together: bool) -> None:
        for row in range(top):
            cache.truncate(row, 0)
        if together:
            cache.prefill_rows(dict(enumerate(prompts)))
        else:
            for row, tokens in enumerate(prompts):
                cache.prefill(row, tokens)

    def decode(n: int) -> None:
        for _ in range(8):
            cache.decode(dict.fromkeys(range(n), 1))
        for row in range(n):
            cache.truncate(row, prompt)

    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        for together in (False, True):
            samples.setdefault(f"prompt_{'together' if together else 'alone'}", []).append(
                cpu(lambda t=together: fill(t)) / (top * prompt)
            )
        for n in {1, *levels}:
            samples.setdefault(f"step_{n}", []).append(cpu(lambda n=n: decode(n)) / 8)
    cache.close()
    med = {name: statistics.median(v) for name, v in samples.items()}
    one = med["step_1"]
    return {
        "step_vs_step_1": {n: round(med[f"step_{n}"] / one, 2) for n in levels if n > 1},
        "prompt_token_vs_step_1": {
            "alone": round(med["prompt_alone"] / one, 3),
            "rows_in_one_run": round(med["prompt_together"] / one, 3),
        },
        "step_1_ms": round(one * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["llama", "onnx"], default="llama")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--levels", default=None, help="Default 1,4,8,16 (llama), 1,8,16 (onnx).")
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quant", default="int4", help="The ONNX quantization (--backend onnx): int4, int4-b128, ...")
    parser.add_argument("--workdir", type=Path, default=None, help="Keep the ONNX bench model here.")
    args = parser.parse_args()
    levels = [int(x) for x in (args.levels or ("1,8,16" if args.backend == "onnx" else "1,4,8,16")).split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.backend == "onnx":
            contenders, model = onnx_contenders(args.workdir or folder, levels, args.ctx, args.quant)
        else:
            backend = LlamaCppBackend(bundled_model_path(), n_ctx=args.ctx)
            contenders, model = [(f"llama_{n}", backend, n) for n in levels], "bundled gemma3-270m Q4_K_M"
        rows_path = folder / "rows.jsonl"
        rows_path.write_text(
            "".join(
                json.dumps({"prompt": f"Story number {i}. Once upon a time, in a village by the sea, there lived"})
                + "\n"
                for i in range(args.rows)
            )
        )
        runs = [
            {name: level(backend, rows_path, folder, n, args.tokens) for name, backend, n in contenders}
            for _ in range(args.runs)
        ]
        costs = None
        if args.backend == "onnx":
            first = runs[0][contenders[0][0]]
            prompt = round(first["prompt_tokens"] / first["records"])
            costs = onnx_costs(contenders[0][1], levels, prompt, args.runs)
            # the CPU ratio n vs 1 that the runs alone allow for this bench's tokens (no sampling, no text)
            g, p = first["tokens"], first["prompt_tokens"]
            per_token = costs["prompt_token_vs_step_1"]
            costs["runs_only_cpu_ratio"] = {
                n: round((g + p * per_token["alone"]) / (g * step / n + p * per_token["rows_in_one_run"]), 2)
                for n, step in costs["step_vs_step_1"].items()
            }
    for backend in {id(b): b for _, b, _ in contenders}.values():
        backend.close()
    curve = []
    for name, _backend, _n in contenders:
        rates = sorted(run[name]["tokens_per_second"] for run in runs)
        per_cpu = statistics.median(run[name]["tokens_per_cpu_second"] for run in runs)
        curve.append(
            {
                "name": name,
                **runs[0][name],
                "tokens_per_second": statistics.median(rates),
                "runs": rates,
                "tokens_per_cpu_second": per_cpu,
            }
        )

    def ratio(a: str, b: str) -> float:
        """a's rate over b's, the median over rounds of the ratio within each round."""
        return round(statistics.median(r[a]["tokens_per_second"] / r[b]["tokens_per_second"] for r in runs), 2)

    def cpu_ratio(a: str, b: str) -> float:
        return round(statistics.median(r[a]["tokens_per_cpu_second"] / r[b]["tokens_per_cpu_second"] for r in runs), 2)

    prefix = contenders[0][0].split("_")[0]
    base, top = f"{prefix}_1", f"{prefix}_{max(levels)}"
    names = {c["name"] for c in curve}
    ratios = {
        f"{name}_vs_{base}": ratio(name, base)
        for name in names
        if name.startswith(prefix) and name != base and not name.endswith("_no_spin")
    }
    for name in sorted(n for n in names if n.endswith("_no_spin")):
        level_1 = name.split("_")[0] + "_1_no_spin"
        if name != level_1 and level_1 in names:
            ratios[f"{name}_vs_{level_1}"] = ratio(name, level_1)
        ratios[f"{name.removesuffix('_no_spin')}_vs_{name}"] = ratio(name.removesuffix("_no_spin"), name)
    if {"onnx_8", "llama_8"} <= names:
        ratios["onnx_8_vs_llama_8"] = ratio("onnx_8", "llama_8")
        ratios["llama_8_vs_llama_1"] = ratio("llama_8", "llama_1")
    by_name = {c["name"]: c["tokens_per_second"] for c in curve}
    print(
        json.dumps(
            {
                "model": model,
                "backend": args.backend,
                "cpu_count": os.cpu_count(),
                "load_average": os.getloadavg()[0],
                "rows": args.rows,
                "tokens_per_record": args.tokens,
                "runs": args.runs,
                "sequential_tokens_per_second": by_name.get(base),
                "parallel_tokens_per_second": by_name.get(top),
                "parallel_level": max(levels),
                "ratio": ratio(top, base) if base in names and top != base else None,
                "cpu_ratio": cpu_ratio(top, base) if base in names and top != base else None,
                "ratios": ratios,
                **({"onnx_cpu_costs": costs} if costs else {}),
                "curve": curve,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
