"""What the quality report adds to a conversion: the former default (every window of up to 1,024 tokens of the
bundled text) against today's (one 128-token sample), on a tiny Llama and on a larger tiny GPT-J.

Each checkpoint is converted once without the report (f16, Q8_0, Q4_K_M); then the report is measured both
ways on the files it made (alternated, five times each, the fastest kept), and the conversion with each is
compared.

    python bench/convert_quality_cost.py [--workdir /tmp/talesmith-quality-cost]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
REPEATS = 5


def larger_gptj(folder: Path) -> Path:
    """A GPT-J-shaped checkpoint of 4 layers of width 512 (rotary on 64 of each 128-wide head), 2,048 positions."""
    import torch
    import transformers as tf
    from tiny_models import train_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    n_vocab = train_tokenizer(folder)
    config = tf.GPTJConfig(
        vocab_size=n_vocab, n_positions=2048, n_embd=512, n_layer=4, n_head=4, rotary_dim=64, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    tf.GPTJForCausalLM(config).eval().save_pretrained(folder, safe_serialization=True)
    return folder


def run(name: str, folder: Path, out: Path) -> dict:
    from talesmith.convert.evaltext import TEXT
    from talesmith.convert.pipeline import ConvertRequest, convert
    from talesmith.convert.quality import FULL_TOKENS, SAMPLE_TOKENS, measure

    started = time.perf_counter()
    request = ConvertRequest(str(folder), out, quants=("Q8_0", "Q4_K_M"), quality=False)
    outputs = convert(request, lock=out / "models.lock")
    conversion = time.perf_counter() - started
    reference, quantized = outputs[0].path, [o.path for o in outputs[1:]]
    ways = {
        "before": dict(window=256, max_tokens=FULL_TOKENS),
        "after": dict(window=SAMPLE_TOKENS, max_tokens=SAMPLE_TOKENS),
    }
    measure(reference, quantized[:1], text=TEXT, window=16, max_tokens=16)  # llama.cpp's one-time start
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    results = {}
    for _ in range(REPEATS):  # alternated, the fastest of each kept: the machine is shared
        for way, sizes in ways.items():
            started = time.perf_counter()
            results[way] = measure(reference, quantized, text=TEXT, **sizes)
            seconds[way].append(time.perf_counter() - started)
    full, sample = results["before"], results["after"]
    before, after = min(seconds["before"]), min(seconds["after"])
    q4 = quantized[-1]
    return {
        "model": name,
        "f16_bytes": outputs[0].size,
        "conversion_s": round(conversion, 3),
        "report_before_s": round(before, 3),
        "report_after_s": round(after, 3),
        "tokens_before": full[q4].tokens,
        "tokens_after": sample[q4].tokens,
        "q4_kl_before": round(full[q4].kl_divergence, 5),
        "q4_kl_after": round(sample[q4].kl_divergence, 5),
        "with_report_before_over_after": round((conversion + before) / (conversion + after), 2),
        "report_before_over_after": round(before / after, 2),
    }


def main() -> None:
    from tiny_models import make_model

    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/talesmith-quality-cost"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    rows = [
        run("tiny llama", make_model("llama", args.workdir / "tiny-llama"), args.workdir / "out-tiny"),
        run("gpt-j 4x512", larger_gptj(args.workdir / "gptj-4x512"), args.workdir / "out-gptj"),
    ]
    for row in rows:
        print(json.dumps({"benchmark": "convert_quality_cost", **row}))


if __name__ == "__main__":
    main()
