"""The ONNX path on tiny random checkpoints: export and quantization checked against transformers and
peft, the ONNX Runtime backend through talesmith's own generation loop, and the command line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")

from tiny_models import SAMPLE_TEXTS, make_lora, make_model  # noqa: E402

from talesmith.convert.pipeline import ConvertRequest, convert  # noqa: E402
from talesmith.runtime.engine.generate import collect, stream  # noqa: E402
from talesmith.runtime.engine.loading import open_backend  # noqa: E402
from talesmith.runtime.engine.ort import OnnxBackend, genai_available, open_onnx  # noqa: E402
from talesmith.runtime.errors import ConversionError, ModelError  # noqa: E402
from talesmith.runtime.settings import SamplingSettings, preset  # noqa: E402

KINDS = ["gpt2", "gptj", "llama", "falcon-7b", "falcon-new"]
LOGIT_TOLERANCE = 1e-4
TOP1 = {"int8": 0.8, "int4": 0.6}
"""Least share of positions where a quantized model's most likely token is the fp32 model's."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {kind: make_model(kind, root / kind) for kind in KINDS}


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    lock = out / "models.lock"
    results = {}
    for kind, folder in tiny.items():
        outputs = convert(
            ConvertRequest(str(folder), out, targets=("onnx",), onnx_quants=("fp32", "int8", "int4"), name=kind),
            lock=lock,
        )
        results[kind] = {o.kind: o for o in outputs}
    return results


def hf_logits(folder, ids):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def onnx_logits(folder, ids):
    """Logits at every position, one token at a time through the backend's KV cache."""
    backend = OnnxBackend(folder, n_ctx=64)
    backend.prefill(ids[:1])
    rows = [backend.logits.copy()]
    for token in ids[1:]:
        backend.append(token)
        rows.append(backend.logits.copy())
    backend.close()
    return np.stack(rows)


def english_ids(folder):
    return transformers.AutoTokenizer.from_pretrained(folder)(SAMPLE_TEXTS["english"])["input_ids"]


@pytest.mark.parametrize("kind", KINDS)
def test_fp32_logits_match_transformers(kind, tiny, exported):
    ids = english_ids(tiny[kind])
    ref = hf_logits(tiny[kind], ids)
    got = onnx_logits(exported[kind]["ONNX-FP32"].path, ids)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < LOGIT_TOLERANCE


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_text_matches_transformers(kind, tiny, exported):
    tok = transformers.AutoTokenizer.from_pretrained(tiny[kind])
    ids = tok("The storm had raged")["input_ids"]
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny[kind]).eval()
    with torch.no_grad():
        ref = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=12,
            do_sample=False,
            min_new_tokens=12,
            pad_token_id=0,
        )[0, len(ids) :]
    backend = OnnxBackend(exported[kind]["ONNX-FP32"].path, n_ctx=64)
    got = collect(stream(backend, ids, SamplingSettings(temperature=0, max_new_tokens=12, min_new_tokens=12)))
    backend.close()
    assert list(got.tokens) == ref.tolist()
    assert got.text == tok.decode(ref.tolist())


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_tokenizer_and_streaming_bytes_match_on_english_japanese_emoji(kind, tiny, exported):
    tok = transformers.AutoTokenizer.from_pretrained(tiny[kind])
    backend = OnnxBackend(exported[kind]["ONNX-FP32"].path, n_ctx=64)
    for text in SAMPLE_TEXTS.values():
        ids = tok(text)["input_ids"]
        assert backend.tokenize(text) == ids
        pieces = [backend.token_bytes(t) for t in ids]
        assert b"".join(pieces).decode("utf-8") == text
    assert any(
        len(p) and not _complete_utf8(p) for p in map(backend.token_bytes, tok(SAMPLE_TEXTS["emoji"])["input_ids"])
    )
    backend.close()


def _complete_utf8(data):
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


