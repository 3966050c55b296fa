"""Tokenizers as checkpoints really ship them: old tokenizer.json files, every pre-tokenizer family llama.cpp
supports (found by behaviour), and special tokens that are the same on llama.cpp, ONNX and transformers."""

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tiny_models import CORPUS  # noqa: E402

from talesmith.convert.pipeline import ConvertRequest, convert  # noqa: E402
from talesmith.convert.pretok import FAMILIES  # noqa: E402
from talesmith.convert.vocab import read_vocab  # noqa: E402
from talesmith.runtime.documents.formats import TinyStory  # noqa: E402
from talesmith.runtime.documents.prompts import render  # noqa: E402
from talesmith.runtime.engine.llama import LlamaCppBackend  # noqa: E402
from talesmith.runtime.engine.markers import tokenize_prompt  # noqa: E402
from talesmith.runtime.errors import ConversionError  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "real"
HARD_TEXTS = {
    "english": "Once upon a time, Tim's dog said: \"I'll be there at 12:30!\" They'RE sure.",
    "code": "def f(x):\n    return x**2 + 1_000  # ok\n\tif (a<=b) { y |= 0x1F; }\n",
    "digits": "3 33 333 3333 33333 3333333 1234567890 3.14159 2024-01-02",
    "whitespace": "a  b   c\n\n\n  d \t\t e     \n   ",
    "japanese": "勇者は異世界で仲間を作り、冒険しよう！それは予知だ。",
    "emoji": "A dragon 🐉 and fire 🔥✨ 😶\u200d🌫️ over the castle 🏰!",
}
SMOLLM = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    ],
}


def tokenizer_json(pre: dict, *, size: int = 600, ignore_merges: bool = False, specials=("<|endoftext|>",)) -> dict:
    """A byte-level BPE tokenizer trained here with the pre-tokenizer `pre`, as a tokenizer.json dict."""
    from tokenizers import Tokenizer, pre_tokenizers, trainers

    spec = {
        "version": "1.0",
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": pre,
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "vocab": {}, "merges": [], "ignore_merges": ignore_merges},
    }
    tok = Tokenizer.from_str(json.dumps(spec))
    trainer = trainers.BpeTrainer(
        vocab_size=size,
        special_tokens=list(specials),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 3 + list(HARD_TEXTS.values()) * 3, trainer)
    return json.loads(tok.to_str())


