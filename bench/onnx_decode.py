"""Decoding speed on ONNX, one sequence: talesmith's session loop against onnxruntime-genai and optimum.

One random Llama-shaped model (8 layers, hidden 1024, about 90M parameters) is made here, converted by
`talesmith convert --to onnx` to fp32 and int4 (the int4 folder also gets onnxruntime-genai's own build,
`genai/`, when onnxruntime-genai is installed), and exported by optimum for its ORTModelForCausalLM.
Each contender generates the same number of tokens greedily from the same prompt (end-of-text
suppressed), with 2 intra-op threads, in this one run; the contenders alternate round by round so that
load from elsewhere on the machine falls on all alike: each one's median is reported as tokens/s over
the whole call (prompt included), and each ratio is the median of the ratios within a round.

- talesmith_int4, talesmith_fp32: talesmith.runtime.engine.generate.stream on the ONNX backend (its own
  session loop over one preallocated KV buffer, its numpy sampler chain).
- talesmith_int4_no_spin: the same with threads that sleep between steps (`--no-spin`).
- talesmith_int4_over_genai: the same loop with onnxruntime-genai's Generator running the forward passes.
- genai_int4: onnxruntime-genai's own greedy loop on its build.
- optimum_fp32: ORTModelForCausalLM.generate on optimum's own export of the checkpoint.

`profile` splits talesmith's time per token into the session's run and everything else (sampling,
text, bookkeeping), measured in calls of its own after the rounds (the timed runs carry no clock). Targets: talesmith int4 >= 1.0x onnxruntime-genai int4, fp32 >= 1.1x optimum.

    python bench/onnx_decode.py [--tokens 64] [--runs 9] [--workdir DIR] [--out results.json]

`--workdir` keeps the checkpoint and conversions for the next run. Needs the onnx and convert extras;
for the genai columns, `pip install onnxruntime-genai-cuda==0.15.2`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

THREADS = 2
CONTEXT = 1024
"""The context both engines hold room for: talesmith's n_ctx, onnxruntime-genai's max_length (its KV buffer)."""
PROMPT = "The storm had raged for three days when the knock came at the lighthouse door."
SHAPE = {"layers": 8, "hidden": 1024, "intermediate": 2816, "heads": 16, "kv_heads": 4}


def make_checkpoint(folder: Path) -> Path:
    """The random Llama, saved once in `folder`."""
    if (folder / "model.safetensors").exists():
        return folder
    import torch
    import transformers as tf

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from tiny_models import train_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    n_vocab = train_tokenizer(folder)
    config = tf.LlamaConfig(
        vocab_size=n_vocab,
        hidden_size=SHAPE["hidden"],
        intermediate_size=SHAPE["intermediate"],
        num_hidden_layers=SHAPE["layers"],
        num_attention_heads=SHAPE["heads"],
        num_key_value_heads=SHAPE["kv_heads"],
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    tf.LlamaForCausalLM(config).eval().save_pretrained(folder, safe_serialization=True)
    return folder


def convert_model(
    checkpoint: Path, out: Path, *, targets=("onnx",), quants=("fp32", "int4"), gguf=()
) -> dict[str, Path]:
    """talesmith's conversions of the checkpoint, by kind in lower case (fp32, int4, q4_k_m), made once."""
    from talesmith.convert.pipeline import ConvertRequest, convert

    names = {q: out / f"bench-onnx-{q}" for q in quants} | {q.lower(): out / f"bench-{q}.gguf" for q in gguf}
    if all(p.exists() for p in names.values()):
        return names
    request = ConvertRequest(
        str(checkpoint), out, targets=targets, onnx_quants=quants, quants=tuple(gguf), name="bench", quality=False
    )
    for o in convert(request, lock=out / "models.lock"):
        names[o.kind.lower().removeprefix("onnx-")] = o.path
    return names