@pytest.mark.parametrize("quant", ["int8", "int4"])
def test_quantized_models_agree_with_fp32_and_really_shrink(quant, tiny, exported):
    agreement = {}
    for kind in KINDS:
        ids = english_ids(tiny[kind])
        fp32 = onnx_logits(exported[kind]["ONNX-FP32"].path, ids)
        q = onnx_logits(exported[kind][f"ONNX-{quant.upper()}"].path, ids)
        agreement[kind] = float((q.argmax(1) == fp32.argmax(1)).mean())
        out = exported[kind][f"ONNX-{quant.upper()}"]
        assert out.size < exported[kind]["ONNX-FP32"].size * 0.75, (kind, out.size)
        assert f"MatMulNBits ({quant[3:]}-bit, blocks of 32)" in out.detail
    print(f"\n{quant} top-1 agreement with fp32:", json.dumps(agreement))
    assert min(agreement.values()) >= TOP1[quant], agreement


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_fp16_stays_close_to_fp32(kind, tiny, exported, tmp_path):
    """fp16 weights and arithmetic (the KV cache too); logits stay float32."""
    outputs = convert(
        ConvertRequest(str(tiny[kind]), tmp_path, targets=("onnx",), onnx_quants=("fp16",), name=kind),
        lock=tmp_path / "models.lock",
    )
    assert [o.kind for o in outputs] == ["ONNX-FP16"]
    ids = english_ids(tiny[kind])
    fp16 = onnx_logits(outputs[0].path, ids)
    fp32 = onnx_logits(exported[kind]["ONNX-FP32"].path, ids)
    assert np.abs(fp16 - fp32).max() < 5e-3
    assert outputs[0].size < exported[kind]["ONNX-FP32"].size * 0.7


def test_lock_entries_and_folders(exported):
    from talesmith.runtime.models.resolve import read_lock, resolve

    folder = exported["llama"]["ONNX-INT4"].path
    lock = folder.parent / "models.lock"
    entry = read_lock(lock)["llama-onnx-int4"]
    assert entry["format"] == "onnx" and entry["quantization"] == "int4"
    assert entry["hf_architecture"] == "LlamaForCausalLM"
    names = {f["name"] for f in entry["files"]}
    assert {"model.onnx", "tokenizer.json", "config.json", "talesmith.json"} <= names
    assert all(len(f["sha256"]) == 64 for f in entry["files"])
    assert resolve("llama-onnx-int4", lock=lock).path == folder
    assert not [p for p in folder.parent.iterdir() if p.is_dir() and p.name.startswith(".")]  # no temporary folders
    backend = open_backend(folder)  # chosen from the folder
    assert backend.name.startswith("onnxruntime")
    backend.close()
    session = open_onnx(folder, engine="session")
    assert session.engine.cache.kv_heads == 2 and session.engine.cache.past_names[:2] == [
        "past_key_values.0.key",
        "past_key_values.0.value",
    ]
    session.close()


def test_lora_merged_export_equals_peft_and_gguf_from_the_same_merge(tiny, tmp_path):
    from peft import PeftModel

    from talesmith.runtime.engine.llama import LlamaCppBackend

    for kind, targets in (("gpt2", ["c_attn", "c_fc"]), ("llama", ["q_proj", "v_proj", "down_proj"])):
        adapter = make_lora(kind, tiny[kind], tmp_path / f"{kind}-lora", seed=3, targets=targets)
        outputs = convert(
            ConvertRequest(
                str(tiny[kind]),
                tmp_path / "out",
                loras=((adapter, 1.0),),
                name=f"{kind}-lora",
                targets=("gguf", "onnx"),
                quants=(),
                outtype="f32",
                onnx_quants=("fp32",),
            ),
            lock=tmp_path / "models.lock",
        )
        by_kind = {o.kind: o for o in outputs}
        base = transformers.AutoModelForCausalLM.from_pretrained(tiny[kind])
        merged = PeftModel.from_pretrained(base, adapter).merge_and_unload().eval()
        ids = english_ids(tiny[kind])
        with torch.no_grad():
            ref = merged(torch.tensor([ids])).logits[0].numpy()
        got = onnx_logits(by_kind["ONNX-FP32"].path, ids)
        assert np.abs(got - ref).max() < LOGIT_TOLERANCE
        assert np.abs(ref - hf_logits(tiny[kind], ids)).max() > 0.05  # the adapter changes the model
        # The GGUF written from the same merge samples the same tokens as the ONNX model.
        settings = preset("default", seed=5, max_new_tokens=16, min_new_tokens=16)
        gguf = LlamaCppBackend(by_kind["F32"].path, n_ctx=64)
        onnx_backend = OnnxBackend(by_kind["ONNX-FP32"].path, n_ctx=64)
        assert collect(stream(gguf, ids, settings)).tokens == collect(stream(onnx_backend, ids, settings)).tokens
        gguf.close()
        onnx_backend.close()


