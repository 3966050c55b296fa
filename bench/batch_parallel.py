"""Batch throughput with parallel sequences: aggregate tokens/s for --parallel 1, 4, 8, 16 in one run.

Every level runs the same rows through talesmith's batch path (`run_batch` with the sequential executor
for 1, the parallel one for the others) on the bundled model, writing a real output file; every record has the same length
(end-of-text is held off until `--tokens`). Aggregate tokens/s = generated tokens / wall time.
The levels run in turn, `--runs` rounds over all of them, so that load from elsewhere on the machine
falls on every level alike; each level's median is reported, and tokens per CPU second of this
process (a measure that other work on a shared machine does not skew). Prints JSON: the sequential
baseline, the rate at 16, their ratio (target: 2.0 on 2 CPU cores), the CPU-time ratio and the curve.

    python bench/batch_parallel.py [--rows 32] [--tokens 32] [--levels 1,4,8,16] [--ctx 512] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from talesmith.runtime.batch import RecordSpec, plan_batch, read_rows, run_batch
from talesmith.runtime.batch_output import OutputFile
from talesmith.runtime.batch_parallel import local_executor
from talesmith.runtime.engine.llama import LlamaCppBackend
from talesmith.runtime.models.resolve import bundled_model_path
from talesmith.runtime.settings import preset


def level(backend: LlamaCppBackend, rows_path: Path, folder: Path, n_seq: int, tokens: int) -> dict[str, float]:
    settings = preset("default").replace(max_new_tokens=tokens, min_new_tokens=tokens, seed=1)
    output = folder / f"out-{n_seq}.jsonl"
    output.unlink(missing_ok=True)
    with OutputFile(output) as out:
        plan = plan_batch(read_rows(rows_path, "raw"), 1, out, RecordSpec("raw", {}, settings, "bench", "bench", n_seq))
        counted = {"tokens": 0}

        def count(record: dict, timing: object) -> None:
            counted["tokens"] += int(record["completion_tokens"])

        started, cpu_started = time.perf_counter(), time.process_time()
        run_batch(plan, out, local_executor(backend, n_seq), on_record=count)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        generated = counted["tokens"]
    return {
        "parallel": n_seq,
        "records": out.count,
        "tokens": generated,
        "tokens_per_second": round(generated / seconds, 2),
        "tokens_per_cpu_second": round(generated / cpu_seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--levels", default="1,4,8,16")
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    backend = LlamaCppBackend(bundled_model_path(), n_ctx=args.ctx)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows_path = folder / "rows.jsonl"
        rows_path.write_text(
            "".join(
                json.dumps({"prompt": f"Story number {i}. Once upon a time, in a village by the sea, there lived"})
                + "\n"
                for i in range(args.rows)
            )
        )
        runs = [[level(backend, rows_path, folder, n, args.tokens) for n in levels] for _ in range(args.runs)]
    backend.close()
    curve = []
    for i, _n in enumerate(levels):
        rates = sorted(run[i]["tokens_per_second"] for run in runs)
        per_cpu = statistics.median(run[i]["tokens_per_cpu_second"] for run in runs)
        curve.append(
            {
                **runs[0][i],
                "tokens_per_second": statistics.median(rates),
                "runs": rates,
                "tokens_per_cpu_second": per_cpu,
            }
        )
    by_level = {c["parallel"]: c["tokens_per_second"] for c in curve}
    per_cpu = {c["parallel"]: c["tokens_per_cpu_second"] for c in curve}
    top = max(levels)
    print(
        json.dumps(
            {
                "model": "bundled gemma3-270m Q4_K_M",
                "cpu_count": os.cpu_count(),
                "load_average": os.getloadavg()[0],
                "rows": args.rows,
                "tokens_per_record": args.tokens,
                "runs": args.runs,
                "sequential_tokens_per_second": by_level.get(1),
                "parallel_tokens_per_second": by_level.get(top),
                "parallel_level": top,
                "ratio": round(by_level[top] / by_level[1], 2) if 1 in by_level else None,
                "cpu_ratio": round(per_cpu[top] / per_cpu[1], 2) if 1 in per_cpu else None,
                "curve": curve,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
