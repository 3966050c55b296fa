"""Decoding speed on the bundled model: talesmith's streaming API against a bare llama-cpp-python loop.

Both use one loaded model and the same sampling (the `default` preset: llama.cpp's native chain in the
bare loop, the chain talesmith's backend picks for it, numpy over the logits in place), start from an
empty cache, evaluate the same prompt and generate the same number of tokens (end-of-text is
suppressed in both). Runs alternate so that machine noise hits both alike; the median of each is
reported, with their ratio (target: talesmith >= 0.95 of the bare loop) and time to first token.

    python bench/decode.py [--tokens 128] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import llama_cpp

from talesmith.runtime.engine.generate import stream
from talesmith.runtime.engine.llama import LlamaCppBackend
from talesmith.runtime.models.resolve import bundled_model_path
from talesmith.runtime.settings import preset

PROMPT = (
    "[ Title: The Lighthouse Keeper; Genre: Mystery ]\n***\n"
    "The storm had raged for three days when the knock came at the lighthouse door."
)


def bare_chain(backend: LlamaCppBackend, s, seed: int):
    """The same chain talesmith builds for the default preset, written out by hand."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    for smpl in (
        llama_cpp.llama_sampler_init_penalties(
            backend.n_vocab, s.repetition_window, s.repetition_penalty, s.frequency_penalty, s.presence_penalty
        ),
        llama_cpp.llama_sampler_init_top_k(s.top_k),
        llama_cpp.llama_sampler_init_top_p(s.top_p, 1),
        llama_cpp.llama_sampler_init_min_p(s.min_p, 1),
        llama_cpp.llama_sampler_init_temp(s.temperature),
        llama_cpp.llama_sampler_init_dist(seed),
    ):
        llama_cpp.llama_sampler_chain_add(chain, smpl)
    return chain


def run_bare(backend: LlamaCppBackend, tokens: list[int], n: int, s, seed: int) -> dict:
    ctx, vocab = backend.ctx, backend.vocab
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    chain = bare_chain(backend, s, seed)
    for t in tokens[-s.repetition_window :]:
        llama_cpp.llama_sampler_accept(chain, t)
    eog = sorted(backend.eog_tokens)
    start = time.perf_counter()
    arr = (llama_cpp.llama_token * len(tokens))(*tokens)
    assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arr, len(tokens))) == 0
    one = (llama_cpp.llama_token * 1)()
    first = None
    for i in range(n):
        logits = llama_cpp.llama_get_logits_ith(ctx, -1)
        for t in eog:
            logits[t] = float("-inf")
        tok = llama_cpp.llama_sampler_sample(chain, ctx, -1)
        if first is None:
            first = time.perf_counter()
        llama_cpp.llama_token_to_piece(vocab, tok, (llama_cpp.ctypes.c_char * 64)(), 64, 0, False)
        if i == n - 1:
            break
        one[0] = tok
        assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(one, 1)) == 0
    end = time.perf_counter()
    llama_cpp.llama_sampler_free(chain)
    backend.reset()  # the bare loop bypassed talesmith's view of the cache
    return {"tokens_per_second": (n - 1) / (end - first), "first_token_seconds": first - start}


def run_talesmith(backend: LlamaCppBackend, tokens: list[int], n: int, s, seed: int) -> dict:
    backend.reset()
    settings = s.replace(seed=seed, max_new_tokens=n, min_new_tokens=n)
    *_, chunk = stream(backend, tokens, settings)
    assert chunk.timing.generated_tokens == n, chunk
    return {
        "tokens_per_second": chunk.timing.tokens_per_second,
        "first_token_seconds": chunk.timing.first_token_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--gpu-layers", type=int, default=0)
    parser.add_argument("--model", default=None, help="a GGUF file (default: the bundled model)")
    args = parser.parse_args()
    backend = LlamaCppBackend(args.model or bundled_model_path(), n_ctx=1024, gpu_layers=args.gpu_layers)
    s = preset("default")
    tokens = backend.tokenize(PROMPT)
    results: dict[str, list[dict]] = {"bare": [], "talesmith": []}
    run_talesmith(backend, tokens, 8, s, 0)  # warm-up
    for i in range(args.runs):
        order = (("bare", run_bare), ("talesmith", run_talesmith))
        for name, fn in order if i % 2 == 0 else order[::-1]:
            results[name].append(fn(backend, tokens, args.tokens, s, 1000 + i))
    med = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in results.items()}
    print(
        json.dumps(
            {
                "benchmark": "decode",
                "model": backend.info.name,
                "backend": backend.name,
                "gpu_layers": args.gpu_layers,
                "prompt_tokens": len(tokens),
                "new_tokens": args.tokens,
                "runs": args.runs,
                "bare_tokens_per_second": round(med["bare"]["tokens_per_second"], 2),
                "talesmith_tokens_per_second": round(med["talesmith"]["tokens_per_second"], 2),
                "ratio": round(med["talesmith"]["tokens_per_second"] / med["bare"]["tokens_per_second"], 3),
                "bare_first_token_seconds": round(med["bare"]["first_token_seconds"], 4),
                "talesmith_first_token_seconds": round(med["talesmith"]["first_token_seconds"], 4),
            },
            indent=2,
        )
    )
    backend.close()


if __name__ == "__main__":
    main()
