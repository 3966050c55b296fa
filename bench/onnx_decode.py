"""Decoding speed on ONNX: talesmith's ONNX backend against optimum, onnxruntime-genai and PyTorch.

One random Llama-shaped model (8 layers, hidden 1024, about 90M parameters) is made here, converted
by `talesmith convert --to onnx` to fp32 and int4, and built by onnxruntime-genai's own builder
(int4, CPU). Each contender generates the same number of tokens greedily from the same prompt
(end-of-text suppressed), with 2 threads, in this one run; runs alternate so that machine noise
hits all alike, and the median is reported as tokens/s over the whole call (prompt included).

- talesmith: talesmith.runtime.engine.generate.stream on the ONNX backend (its numpy sampler chain): for int4,
  the forward passes go through onnxruntime-genai's Generator on the build the converter adds (genai/);
  `talesmith_int4_session` is the bare ONNX Runtime session loop on talesmith's own int4 model.onnx.
- optimum: ORTModelForCausalLM.generate on the same folders.
- genai: onnxruntime-genai's own greedy Generator loop on that same build (intra_op_num_threads 2).
- pytorch: transformers' generate on the checkpoint, fp32.

Targets: talesmith int4 >= 1.2x optimum int4, and >= 0.8x onnxruntime-genai int4.

    python bench/onnx_decode.py [--tokens 128] [--runs 3] [--out results.json]

Needs the onnx extra and, for the genai column, `pip install onnxruntime-genai-cuda==0.15.2`.
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

THREADS = 2
PROMPT = "The storm had raged for three days when the knock came at the lighthouse door."


def make_checkpoint(folder: Path) -> Path:
    import torch
    import transformers as tf

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from tiny_models import train_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    n_vocab = train_tokenizer(folder)
    config = tf.LlamaConfig(
        vocab_size=n_vocab,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=8,
        num_attention_heads=16,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    tf.LlamaForCausalLM(config).eval().save_pretrained(folder, safe_serialization=True)
    return folder


def convert_onnx(checkpoint: Path, out: Path) -> dict[str, Path]:
    from talesmith.convert.pipeline import ConvertRequest, convert

    outputs = convert(
        ConvertRequest(str(checkpoint), out, targets=("onnx",), onnx_quants=("fp32", "int4"), name="bench"),
        lock=out / "models.lock",
    )
    return {o.kind.split("-")[1].lower(): o.path for o in outputs}


def genai_folder(int4: Path) -> Path | None:
    """The converter's onnxruntime-genai build, with 2 intra-op threads in its config."""
    out = int4 / "genai"
    if not (out / "genai_config.json").exists():
        return None
    config_path = out / "genai_config.json"
    config = json.loads(config_path.read_text())
    options = config["model"]["decoder"].setdefault("session_options", {})
    options["intra_op_num_threads"] = THREADS
    options["inter_op_num_threads"] = 1
    config_path.write_text(json.dumps(config, indent=2))
    return out


def talesmith_runner(folder: Path, tokens: int, engine: str = "auto"):
    from talesmith.runtime.engine.generate import collect, stream
    from talesmith.runtime.engine.ort import open_onnx
    from talesmith.runtime.settings import SamplingSettings

    backend = open_onnx(folder, n_ctx=1024, threads=THREADS, engine=engine)
    print(f"talesmith on {folder.name}: {backend.name}", file=sys.stderr)
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
        params.set_search_options(max_length=len(ids) + tokens, min_length=len(ids) + tokens, do_sample=False)
        generator = og.Generator(model, params)
        generator.append_tokens(ids)
        out = []
        while not generator.is_done():
            generator.generate_next_token()
            out.append(int(generator.get_next_tokens()[0]))
        return out[:tokens]

    return run


def pytorch_runner(checkpoint: Path, tokens: int):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(THREADS)
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    ids = torch.tensor([AutoTokenizer.from_pretrained(checkpoint)(PROMPT)["input_ids"]])

    def run() -> list[int]:
        with torch.no_grad():
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="Also write the JSON here.")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    with tempfile.TemporaryDirectory(prefix="talesmith-bench-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        checkpoint = make_checkpoint(root / "llama")
        folders = convert_onnx(checkpoint, root / "onnx")
        genai = genai_folder(folders["int4"])
        setup = time.perf_counter() - started
        runners = {
            "talesmith_fp32": talesmith_runner(folders["fp32"], args.tokens),
            "talesmith_int4": talesmith_runner(folders["int4"], args.tokens),
            "talesmith_int4_session": talesmith_runner(folders["int4"], args.tokens, engine="session"),
            "optimum_fp32": optimum_runner(folders["fp32"], args.tokens),
            "optimum_int4": optimum_runner(folders["int4"], args.tokens),
            "pytorch_fp32": pytorch_runner(checkpoint, args.tokens),
        }
        if genai is not None:
            runners["genai_int4"] = genai_runner(genai, args.tokens, checkpoint)
        outputs: dict[str, list[int]] = {}
        times: dict[str, list[float]] = {k: [] for k in runners}
        for name, run in runners.items():  # warm up: first-run allocations are not decoding speed
            outputs[name] = run()
        for _ in range(args.runs):
            for name, run in runners.items():
                t = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t)
        speed = {k: round(args.tokens / statistics.median(v), 1) for k, v in times.items()}
        n_params = sum(
            p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(checkpoint).parameters()
        )
    ratios = {
        "talesmith_int4_vs_optimum_int4": round(speed["talesmith_int4"] / speed["optimum_int4"], 2),
        "talesmith_fp32_vs_optimum_fp32": round(speed["talesmith_fp32"] / speed["optimum_fp32"], 2),
        "talesmith_int4_vs_pytorch_fp32": round(speed["talesmith_int4"] / speed["pytorch_fp32"], 2),
        "talesmith_int4_session_vs_optimum_int4": round(speed["talesmith_int4_session"] / speed["optimum_int4"], 2),
    }
    if "genai_int4" in speed:
        ratios["talesmith_int4_vs_genai_int4"] = round(speed["talesmith_int4"] / speed["genai_int4"], 2)
        ratios["genai_int4_vs_optimum_int4"] = round(speed["genai_int4"] / speed["optimum_int4"], 2)
    result = {
        "model": {"architecture": "llama", "layers": 8, "hidden": 1024, "parameters": n_params},
        "tokens": args.tokens,
        "runs": args.runs,
        "threads": THREADS,
        "setup_seconds": round(setup, 1),
        "tokens_per_second": speed,
        "ratios": ratios,
        "targets": {"talesmith_int4_vs_optimum_int4": 1.2, "talesmith_int4_vs_genai_int4": 0.8},
        "greedy_agrees": {
            "talesmith_fp32_vs_optimum_fp32": outputs["talesmith_fp32"] == outputs["optimum_fp32"],
            "talesmith_fp32_vs_pytorch_fp32": outputs["talesmith_fp32"] == outputs["pytorch_fp32"],
            "talesmith_int4_session_vs_optimum_int4": outputs["talesmith_int4_session"] == outputs["optimum_int4"],
            "talesmith_int4_vs_genai_int4": outputs["talesmith_int4"] == outputs.get("genai_int4"),
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