def tiny_llama_with(folder: Path, spec: dict, *, extra_config: dict | None = None) -> Path:
    """A tiny random Llama whose tokenizer is `spec` (sizes the embeddings to the vocabulary)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    eos = spec["added_tokens"][0]["content"]
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos, "bos_token": eos, **(extra_config or {})}
        )
    )
    size = max(spec["model"]["vocab"].values()) + 1
    size = max([size] + [t["id"] + 1 for t in spec["added_tokens"]])
    config = transformers.LlamaConfig(
        vocab_size=size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def hf_ids(folder: Path, text: str, *, split_special=True) -> list[int]:
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    return tok(text, add_special_tokens=False, split_special_tokens=split_special)["input_ids"]


def gguf_of(folder: Path, out: Path) -> Path:
    outputs = convert(
        ConvertRequest(str(folder), out, quants=(), outtype="f32", name=folder.name), lock=out / "models.lock"
    )
    return outputs[0].path


FAMILY_SPECS = {**{name: pre for name, pre in FAMILIES.items()}, "smollm": SMOLLM}


@pytest.mark.parametrize("family", sorted(FAMILY_SPECS))
def test_each_family_is_found_by_behaviour_and_tokenizes_like_transformers(family, tmp_path):
    spec = tokenizer_json(FAMILY_SPECS[family], ignore_merges=family in ("llama-bpe", "qwen2"))
    clean = {"smollm": {"clean_up_tokenization_spaces": False}}.get(family)
    folder = tiny_llama_with(tmp_path / family, spec, extra_config=clean)
    vocab = read_vocab(folder, {})
    assert vocab.pre == family
    backend = LlamaCppBackend(gguf_of(folder, tmp_path / "out"), n_ctx=128)
    try:
        for name, text in HARD_TEXTS.items():
            assert backend.tokenize(text, add_bos=False) == hf_ids(folder, text), name
    finally:
        backend.close()


def test_an_unknown_pre_tokenizer_is_refused_naming_what_was_found(tmp_path):
    pre = {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, FAMILIES["gpt-2"]]}
    folder = tiny_llama_with(tmp_path / "odd", tokenizer_json(pre))
    with pytest.raises(ConversionError) as e:
        read_vocab(folder, {})
    message = str(e.value)
    assert message.startswith(
        "tokenizer.json's pre-tokenizer (Sequence[WhitespaceSplit, ByteLevel]) splits text "
        "like none of llama.cpp's families (gpt-2, llama-bpe, qwen2, falcon, starcoder, "
        "deepseek-coder, deepseek-v3, smollm); nearest is "
    )
    assert message.endswith("Convert to ONNX instead (--to onnx), which uses the tokenizer as it is")


def test_a_tokenizer_json_without_model_type_is_read(tmp_path):
    """Older files (GPT-2's and distilgpt2's own) have no model.type; the tokenizers library reads them as BPE."""
    spec = tokenizer_json(FAMILIES["gpt-2"])
    del spec["model"]["type"]
    folder = tiny_llama_with(tmp_path / "old", spec)
    vocab = read_vocab(folder, {})
    assert (vocab.model, vocab.pre) == ("gpt2", "gpt-2") and len(vocab.merges) == len(spec["model"]["merges"])


def test_a_wordpiece_tokenizer_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "wp"
    folder.mkdir()
    (folder / "tokenizer.json").write_text(
        json.dumps(
            {
                "version": "1.0",
                "model": {
                    "type": "WordPiece",
                    "unk_token": "[UNK]",
                    "continuing_subword_prefix": "##",
                    "max_input_chars_per_word": 100,
                    "vocab": {"[UNK]": 0, "a": 1},
                },
            }
        )
    )
    with pytest.raises(ConversionError, match="is a WordPiece tokenizer; talesmith converts byte-level BPE"):
        read_vocab(folder, {})


def test_added_tokens_special_or_not_and_padded_vocabularies(tmp_path):
    from talesmith.convert.vocab import CONTROL, UNUSED, USER_DEFINED

    spec = tokenizer_json(FAMILIES["gpt-2"])
    size = len(spec["model"]["vocab"])
    spec["added_tokens"] += [
        {
            "id": size,
            "content": "<|startoftext|>",
            "special": True,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
        },
        {
            "id": size + 1,
            "content": "[[scene]]",
            "special": False,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
        },
    ]
    folder = tmp_path / "added"
    folder.mkdir()
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    vocab = read_vocab(folder, {})
    vocab.pad_to(size + 8)
    assert vocab.types[size] == CONTROL and vocab.types[size + 1] == USER_DEFINED
    assert vocab.tokens[size + 1] == "[[scene]]" and vocab.types[size + 2 :] == [UNUSED] * 6


@pytest.mark.skipif(not (REAL / "base-gpt2-noweights").exists(), reason="no ../shared/real")
def test_the_official_gpt2_tokenizer_is_read_and_matches_llama_cpps_vocab():
    import llama_cpp

    folder = REAL / "base-gpt2-noweights"
    vocab = read_vocab(folder, json.loads((folder / "config.json").read_text()))
    assert (vocab.model, vocab.pre, len(vocab.tokens), vocab.eos) == ("gpt2", "gpt-2", 50257, 50256)
    reference = llama_cpp.Llama(str(REAL / "llamacpp-vocab" / "ggml-vocab-gpt-2.gguf"), vocab_only=True, verbose=False)
    tokens = [reference._model.token_get_text(i) for i in range(reference.n_vocab())]
    assert tokens == vocab.tokens


@pytest.mark.skipif(not (REAL / "llamacpp-vocab").exists(), reason="no ../shared/real")
@pytest.mark.parametrize(
    "name, folder", [("gpt-2", "base-gpt2-noweights"), ("falcon", "base-falcon-7b-instruct-noweights")]
)
def test_real_tokenizers_get_llama_cpps_family_and_its_test_ids(name, folder, tmp_path):
    """llama.cpp's own tokenizer test strings, through a vocab-only GGUF written from the real tokenizer."""
    import gguf
    import llama_cpp

    from talesmith.convert.writer import _add_metadata

    src = REAL / folder
    vocab = read_vocab(src, json.loads((src / "config.json").read_text()))
    assert vocab.pre == name
    path = tmp_path / "vocab.gguf"
    writer = gguf.GGUFWriter(str(path), "gpt2")
    arch = type("Arch", (), {"gguf_arch": "gpt2", "add_hparams": lambda self, w: w.add_block_count(1)})()
    _add_metadata(writer, arch, vocab, {"name": name}, "f32", 0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    base = REAL / "llamacpp-vocab" / f"ggml-vocab-{name}.gguf"
    texts = base.with_suffix(".gguf.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    expected = base.with_suffix(".gguf.out").read_text(encoding="utf-8").split("\n")
    for text, ids in zip(texts, expected, strict=False):
        got = llm.tokenize(text.encode(), add_bos=False, special=False)
        assert got == [int(i) for i in ids.split()], text


@pytest.fixture(scope="module")
def tinystories(tmp_path_factory):
    """A TinyStories-style fine-tune: GPT-2 with `<|startoftext|>` added as a special token."""
    root = tmp_path_factory.mktemp("tinystories")
    spec = tokenizer_json(FAMILIES["gpt-2"], specials=("<|endoftext|>", "<|startoftext|>"))
    folder = root / "tinystories-ft"
    folder.mkdir()
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "GPT2TokenizerFast",
                "eos_token": "<|endoftext|>",
                "bos_token": "<|startoftext|>",
                "additional_special_tokens": ["<|startoftext|>"],
            }
        )
    )
    config = transformers.GPT2Config(
        vocab_size=len(spec["model"]["vocab"]),
        n_positions=64,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=1,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder, safe_serialization=True)
    targets = ("gguf", "onnx") if _has_onnx() else ("gguf",)
    outputs = convert(
        ConvertRequest(
            str(folder),
            root / "out",
            quants=(),
            outtype="f32",
            targets=targets,
            onnx_quants=("fp32",),
            name="tinystories-ft",
        ),
        lock=root / "models.lock",
    )
    return folder, {o.format: o.path for o in outputs}


def _has_onnx() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import optimum.exporters.onnx  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_format_markers_are_special_tokens_and_user_text_never_is(tinystories, fmt):
    from talesmith.runtime.engine.loading import open_backend

    folder, paths = tinystories
    if fmt not in paths:
        pytest.skip("no ONNX export here")
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    start, end = tok.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"])
    story = TinyStory(text="Once upon a time <|endoftext|><|startoftext|> Tim typed the markers.")
    prompt = render(story)
    expected = [start] + tok(prompt[len("<|startoftext|>") :], add_special_tokens=False, split_special_tokens=True)[
        "input_ids"
    ]
    backend = open_backend(paths[fmt], n_ctx=64)
    try:
        got = tokenize_prompt(backend, story, prompt)
        assert got == expected
        assert got.count(start) == 1 and end not in got  # the user's typed markers stayed plain text
        assert (
            backend.tokenize("<|endoftext|>", add_bos=False)
            == tok("<|endoftext|>", add_special_tokens=False, split_special_tokens=True)["input_ids"]
        )
        assert backend.tokenize("<|endoftext|>", add_bos=False, special=True) == [end]
    finally:
        backend.close()