def optimum_export(checkpoint: Path, out: Path) -> Path:
    if not (out / "model.onnx").exists():
        from optimum.exporters.onnx import main_export

        main_export(str(checkpoint), output=str(out), task="text-generation-with-past")
    return out


def genai_folder(int4: Path) -> Path | None:
    """The converter's onnxruntime-genai build, with 2 intra-op threads in its config."""
    out = int4 / "genai"
    config_path = out / "genai_config.json"
    if not config_path.exists():
        return None
    config = json.loads(config_path.read_text())
    options = config["model"]["decoder"].setdefault("session_options", {})
    options["intra_op_num_threads"] = THREADS
    options["inter_op_num_threads"] = 1
    config_path.write_text(json.dumps(config, indent=2))
    return out


class Clock:
    """Time spent inside ONNX Runtime's run (talesmith's session loop), summed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.runs = 0

    def reset(self) -> None:
        self.seconds, self.runs = 0.0, 0


class _Timed:
    """An InferenceSession whose run_with_iobinding is timed (the session itself cannot take new attributes)."""

    def __init__(self, session, clock: Clock) -> None:
        self._session = session
        self._clock = clock

    def __getattr__(self, name):
        return getattr(self._session, name)

    def run_with_iobinding(self, binding) -> None:
        started = time.perf_counter()
        try:
            self._session.run_with_iobinding(binding)
        finally:
            self._clock.seconds += time.perf_counter() - started
            self._clock.runs += 1


def talesmith_runner(
    folder: Path, tokens: int, engine: str = "session", clock: Clock | None = None, *, spin: bool = True
):
    from talesmith.runtime.engine.generate import collect, stream
    from talesmith.runtime.engine.ort import open_onnx
    from talesmith.runtime.settings import SamplingSettings

    backend = open_onnx(folder, n_ctx=CONTEXT, threads=THREADS, engine=engine, spin=spin)
    if clock is not None:
        cache = backend.engine.cache  # type: ignore[attr-defined]
        cache.session = _Timed(cache.session, clock)
    prompt = backend.tokenize(PROMPT)
    settings = SamplingSettings(temperature=0, max_new_tokens=tokens, min_new_tokens=tokens)

    def run() -> list[int]:
        backend.reset()  # every run evaluates its prompt, as the others do
        return list(collect(stream(backend, prompt, settings)).tokens)

    return run


def optimum_runner(folder: Path, tokens: int):
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoTokenizer

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    model = ORTModelForCausalLM.from_pretrained(folder, session_options=options, provider="CPUExecutionProvider")
    ids = torch.tensor([AutoTokenizer.from_pretrained(folder)(PROMPT)["input_ids"]])

    def run() -> list[int]:
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            pad_token_id=0,
        )
        return out[0, ids.shape[1] :].tolist()

    return run


def genai_runner(folder: Path, tokens: int, checkpoint: Path):
    import onnxruntime_genai as og
    from transformers import AutoTokenizer

    model = og.Model(str(folder))
    ids = AutoTokenizer.from_pretrained(checkpoint)(PROMPT)["input_ids"]

    def run() -> list[int]:
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=CONTEXT, min_length=len(ids) + tokens, do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(ids)
        out = []
        while len(out) < tokens and not generator.is_done():
            generator.generate_next_token()
            out.append(int(generator.get_next_tokens()[0]))
        return out

    return run


PAUSE = 0.2
"""Seconds between two runners (not timed): the last one's ONNX Runtime threads, which spin for a while after
their work, go to sleep before the next runner starts. Without it each runner's first steps shared the cores
with the one before's threads: talesmith's 17-token prompt took 30-50 ms in the rounds, 8.6 ms alone."""


def alternate(
    runners: dict[str, Callable[[], list[int]]], runs: int, *, warm: Callable[[], None] = lambda: None
) -> tuple[dict[str, list[float]], dict]:
    """Each runner once to warm up (its output kept; then `warm()`), then `runs` rounds over all of them in turn."""
    outputs = {name: run() for name, run in runners.items()}
    warm()
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(runs):
        for name, run in runners.items():
            time.sleep(PAUSE)
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return times, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--workdir", type=Path, default=None, help="Keep the model and conversions here.")
    parser.add_argument("--out", type=Path, default=None, help="Also write the JSON here.")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    with tempfile.TemporaryDirectory(prefix="talesmith-bench-") as tmp:
        root = args.workdir or Path(tmp)
        started = time.perf_counter()
        checkpoint = make_checkpoint(root / "llama")
        folders = convert_model(checkpoint, root / "onnx")
        optimum = optimum_export(checkpoint, root / "optimum")
        genai = genai_folder(folders["int4"])
        setup = time.perf_counter() - started
        runners = {
            "talesmith_int4": talesmith_runner(folders["int4"], args.tokens),
            "talesmith_int4_no_spin": talesmith_runner(folders["int4"], args.tokens, spin=False),
            "talesmith_fp32": talesmith_runner(folders["fp32"], args.tokens),
            "optimum_fp32": optimum_runner(optimum, args.tokens),
        }
        if genai is not None:
            runners["genai_int4"] = genai_runner(genai, args.tokens, checkpoint)
            runners["talesmith_int4_over_genai"] = talesmith_runner(folders["int4"], args.tokens, engine="genai")
        times, outputs = alternate(runners, args.runs)
        clock, profiled = Clock(), 0.0  # the split, in calls of their own: the timed rounds carry no clock
        run = talesmith_runner(folders["int4"], args.tokens, clock=clock)
        run()
        clock.reset()
        for _ in range(args.runs):
            time.sleep(PAUSE)
            started = time.perf_counter()
            run()
            profiled += time.perf_counter() - started
    speed = {k: round(args.tokens / statistics.median(v), 1) for k, v in times.items()}

    def ratio(a: str, b: str) -> float:
        """The median over rounds of b's time / a's time in the same round: load that changes between rounds cancels."""
        return round(statistics.median(tb / ta for ta, tb in zip(times[a], times[b], strict=True)), 2)

    ratios = {
        "talesmith_fp32_vs_optimum_fp32": ratio("talesmith_fp32", "optimum_fp32"),
        "talesmith_int4_vs_talesmith_int4_no_spin": ratio("talesmith_int4", "talesmith_int4_no_spin"),
    }
    if "genai_int4" in speed:
        ratios["talesmith_int4_vs_genai_int4"] = ratio("talesmith_int4", "genai_int4")
        ratios["talesmith_int4_no_spin_vs_genai_int4"] = ratio("talesmith_int4_no_spin", "genai_int4")
        ratios["talesmith_int4_over_genai_vs_genai_int4"] = ratio("talesmith_int4_over_genai", "genai_int4")
    calls = args.runs
    result = {
        "model": {"architecture": "llama", **SHAPE, "quantizations": ["fp32", "int4 (MatMulNBits, accuracy level 4)"]},
        "tokens": args.tokens,
        "runs": args.runs,
        "threads": THREADS,
        "load_average": round(os.getloadavg()[0], 2),
        "setup_seconds": round(setup, 1),
        "tokens_per_second": speed,
        "ratios": ratios,
        "targets": {"talesmith_int4_vs_genai_int4": 1.0, "talesmith_fp32_vs_optimum_fp32": 1.1},
        "profile_talesmith_int4_ms_per_token": {
            "onnxruntime_run": round(1000 * clock.seconds / calls / args.tokens, 3),
            "everything_else": round(1000 * (profiled - clock.seconds) / calls / args.tokens, 3),
            "session_runs_per_call": round(clock.runs / calls, 1),
        },
        "greedy_agrees": {
            "talesmith_fp32_vs_optimum_fp32": outputs["talesmith_fp32"] == outputs["optimum_fp32"],
            "talesmith_int4_vs_genai_int4": outputs["talesmith_int4"] == outputs.get("genai_int4"),
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