def test_cache_is_kept_across_calls_that_share_a_prefix(exported):
    folder = exported["llama"]["ONNX-FP32"].path
    settings = SamplingSettings(
        temperature=0.9,
        top_p=0.9,
        seed=11,
        max_new_tokens=10,
        repetition_penalty=1.2,
        dry_multiplier=0.5,
        xtc_probability=0.3,
    )
    backend = OnnxBackend(folder, n_ctx=64)
    prompt = backend.tokenize("The storm had raged for three days")
    first = collect(stream(backend, prompt, settings))
    assert first.timing.prompt_evaluated == len(prompt)
    longer = prompt + list(first.tokens[:4])
    second = collect(stream(backend, longer, settings))
    assert second.timing.prompt_evaluated == 1  # everything but the last token came from the cache
    fresh = OnnxBackend(folder, n_ctx=64)
    assert collect(stream(fresh, longer, settings)).tokens == second.tokens
    again = collect(stream(backend, prompt, settings))  # shorter than the cache: truncated, not re-run
    assert again.timing.prompt_evaluated == 1 and again.tokens == first.tokens
    backend.close()
    fresh.close()


def test_spinning_threads_are_a_session_option_and_change_no_token(exported):
    """--spin (the default) and --no-spin reach ONNX Runtime's session, which the parallel decoder shares."""
    from talesmith.runtime.engine.loading import parallel_decoder

    folder = exported["llama"]["ONNX-INT4"].path
    settings = SamplingSettings(temperature=0, max_new_tokens=8, min_new_tokens=8)
    tokens = []
    for spin in (True, False):
        backend = open_backend(folder, n_ctx=64, threads=2, spin=spin)
        options = backend.engine.cache.session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if spin else "0")
        assert parallel_decoder(backend, 2).cache.session is backend.engine.cache.session
        tokens.append(collect(stream(backend, backend.tokenize("The storm"), settings)).tokens)
        backend.close()
    assert tokens[0] == tokens[1]


def test_genai_engine_keeps_its_cache_and_agrees_with_fp32(tiny, exported):
    """Where the converter added onnxruntime-genai's build (int4 Llama), its Generator runs the forward passes."""
    folder = exported["llama"]["ONNX-INT4"].path
    if not genai_available(folder):
        pytest.skip("onnxruntime-genai is not installed (it is optional: pip install onnxruntime-genai-cuda==0.15.2)")
    assert "onnxruntime-genai build" in exported["llama"]["ONNX-INT4"].detail
    backend = open_onnx(folder, n_ctx=64, engine="genai")
    assert backend.name == "onnxruntime-genai"
    ids = english_ids(tiny["llama"])
    backend.prefill(ids[:1])
    rows = [backend.logits.copy()]
    for token in ids[1:]:
        backend.append(token)
        rows.append(backend.logits.copy())
    fp32 = onnx_logits(exported["llama"]["ONNX-FP32"].path, ids)
    agreement = float((np.stack(rows).argmax(1) == fp32.argmax(1)).mean())
    print(f"\nonnxruntime-genai int4 top-1 agreement with fp32: {agreement:.3f}")
    assert agreement >= TOP1["int4"]
    settings = SamplingSettings(temperature=0.8, top_k=40, seed=4, max_new_tokens=10, repetition_penalty=1.1)
    prompt = ids[:8]
    first = collect(stream(backend, prompt, settings))
    second = collect(stream(backend, prompt + list(first.tokens[:3]), settings))
    assert second.timing.prompt_evaluated == 1  # rewound to the shared prefix, not re-run
    fresh = open_onnx(folder, n_ctx=64, engine="genai")
    assert collect(stream(fresh, prompt + list(first.tokens[:3]), settings)).tokens == second.tokens
    backend.close()
    fresh.close()


