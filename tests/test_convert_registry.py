"""One registry of architectures: each family holds its GGUF converter and its ONNX reader."""

import pytest

pytest.importorskip("numpy")

from talesmith.convert import architectures, onnx_archs, registry  # noqa: E402


def test_every_family_converts_to_both_formats():
    assert {name: (f.gguf.__module__, f.onnx.__name__) for name, f in registry.FAMILIES.items()} == {
        "gpt2": ("talesmith.convert.architectures.gpt2", "GPT2"),
        "gptj": ("talesmith.convert.architectures.gptj", "GPTJ"),
        "llama": ("talesmith.convert.architectures.llama", "Llama"),
        "falcon": ("talesmith.convert.architectures.falcon", "Falcon"),
    }
    assert all(issubclass(f.gguf, architectures.Architecture) for f in registry.FAMILIES.values())
    assert all(issubclass(f.onnx, onnx_archs.Reader) for f in registry.FAMILIES.values())


def test_a_checkpoint_finds_its_converters_by_architecture_name_and_model_type():
    assert registry.gguf_converter("RWForCausalLM") is registry.FAMILIES["falcon"].gguf
    assert registry.gguf_converter("GPTJForCausalLM") is registry.FAMILIES["gptj"].gguf
    assert registry.onnx_reader("llama") is registry.FAMILIES["llama"].onnx
    assert registry.gguf_converter("BertForMaskedLM") is None and registry.onnx_reader("bert") is None
    assert registry.gguf_names() == [
        "FalconForCausalLM",
        "GPT2LMHeadModel",
        "GPTJForCausalLM",
        "LlamaForCausalLM",
        "RWForCausalLM",
    ]
