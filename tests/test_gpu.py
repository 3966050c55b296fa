"""CUDA paths: llama.cpp layer offload and the LoRA merge on the GPU. Skipped without a CUDA GPU."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
llama_cpp = pytest.importorskip("llama_cpp")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch"),
    pytest.mark.skipif(not llama_cpp.llama_supports_gpu_offload(), reason="llama-cpp-python built without GPU support"),
]


def test_offloaded_greedy_text_matches_the_cpu(tmp_path):
    from tiny_models import make_model
    from talesmith.convert.pipeline import ConvertRequest, convert
    from talesmith.runtime.generate import collect, stream
    from talesmith.runtime.llama_backend import LlamaCppBackend
    from talesmith.runtime.settings import SamplingSettings

    folder = make_model("llama", tmp_path / "llama")
    path = convert(ConvertRequest(str(folder), tmp_path / "out", quants=(), outtype="f32", name="llama"),
                   lock=tmp_path / "models.lock")[0].path
    settings = SamplingSettings(temperature=0, max_new_tokens=24, min_new_tokens=24)
    texts = {}
    for layers in (0, -1):
        backend = LlamaCppBackend(path, n_ctx=128, gpu_layers=layers)
        texts[layers] = collect(stream(backend, backend.tokenize("The storm had raged"), settings)).tokens
        backend.close()
    assert texts[0] == texts[-1]


def test_lora_merge_on_cuda_equals_the_cpu(tmp_path):
    from tiny_models import make_lora, make_model
    from talesmith.convert.lora import MergedWeights, read_adapter
    from talesmith.convert.source import open_checkpoint

    base = make_model("gpt2", tmp_path / "gpt2")
    adapter = read_adapter(make_lora("gpt2", base, tmp_path / "lora", seed=1, targets=["c_attn", "c_fc"]), 0.7)
    ckpt, _ = open_checkpoint(base)
    cpu, cuda = MergedWeights(ckpt, [adapter], device="cpu"), MergedWeights(ckpt, [adapter], device="cuda")
    assert cpu.merged_names
    for name in cpu.merged_names:
        assert np.abs(cpu.get(name) - cuda.get(name)).max() < 1e-5
