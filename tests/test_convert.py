"""Conversion of tiny random checkpoints of every seed architecture, checked against transformers and peft."""

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import llama_cpp  # noqa: E402
from tiny_models import SAMPLE_TEXTS, make_lora, make_model  # noqa: E402

from talesmith.convert.lora import MergedWeights, read_adapter  # noqa: E402
from talesmith.convert.pipeline import ConvertRequest, convert  # noqa: E402
from talesmith.convert.source import open_checkpoint  # noqa: E402
from talesmith.runtime.engine.generate import collect, stream  # noqa: E402
from talesmith.runtime.engine.llama import LlamaCppBackend  # noqa: E402
from talesmith.runtime.errors import ConversionError  # noqa: E402
from talesmith.runtime.settings import SamplingSettings  # noqa: E402

KINDS = ["gpt2", "gptj", "llama", "falcon-7b", "falcon-new"]
LOGIT_TOLERANCE = 1e-3
Q8_TOLERANCE = 0.05  # Q8_0 against f32, on logits of magnitude ~1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {kind: make_model(kind, root / kind) for kind in KINDS}


@pytest.fixture(scope="module")
def converted(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf")
    lock = out / "models.lock"
    files = {}
    for kind, folder in tiny.items():
        outputs = convert(ConvertRequest(str(folder), out, quants=("Q8_0",), outtype="f32", name=kind), lock=lock)
        files[kind] = {o.kind: o.path for o in outputs}
    return files


def hf_logits(folder, ids, model=None):
    model = model or transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def gguf_logits(path, ids):
    llm = llama_cpp.Llama(str(path), n_ctx=64, logits_all=True, verbose=False, type_k=0, type_v=0)  # f32 KV cache
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)])
    llm.close()
    return logits


def english_ids(folder):
    return transformers.AutoTokenizer.from_pretrained(folder)(SAMPLE_TEXTS["english"])["input_ids"]


@pytest.mark.parametrize("kind", KINDS)
def test_f32_logits_match_transformers(kind, tiny, converted):
    ids = english_ids(tiny[kind])
    ref = hf_logits(tiny[kind], ids)
    got = gguf_logits(converted[kind]["F32"], ids)
    n = ref.shape[1]
    assert np.abs(got[:, :n] - ref).max() < LOGIT_TOLERANCE
    if kind == "gptj":  # the padded embedding rows are never likely
        assert got.shape[1] == n


@pytest.mark.parametrize("kind", KINDS)
def test_tokenization_matches_on_english_japanese_emoji(kind, tiny, converted):
    tok = transformers.AutoTokenizer.from_pretrained(tiny[kind])
    backend = LlamaCppBackend(converted[kind]["F32"], n_ctx=64)
    for text in SAMPLE_TEXTS.values():
        assert backend.tokenize(text, add_bos=False) == tok(text)["input_ids"]
        assert b"".join(backend.token_bytes(t) for t in tok(text)["input_ids"]).decode() == text
    backend.close()


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_continuation_matches_transformers(kind, tiny, converted):
    ids = transformers.AutoTokenizer.from_pretrained(tiny[kind])("The storm had raged")["input_ids"]
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny[kind]).eval()
    with torch.no_grad():
        ref = model.generate(
            torch.tensor([ids]), max_new_tokens=12, do_sample=False, min_new_tokens=12, pad_token_id=0
        )[0, len(ids) :].tolist()
    backend = LlamaCppBackend(converted[kind]["F32"], n_ctx=64)
    got = collect(stream(backend, ids, SamplingSettings(temperature=0, max_new_tokens=12, min_new_tokens=12)))
    backend.close()
    assert list(got.tokens) == ref


@pytest.mark.parametrize("kind", KINDS)
def test_q8_0_stays_close(kind, tiny, converted):
    ids = english_ids(tiny[kind])
    f32 = gguf_logits(converted[kind]["F32"], ids)
    q8 = gguf_logits(converted[kind]["Q8_0"], ids)
    assert np.abs(q8 - f32).max() < Q8_TOLERANCE
    assert (q8.argmax(1) == f32.argmax(1)).mean() >= 0.95
    assert converted[kind]["Q8_0"].stat().st_size < converted[kind]["F32"].stat().st_size * 0.6