def test_banned_phrases_and_stops_work_on_the_onnx_backend(exported):
    backend = OnnxBackend(exported["gpt2"]["ONNX-FP32"].path, n_ctx=64)
    prompt = backend.tokenize("Once upon a time")
    greedy = SamplingSettings(temperature=0, max_new_tokens=12)
    text = collect(stream(backend, prompt, greedy)).text
    phrase = text[2:6]
    banned = collect(stream(backend, prompt, greedy.replace(banned=(phrase,))))
    assert phrase not in banned.text
    stop = text[4:7]
    stopped = collect(stream(backend, prompt, greedy.replace(stop=(stop,))))
    assert stopped.finish_reason == "stop" and stopped.text == text[: text.index(stop)]
    backend.close()


def test_errors_are_one_line(exported, tiny, tmp_path):
    with pytest.raises(ConversionError, match="unknown ONNX quantization 'int3'"):
        convert(ConvertRequest(str(tiny["gpt2"]), tmp_path, targets=("onnx",), onnx_quants=("int3",)))
    with pytest.raises(ConversionError, match="--to tflite is unknown"):
        convert(ConvertRequest(str(tiny["gpt2"]), tmp_path, targets=("tflite",)))
    with pytest.raises(ModelError, match="has no model.onnx"):
        OnnxBackend(tmp_path)
    with pytest.raises(ModelError, match="is an ONNX model; llama.cpp reads GGUF"):
        open_backend(exported["gpt2"]["ONNX-FP32"].path, backend="llama")
    with pytest.raises(ModelError, match="--backend onnx needs an ONNX model"):
        open_backend(tiny["gpt2"] / "config.json", backend="onnx")


@pytest.mark.skipif(
    bool(os.environ.get("CUDA_VISIBLE_DEVICES")) or os.path.exists("/dev/nvidia0"), reason="this machine has a GPU"
)
def test_cuda_asked_for_without_a_gpu_is_a_clear_error(exported):
    with pytest.raises(ModelError, match="--device cuda was asked for"):
        OnnxBackend(exported["gpt2"]["ONNX-FP32"].path, device="cuda")


TALESMITH = [sys.executable, "-m", "talesmith.cli.main"]


def run(*args):
    env = {**os.environ, "COLUMNS": "250"}  # the summary table unwrapped, so that its cells can be read
    return subprocess.run([*TALESMITH, *map(str, args)], capture_output=True, text=True, timeout=300, env=env)


def test_command_line_convert_to_onnx_then_generate(tiny, tmp_path):
    lock = tmp_path / "models.lock"
    result = run(
        "convert",
        tiny["gpt2"],
        "-o",
        tmp_path / "out",
        "--to",
        "gguf,onnx",
        "--quant",
        "Q8_0,fp32,int4",
        "--name",
        "tiny",
        "--lock",
        lock,
    )
    assert result.returncode == 0, result.stderr
    assert "ONNX-INT4" in result.stdout and "MatMulNBits" in result.stdout  # the summary shows what was quantized
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "tiny-onnx-fp32",
        "tiny-onnx-int4",
        "tiny-f16.gguf",
        "tiny-Q8_0.gguf",
    }
    out = run(
        "generate",
        "--lock",
        lock,
        "-m",
        "tiny-onnx-int4",
        "--json",
        "--max-new-tokens",
        "6",
        "--seed",
        "2",
        "--temperature",
        "0",
        "--no-spin",
        "Once upon a time",
    )
    assert out.returncode == 0, out.stderr
    sample = json.loads(out.stdout)
    assert len(sample["tokens"]) == 6 and sample["finish_reason"] == "length"
    bad = run("generate", "-m", tmp_path / "out" / "tiny-onnx-fp32", "--backend", "tflite", "Hi")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--backend tflite" in bad.stderr
    bad = run("convert", tiny["gpt2"], "-o", tmp_path / "x", "--to", "onnx", "--quant", "q4_k_m")
    assert bad.returncode == 2 and "unknown ONNX quantization 'q4_k_m'" in bad.stderr


def test_one_quant_list_splits_between_gguf_and_onnx():
    from talesmith.cli.convert import split_quants

    assert split_quants("Q8_0,fp32,int4", ("gguf", "onnx")) == ("Q8_0", "fp32,int4")
    assert split_quants("Q4_0", ("gguf", "onnx")) == ("Q4_0", "fp32,int8,int4")  # ONNX keeps its default
    assert split_quants(None, ("onnx",))[1] == "fp32,int8,int4"
    with pytest.raises(ConversionError, match="--quant int8 is an ONNX quantization; add --to onnx"):
        split_quants("Q8_0,int8", ("gguf",))
