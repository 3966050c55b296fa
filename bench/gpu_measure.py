"""The measurements of bench/gpu_check.sh, one per process (torch's and llama.cpp's CUDA libraries
never meet in one process). Each subcommand prints one JSON object.

    python bench/gpu_measure.py build-llama OUT [--layers 22 --hidden 2048 --inter 5632 --heads 32 --kv-heads 4]
    python bench/gpu_measure.py decode MODEL [--gpu-layers -1] [--backend onnx --device cuda] [--tokens 128]
    python bench/gpu_measure.py first-token MODEL [--gpu-layers -1] [--prompt-tokens 2000]
    python bench/gpu_measure.py merge CHECKPOINT LORA --device cuda
    python bench/gpu_measure.py batch MODEL --parallel 16 [--rows 32] [--gpu-layers -1]
    python bench/gpu_measure.py part KEY RC SECONDS STDOUT_FILE LOG_FILE   (one result for merge-json)
    python bench/gpu_measure.py merge-json OUT.json PART.json...
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
STORY = (
    "[ Title: The Lighthouse Keeper; Author: A. Keeper; Genre: Mystery; Tags: storm, sea; Style: slow ]\n***\n"
    "The storm had raged for three days when the knock came at the lighthouse door. "
)


def build_llama(out: Path, *, layers: int, hidden: int, inter: int, heads: int, kv_heads: int) -> dict:
    """A Llama-shaped checkpoint with random f16 weights and a LoRA adapter on its MLP, written to `out`."""
    from safetensors.numpy import save_file

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import train_tokenizer

    folder, lora = out / "llama", out / "lora"
    folder.mkdir(parents=True, exist_ok=True)
    lora.mkdir(exist_ok=True)
    vocab = train_tokenizer(folder)
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

    kv = hidden // heads * kv_heads
    tensors = {
        "model.embed_tokens.weight": w(vocab, hidden),
        "model.norm.weight": np.ones(hidden, np.float16),
        "lm_head.weight": w(vocab, hidden),
    }
    for i in range(layers):
        p = f"model.layers.{i}"
        tensors.update(
            {
                f"{p}.input_layernorm.weight": np.ones(hidden, np.float16),
                f"{p}.post_attention_layernorm.weight": np.ones(hidden, np.float16),
                f"{p}.self_attn.q_proj.weight": w(hidden, hidden),
                f"{p}.self_attn.k_proj.weight": w(kv, hidden),
                f"{p}.self_attn.v_proj.weight": w(kv, hidden),
                f"{p}.self_attn.o_proj.weight": w(hidden, hidden),
                f"{p}.mlp.gate_proj.weight": w(inter, hidden),
                f"{p}.mlp.up_proj.weight": w(inter, hidden),
                f"{p}.mlp.down_proj.weight": w(hidden, inter),
            }
        )
    params = sum(t.size for t in tensors.values())
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "hidden_size": hidden,
                "intermediate_size": inter,
                "num_hidden_layers": layers,
                "num_attention_heads": heads,
                "num_key_value_heads": kv_heads,
                "max_position_embeddings": 4096,
                "rms_norm_eps": 1e-5,
                "vocab_size": vocab,
                "bos_token_id": 0,
                "eos_token_id": 0,
                "tie_word_embeddings": False,
            }
        )
    )
    adapter = {
        f"base_model.model.model.layers.{i}.mlp.{m}.lora_{x}.weight": rng.standard_normal(
            (16, hidden) if x == "A" else (inter, 16), dtype=np.float32
        )
        * 0.01
        for i in range(layers)
        for m in ("gate_proj", "up_proj")
        for x in "AB"
    }
    save_file(adapter, str(lora / "adapter_model.safetensors"))
    (lora / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["gate_proj", "up_proj"]})
    )
    return {"params_millions": round(params / 1e6, 1), "layers": layers, "hidden": hidden}


def _open(model: str, *, gpu_layers: int, backend: str | None, device: str, n_ctx: int):
    from talesmith.runtime.engine.loading import open_backend

    return open_backend(model, backend=backend, device=device, n_ctx=n_ctx, gpu_layers=gpu_layers)


def _settings(n: int):
    from talesmith.runtime.settings import preset

    return preset("default", seed=1, max_new_tokens=n, min_new_tokens=n)


def _run(backend, tokens: list[int], n: int):
    from talesmith.runtime.engine.generate import stream

    backend.reset()
    *_, chunk = stream(backend, tokens, _settings(n))
    return chunk.timing


def decode(model: str, *, gpu_layers: int, backend: str | None, device: str, tokens: int, runs: int) -> dict:
    """Median decode tokens/s of `runs` generations of `tokens` tokens after a warm-up, from an empty cache."""
    opened = _open(model, gpu_layers=gpu_layers, backend=backend, device=device, n_ctx=1024)
    prompt = opened.tokenize(STORY)
    _run(opened, prompt, 8)  # warm-up: CUDA kernels, cuBLAS handles, ONNX Runtime's first run
    timings = [_run(opened, prompt, tokens) for _ in range(runs)]
    name = opened.name
    opened.close()
    return {
        "backend": name,
        "tokens_per_second": round(statistics.median(t.tokens_per_second for t in timings), 1),
        "runs": runs,
        "tokens": tokens,
    }


def first_token(model: str, *, gpu_layers: int, prompt_tokens: int) -> dict:
    """Seconds to the first token of a story of `prompt_tokens` tokens, evaluated from an empty cache."""
    opened = _open(model, gpu_layers=gpu_layers, backend=None, device="cpu", n_ctx=prompt_tokens + 256)
    text = STORY * (prompt_tokens // max(len(opened.tokenize(STORY, add_bos=False)), 1) + 1)
    prompt = opened.tokenize(text)[:prompt_tokens]
    _run(opened, prompt[:64], 2)  # warm-up
    timings = [_run(opened, prompt, 2) for _ in range(3)]
    opened.close()
    return {
        "prompt_tokens": len(prompt),
        "first_token_seconds": round(statistics.median(t.first_token_seconds for t in timings), 4),
    }


def merge(checkpoint: str, lora: str, *, device: str) -> dict:
    """Seconds to merge the adapter into every tensor it touches (read, merge, hand back), on `device`."""
    from talesmith.convert.lora import MergedWeights, read_adapter
    from talesmith.convert.source import open_checkpoint

    ckpt, _ = open_checkpoint(Path(checkpoint))
    adapter = read_adapter(Path(lora), 1.0)
    if device == "cuda":
        import torch

        torch.zeros(1, device="cuda")  # CUDA context outside the timing
    merged = MergedWeights(ckpt, [adapter], device=device)
    started = time.perf_counter()
    checksum = sum(float(np.asarray(merged.get(name), dtype=np.float32).ravel()[0]) for name in merged.merged_names)
    return {
        "seconds": round(time.perf_counter() - started, 3),
        "tensors": len(merged.merged_names),
        "checksum": round(checksum, 6),
    }


def batch(model: str, *, parallel: int, rows: int, gpu_layers: int, tokens: int, work: Path) -> dict:
    """Wall time and generated tokens/s of `talesmith batch --parallel N` over `rows` prompts."""
    work.mkdir(parents=True, exist_ok=True)
    source = work / "prompts.jsonl"
    source.write_text("".join(json.dumps({"id": str(i), "prompt": f"Story {i}: {STORY}"}) + "\n" for i in range(rows)))
    out = work / f"out-{parallel}.jsonl"
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "talesmith.cli.main",
            "batch",
            str(source),
            "-o",
            str(out),
            "-m",
            model,
            "--parallel",
            str(parallel),
            "--gpu-layers",
            str(gpu_layers),
            "--seed",
            "1",
            "--max-new-tokens",
            str(tokens),
            "--min-new-tokens",
            str(tokens),
        ],
        check=True,
        capture_output=True,
    )
    seconds = time.perf_counter() - started
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    generated = sum(r.get("completion_tokens", tokens) for r in records)
    return {
        "parallel": parallel,
        "rows": len(records),
        "seconds": round(seconds, 2),
        "tokens_per_second": round(generated / seconds, 1),
    }


def part(key: str, rc: int, seconds: int, stdout: Path, log: Path) -> dict:
    """{"key", "value"}: the step's last JSON line when it succeeded (else its time), or its exit status
    and the last lines of its log when it failed."""
    lines = (
        [line for line in stdout.read_text(errors="replace").splitlines() if line.strip()] if stdout.exists() else []
    )
    if rc == 0:
        try:
            return {"key": key, "value": json.loads(lines[-1])}
        except (ValueError, IndexError):
            return {"key": key, "value": {"ok": True, "seconds": seconds}}
    tail = log.read_text(errors="replace").splitlines()[-12:] if log.exists() else []
    why = "timed out" if rc in (124, 137) else f"crashed (signal {rc - 128})" if rc > 128 else f"exit status {rc}"
    return {"key": key, "value": {"error": why, "log": str(log), "tail": tail}}


def merge_json(out: Path, parts: list[Path]) -> dict:
    """One object from the parts (each {"key": ..., "value": ...}), with the ratios against each baseline."""
    result: dict = {}
    for part in parts:
        data = json.loads(part.read_text())
        node = result
        *path, last = data["key"].split(".")
        for k in path:
            node = node.setdefault(k, {})
        node[last] = data["value"]
    _ratios(result)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _ratio(a, b, key: str):
    try:
        return round(a[key] / b[key], 2)
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def _ratios(r: dict) -> None:
    for name in ("decode_bundled", "decode_llama_1b"):
        if name in r:
            r[name]["gpu_over_cpu"] = _ratio(r[name].get("gpu"), r[name].get("cpu"), "tokens_per_second")
    if "first_token_2000" in r:
        r["first_token_2000"]["cpu_over_gpu"] = _ratio(
            r["first_token_2000"].get("cpu"), r["first_token_2000"].get("gpu"), "first_token_seconds"
        )
    for _quant, sides in r.get("onnx", {}).items():
        if isinstance(sides, dict) and "cpu" in sides:
            sides["cuda_over_cpu"] = _ratio(sides.get("cuda"), sides.get("cpu"), "tokens_per_second")
    if "lora_merge" in r:
        r["lora_merge"]["cpu_over_cuda"] = _ratio(r["lora_merge"].get("cpu"), r["lora_merge"].get("cuda"), "seconds")
    if isinstance(r.get("batch_parallel"), dict) and "p16" in r["batch_parallel"]:
        r["batch_parallel"]["p16_over_p1"] = _ratio(
            r["batch_parallel"].get("p16"), r["batch_parallel"].get("p1"), "tokens_per_second"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build-llama")
    b.add_argument("out", type=Path)
    for flag, default in (("--layers", 22), ("--hidden", 2048), ("--inter", 5632), ("--heads", 32), ("--kv-heads", 4)):
        b.add_argument(flag, type=int, default=default)
    d = sub.add_parser("decode")
    d.add_argument("model")
    d.add_argument("--gpu-layers", type=int, default=0)
    d.add_argument("--backend", default=None)
    d.add_argument("--device", default="cpu")
    d.add_argument("--tokens", type=int, default=128)
    d.add_argument("--runs", type=int, default=3)
    f = sub.add_parser("first-token")
    f.add_argument("model")
    f.add_argument("--gpu-layers", type=int, default=0)
    f.add_argument("--prompt-tokens", type=int, default=2000)
    m = sub.add_parser("merge")
    m.add_argument("checkpoint")
    m.add_argument("lora")
    m.add_argument("--device", default="cpu")
    p = sub.add_parser("batch")
    p.add_argument("model")
    p.add_argument("--parallel", type=int, required=True)
    p.add_argument("--rows", type=int, default=32)
    p.add_argument("--gpu-layers", type=int, default=-1)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--work", type=Path, default=Path("/tmp/talesmith-batch"))
    q = sub.add_parser("part")
    q.add_argument("key")
    q.add_argument("rc", type=int)
    q.add_argument("seconds", type=int)
    q.add_argument("stdout", type=Path)
    q.add_argument("log", type=Path)
    j = sub.add_parser("merge-json")
    j.add_argument("out", type=Path)
    j.add_argument("parts", type=Path, nargs="*")
    a = parser.parse_args()
    if a.command == "build-llama":
        result = build_llama(a.out, layers=a.layers, hidden=a.hidden, inter=a.inter, heads=a.heads, kv_heads=a.kv_heads)
    elif a.command == "decode":
        result = decode(
            a.model, gpu_layers=a.gpu_layers, backend=a.backend, device=a.device, tokens=a.tokens, runs=a.runs
        )
    elif a.command == "first-token":
        result = first_token(a.model, gpu_layers=a.gpu_layers, prompt_tokens=a.prompt_tokens)
    elif a.command == "merge":
        result = merge(a.checkpoint, a.lora, device=a.device)
    elif a.command == "batch":
        result = batch(a.model, parallel=a.parallel, rows=a.rows, gpu_layers=a.gpu_layers, tokens=a.tokens, work=a.work)
    elif a.command == "part":
        result = part(a.key, a.rc, a.seconds, a.stdout, a.log)
    else:
        result = merge_json(a.out, sorted(a.parts))
    print(json.dumps(result, indent=2 if a.command == "merge-json" else None))


if __name__ == "__main__":
    main()