def test_outputs_are_recorded_in_the_lock_with_gguf_metadata(converted):
    from talesmith.runtime.models.gguf_header import read_info
    from talesmith.runtime.models.resolve import read_lock, resolve

    lock = converted["gpt2"]["F32"].parent / "models.lock"
    entries = read_lock(lock)
    entry = entries["gpt2-q8_0"]
    assert entry["format"] == "gguf" and entry["quantization"] == "Q8_0" and entry["architecture"] == "gpt2"
    assert entry["files"][0]["size"] == converted["gpt2"]["Q8_0"].stat().st_size
    assert resolve("gptj-q8_0", lock=lock).path == converted["gptj"]["Q8_0"]
    info = read_info(converted["gptj"]["Q8_0"])
    assert info.architecture == "phi2" and info.metadata["general.name"] == "gptj"
    assert json.loads(info.metadata["talesmith.source"])["path"].endswith("gptj")


@pytest.mark.parametrize("kind", KINDS)
def test_hyper_parameters_have_gguf_types_and_tensors_gguf_names(kind, converted):
    """Each `ARCH.*` key has the type gguf-py's typed call gives it, and every tensor is one that llama.cpp
    knows for the architecture."""
    import gguf

    reader = gguf.GGUFReader(converted[kind]["F32"])
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    V = gguf.GGUFValueType
    floats = ("rope.freq_base", "attention.layer_norm_epsilon", "attention.layer_norm_rms_epsilon")
    own = {k.removeprefix(arch + "."): f.types[0] for k, f in reader.fields.items() if k.startswith(arch + ".")}
    assert own and all(
        t == (V.FLOAT32 if k in floats else V.STRING if k == "tensor_data_layout" else V.UINT32) for k, t in own.items()
    ), own
    known = {
        gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch)]
    }
    names = {t.name.rsplit(".", 1)[0] for t in reader.tensors}
    assert names <= {n.format(bid=i) for n in known for i in range(2)}, names - known


def peft_merged(base, adapters, scales):
    from peft import PeftModel

    model = transformers.AutoModelForCausalLM.from_pretrained(base)
    peft_model = PeftModel.from_pretrained(model, adapters[0], adapter_name="a0")
    for i, path in enumerate(adapters[1:], 1):
        peft_model.load_adapter(path, adapter_name=f"a{i}")
    names = [f"a{i}" for i in range(len(adapters))]
    for module in peft_model.modules():
        if hasattr(module, "set_scale") and hasattr(module, "lora_A"):
            for name, scale in zip(names, scales, strict=False):
                if name in module.lora_A:
                    module.set_scale(name, scale)
    return peft_model.merge_and_unload(adapter_names=names).eval()


@pytest.mark.parametrize("kind,targets", [("gpt2", ["c_attn", "c_fc"]), ("llama", ["q_proj", "v_proj", "down_proj"])])
def test_lora_merge_matches_peft(kind, targets, tiny, tmp_path):
    base = tiny[kind]
    one = make_lora(kind, base, tmp_path / "one", seed=1, targets=targets)
    two = make_lora(kind, base, tmp_path / "two", seed=2, targets=targets[:1], rank=2, alpha=4, rslora=True)
    ids = english_ids(base)
    for adapters, scales in (([one], [1.0]), ([one, two], [1.0, 0.5])):
        out = tmp_path / f"out{len(adapters)}"
        outputs = convert(
            ConvertRequest(
                str(base), out, loras=tuple(zip(adapters, scales, strict=False)), quants=(), outtype="f32", name=kind
            ),
            lock=tmp_path / "models.lock",
        )
        merged_model = peft_merged(base, adapters, scales)
        ours = MergedWeights(
            open_checkpoint(base)[0], [read_adapter(p, s) for p, s in zip(adapters, scales, strict=False)]
        )
        theirs = merged_model.state_dict()
        for name in ours.merged_names:  # the merged weights themselves, before any llama.cpp arithmetic
            assert np.abs(ours.get(name) - theirs[name].numpy()).max() < 1e-6
        ref = hf_logits(base, ids, merged_model)
        unmerged = hf_logits(base, ids)
        got = gguf_logits(outputs[0].path, ids)
        assert np.abs(ref - unmerged).max() > 0.05  # the adapters really change the model
        assert np.abs(got[:, : ref.shape[1]] - ref).max() < LOGIT_TOLERANCE


def test_interrupted_conversion_leaves_no_finished_looking_file(tiny, tmp_path, monkeypatch):
    from talesmith.convert import writer

    real = writer._encode
    calls = {"n": 0}

    def interrupted(array, dtype):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(array, dtype)

    monkeypatch.setattr(writer, "_encode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert(ConvertRequest(str(tiny["gpt2"]), tmp_path, quants=(), name="cut"), lock=tmp_path / "models.lock")
    assert list(tmp_path.glob("*.gguf*")) == []
    from talesmith.runtime.models.resolve import read_lock

    assert not any(name.startswith("cut") for name in read_lock(tmp_path / "models.lock"))


def test_bad_inputs_give_one_clear_error(tiny, tmp_path):
    lock = tmp_path / "models.lock"

    def fails(message, **kw):
        with pytest.raises(ConversionError, match=message):
            convert(ConvertRequest(**{"outdir": tmp_path / "o", "quants": (), **kw}), lock=lock)

    fails("does not exist", source=str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    fails("has no config.json", source=str(tmp_path / "empty"))
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"]}))
    (bert / "model.safetensors").write_bytes((tiny["gpt2"] / "model.safetensors").read_bytes())
    fails(
        "architecture 'BertForMaskedLM' is not supported; talesmith converts FalconForCausalLM, "
        "GPT2LMHeadModel, GPTJForCausalLM, LlamaForCausalLM",
        source=str(bert),
    )
    cut = tmp_path / "cut"
    cut.mkdir()
    for f in tiny["gpt2"].iterdir():
        (cut / f.name).write_bytes(f.read_bytes())
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    fails("is truncated", source=str(cut))
    fails("unknown quantization type 'Q7'", source=str(tiny["gpt2"]), quants=("Q7",))
    fails(
        "--device cuda was asked for but torch sees no CUDA GPU", source=str(tiny["gpt2"]), device="cuda"
    ) if not torch.cuda.is_available() else None
    llama_adapter = make_lora("llama", tiny["llama"], tmp_path / "llama-lora", seed=1, targets=["q_proj"])
    fails(
        "which this checkpoint does not have|does not fit this checkpoint",
        source=str(tiny["gpt2"]),
        loras=((llama_adapter, 1.0),),
    )
    fails("is not a PEFT adapter", source=str(tiny["gpt2"]), loras=((tmp_path / "empty", 1.0),))


def test_pickle_that_needs_code_is_refused(tiny, tmp_path):
    import pickle

    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((tiny["gpt2"] / "config.json").read_text())

    class Evil:
        def __reduce__(self):
            return (print, ("this would run code",))

    for save in (lambda obj, f: pickle.dump(obj, f), torch.save):  # a legacy pickle and a torch zip file
        with open(folder / "pytorch_model.bin", "wb") as f:
            save({"x": Evil()}, f)
        with pytest.raises(ConversionError, match="needs full unpickling"):
            convert(ConvertRequest(str(folder), tmp_path / "o", quants=()), lock=tmp_path / "models.lock")


def test_weights_only_bin_checkpoint_converts(tiny, tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    for f in tiny["gpt2"].iterdir():
        if f.suffix != ".safetensors":
            (folder / f.name).write_bytes(f.read_bytes())
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny["gpt2"])
    model.save_pretrained(folder, safe_serialization=False)
    outputs = convert(
        ConvertRequest(str(folder), tmp_path / "o", quants=(), outtype="f32", name="bin"), lock=tmp_path / "models.lock"
    )
    ids = english_ids(tiny["gpt2"])
    assert np.abs(gguf_logits(outputs[0].path, ids) - hf_logits(tiny["gpt2"], ids)).max() < LOGIT_TOLERANCE


def test_sentencepiece_llama_tokenizes_and_computes_like_transformers(tmp_path):
    from tiny_models import make_spm_llama

    folder = make_spm_llama(tmp_path / "spm")
    outputs = convert(
        ConvertRequest(str(folder), tmp_path / "o", quants=(), outtype="f32", name="spm"), lock=tmp_path / "models.lock"
    )
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    backend = LlamaCppBackend(outputs[0].path, n_ctx=64)
    for text in [*SAMPLE_TEXTS.values(), "  two spaces", "Hello\nworld"]:
        assert backend.tokenize(text) == tok(text)["input_ids"]  # BOS added by both
    backend.close()
    ids = tok(SAMPLE_TEXTS["japanese"])["input_ids"]
    assert np.abs(gguf_logits(outputs[0].path, ids) - hf_logits(folder, ids)).max() < LOGIT_TOLERANCE


def test_checkpoint_without_tokenizer_takes_one_from_elsewhere(tiny, tmp_path):
    """Genji-JP ships no tokenizer; it uses GPT-J 6B's. Here: a GPT-J without one, and vocab.json + merges.txt."""
    from tokenizers import Tokenizer

    genji = tmp_path / "genji"
    genji.mkdir()
    for name in ("config.json", "model.safetensors"):
        (genji / name).write_bytes((tiny["gptj"] / name).read_bytes())
    with pytest.raises(ConversionError, match="has no tokenizer.*pass --tokenizer"):
        convert(ConvertRequest(str(genji), tmp_path / "o", quants=()), lock=tmp_path / "models.lock")
    slow = tmp_path / "gpt-j-tokenizer"
    slow.mkdir()
    Tokenizer.from_file(str(tiny["gptj"] / "tokenizer.json")).model.save(str(slow))  # vocab.json, merges.txt
    outputs = convert(
        ConvertRequest(str(genji), tmp_path / "o", quants=(), outtype="f32", name="genji-tiny", tokenizer=str(slow)),
        lock=tmp_path / "models.lock",
    )
    tok = transformers.AutoTokenizer.from_pretrained(tiny["gptj"])
    backend = LlamaCppBackend(outputs[0].path, n_ctx=64)
    for text in SAMPLE_TEXTS.values():
        assert backend.tokenize(text, add_bos=False) == tok(text)["input_ids"]
    backend.close()
    from talesmith.runtime.models.resolve import read_lock

    entry = read_lock(tmp_path / "models.lock")["genji-tiny-f32"]
    assert entry["source"]["tokenizer"] == {"path": str(slow.resolve())}
    assert entry["prompt_format"] == "japanese-story" and entry["preset"] == "genji-jp"


def test_a_model_with_learned_positions_stops_at_its_last_position(converted):
    """GPT-2 has 64 positions here; llama.cpp rounds the context up to 256 and would abort past position 64."""
    code = (
        "from talesmith.runtime.engine.llama import LlamaCppBackend\n"
        "from talesmith.runtime.engine.generate import collect, stream\n"
        "from talesmith.runtime.settings import SamplingSettings\n"
        "import sys\n"
        "b = LlamaCppBackend(sys.argv[1])\n"
        "s = SamplingSettings(temperature=0, max_new_tokens=200, min_new_tokens=200)\n"
        "c = collect(stream(b, b.tokenize('Once upon a time'), s))\n"
        "print(b.n_ctx, c.finish_reason, len(b.tokenize('Once upon a time')) + c.timing.generated_tokens)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(converted["gpt2"]["F32"])], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["64", "context", "64"]
    too_far = subprocess.run(
        [
            sys.executable,
            "-m",
            "talesmith.cli.main",
            "generate",
            "-m",
            str(converted["gpt2"]["F32"]),
            "--ctx",
            "128",
            "x",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert too_far.returncode == 2 and "Traceback" not in too_far.stderr
    assert too_far.stderr.strip().endswith("has (it learned one embedding per position); use --ctx 64 or less")
